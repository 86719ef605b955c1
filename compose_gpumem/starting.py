"""Which services a Compose command starts, decided as Compose decides it.

Host-wide admission (:mod:`admission`) counts these, and the prerequisite checks (:mod:`prereq`)
check these: what Compose will start, no more and no less.  The rules, read from Compose's own
code (compose-go's ``Project.WithServicesEnabled`` and ``WithSelectedServices``; docker/compose's
``up``, ``run``, ``create``, ``start`` and ``restart``):

- The enabled profiles are the ``--profile`` flags, else ``COMPOSE_PROFILES`` (the environment,
  then ``.env``).  A service in no profile is always enabled; ``*`` enables every one.
- Naming a service enables its profiles, and with them every service they hold.
- No service named: every enabled service.
- ``up``, ``run``, ``create``, ``start``, ``scale``, ``watch``: the named services and,
  transitively, what they ``depends_on``; a dependency that is not enabled is left out (Compose
  refuses the command when it is ``required``).  ``--no-deps`` (``up``, ``run``, ``scale``): the
  named services alone.
- ``restart``: the named services and, transitively, those that depend on them with
  ``restart: true``; ``--no-deps``: the named services alone.
- ``run``: its service is a one-off container; its dependencies start as services, each with its
  replicas.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import yamlio

if TYPE_CHECKING:
    from .compose import Options

#: Compose options of the starting commands that take a value (the rest are flags).
_VALUED = frozenset(
    "--scale -t --timeout --exit-code-from --pull --wait-timeout --attach --no-attach -e --env -v --volume "
    "-p --publish --name -u --user -w --workdir --entrypoint -l --label --cap-add --cap-drop "
    "--env-from-file".split()
)


@dataclass(frozen=True)
class Node:
    """What of one service decides whether it starts."""

    profiles: tuple[str, ...] = ()
    #: ``depends_on``: service -> required
    needs: Mapping[str, bool] = field(default_factory=dict)
    #: the dependencies whose restart restarts this one (``restart: true``)
    restarts_with: tuple[str, ...] = ()


@dataclass(frozen=True)
class Start:
    """One service a command starts."""

    service: str
    oneoff: bool = False  # ``run``'s own container
    #: the named service whose ``depends_on`` (or, for ``restart``, whose restart) brings it; "" when named
    because: str = ""


def read(text: str) -> dict[str, Node]:
    """Every service of Compose's resolved YAML with its profiles and ``depends_on``; only those
    two keys are parsed."""
    split = yamlio.split_services(text)
    if split is None:
        doc = yamlio.load_fast(text) or {}
        services = doc.get("services") if isinstance(doc, dict) else None
        return {name: _node(svc) for name, svc in (services or {}).items()}
    parts = []
    for block in split.blocks:
        header, keys = yamlio.service_keys(block)
        parts.append(header + "".join(text for key, text in keys if key in ("profiles", "depends_on")))
    parsed = yamlio.load_fast("".join(parts)) or {}
    return {name: _node(svc) for name, svc in parsed.items()}


def _node(service: Any) -> Node:
    if not isinstance(service, dict):
        return Node()
    depends = service.get("depends_on") or {}
    if isinstance(depends, list):  # the short form; Compose itself always prints the long one
        depends = {name: {} for name in depends}
    needs = {str(name): bool((how or {}).get("required", True)) for name, how in depends.items()}
    restarts = tuple(str(name) for name, how in depends.items() if (how or {}).get("restart") is True)
    return Node(tuple(str(p) for p in service.get("profiles") or ()), needs, restarts)


def split_args(command: str, args: Sequence[str]) -> tuple[list[str], list[str]]:
    """A Compose command's own flags and its service names.  ``run``: the service is the first
    name, and what follows it is the container's command; ``scale``: ``SERVICE=N``."""
    flags: list[str] = []
    names: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            break
        if arg.startswith("-") and arg != "-":
            flags.append(arg)
            i += 2 if arg in _VALUED else 1
            continue
        names.append(arg.partition("=")[0] if command == "scale" else arg)
        if command == "run":
            break
        i += 1
    return flags, names


def scales(command: str, args: Sequence[str]) -> dict[str, int]:
    """The replicas asked for on the command line: ``--scale SERVICE=N`` of ``up`` / ``create``,
    ``SERVICE=N`` of ``scale``."""
    out: dict[str, int] = {}
    if command not in ("up", "create", "scale"):
        return out
    for i, arg in enumerate(args):
        value = (
            args[i + 1]
            if arg == "--scale" and i + 1 < len(args)
            else arg[8:]
            if arg.startswith("--scale=")
            else arg
            if command == "scale" and not arg.startswith("-")
            else ""
        )
        service, _, count = value.partition("=")
        if service and count.isdigit():
            out[service] = int(count)
    return out


def enabled(graph: Mapping[str, Node], profiles: Sequence[str], named: Sequence[str] = ()) -> list[str]:
    """The services Compose keeps: in no profile or an enabled one, the named ones' profiles
    enabled too; in ``graph``'s order."""
    active = set(profiles)

    def on(node: Node) -> bool:
        return not node.profiles or "*" in active or bool(active & set(node.profiles))

    for name in named:
        node = graph.get(name)
        if node is not None and not on(node):
            active |= set(node.profiles)
    return [name for name, node in graph.items() if on(node)]


def starts(
    graph: Mapping[str, Node], command: str, args: Sequence[str], profiles: Sequence[str]
) -> list[Start]:
    """What ``command args`` starts, in ``graph``'s order (see the module's rules)."""
    flags, named = split_args(command, args)
    kept = enabled(graph, profiles, named)
    if not named:
        return [Start(name) for name in kept]
    on = set(kept)
    no_deps = "--no-deps" in flags
    if command == "restart":
        edges = {name: [other for other in kept if name in graph[other].restarts_with] for name in kept}
    else:
        edges = {name: list(graph[name].needs) for name in kept}
    found: dict[str, str] = {}

    def visit(service: str, because: str) -> None:
        if service in found or service not in on:
            return
        found[service] = because
        if not no_deps:
            for other in edges[service]:
                visit(other, because or service)

    for name in named:
        visit(name, "")
    return [Start(name, command == "run" and name == named[0], found[name]) for name in kept if name in found]


def profiles_of(options: Options) -> list[str]:
    """The profiles Compose enables: ``--profile`` flags, else ``COMPOSE_PROFILES`` (the
    environment, then the env files / ``.env``)."""
    if options.profiles:
        return list(options.profiles)
    from .compose import dotenv_value

    text = dotenv_value(options, "COMPOSE_PROFILES") or ""
    return [p.strip() for p in text.split(",") if p.strip()]
