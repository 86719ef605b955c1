"""``gpumem-compose stack config|deploy``: the project as a Docker Swarm stack.

Compose resolves the files (``-c FILE`` adds to the global ``-f``), :mod:`compose_gpumem.swarm`
translates the result, and ``deploy`` hands it to ``docker stack deploy``, after checking the
caps of tasks pinned to a node against that node's GPUs (``docker node inspect``).  Notes on
what was translated go to stderr, the stack file (``config``) to stdout.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from typing import Any

import click

from . import compose, library, swarm, yamlio
from .errors import GpumemError

_VERSION = re.compile(r"""^version:[ \t]*["']?([^"'#\s]+)""", re.MULTILINE)
DOCKER = "docker"


def _settings(ctx: click.Context, files: tuple[str, ...]) -> Any:
    """The group's settings (:class:`compose_gpumem.commands.Settings`) with ``-c`` files added."""
    settings = ctx.obj
    settings.options.files += list(files)
    return settings


@click.group("stack")
def stack() -> None:
    """Deploy the project to a Docker Swarm (docker stack deploy), caps included."""


_files = click.option(
    "-c", "--compose-file", "files", multiple=True, metavar="FILE", help="Compose file (repeatable)."
)


@stack.command("config")
@_files
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write to FILE instead of stdout.")
@click.pass_context
def config_command(ctx: click.Context, files: tuple[str, ...], output: str | None) -> int:
    """Print the stack file that `stack deploy` gives to Swarm."""
    settings = _settings(ctx, files)
    result = build(settings.options)
    _notes(result.notes)
    text = yamlio.dump(result.document)
    if output is None:
        sys.stdout.write(text)
    else:
        from .override import write

        write(output, text)
    return 0


@stack.command("deploy")
@_files
@click.option("--prune", is_flag=True, help="Passed to docker stack deploy.")
@click.option("--resolve-image", type=click.Choice(["always", "changed", "never"]), help="Passed on.")
@click.option("--with-registry-auth", is_flag=True, help="Passed to docker stack deploy.")
@click.argument("name", metavar="STACK")
@click.pass_context
def deploy_command(
    ctx: click.Context,
    files: tuple[str, ...],
    prune: bool,
    resolve_image: str | None,
    with_registry_auth: bool,
    name: str,
) -> int:
    """Deploy the project as stack STACK; docker stack deploy's exit code comes back."""
    settings = _settings(ctx, files)
    result = build(settings.options)
    notes = list(result.notes)
    if result.plans and not settings.allow_overcommit:
        notes += swarm.check_nodes(result, swarm.parse_nodes(_inspect_nodes()), file=settings.options.label())
    _notes(notes)
    argv = [DOCKER, "stack", "deploy"]
    if prune:
        argv.append("--prune")
    if resolve_image:
        argv += ["--resolve-image", resolve_image]
    if with_registry_auth:
        argv.append("--with-registry-auth")
    with tempfile.TemporaryDirectory(prefix="gpumem-stack.") as tmp:
        path = os.path.join(tmp, "stack.yaml")
        with open(path, "w", encoding="utf-8") as out:
            out.write(yamlio.dump(result.document))
        return subprocess.run([*argv, "-c", path, name], check=False).returncode


def build(options: compose.Options) -> swarm.Stack:
    """Resolve with Compose and translate for Swarm."""
    text = compose.resolve(options)
    doc = yamlio.load_fast(text) or {}
    return swarm.translate(doc, library=_library(), version=file_version(options), file=options.label())


def file_version(options: compose.Options) -> str | None:
    """The ``version:`` of the first of the user's files that has one (Compose drops it)."""
    for name in compose.user_files(options):
        try:
            with open(name, encoding="utf-8") as file:
                match = _VERSION.search(file.read())
        except OSError:
            continue
        if match:
            return match.group(1)
    return None


def _library() -> tuple[str, bytes]:
    path = library.packaged()
    if not path.is_file():
        path = library.require()
    return str(path), path.read_bytes()


def _inspect_nodes() -> list[dict[str, Any]]:
    listed = _docker(["node", "ls", "-q"]).split()
    if not listed:
        return []
    result: list[dict[str, Any]] = json.loads(_docker(["node", "inspect", *listed]))
    return result


def _docker(args: list[str]) -> str:
    try:
        proc = subprocess.run([DOCKER, *args], capture_output=True, text=True, check=False, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise GpumemError(f"docker {' '.join(args)}: {error}") from error
    if proc.returncode != 0:
        raise GpumemError(f"docker {' '.join(args)}: {proc.stderr.strip() or f'exit {proc.returncode}'}")
    return proc.stdout


def _notes(notes: list[str]) -> None:
    for note in notes:
        print(f"gpumem-compose: note: {note}", file=sys.stderr)
