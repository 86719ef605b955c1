"""``docker gpumem ...``: the tools as a Docker CLI plugin.

Docker finds a plugin as an executable named ``docker-<name>`` in ``$DOCKER_CONFIG/cli-plugins``
(default ``~/.docker/cli-plugins``) or a system plugin directory.  It asks it
``docker-gpumem docker-cli-plugin-metadata`` for a JSON description, and runs
``docker gpumem ARGS`` as ``docker-gpumem gpumem ARGS``.  ``gpumem-compose install-plugin``
writes that executable: a few lines that run this module with the Python the package is
installed in.

``docker gpumem version`` prints our version; ``docker gpumem run|create ... --gpu-memory V``
is ``gpumem-docker``; every other command is ``gpumem-compose`` (``up``, ``config``,
``override``, ``stack deploy`` ...).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from . import __version__

if TYPE_CHECKING:
    import click

NAME = "gpumem"
METADATA_ARG = "docker-cli-plugin-metadata"
SYSTEM_DIR = "/usr/local/lib/docker/cli-plugins"
PLUGIN_ENV = ("DOCKER_CLI_PLUGIN_ORIGINAL_CLI_COMMAND", "DOCKER_CLI_PLUGIN_SOCKET")
SCRIPT = """#!{python}
# Docker CLI plugin `docker gpumem` (written by `gpumem-compose install-plugin`).
import sys

from compose_gpumem.plugin import main

sys.exit(main())
"""


def metadata() -> dict[str, str]:
    """What ``docker`` shows for the plugin (``docker info``, ``docker --help``)."""
    return {
        "SchemaVersion": "0.1.0",
        "Vendor": "gpumem-compose",
        "Version": __version__,
        "ShortDescription": "Hard GPU-memory caps for Compose stacks and containers",
    }


def main(argv: Sequence[str] | None = None) -> int:
    """The plugin's entry point; returns the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == [METADATA_ARG]:
        print(json.dumps(metadata()))
        return 0
    if args[:1] == [NAME]:
        args = args[1:]
    # Set by docker for its plugin; a standalone docker-compose that sees them takes itself for
    # the `docker compose` plugin and misreads its arguments. Our children are not plugins.
    for variable in PLUGIN_ENV:
        os.environ.pop(variable, None)
    if args[:1] == ["version"]:
        print(f"gpumem-compose version {__version__}")
        return 0
    if args[:1] in (["run"], ["create"]):
        from .docker_cli import run

        return run(args)
    from .launch import speculate

    early = speculate(args)
    from .cli import run as compose_run

    return compose_run(args, early=early)


def default_dir() -> Path:
    """The user's plugin directory: ``$DOCKER_CONFIG/cli-plugins`` or ``~/.docker/cli-plugins``."""
    config = os.environ.get("DOCKER_CONFIG") or os.path.join(os.path.expanduser("~"), ".docker")
    return Path(config) / "cli-plugins"


def install(directory: str | None = None, *, system: bool = False) -> Path:
    """Write ``docker-gpumem`` into ``directory`` atomically; its path."""
    from .errors import GpumemError

    target = Path(directory) if directory else Path(SYSTEM_DIR) if system else default_dir()
    path = target / f"docker-{NAME}"
    try:
        target.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".docker-{NAME}.", dir=target)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(SCRIPT.format(python=sys.executable))
            os.chmod(tmp, 0o755)
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
    except OSError as error:
        raise GpumemError(f"cannot write {path}: {error.strerror}; pass --dir or run as root") from error
    return path


def _install_command() -> click.Command:
    """The ``install-plugin`` command (click is imported here: the plugin's metadata call,
    which Docker makes often, stays cheap)."""
    import click

    @click.command("install-plugin")
    @click.option(
        "--dir", "directory", metavar="DIR", help="Plugin directory (default: ~/.docker/cli-plugins)."
    )
    @click.option("--system", is_flag=True, help=f"Install for every user, in {SYSTEM_DIR}.")
    def install_plugin(directory: str | None, system: bool) -> int:
        """Install `docker gpumem ...` as a Docker CLI plugin."""
        path = install(directory, system=system)
        click.echo(f"installed {path}; try: docker gpumem version")
        return 0

    return install_plugin


install_command = _install_command()
