"""The card and the reader's kernel as pure protocol code (no sockets, no clock, no printing)."""
