"""The control API: HTTP/1.1 + JSON on the daemon's Unix socket (docs/control.md)."""
