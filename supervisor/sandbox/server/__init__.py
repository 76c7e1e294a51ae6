"""The fork server process: forks launchers and exec probe commands for the daemon."""
