"""flowvar's version: one place, read by the package root, the cache keys and the CLI."""

__version__ = "0.1.0"

__all__ = ["__version__"]
