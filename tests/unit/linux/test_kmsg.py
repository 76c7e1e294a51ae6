"""OOM victims from kernel log records."""

from __future__ import annotations

import pytest

from supervisor.linux.kmsg import Victim, parse

V1 = (
    b"6,2773,1402827606,-;oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=memhog,"
    b"mems_allowed=0,oom_memcg=/sandboxd-test-1-2/hog,task_memcg=/sandboxd-test-1-2/hog,"
    b"task=python3,pid=8101,uid=0\n"
)


@pytest.mark.parametrize(
    ("record", "victim"),
    [
        (V1, Victim("/sandboxd-test-1-2/hog", "python3", 8101)),
        (
            b"6,1,2,-;oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,"
            b"mems_allowed=0,oom_memcg=/sys.slice/sandboxd.service/web,"
            b"task_memcg=/sys.slice/sandboxd.service/web,task=my, odd task,pid=7,uid=0",
            Victim("/sys.slice/sandboxd.service/web", "my, odd task", 7),
        ),
        (b"3,2774,1402827629,-;Memory cgroup out of memory: Killed process 8101 (python3)", None),
        (b"4,2775,1412705212,-;python3 invoked oom-killer: gfp_mask=0xcc0", None),
        (b"garbage", None),
    ],
)
def test_parse(record: bytes, victim: Victim | None) -> None:
    assert parse(record) == victim
