"""The /proc and /sys paths Docker hides or makes read-only in a container: facts, not code.

Source: github.com/moby/moby, daemon/pkg/oci/defaults.go at commit b985e23 (2026-08-23),
read on 2026-12-06 (the MaskedPaths and ReadonlyPaths of the default spec).
"""

from __future__ import annotations

MASKED = (
    "/proc/acpi", "/proc/asound", "/proc/interrupts", "/proc/kcore", "/proc/keys",
    "/proc/latency_stats", "/proc/sched_debug", "/proc/scsi", "/proc/timer_list",
    "/proc/timer_stats", "/sys/devices/virtual/powercap", "/sys/firmware",
)  # fmt: skip
# Also masked, for every possible CPU N whose directory has it.
MASKED_PER_CPU = "/sys/devices/system/cpu/cpu{n}/thermal_throttle"

READ_ONLY = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")
