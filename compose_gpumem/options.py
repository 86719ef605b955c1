"""Compose's global options, declared once and shared by the group and our own subcommands."""

from __future__ import annotations

from typing import Any, Callable, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])

_OPTIONS = [
    click.option(
        "-f",
        "--file",
        "files",
        multiple=True,
        metavar="FILE",
        help="Compose file (repeatable); COMPOSE_FILE is honoured when none is given.",
    ),
    click.option("-p", "--project-name", metavar="NAME", help="Project name."),
    click.option(
        "--profile", "profiles", multiple=True, metavar="PROFILE", help="Profile to enable (repeatable)."
    ),
    click.option(
        "--env-file",
        "env_files",
        multiple=True,
        metavar="PATH",
        help="Alternate environment file (repeatable).",
    ),
    click.option("--project-directory", metavar="DIR", help="Alternate working directory."),
    click.option(
        "--compose-bin",
        metavar="CMD",
        envvar="COMPOSE_BIN",
        help='Command that runs Compose, e.g. "docker compose" (env COMPOSE_BIN).',
    ),
    click.option(
        "--allow-overcommit",
        is_flag=True,
        default=None,
        help="Proceed when services sharing a GPU are promised more than it holds.",
    ),
]


def compose_options(function: F) -> F:
    """Add the shared options to a click command."""
    for option in reversed(_OPTIONS):
        function = option(function)
    return function
