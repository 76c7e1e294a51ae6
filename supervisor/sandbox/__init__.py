"""Sandboxes, by the process each line runs in (and so what it may touch):

- `wire/`: what crosses between processes: the launch protocol's messages, frames on the
  fork server's socket, the launch plan and its mount operations. Data and codecs, no I/O
  beyond the read or write it is handed.
- `host/`: the daemon (an asyncio loop: nothing here may block it for long): plan a launch,
  talk to the fork server, networking (bridge, veths, leases, anti-spoofing), the engine's
  ports (adapters.py, prober.py).
- `server/`: the fork server, a small single-threaded process the daemon spawns
  (`python -S -m supervisor.sandbox.server`): forks launchers and exec probe commands.
- `child/`: forked children up to exec (launcher, PID 1, a command entering a sandbox): raw
  `os` calls and `Syscalls` only; no event loop, no logging, no locks, no threads.
"""
