"""What crosses between the daemon, the fork server and the forked children (see protocol.py)."""
