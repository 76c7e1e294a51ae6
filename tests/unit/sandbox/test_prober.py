"""The daemon's side of an exec probe job (sandbox/host/prober.py), without a fork server."""

from __future__ import annotations

import asyncio
import os

from supervisor.sandbox.host.prober import Job
from supervisor.sandbox.wire.protocol import Exited, encode


def test_a_job_finished_while_awaited_leaves_reused_fd_numbers_alone() -> None:
    """The run ends while its probe runs: finish() closes the job's pipes, and the task that
    awaited the report is cancelled afterwards. By then the fd numbers may belong to a new
    reader (another unit's pipe); the cancelled wait must not unregister it."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        report_r, report_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        output_r, output_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        job = Job(loop, None, None, report_r, output_r)  # type: ignore[arg-type]
        waiting = asyncio.create_task(job.reported(60))
        await asyncio.sleep(0)  # the readers are registered
        outcome = job.finish()
        assert outcome.status is None and outcome.output == ""
        reused_r, reused_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        assert reused_r in (report_r, output_r)  # the lowest free numbers: just freed
        seen: list[int] = []
        loop.add_reader(reused_r, lambda: seen.append(1))
        try:
            waiting.cancel()
            await asyncio.gather(waiting, return_exceptions=True)
            os.write(reused_w, b"x")
            for _ in range(100):
                if seen:
                    break
                await asyncio.sleep(0.01)
            assert seen, "the new reader on a reused fd number was removed"
        finally:
            loop.remove_reader(reused_r)
            for fd in (reused_r, reused_w, report_w, output_w):
                os.close(fd)

    asyncio.run(main())


def test_a_report_with_an_exit_status() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        report_r, report_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        output_r, output_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        job = Job(loop, None, None, report_r, output_r)  # type: ignore[arg-type]
        os.write(output_w, b"fine\n")
        os.write(report_w, encode(Exited(256, timed_out=False)))
        os.close(report_w)
        os.close(output_w)
        assert await job.reported(60)
        outcome = job.finish()
        assert (outcome.status, outcome.timed_out, outcome.output) == (256, False, "fine")
        assert job.finish() is outcome  # idempotent

    asyncio.run(main())
