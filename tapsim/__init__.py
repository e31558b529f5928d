"""The `tapsim` command line: a thin layer that wires the parts, holding no domain logic."""

__version__ = "0.1.0"
