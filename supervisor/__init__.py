"""sandboxd: a declarative sandbox supervisor for Linux hosts."""

__version__ = "0.1.0"
