"""A Ctrl-C that Python hands on wrapped in another exception is still a Ctrl-C to us."""

from __future__ import annotations

import os
import signal
import time

import pytest

from compose_gpumem import errors
from compose_gpumem.compose import Resolving
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


@pytest.fixture
def no_stop_requests():
    yield errors.stop_requests
    errors.stop_requests.clear()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_whose_exception_was_swallowed_still_stops_the_wait_on_compose(
    no_stop_requests: list[int], signum: int
) -> None:
    # a library's bare `except:` ate the KeyboardInterrupt; the request it left behind is seen
    compose = Resolving(["sleep"], ["sleep", "30"])
    no_stop_requests.append(signum)
    started = time.monotonic()
    with pytest.raises((KeyboardInterrupt, errors.Interrupted)) as raised:
        compose.result()
    assert time.monotonic() - started < 5
    if signum == signal.SIGTERM:
        assert raised.value.exit_code == 128 + signum  # type: ignore[union-attr]
    assert compose.returncode == -signal.SIGKILL  # killed and reaped, not left running
    with pytest.raises(ProcessLookupError):
        os.kill(compose.pid, 0)
