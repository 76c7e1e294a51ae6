"""Sandboxes: launch (daemon side), stage (post-fork children), rootfs, init, protocol."""
