"""Helpers shared by the test layers and the benchmarks: import them as `tests.support.<module>`.

- `waiting`: the one way to wait for a condition (`wait_for`, `poll`).
- `requires`: what a test needs from the host (root, cgroup v1/v2), as skip markers.
- `harness`: launching sandboxes directly (no daemon) with the in-sandbox probe
  (tests/probe/probe.py), through a fork server or a direct fork.
- `cgroup_sandbox`: sandboxes in unit cgroups of a test's own cgroup manager.
- `daemon_kit`: a real sandboxd on isolated paths, its API, its events, its leftovers.
- `kit`: reliability helpers on top of it (daemon factories, leak checks, unit files).
"""
