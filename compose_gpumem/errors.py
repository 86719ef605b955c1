"""One hierarchy of errors; the CLIs turn any of them into one line on stderr and an exit code.

Every error may name the file, the service and the value it is about, so a user can go
straight to the line to fix (``compose.yaml: service 'trainer': x-gpu-memory '1.5': ...``).
"""

from __future__ import annotations

TYPE_CHECKING = False  # `typing` stays off the path to starting Compose (see options.py)
if TYPE_CHECKING:
    from typing import Any


class GpumemError(Exception):
    """Base error: a message plus optional file, service and value; exit code 1 by default."""

    exit_code = 1

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        service: str | None = None,
        value: object = None,
        key: str = "x-gpu-memory",
    ) -> None:
        super().__init__(message)
        self.message = message
        self.file = file
        self.service = service
        self.value = value
        self.key = key
        #: the service that extends ``service``, when the value is written in the base one
        self.extended_by: str | None = None

    def __str__(self) -> str:
        parts = []
        if self.file:
            parts.append(self.file)
        if self.service is not None:
            extended = f", extended by {self.extended_by!r}" if self.extended_by else ""
            parts.append(f"service {self.service!r}{extended}")
        if self.value is not None:
            parts.append(f"{self.key} {_show(self.value)}")
        parts.append(self.message)
        return ": ".join(parts)


def _show(value: object) -> str:
    """A value as the user wrote it in YAML or JSON (``true``, ``{"0": 0.5}``), not as Python
    prints it; text keeps its quotes; at most 60 characters."""
    import json

    try:
        text = repr(value) if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    except (RecursionError, ValueError):  # 3,000-deep nesting, a 5,000-digit number
        text = "[...]" if isinstance(value, list) else "{...}" if isinstance(value, dict) else "..."
    return text if len(text) <= 60 else text[:57] + "..."


class UsageError(GpumemError):
    """The command line asks for something impossible."""

    exit_code = 2


class InvalidValue(GpumemError):
    """An ``x-gpu-memory`` value (or ``--gpu-memory``) that is malformed or out of range."""


class NoGpuRequest(GpumemError):
    """A service sets ``x-gpu-memory`` but requests no GPU."""


class Overcommit(GpumemError):
    """Services pinned to one GPU are promised more than the GPU holds."""

    def __init__(self, message: str, *, services: tuple[str, ...] = (), **where: Any) -> None:
        super().__init__(message, **where)
        #: the services whose caps add up past the GPU (replicas as ``name-N``)
        self.services = services


class ComposeNotFound(GpumemError):
    """Neither the ``docker compose`` plugin nor a ``docker-compose`` v2+ binary was found."""


class ComposeFailed(GpumemError):
    """The real Compose rejected the files; its own message was already printed."""

    def __init__(self, message: str, returncode: int) -> None:
        super().__init__(message)
        self.exit_code = returncode or 1


class LibraryMissing(GpumemError):
    """``libgpumem.so`` is not where containers mount it from."""


class StaleOverride(GpumemError):
    """``override --check`` found the committed override out of date."""


class Interrupted(GpumemError):
    """A signal stopped us while Compose was working; Compose was stopped too."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


#: The signals that asked us to stop, in order.  Kept apart from the exception the handler
#: raises, because code of a library may swallow that (ruamel.yaml imports its C part under a
#: bare ``except:``): whoever waits on Compose looks here too (:func:`raise_if_stopped`).
stop_requests: list[int] = []


def raise_if_stopped() -> None:
    """Raise what a stop request raised, if one came: ``KeyboardInterrupt`` for SIGINT,
    :class:`Interrupted` for the others."""
    if stop_requests:
        signum = stop_requests[-1]
        if signum == 2:  # SIGINT
            raise KeyboardInterrupt
        raise Interrupted(f"stopped by signal {signum}", 128 + signum)


def caused_by_interrupt(error: BaseException) -> bool:
    """Whether a Ctrl-C lies behind ``error``: Python 3.11 wraps a KeyboardInterrupt raised
    while a class is being built (an import, say) in a RuntimeError from ``__set_name__``."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, KeyboardInterrupt):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False
