"""Typed errors of the fare engine: what is wrong, and where."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class FeedProblem:
    """One thing wrong in a feed: file, line (1 = header, 0 = the file as a whole), field."""

    file: str
    line: int
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        if self.field:
            return f"{where}: {self.field}: {self.message}"
        return f"{where}: {self.message}"


class FeedError(ValueError):
    """A feed that cannot be loaded; holds every problem found, not just the first."""

    def __init__(self, problems: list[FeedProblem]) -> None:
        self.problems = list(problems)
        lines = "\n".join(f"  {p}" for p in self.problems)
        super().__init__(f"{len(self.problems)} problem(s) in the fare feed:\n{lines}")


class TapError(ValueError):
    """A tap the engine cannot price: unknown stop or route, out of time order, bad field."""
