"""Pressure stall information (PSI) and I/O byte counters, parsed from cgroupfs text.

PSI exists on cgroup v2 only (`cpu.pressure`, `memory.pressure`, `io.pressure`, Linux >= 4.20
with CONFIG_PSI and psi not disabled on the command line); v1 has no per-cgroup equivalent, so
a v1 backend reports pressure as absent (None), never as zeros that would look measured.
"""

from __future__ import annotations

import os

from supervisor.cgroups import files
from supervisor.errors import CgroupError

RESOURCES = ("cpu", "memory", "io")
KINDS = ("some", "full")
WINDOWS = ("avg10", "avg60", "avg300")

# {"some": {"avg10": 1.5, "avg60": 0.2, "avg300": 0.0, "total": 12345}, "full": {...}}:
# averages are percentages of wall time, total is microseconds stalled since the cgroup began.
PsiFile = dict[str, dict[str, float]]
# {"cpu": PsiFile, "memory": PsiFile, "io": PsiFile}
Pressure = dict[str, PsiFile]


def parse_psi(text: str, path: str = "<text>") -> PsiFile:
    """Parse a `*.pressure` file: lines of `some|full avg10=A avg60=B avg300=C total=T`."""
    out: PsiFile = {}
    for line in text.splitlines():
        kind, *fields = line.split()
        if kind not in KINDS:
            continue
        values: dict[str, float] = {}
        for item in fields:
            key, _, raw = item.partition("=")
            try:
                values[key] = int(raw) if key == "total" else float(raw)
            except ValueError:
                raise CgroupError(f"unexpected content in {path}: {line!r}") from None
        if not all(k in values for k in (*WINDOWS, "total")):
            raise CgroupError(f"unexpected content in {path}: {line!r}")
        out[kind] = values
    if "some" not in out:
        raise CgroupError(f"unexpected content in {path}: {text!r}")
    return out


def read_psi(path: str) -> PsiFile | None:
    """One pressure file, or None where the kernel has none (no CONFIG_PSI, psi=0: the file
    is missing or reading it fails with EOPNOTSUPP)."""
    try:
        return parse_psi(files.read(path), path)
    except CgroupError as err:
        if isinstance(err.__cause__, OSError) and err.__cause__.errno in _ABSENT:
            return None
        raise


_ABSENT = (2, 95)  # ENOENT, EOPNOTSUPP


def read_pressure(cgroup_dir: str) -> Pressure | None:
    """cpu, memory and io pressure of a v2 cgroup; None if the kernel keeps none."""
    found: Pressure = {}
    for resource in RESOURCES:
        psi = read_psi(os.path.join(cgroup_dir, f"{resource}.pressure"))
        if psi is not None:
            found[resource] = psi
    return found or None


def parse_io_stat(text: str) -> tuple[int, int]:
    """(read bytes, written bytes) summed over the devices of a v2 `io.stat`
    (`8:0 rbytes=1 wbytes=2 rios=3 wios=4 dbytes=0 dios=0` per line)."""
    read = written = 0
    for line in text.splitlines():
        for item in line.split()[1:]:
            key, _, raw = item.partition("=")
            if key == "rbytes":
                read += int(raw)
            elif key == "wbytes":
                written += int(raw)
    return read, written


def parse_blkio_bytes(text: str) -> tuple[int, int]:
    """(read bytes, written bytes) summed over the devices of a v1
    `blkio.throttle.io_service_bytes_recursive` (`8:0 Read 4096` lines, then `Total N`)."""
    read = written = 0
    for line in text.splitlines():
        parts = line.split()
        if len(parts) != 3:
            continue
        if parts[1] == "Read":
            read += int(parts[2])
        elif parts[1] == "Write":
            written += int(parts[2])
    return read, written
