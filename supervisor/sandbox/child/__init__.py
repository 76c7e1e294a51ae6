"""Forked children up to exec: no event loop, no logging, no locks, no threads."""
