"""The README's Quick start, followed literally: its daemon command in the background on the
example units/, then every `sandboxctl` line of its second code block, each of which must
exit 0 and say what the README says it shows. The commands are read from the README itself,
so the docs and the behaviour cannot drift apart.

Only isolation is added: the daemon command gets flags for its own state, log and data dirs,
socket and cgroup parent (scripts/run.sh passes its arguments to sandboxd), and sandboxctl
finds that socket through $SANDBOXD_SOCKET, so the run touches nothing of the host's.
`scripts/test.sh` in the first block is the suite itself and is not run here.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from tests.support.daemon_kit import START_TIMEOUT, new_daemon, teardown
from tests.support.requires import requires_root
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.root, pytest.mark.slow, requires_root]

CHECKOUT = Path(__file__).resolve().parents[2]


def quick_start_blocks() -> list[list[str]]:
    """The command lines of each ```sh block under '## Quick start', comments dropped."""
    text = (CHECKOUT / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Quick start\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, re.S)
    return [
        [line.split("#", 1)[0].strip() for line in block.splitlines() if line.split("#")[0].strip()]
        for block in blocks
    ]


def shows_what_the_readme_says(args: list[str], env: dict[str, str], units: set[str]) -> bool:
    """`status` lists every example unit, with batch `exited` and memhog OOM-killed (its
    LAST-EXIT), as the README's comment on that line says."""
    out = subprocess.run(args, cwd=CHECKOUT, env=env, text=True, capture_output=True, check=False)
    rows = {line.split()[0]: line.split() for line in out.stdout.splitlines()[1:] if line.split()}
    return (
        out.returncode == 0
        and units <= set(rows)
        and rows["batch"][1] == "exited"
        and "oom" in rows["memhog"][-1]
    )


def test_the_quick_start_blocks_are_what_this_test_runs() -> None:
    first, second = quick_start_blocks()
    assert any(line.endswith("scripts/run.sh") for line in first), first
    assert second and all(".venv/bin/sandboxctl " in line for line in second), second


def test_the_quick_start_works_as_written() -> None:
    first, second = quick_start_blocks()
    daemon_line = next(line for line in first if line.endswith("scripts/run.sh"))
    argv = shlex.split(daemon_line)
    if argv[0] == "sudo":  # we are root already
        argv = argv[1:]
    d = new_daemon()
    argv += [
        "--config", str(d.config), "--state-dir", str(d.state), "--log-dir", str(d.logs),
        "--data-dir", str(d.data), "--socket", str(d.socket),
        "--cgroup-parent", d.cgroup_parent, "--log-format", "json",
    ]  # fmt: skip
    env = {**os.environ, "SANDBOXD_SOCKET": str(d.socket)}
    followers: list[subprocess.Popen[str]] = []
    try:
        with open(d.stderr_path(), "wb") as err:
            d.proc = subprocess.Popen(argv, cwd=CHECKOUT, stdin=subprocess.DEVNULL,
                                      stdout=err, stderr=err, env=env)  # fmt: skip
        wait_for(lambda: d.socket.exists() or d.proc is None or d.proc.poll() is not None,
                 START_TIMEOUT)  # fmt: skip
        assert d.proc.poll() is None, d.stderr_path().read_text()[-3000:]
        expected = {p.stem for p in (CHECKOUT / "units").glob("*.toml")}
        for line in second:
            args = shlex.split(line)
            if args[-1] == "-f":  # follows until interrupted: read a line, then Ctrl-C
                # It prints what the log holds first, so once the log has a line, so does it.
                log = d.logs / f"{args[2]}.log"
                wait_for(lambda log=log: log.exists() and log.stat().st_size > 0, 60)
                proc = subprocess.Popen(args, cwd=CHECKOUT, env=env, text=True,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
                followers.append(proc)
                assert proc.stdout is not None
                assert proc.stdout.readline().strip(), line
                proc.send_signal(signal.SIGINT)
                proc.wait(60)
                continue
            if args[1:] == ["status"]:
                wait_for(
                    lambda a=args: shows_what_the_readme_says(a, env, expected),
                    120, lambda a=args: " ".join(a),
                )  # fmt: skip
            out = subprocess.run(args, cwd=CHECKOUT, env=env, text=True,
                                 capture_output=True, check=False)  # fmt: skip
            assert out.returncode == 0, (line, out.returncode, out.stdout, out.stderr)
            if args[1] == "validate":
                assert f"{len(expected)} units valid" in out.stdout, out.stdout
            elif len(args) > 2:  # status UNIT: that unit's detail
                assert args[2] in out.stdout, out.stdout
        # "Press Ctrl-C to stop the daemon. It stops every service it started."
        d.proc.send_signal(signal.SIGINT)
        assert d.proc.wait(120) == 0, d.stderr_path().read_text()[-3000:]
    finally:
        for proc in followers:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        problems = teardown(d)
        shutil.rmtree(d.base, ignore_errors=True)
    assert not problems, problems
