"""The engine: reconciler, per-unit state machines, restart policy, persisted state."""
