"""The ``gpumem-compose`` console script: starts Compose before click loads.

Python and click take tens of milliseconds to load, about as long as Compose takes to resolve a
small project.  So the global options are read first with the same table click uses
(:func:`compose_gpumem.options.prescan`), ``docker compose config`` is started, and only then
is the CLI imported.  :func:`compose_gpumem.commands.load` takes that process only when the parsed
command line asks for exactly the same call; otherwise it is killed unheard.  Nothing here
imports more than ``os``: even the signal handlers are set through ``_signal``, the interpreter's
own module (see :mod:`compose_gpumem.compose`), as ``signal`` would import enum before Compose
could start.
"""

from __future__ import annotations

import sys

from .compose import NEEDS_NO_CAP, NO_PROJECT, Options, Resolving, signal, start_resolve
from .errors import GpumemError, Interrupted, caused_by_interrupt, stop_requests
from .options import passed_args, prescan

TYPE_CHECKING = False  # `typing` (and collections.abc) stay off the path to starting Compose
if TYPE_CHECKING:
    from typing import Any, Sequence


def speculate(argv: Sequence[str], fmt: str = "yaml") -> Resolving | None:
    """Start ``docker compose config`` (``--format fmt``) for the global options in ``argv``,
    when the command is one that resolves the project; ``None`` when in doubt."""
    found = prescan(argv)
    if found is None:
        return None
    values, index = found
    if (
        index >= len(argv)
        or argv[index] in NO_PROJECT | NEEDS_NO_CAP
        or argv[index] in ("install-lib", "stack", "install-plugin", "completion")
    ):
        return None
    if {"-h", "--help", "--version"} & set(argv) or "-" in values.get("files", ()):
        return None  # help needs no project; with `-f -` only the real call may read stdin
    options = Options(
        values.get("files", ()),
        values.get("project_name"),
        values.get("profiles", ()),
        values.get("env_files", ()),
        values.get("project_directory"),
        values.get("compose_bin"),
        passed_args(values),
    )
    try:
        return start_resolve(options, all_profiles=argv[index] != "config", fmt=fmt)
    except GpumemError:
        return None  # the real call reports it


def _format(plain: tuple[str, dict[str, Any], dict[str, Any]] | None) -> str:
    """The format the command will ask Compose for: ``json`` for a plain ``config --format
    json`` that prints (see :func:`compose_gpumem.commands.config`)."""
    if plain is not None and plain[0] == "config" and not plain[2].get("quiet"):
        return str(plain[2].get("fmt", "yaml"))
    return "yaml"


def _stop(signum: int, _frame: object) -> None:
    stop_requests.append(signum)
    raise Interrupted(f"stopped by signal {signum}", 128 + signum)


def _interrupt(signum: int, _frame: object) -> None:
    stop_requests.append(signum)
    raise KeyboardInterrupt


def main() -> None:
    """Console-script entry point.  A SIGTERM or SIGHUP (``timeout``, a closed terminal) stops
    us as an error does, so the Compose started here is killed, not left running."""
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _stop)
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # not when ignored (`&`)
        signal.signal(signal.SIGINT, _interrupt)
    early = None
    stops = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
    try:
        from .quick import parse

        plain = parse(sys.argv[1:])  # a plain `config` or `override`: no click to load
        # held back while Compose starts, so one that comes meanwhile finds `early` set and
        # Compose is killed, not left running (the child starts with a clear mask)
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, stops)
        try:
            early = speculate(sys.argv[1:], fmt=_format(plain))
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        if plain is not None:
            from .quick import run as run_plain

            code = run_plain(plain, early)
        else:
            from .cli import run

            code = run(early=early)
    except (Interrupted, KeyboardInterrupt) as stopped:
        if early is not None:
            early.cancel()
        _exit_stopped(stopped.exit_code if isinstance(stopped, Interrupted) else 130)
    except Exception as error:
        if not caused_by_interrupt(error):
            raise
        if early is not None:
            early.cancel()
        _exit_stopped(130)
    if stop_requests:  # a stop the command handled itself (its 130): the same way out
        _exit_stopped(code)
    sys.exit(code)


def _exit_stopped(code: int) -> None:
    """Exit with ``code`` after a stop, skipping the interpreter's shutdown: CPython 3.11 can
    end a process whose Ctrl-C landed inside an import by killing itself with SIGINT at exit,
    although the KeyboardInterrupt was caught (seen here in about 3 runs of 100), which would
    turn our 130 into a death by signal.  Nothing is left to run at exit once we are stopped."""
    import os

    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe or stream: nothing more to say there
            pass
    os._exit(code)
