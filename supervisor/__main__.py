"""`python -m supervisor` runs the daemon, like the `sandboxd` console script."""

from supervisor.daemon import main

main()
