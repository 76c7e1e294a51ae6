"""Thin typed wrappers over the kernel: syscalls (the only ctypes user), caps, seccomp, users."""
