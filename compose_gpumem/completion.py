"""``gpumem-compose completion bash|zsh|fish``: click's completion script for the shell.

Install, e.g.::

    gpumem-compose completion bash > ~/.local/share/bash-completion/completions/gpumem-compose
    gpumem-compose completion zsh > "${fpath[1]}/_gpumem-compose"
    gpumem-compose completion fish > ~/.config/fish/completions/gpumem-compose.fish

The script calls ``gpumem-compose`` back with ``_GPUMEM_COMPOSE_COMPLETE`` set; click answers
with our commands and options (Compose's own commands are passed through and not completed).
"""

from __future__ import annotations

import click

SHELLS = ("bash", "zsh", "fish")
VARIABLE = "_GPUMEM_COMPOSE_COMPLETE"


@click.command("completion")
@click.argument("shell", type=click.Choice(SHELLS))
def completion_command(shell: str) -> int:
    """Print the shell completion script for SHELL (bash, zsh or fish)."""
    click.echo(script(shell), nl=False)
    return 0


def script(shell: str) -> str:
    """The completion script click writes for ``gpumem-compose`` in ``shell``."""
    from click.shell_completion import get_completion_class

    from .cli import main
    from .commands import PROG

    cls = get_completion_class(shell)
    if cls is None:  # pragma: no cover - SHELLS are click's own
        raise click.BadParameter(shell)
    source: str = cls(main, {}, PROG, VARIABLE).source()
    return source if source.endswith("\n") else source + "\n"
