"""``gpumem-compose``: Docker Compose with ``x-gpu-memory`` turned into a hard GPU-memory cap.

Usage::

    gpumem-compose [-f FILE]... [-p NAME] [--profile P]... [--env-file F]... \\
                   [--project-directory DIR] [--allow-overcommit] COMMAND [ARGS]...

``config``       print the resolved project with the caps injected (``--format yaml|json``).
``override``     write the additions alone to a file to commit (``-o FILE``); ``--check``
                 exits 1 with a diff when the committed file is stale.
``install-lib``  copy the packaged ``libgpumem.so`` to ``/usr/local/lib/gpumem`` (or ``--dir``).
``stack``        ``stack deploy|config``: the project on a Docker Swarm (:mod:`.stack_cli`).
``install-plugin``  make ``docker gpumem ...`` work (:mod:`.plugin`).
``completion``   ``completion bash|zsh|fish`` prints the shell's completion script.
``top``          each capped container's cap, use, processes and denials, live (:mod:`.top`).
anything else    ``up``, ``run``, ``down``, ``ps``, ``logs``... goes to Compose with the
                 injected project, flags intact, and its exit code comes back; starting
                 commands pass host-wide admission first (:mod:`.admission`).

Every error is one line on stderr and a non-zero exit; nothing is written on error.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any, Sequence

import click

from . import __version__
from .commands import PROG, Settings, guarded, name_its_file
from .commands import load as _load
from .options import compose_options

if TYPE_CHECKING:
    from .compose import Resolving
#: Commands in modules of their own, imported only when named: name -> (module, click command).
LAZY = {
    "stack": ("stack_cli", "stack"),
    "install-plugin": ("plugin", "install_command"),
    "completion": ("completion", "completion_command"),
}


class Group(click.Group):
    """Our subcommands, and every other name as a Compose command passed through."""

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            return command
        if cmd_name in LAZY:  # loaded only when asked for
            import importlib

            module, attribute = LAZY[cmd_name]
            lazy: click.Command = getattr(importlib.import_module(f".{module}", __package__), attribute)
            return lazy
        return _passthrough(cmd_name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *LAZY])


def _asks_help(args: Sequence[str]) -> bool:
    """``-h``/``--help`` among the command's own options (not in a container's command line)."""
    for arg in args:
        if arg in ("-h", "--help"):
            return True
        if not arg.startswith("-"):
            return False
    return False


def _passthrough(name: str) -> click.Command:
    @click.pass_obj
    def callback(settings: Settings, args: tuple[str, ...]) -> int:
        from . import compose

        if name in compose.NO_PROJECT or name in compose.NEEDS_NO_CAP or _asks_help(args):
            return compose.passthrough(settings.options, [name, *args])
        from . import starting
        from .enforce import take_option

        mode, args = take_option(args) if name in compose.STARTS_CONTAINERS else (None, args)
        resolved = _load(settings, scale=starting.scales(name, args) or None)
        text = None
        if name in compose.STARTS_CONTAINERS and resolved.plans:
            from .admission import compose_start
            from .enforce import enforced_yaml
            from .prereq import require_for_run

            profiles = starting.profiles_of(settings.options)
            chosen = starting.starts(starting.read(resolved.text), name, args, profiles)
            require_for_run(
                {
                    f"service {s.service!r}": resolved.services[s.service]
                    for s in chosen
                    if s.service in resolved.plans
                }
            )
            compose_start(resolved, chosen, options=settings.options, allow=settings.allow_overcommit)
            text = enforced_yaml(resolved, mode, settings.options.label())
        return compose.run_resolved(settings.options, text or resolved.injected_yaml(), [name, *args])

    return click.Command(
        name,
        callback=callback,
        params=[click.Argument(["args"], nargs=-1, type=click.UNPROCESSED)],
        context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
        add_help_option=False,
        help=f"docker compose {name}, with the caps injected.",
    )


@click.group(
    cls=Group,
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog="Any other command (up, down, run, exec, ps, logs, ...) goes to Docker Compose with "
    "the caps injected, its flags intact; its exit code comes back.",
)
@compose_options
@click.version_option(__version__, prog_name=PROG)
@click.pass_context
def main(ctx: click.Context, /, **values: Any) -> None:
    """Docker Compose with x-gpu-memory: a hard GPU-memory cap per service."""
    if not isinstance(ctx.obj, Settings):
        ctx.obj = Settings()
    ctx.obj.update(values)


def _compose_config_flags(function: Any) -> Any:
    """Compose's own ``config`` flags (see :data:`compose.CONFIG_LISTS`, ``CONFIG_SHAPING``)."""
    from .compose import CONFIG_LISTS, CONFIG_SHAPING

    for flag, text in reversed([*CONFIG_LISTS.items(), *CONFIG_SHAPING.items()]):
        function = click.option(flag, _flag_dest(flag), is_flag=True, help=text)(function)
    return function


def _flag_dest(flag: str) -> str:
    return "flag_" + flag[2:].replace("-", "_")


@main.command("config")
@compose_options
@click.option("--format", "fmt", type=click.Choice(["yaml", "json"]), default="yaml", show_default=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write to FILE instead of stdout.")
@click.option("-q", "--quiet", is_flag=True, help="Only validate; print nothing.")
@click.option("--hash", "hash_of", metavar="SERVICES", help="Print the service config hash, one per line.")
@_compose_config_flags
@click.argument("services", nargs=-1)
@click.pass_obj
def config_command(
    settings: Settings,
    /,
    fmt: str,
    output: str | None,
    quiet: bool,
    hash_of: str | None,
    services: tuple[str, ...],
    **values: Any,
) -> int:
    """Print the resolved project with the caps injected, as `docker compose config` does."""
    from . import commands, compose

    listing = [flag for flag in compose.CONFIG_LISTS if values.pop(_flag_dest(flag))]
    shaping = [flag for flag in compose.CONFIG_SHAPING if values.pop(_flag_dest(flag))]
    settings.update(values)
    return commands.config(
        settings, fmt, output, quiet, services, hash_of=hash_of, listing=listing, shaping=shaping
    )


@main.command("override")
@compose_options
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="The override file.")
@click.option("--check", is_flag=True, help="Write nothing; exit 1 with a diff when FILE is stale.")
@click.pass_obj
def override_command(settings: Settings, /, output: str, check: bool, **values: Any) -> int:
    """Write the caps alone as an override file to commit next to the compose files.

    `docker compose -f compose.yaml -f FILE up` then gives the same containers as
    `gpumem-compose -f compose.yaml up`.
    """
    from . import commands

    settings.update(values)
    return commands.override(settings, output, check)


@main.command("doctor")
@compose_options
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option(
    "--enforce", type=click.Choice(["auto", "library", "driver", "both"]), help="Decide as if asked for."
)
@click.option("--live", is_flag=True, help="Also run each capped service's image once and read its cap back.")
@click.argument("services", nargs=-1)
@click.pass_obj
def doctor_command(
    settings: Settings, /, fmt: str, enforce: str | None, live: bool, services: tuple[str, ...], **values: Any
) -> int:
    """What this host offers each path (library, driver), and what each capped service gets."""
    settings.update(values)
    from . import compose, doctor

    has_project = bool(settings.options.files or os.environ.get("COMPOSE_FILE")) or bool(
        compose._find_default(settings.options.directory())
    )
    project = _load(settings) if has_project else None
    data = doctor.run(
        project,
        override=enforce,
        only=services,
        file=settings.options.label(),
        relabel=lambda error: name_its_file(error, settings),
    )
    if live and project is not None and project.plans:
        from .enforce import enforced_yaml

        text = enforced_yaml(project, enforce, settings.options.label()) or project.injected_yaml()
        doctor.add_live(data, doctor.live(project, settings.options, services, text))
    if fmt == "json":
        import json

        click.echo(json.dumps(data, indent=2))
    else:
        click.echo(doctor.render(data), nl=False)
    return 0 if data["ok"] else 1


@main.command("version")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--short", is_flag=True, help="Our version alone.")
@click.pass_obj
def version_command(settings: Settings, /, fmt: str, short: bool) -> int:
    """Print our version, the library's (packaged and installed) and the Compose that runs."""
    from . import versions

    if short:
        click.echo(__version__)
        return 0
    info = versions.gather(settings.options.compose_bin)
    if fmt == "json":
        import json

        click.echo(json.dumps(info, indent=2))
    else:
        click.echo(versions.render(info), nl=False)
    return 0


@main.command("top")
@compose_options
@click.option("--format", "fmt", type=click.Choice(["table", "json", "prometheus"]), default="table")
@click.option("--no-stream", is_flag=True, help="Print once and exit.")
@click.option(
    "--state-dir", metavar="DIR", help="Read this ledger directory (no Docker: LD_PRELOAD by hand)."
)
@click.option("--interval", type=float, default=1.0, show_default=True, help="Seconds between refreshes.")
@click.argument("services", nargs=-1)
@click.pass_obj
def top_command(
    settings: Settings,
    /,
    fmt: str,
    no_stream: bool,
    state_dir: str | None,
    interval: float,
    services: tuple[str, ...],
    **values: Any,
) -> int:
    """How much of its cap each capped container of the project uses, live (as docker stats)."""
    settings.update(values)
    from . import top

    if state_dir is not None:
        settings.cancel_early()
        return top.run(fmt, stream=not no_stream, state_dir=state_dir, interval=interval)
    from .admission import project_name

    name = project_name(_load(settings), settings.options)
    return top.run(fmt, stream=not no_stream, project=name, services=services, interval=interval)


@main.command("install-lib")
@click.option(
    "--dir",
    "directory",
    metavar="DIR",
    help="Target directory (default: $GPUMEM_LIB_DIR or /usr/local/lib/gpumem).",
)
@click.option("--source", metavar="FILE", hidden=True, help="Install this file instead of the packaged one.")
def install_lib_command(directory: str | None, source: str | None) -> int:
    """Copy the packaged libgpumem.so to where containers mount it from."""
    from . import library

    path = library.install(directory, source)
    click.echo(f"installed {path}")
    return 0


def run(argv: Sequence[str] | None = None, *, early: Resolving | None = None) -> int:
    """Run the CLI; one line on stderr and an exit code for every error.

    ``early``: ``docker compose config`` already started by :mod:`compose_gpumem.launch`.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    settings = Settings(early)

    def call() -> int:
        try:
            result = main.main(args=args, prog_name=PROG, standalone_mode=False, obj=settings)
        except click.exceptions.Exit as done:
            return done.exit_code
        except click.ClickException as error:
            error.show()
            return error.exit_code
        except click.Abort:
            return 130
        return result if isinstance(result, int) else 0

    return guarded(call, settings)


def entry() -> None:
    """Entry point without the early start (the console script uses :mod:`launch`)."""
    sys.exit(run())


if __name__ == "__main__":
    entry()
