"""Compose's global options, declared once: the table below makes the click options of the
group and of our own subcommands, and :func:`prescan` reads the same table to start Compose
before click is even imported (see :func:`compose_gpumem.cli.entry`).

This module imports nothing heavy; ``click`` is imported only by :func:`compose_options`.
"""

from __future__ import annotations

TYPE_CHECKING = False  # `typing` costs ~10 ms to import: it stays off the path to Compose
if TYPE_CHECKING:
    from typing import Any, Callable, Sequence, TypeVar

    F = TypeVar("F", bound=Callable[..., Any])


class Opt:
    """One global option: its flags, where click stores it, and how it behaves."""

    def __init__(
        self,
        flags: tuple[str, ...],
        dest: str,
        help: str,
        metavar: str | None = None,
        *,
        multiple: bool = False,
        is_flag: bool = False,
        envvar: str | None = None,
        passed: bool = False,
    ) -> None:
        self.flags = flags
        self.dest = dest
        self.help = help
        self.metavar = metavar
        self.multiple = multiple
        self.is_flag = is_flag
        self.envvar = envvar
        #: Not interpreted by us: handed to Compose as given.
        self.passed = passed


SHARED: tuple[Opt, ...] = (
    Opt(
        ("-f", "--file"),
        "files",
        "Compose file (repeatable); COMPOSE_FILE is honoured when none is given.",
        "FILE",
        multiple=True,
    ),
    Opt(("-p", "--project-name"), "project_name", "Project name.", "NAME"),
    Opt(("--profile",), "profiles", "Profile to enable (repeatable).", "PROFILE", multiple=True),
    Opt(("--env-file",), "env_files", "Alternate environment file (repeatable).", "PATH", multiple=True),
    Opt(("--project-directory",), "project_directory", "Alternate working directory.", "DIR"),
    Opt(
        ("--compose-bin",),
        "compose_bin",
        'Command that runs Compose, e.g. "docker compose".',
        "CMD",
        envvar="COMPOSE_BIN",
    ),
    Opt(
        ("--allow-overcommit",),
        "allow_overcommit",
        "Proceed when services sharing a GPU are promised more than it holds.",
        is_flag=True,
    ),
    Opt(("--ansi",), "ansi", "Passed to Compose.", "WHEN", passed=True),
    Opt(("--progress",), "progress", "Passed to Compose.", "TYPE", passed=True),
    Opt(("--parallel",), "parallel", "Passed to Compose.", "N", passed=True),
    Opt(("--compatibility",), "compatibility", "Passed to Compose.", is_flag=True, passed=True),
    Opt(("--dry-run",), "dry_run", "Passed to Compose.", is_flag=True, passed=True),
    Opt(("--all-resources",), "all_resources", "Passed to Compose.", is_flag=True, passed=True),
)
_BY_FLAG = {flag: opt for opt in SHARED for flag in opt.flags}


def compose_options(function: F) -> F:
    """Add the shared options to a click command."""
    import click

    for opt in reversed(SHARED):
        function = click.option(
            *opt.flags,
            opt.dest,
            help=opt.help,
            metavar=opt.metavar,
            multiple=opt.multiple,
            is_flag=opt.is_flag,
            default=None,
            envvar=opt.envvar,
            show_envvar=opt.envvar is not None,
        )(function)
    return function


def passed_args(values: dict[str, Any]) -> list[str]:
    """The options we do not interpret, as Compose arguments."""
    out: list[str] = []
    for opt in SHARED:
        value = values.get(opt.dest)
        if opt.passed and value:
            out += [opt.flags[-1]] if opt.is_flag else [opt.flags[-1], str(value)]
    return out


def prescan(argv: Sequence[str]) -> tuple[dict[str, Any], int] | None:
    """The global options before the command, as click would store them, and the command's
    index; ``None`` when anything there is not a plain use of the table."""
    values: dict[str, Any] = {}
    i = 0
    while i < len(argv) and argv[i].startswith("-"):
        flag, eq, attached = argv[i].partition("=")
        opt = _BY_FLAG.get(flag)
        if opt is None:
            return None
        if opt.is_flag:
            if eq:
                return None
            value: Any = True
            i += 1
        elif eq:
            value = attached
            i += 1
        elif i + 1 < len(argv):
            value = argv[i + 1]
            i += 2
        else:
            return None
        if opt.multiple:
            values[opt.dest] = (*values.get(opt.dest, ()), value)
        else:
            values[opt.dest] = value
    return values, i
