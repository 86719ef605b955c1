"""A Ctrl-C that Python hands on wrapped in another exception is still a Ctrl-C to us."""

from __future__ import annotations

import pytest

from compose_gpumem.errors import caused_by_interrupt


def _wrapped_by_set_name() -> BaseException:
    # what Python 3.11 raises when a KeyboardInterrupt lands in __set_name__ (platform.py's import)
    try:
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt as interrupt:
            raise RuntimeError("Error calling __set_name__") from interrupt
    except RuntimeError as error:
        return error


def _raised_while_handling_interrupt() -> BaseException:
    try:
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            raise ValueError("during cleanup")  # noqa: B904 - the implicit context is the point
    except ValueError as error:
        return error


@pytest.mark.parametrize(
    "error", [KeyboardInterrupt(), _wrapped_by_set_name(), _raised_while_handling_interrupt()]
)
def test_an_interrupt_behind_an_error_is_seen(error: BaseException) -> None:
    assert caused_by_interrupt(error)


def test_a_plain_error_is_not_an_interrupt() -> None:
    chained = RuntimeError("outer")
    chained.__cause__ = ValueError("inner")
    assert not caused_by_interrupt(RuntimeError("bug"))
    assert not caused_by_interrupt(chained)


def test_a_cycle_of_causes_ends() -> None:
    first, second = ValueError("a"), ValueError("b")
    first.__context__, second.__context__ = second, first
    assert not caused_by_interrupt(first)
