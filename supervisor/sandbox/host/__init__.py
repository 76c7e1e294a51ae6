"""The daemon's side of sandboxes: runs in the daemon process, on or beside its event loop."""
