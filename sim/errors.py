"""The simulation's errors: each says what is wrong and where (file, line, field or option)."""

from __future__ import annotations


class SimError(ValueError):
    """A simulation that cannot run as asked; the message is meant for the user."""


class CityError(SimError):
    """A city (GTFS folder/zip or synthetic spec) that cannot be used."""

    def __init__(self, source: str, message: str, line: int | None = None,
                 field: str | None = None) -> None:
        self.source = source
        self.line = line
        self.field = field
        where = source
        if line is not None:
            where += f":{line}"
        if field is not None:
            where += f" ({field})"
        super().__init__(f"{where}: {message}")


class ConfigError(SimError):
    """A simulation parameter out of range; the message names the parameter."""
