"""The systemd end-to-end layer: installs sandboxd for real (/opt, /etc, systemd units).

It only runs where that is harmless and meaningful: a throw-away VM booted with systemd as
PID 1 on a pure cgroup v2 host, with SANDBOXD_SYSTEMD_E2E=1 (scripts/test-systemd.sh sets it).
The journal dies with the VM, so a failing test gets the daemon's journal in its report.
"""

from __future__ import annotations

from collections.abc import Generator

import pytest
from _systemd import journal_tail, skip_reason


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed and "systemd" in item.keywords and skip_reason() is None:
        report.sections.append(("journalctl -u sandboxd -u sandboxd-sandboxes", journal_tail()))
    return report
