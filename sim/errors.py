"""The simulation's errors: each says what is wrong and where (file, line, field or option)."""

from __future__ import annotations


class SimError(ValueError):
    """A simulation that cannot run as asked; the message is meant for the user."""


class CityError(SimError):
    """A city (GTFS folder/zip or synthetic spec) that cannot be used."""

    def __init__(self, source: str, message: str, line: int | None = None,
                 field: str | None = None) -> None:
        self.source = source
        self.message = message
        self.line = line
        self.field = field
        where = source
        if line is not None:
            where += f":{line}"
        if field is not None:
            where += f" ({field})"
        super().__init__(f"{where}: {message}")

    def __reduce__(self) -> tuple[type[CityError], tuple[str, str, int | None, str | None]]:
        # As it was raised, across a worker process's pickling (the default would call
        # CityError(text) alone).
        return (CityError, (self.source, self.message, self.line, self.field))


class ConfigError(SimError):
    """A simulation parameter out of range; the message names the parameter."""
