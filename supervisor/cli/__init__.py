"""sandboxctl: the command-line client (`main.py` is the entry, one module per verb)."""
