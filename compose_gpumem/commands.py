"""What ``config`` and ``override`` do, and how every error becomes one line, without click.

The click CLI (:mod:`compose_gpumem.cli`) and the quick path (:mod:`compose_gpumem.quick`,
which runs these two commands without importing click, about half of a small project's time)
call the same functions here, so both give the same output, files and exit codes.
"""

from __future__ import annotations

import os
import sys

from .errors import GpumemError, caused_by_interrupt
from .options import passed_args

TYPE_CHECKING = False  # `typing` stays off the path to starting Compose (see options.py)
if TYPE_CHECKING:
    from typing import Any, Callable, Sequence

    from .compose import Resolving
    from .project import Project

PROG = "gpumem-compose"


class Settings:
    """What the group's options asked for; subcommands add to it."""

    def __init__(self, early: Resolving | None = None) -> None:
        from .compose import Options

        self.options = Options()
        self.allow_overcommit = False
        #: ``docker compose config`` started before the CLI was imported (see :mod:`launch`).
        self.early = early

    def update(self, values: dict[str, Any]) -> None:
        o = self.options
        o.files += list(values.get("files") or ())
        o.profiles += list(values.get("profiles") or ())
        o.env_files += list(values.get("env_files") or ())
        o.project_name = values.get("project_name") or o.project_name
        o.project_directory = values.get("project_directory") or o.project_directory
        o.compose_bin = values.get("compose_bin") or o.compose_bin
        o.extra += passed_args(values)
        self.allow_overcommit = bool(values.get("allow_overcommit")) or self.allow_overcommit

    def cancel_early(self) -> None:
        if self.early is not None:
            self.early.cancel()
            self.early = None


def load(
    settings: Settings,
    extra: Sequence[str] = (),
    *,
    all_profiles: bool = True,
    scale: dict[str, int] | None = None,
) -> Project:
    """Start Compose first (or take the one :mod:`launch` started, when it was asked the same),
    then import the rest of the package while it resolves."""
    from .compose import config_argv, start_resolve

    running = None
    if settings.early is not None:
        if settings.early.argv == config_argv(settings.options, extra, all_profiles=all_profiles):
            running, settings.early = settings.early, None
        else:
            settings.cancel_early()
    running = running or start_resolve(settings.options, extra, all_profiles=all_profiles)
    try:  # stopped (a signal, Ctrl-C) before Compose's output is read: Compose goes too
        from .project import load as load_project

        return load_project(
            settings.options,
            extra=extra,
            allow_overcommit=settings.allow_overcommit,
            all_profiles=all_profiles,
            running=running,
            scale=scale,
        )
    except BaseException:
        running.cancel()  # a no-op once Compose has been reaped
        raise


def write_text(text: str, output: str | None) -> None:
    """``text`` to stdout, or atomically to ``output``."""
    if output is None:
        sys.stdout.write(text)
        return
    from .override import write

    write(output, text)


def config(
    settings: Settings,
    fmt: str,
    output: str | None,
    quiet: bool,
    services: Sequence[str],
    *,
    hash_of: str | None = None,
    listing: Sequence[str] = (),
    shaping: Sequence[str] = (),
) -> int:
    """``config``: the resolved project with the caps injected.  ``listing``: Compose's own
    listing flags (``--services`` ...), answered by Compose; ``shaping``: its flags that change
    the document, passed on (see :data:`compose.CONFIG_LISTS`, ``CONFIG_SHAPING``)."""
    from . import compose

    if listing:
        settings.cancel_early()
        return compose.passthrough(settings.options, ["config", *listing, *services])
    extra = [*shaping, *services]
    if fmt == "json" and not quiet and not hash_of:
        write_text(_config_json(settings, extra), output)
        return 0
    resolved = load(settings, extra, all_profiles=False)
    if hash_of:
        return compose.run_resolved(settings.options, resolved.injected_yaml(), ["config", "--hash", hash_of])
    if quiet:
        return 0
    write_text(resolved.injected_yaml(), output)
    return 0


def _config_json(settings: Settings, extra: Sequence[str]) -> str:
    """``config --format json``'s text: Compose's own JSON with the caps injected."""
    from . import configout
    from .compose import config_argv
    from .project import load_json

    running = None
    if settings.early is not None:
        if settings.early.argv == config_argv(settings.options, extra, fmt="json"):
            running, settings.early = settings.early, None
        else:
            settings.cancel_early()
    plans, text = load_json(
        settings.options, extra=extra, allow_overcommit=settings.allow_overcommit, running=running
    )
    return configout.json_text(plans, text)


def override(settings: Settings, output: str, check: bool) -> int:
    """``override``: write the additions alone, or (``check``) exit 1 when the file is stale."""
    resolved = load(settings)
    from . import override as overrides

    text = overrides.render(resolved, settings.options, output)
    if check:
        overrides.check(output, text)
        return 0
    overrides.write(output, text)
    return 0


def guarded(call: Callable[[], int], settings: Settings) -> int:
    """``call()``'s exit code; every error one line on stderr and its exit code."""
    try:
        return call()
    except GpumemError as error:
        sys.stdout.flush()
        name_its_file(error, settings)
        print(f"{PROG}: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `gpumem-compose config | head`
        _quiet_stdout()
        return 0
    except Exception as error:  # a bug of ours: still one line (GPUMEM_DEBUG=1 shows the trace)
        if caused_by_interrupt(error):  # a Ctrl-C that Python wrapped (see errors.py)
            return 130
        if os.environ.get("GPUMEM_DEBUG"):
            raise
        print(f"{PROG}: internal error: {error!r} (GPUMEM_DEBUG=1 shows where)", file=sys.stderr)
        return 70
    finally:
        settings.cancel_early()


def name_its_file(error: GpumemError, settings: Settings) -> None:
    """An error about one value, labelled with the project's files as a whole, names the file
    the value is written in (an ``include``d one, a second ``-f``, the base of an ``extends``)."""
    if error.file != settings.options.label():
        return
    from .origins import Origins

    Origins(settings.options).relabel(error)


def _quiet_stdout() -> None:
    """Python would complain again at exit about the closed pipe; point stdout at /dev/null."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
