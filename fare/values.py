"""The base of the engine's small immutable records (legs, walks, journey state, charges).

They were NamedTuples; as plain classes with read-only (``Final``) attributes they compile to
native classes (mypyc, see setup.py), which the engine builds several of per tap at a fraction of
a tuple's cost and reads as struct fields.  Interpreted, they behave the same: value equality and
hashing over their fields, a readable repr, iteration in field order (``tuple(x)``,
``Cls(*values)``), and pickling.

A subclass lists its fields once, in ``_fields`` (also its ``__slots__``), declares each as
``Final``, and returns them in that order from ``_values``.  Each is marked
``mypyc_attr(acyclic=True)``: an immutable object can only refer to objects older than itself,
so it can never be part of a reference cycle, and compiled it is left out of the cyclic garbage
collector's bookkeeping (which otherwise costs the core more than building the objects).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import ClassVar

from mypy_extensions import mypyc_attr


@mypyc_attr(acyclic=True)
class Value:
    """Value semantics over ``_values()`` (see the module docstring)."""

    __slots__ = ()
    _fields: ClassVar[tuple[str, ...]] = ()

    def _values(self) -> tuple[object, ...]:
        raise NotImplementedError

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Value) or type(other) is not type(self):
            return NotImplemented
        return self._values() == other._values()

    def __hash__(self) -> int:
        return hash(self._values())

    def __iter__(self) -> Iterator[object]:
        return iter(self._values())

    def __repr__(self) -> str:
        fields = ", ".join(
            f"{name}={value!r}" for name, value in zip(self._fields, self._values(), strict=True)
        )
        return f"{type(self).__name__}({fields})"

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return type(self), self._values()
