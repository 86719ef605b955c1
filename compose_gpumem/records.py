"""Small value classes without :mod:`dataclasses`, for the modules ``config`` and ``override`` load.

Importing dataclasses (which imports inspect, ast and dis) and building a class with it took
about as long, on the 2-core bench host, as Compose takes to resolve a 10-service project
(bench/RESULTS.md, "CPU side, start-up").  A :class:`Record` subclass names its fields in
``FIELDS`` and sets them in its own ``__init__``; equality, hashing and ``repr`` come from
those fields, as a frozen dataclass gives them.
"""

from __future__ import annotations

TYPE_CHECKING = False  # `typing` stays off the path of `config` (see options.py)
if TYPE_CHECKING:
    from typing import Any


class Record:
    """Fields named in ``FIELDS`` (its ``__slots__`` too), set by ``__init__``; compared, hashed
    and shown by value, in that order."""

    FIELDS: tuple[str, ...] = ()
    __slots__ = ()

    def _fields(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in self.FIELDS)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, Record)
        return self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash((self.__class__.__name__, self._fields()))

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.FIELDS)
        return f"{self.__class__.__name__}({shown})"
