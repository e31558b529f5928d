"""Versioned messages between validators and the back office."""
