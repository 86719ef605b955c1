"""``config`` and ``override`` without click: what CI jobs, editors and pre-commit run most.

Importing click costs about as long as Compose takes to resolve a small project.  When the
command line is a plain use of ``config`` or ``override`` (the global options of
:mod:`compose_gpumem.options`, then the command's own few options), it is read here and run by
:mod:`compose_gpumem.commands`, the same functions the click commands call.  Anything else
(``--help``, an option after the command that is not listed here, a missing ``-o``) returns
``None`` and goes to click, which gives the usual help and messages.
"""

from __future__ import annotations

from .options import prescan

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Sequence

    from .compose import Resolving

#: Per command: option -> (name, takes a value).
OWN_OPTIONS = {
    "config": {
        "--format": ("fmt", True),
        "-o": ("output", True),
        "--output": ("output", True),
        "-q": ("quiet", False),
        "--quiet": ("quiet", False),
    },
    "override": {"-o": ("output", True), "--output": ("output", True), "--check": ("check", False)},
}


def parse(argv: Sequence[str]) -> tuple[str, dict[str, Any], dict[str, Any]] | None:
    """``(command, global values, own values)`` for a plain ``config`` or ``override`` call."""
    found = prescan(argv)
    if found is None:
        return None
    values, index = found
    if index >= len(argv) or argv[index] not in OWN_OPTIONS:
        return None
    command, table = argv[index], OWN_OPTIONS[argv[index]]
    own: dict[str, Any] = {"services": []}
    rest = list(argv[index + 1 :])
    while rest:
        arg = rest.pop(0)
        if not arg.startswith("-") or arg == "-":
            if command != "config":
                return None
            own["services"].append(arg)
            continue
        flag, eq, attached = arg.partition("=")
        if flag not in table or (eq and not table[flag][1]):
            return None
        name, takes_value = table[flag]
        if not takes_value:
            own[name] = True
        elif eq:
            own[name] = attached
        elif rest:
            own[name] = rest.pop(0)
        else:
            return None
    if own.get("fmt", "yaml") not in ("yaml", "json") or (command == "override" and not own.get("output")):
        return None
    return command, values, own


def run(parsed: tuple[str, dict[str, Any], dict[str, Any]], early: Resolving | None) -> int:
    """Run what :func:`parse` read; the exit code."""
    from . import commands

    command, values, own = parsed
    settings = commands.Settings(early)
    settings.update(values)
    if command == "config":
        return commands.guarded(
            lambda: commands.config(
                settings, own.get("fmt", "yaml"), own.get("output"), bool(own.get("quiet")), own["services"]
            ),
            settings,
        )
    return commands.guarded(
        lambda: commands.override(settings, own["output"], bool(own.get("check"))), settings
    )
