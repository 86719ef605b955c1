"""One project: resolved by Compose, read as little as needed, checked, and injected.

:func:`load` runs ``docker compose config`` once and parses only the service blocks that can
carry a cap (those that mention ``x-gpu-memory``, or request a GPU when there is a top-level
default).  :meth:`Project.injected_yaml` splices the changed blocks back into Compose's own
text; :meth:`Project.injected_document` gives the whole document (for ``--format json``);
:meth:`Project.override` gives the additions alone.
"""

from __future__ import annotations

from . import caplabels, compose, inject, library, yamlio
from .errors import ComposeFailed, GpumemError
from .validate import check_overcommit, decimal_unit_note

TYPE_CHECKING = False  # `typing` stays off the path of `config` (see options.py)
if TYPE_CHECKING:
    from typing import Any, Callable, Mapping, Sequence

    #: a key of a service as messages name it: ``FILE: service 'NAME'`` (see :mod:`origins`)
    Where = Callable[[str, str], str]

_GPU_HINTS = ("gpus:", "runtime: nvidia", "capabilities:", "nvidia.com/gpu=")
#: The keys of a service that decide its cap; only these are parsed.
_NEEDED = frozenset(
    {"environment", "gpus", "deploy", "devices", "runtime", "profiles", "ipc", "labels", "scale", inject.KEY}
)
#: The keys injection writes; the others are copied through as Compose printed them.
_WRITTEN = ("environment", "labels", "volumes")
#: Mount targets of ours: a block mounting one of them has its ``volumes`` parsed (re-injection).
_OUR_TARGETS = (inject.MOUNT_DIR, inject.LEDGER_DIR)


class Project:
    """A resolved project and the caps its services get.

    ``services`` holds, per service that may carry a cap, the keys that decide it (see
    ``_NEEDED``) and ``volumes`` when it already mounts ``/opt/gpumem``; ``blocks`` gives each
    such service's block in ``split``, where the injection is spliced in; ``names``: the host's
    GPUs, for labels naming them by UUID (empty: as the files name them).
    """

    def __init__(
        self,
        text: str,
        services: dict[str, Any],
        plans: dict[str, inject.Plan],
        split: yamlio.Split | None,
        blocks: dict[str, int] | None = None,
        names: caplabels.GpuNames | None = None,
    ) -> None:
        self.text = text
        self.services = services
        self.plans = plans
        self.split = split
        self.blocks = blocks if blocks is not None else {}
        self.names = names if names is not None else caplabels.GpuNames()

    def injected_yaml(self, source: str | None = None) -> str:
        """Compose's YAML with the caps injected, in Compose's layout; ``$`` stays ``$$``."""
        source = _escape(source or library.host_dir())
        if not self.plans:
            return self.text  # nothing to add: Compose's text as it printed it, whatever its shape
        if self.split is None:
            return yamlio.dump(self.injected_document(source, escaped=True))
        blocks = list(self.split.blocks)
        for name, plan in self.plans.items():
            blocks[self.blocks[name]] = _splice(
                blocks[self.blocks[name]], self.services[name], plan, source, name, self.names
            )
        return self.split.head + "".join(blocks) + self.split.tail

    def injected_document(self, source: str | None = None, *, escaped: bool = False) -> dict[str, Any]:
        """The whole resolved document with the caps injected."""
        if source is None:
            source = _escape(library.host_dir())
        elif not escaped:
            source = _escape(source)
        doc: dict[str, Any] = yamlio.load_fast(self.text) or {}
        services = doc.get("services") or {}
        for name, plan in self.plans.items():
            services[name] = inject.inject_service(services[name], plan, source, name=name, names=self.names)
        return doc

    def override(self) -> dict[str, Any]:
        """The additions alone, as an override file: host-independent, stable order."""
        services = {
            name: inject.additions(self.services[name], self.plans[name], library.OVERRIDE_SOURCE, name=name)
            for name in sorted(self.plans)
        }
        return {"services": services}


def _splice(
    block: str, service: dict[str, Any], plan: inject.Plan, source: str, name: str, names: caplabels.GpuNames
) -> str:
    """One service block with the injection written into its ``environment``, ``labels`` and
    ``volumes``."""
    header, keys = yamlio.service_keys(block)
    new = inject.inject_service(service, plan, source, name=name, names=names)
    added = len(inject.additions(service, plan, source)["volumes"])
    texts = dict(keys)
    for key in _WRITTEN:
        if key == "volumes" and key in texts and "volumes" not in service:
            texts[key] += yamlio.dump_items(new[key][-added:], 6)
        else:
            texts[key] = yamlio.dump({key: new[key]}, indent=4)
    order = [key for key, _ in keys]
    if order == sorted(order):
        order = sorted(texts)
    else:
        order += [key for key in _WRITTEN if key not in order]
    return header + "".join(texts[key] for key in order)


def _partial(block: str) -> str:
    """The part of a service block that decides its cap (see ``_NEEDED``)."""
    header, keys = yamlio.service_keys(block)
    parts = [
        text
        for key, text in keys
        if key in _NEEDED or (key == "volumes" and any(target in text for target in _OUR_TARGETS))
    ]
    return header + "".join(parts)


def _escape(path: str) -> str:
    return path.replace("$", "$$")


def _unescape(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("$$", "$")
    if isinstance(value, dict):
        return {k: _unescape(v) for k, v in value.items()}
    return value


def load(
    options: compose.Options,
    *,
    extra: Sequence[str] = (),
    allow_overcommit: bool = False,
    all_profiles: bool = False,
    running: compose.Resolving | None = None,
    scale: Mapping[str, int] | None = None,
) -> Project:
    """Resolve with Compose, parse what may carry a cap, validate; raises a GpumemError.

    ``running``: a ``docker compose config`` already started by :func:`compose.start_resolve`
    (the CLI starts it before importing this module, so the two overlap).
    """
    running = running or compose.start_resolve(options, extra, all_profiles=all_profiles)
    try:
        _refuse_alias_bombs(options)
    except GpumemError:
        running.cancel()
        raise
    try:
        text = running.result(quiet_failure=all_profiles)
    except ComposeFailed:
        if not all_profiles:
            raise
        # Services of profiles never enabled together may clash (one `container_name` in
        # two profiles): resolve the profiles that are enabled, as Compose will run them.
        text = compose.resolve(options, extra)
        all_profiles = False
    enabled = None
    if all_profiles:
        from_env = compose.dotenv_value(options, "COMPOSE_PROFILES") or ""
        enabled = [*options.profiles, *(p.strip() for p in from_env.split(",") if p.strip())]
    return from_text(
        text,
        label=options.label(),
        allow_overcommit=allow_overcommit,
        enabled=enabled,
        scale=scale,
        where=_where(options),
        interpolated="--no-interpolate" not in extra,
    )


def _where(options: compose.Options) -> Where:
    """A service's key as messages name it: the file it is written in (see :mod:`origins`)."""
    from .origins import Origins

    origins = Origins(options)
    return lambda service, key: origins.named(service, key, options.label())


def load_json(
    options: compose.Options,
    *,
    extra: Sequence[str] = (),
    allow_overcommit: bool = False,
    running: compose.Resolving | None = None,
) -> tuple[dict[str, inject.Plan], str]:
    """For ``config --format json``: the caps, and Compose's own JSON of the project
    (``running``: its ``docker compose config --format json``, already started).

    Compose's JSON has everything that decides a cap but the services' ``x-gpu-memory`` (it
    drops service-level ``x-*`` keys).  Those come from a second Compose run started at the
    same time, with ``--no-interpolate``: on a large project that run takes a third of the
    time (interpolating is most of Compose's work), and a value without ``$`` is the same
    interpolated or not.  Where a value holds a ``$``, or that run lists other services (a
    profile, an ``include`` or ``extends`` path written with a variable), or fails, the YAML
    is resolved in full, as ``config`` resolves it.  With ``--no-interpolate`` given, Compose's
    JSON keeps service-level ``x-*`` keys: one run is all.
    """
    interpolated = "--no-interpolate" not in extra
    running = running or compose.start_resolve(options, extra, fmt="json")
    values = compose.start_resolve(options, [*extra, "--no-interpolate"]) if interpolated else None
    try:
        _refuse_alias_bombs(options)
        text = running.result()
    except BaseException:
        running.cancel()  # a no-op once Compose has been reaped
        if values is not None:
            values.cancel()
        raise
    doc = _read_json(text, options.label())
    services = doc.get("services") or {}
    if values is not None:
        declared = _declared(values, services, options.label())
        if declared is None:
            return load(options, extra=extra, allow_overcommit=allow_overcommit).plans, text
        services = {
            name: {**svc, **declared[name]} for name, svc in services.items() if isinstance(svc, dict)
        }
    default = doc.get(inject.KEY)
    plans = decide(
        services,
        _unescape(default) if interpolated else default,
        label=options.label(),
        allow_overcommit=allow_overcommit,
        where=_where(options),
        interpolated=interpolated,
    )
    return plans, text


def _declared(
    running: compose.Resolving, services: Mapping[str, Any], label: str
) -> dict[str, dict[str, Any]] | None:
    """Per service of ``services``, ``{"x-gpu-memory": value}`` as ``running`` (``config
    --no-interpolate``) prints it, or ``{}`` without one; ``None`` when that may not be the
    resolved value (see :func:`load_json`)."""
    try:
        text = running.result(silent=True)  # its warnings are the user's run's, printed there
    except ComposeFailed:
        return None
    split = yamlio.split_services(text)
    if split is None:
        listed = _read(text, label).get("services") or {}
    else:  # each service's header line and its x-gpu-memory alone
        parts = []
        for block in split.blocks:
            header, keys = yamlio.service_keys(block)
            parts.append(header + "".join(part for key, part in keys if key == inject.KEY))
        listed = _read("".join(parts), label) if parts else {}
    declared = {}
    for name in services:
        if name not in listed:
            return None
        service = listed[name] or {}
        if inject.KEY in service:
            if _holds_dollar(service[inject.KEY]):
                return None
            declared[name] = {inject.KEY: service[inject.KEY]}
        else:
            declared[name] = {}
    return declared


def _holds_dollar(value: Any) -> bool:
    """Whether an uninterpolated value may read otherwise once interpolated (``$$`` too)."""
    if isinstance(value, dict):
        return any(_holds_dollar(item) for item in value.values())
    if isinstance(value, list):
        return any(_holds_dollar(item) for item in value)
    return isinstance(value, str) and "$" in value


def _read_json(text: str, label: str) -> dict[str, Any]:
    """Compose's JSON as a mapping; one clear error for anything else."""
    import json

    try:
        doc = json.loads(text)
    except (ValueError, RecursionError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise GpumemError(
            f"Compose's output is not JSON ({reason[:120]}); is COMPOSE_BIN a Docker Compose?", file=label
        ) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("services", {}), (dict, type(None))):
        raise GpumemError("Compose printed no project; is --compose-bin / COMPOSE_BIN a Docker Compose v2+?")
    return doc


def _refuse_alias_bombs(options: compose.Options) -> None:
    """Refuse a file whose aliases expand past :data:`yamlio.MAX_ALIAS_NODES` ("billion
    laughs"): Compose would take minutes and all the memory there is to resolve it."""
    for path in compose.user_files(options):
        try:
            with open(path, encoding="utf-8", errors="replace") as file:
                text = file.read(64 << 20)
        except OSError:
            continue  # Compose says why
        added = yamlio.alias_nodes(text)
        if added > yamlio.MAX_ALIAS_NODES:
            raise GpumemError(
                f"its anchors and aliases expand to more than {yamlio.MAX_ALIAS_NODES:,} extra nodes "
                f"({added:,} counted); refused before Compose reads it (write the values out, or use "
                "fewer nested aliases)",
                file=path,
            )


def _read(text: str, label: str | None) -> dict[str, Any]:
    """Compose's YAML (or part of it) as a mapping; one clear error for anything else (a
    5,000-digit number, 3,000-deep nesting, a ``--compose-bin`` that is no Compose)."""
    try:
        doc = yamlio.load_fast(text)
    except (ValueError, RecursionError, MemoryError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise GpumemError(f"cannot read the project Compose resolved: {reason[:120]}", file=label) from None
    except Exception as error:  # ruamel.yaml's own errors, imported only when needed
        reason = " ".join(str(error).split())[:120]
        raise GpumemError(
            f"Compose's output is not YAML ({reason}); is COMPOSE_BIN a Docker Compose?"
        ) from None
    if doc is None:
        return {}
    if not isinstance(doc, dict) or not isinstance(doc.get("services", {}), (dict, type(None))):
        raise GpumemError("Compose printed no project; is --compose-bin / COMPOSE_BIN a Docker Compose v2+?")
    return doc


def _note_decimal_units(plans: Mapping[str, inject.Plan], where: Where) -> None:
    """One line on stderr per value written with a unit that reads as decimal elsewhere."""
    import sys

    seen = set()
    for name, plan in plans.items():
        note = decimal_unit_note(plan.limits)
        if note and note not in seen:
            seen.add(note)
            print(f"gpumem-compose: note: {where(name, inject.KEY)}: {note}", file=sys.stderr)


def _note_uninterpolated(
    services: Mapping[str, Any], plans: Mapping[str, inject.Plan], default: Any, label: str | None
) -> None:
    """One line on stderr naming the services whose cap is written with its variables: such a
    value is checked, and counted against the GPU, once it is interpolated."""
    import sys

    from .validate import has_variables

    named = [name for name in plans if has_variables(services[name].get(inject.KEY, default))]
    if named:
        print(
            f"gpumem-compose: note: {f'{label}: ' if label else ''}--no-interpolate: x-gpu-memory of "
            f"{', '.join(repr(n) for n in named)} is written with its variables, for Compose to fill in; "
            "it is checked, and counted against the GPU, once interpolated (`config` without "
            "--no-interpolate, `up`)",
            file=sys.stderr,
        )


def _warn_replaced(
    services: Mapping[str, Any], plans: Mapping[str, inject.Plan], default: Any, where: Where
) -> None:
    """One line on stderr per service whose own environment sets a variable of the cap to
    another value: the declared cap wins (as ``--gpu-memory`` wins over ``-e`` in gpumem-docker)."""
    import sys

    from .errors import _show

    for name, plan in plans.items():
        service = services[name]
        changed = inject.conflicts(inject.replaced(service.get("environment") or {}, plan))
        if changed:
            declared = _show(service.get(inject.KEY, default))
            print(
                f"gpumem-compose: warning: {where(name, 'environment')}: {inject.KEY} {declared} wins over "
                f"its environment's {changed}",
                file=sys.stderr,
            )


def from_text(
    text: str,
    *,
    label: str | None = None,
    allow_overcommit: bool = False,
    enabled: Sequence[str] | None = None,
    scale: Mapping[str, int] | None = None,
    where: Where | None = None,
    interpolated: bool = True,
) -> Project:
    """The same as :func:`load` from ``docker compose config`` output already in hand.

    ``where``: a key of a service as messages name it, ``FILE: service 'NAME'`` (default: ``label``).

    ``interpolated``: ``False`` for ``config --no-interpolate``, whose output keeps ``${VAR}``:
    a value with a variable goes into the environment and labels as written, for Compose to
    fill in as it fills in ``x-gpu-memory`` (see :func:`validate.parse_value`).

    ``scale``: ``up --scale SERVICE=N``, which wins over the files' replicas.

    ``enabled``: not ``None`` when the text holds every profile's services (``--profile '*'``):
    the profiles the user enabled; the overcommit check then counts together only services
    that can run together (see :func:`inject.share_groups`).
    """
    split = yamlio.split_services(text)
    default_block = yamlio.top_level_block(split.tail if split else text, inject.KEY)
    if split is not None and default_block is None:
        default_block = yamlio.top_level_block(split.head, inject.KEY)
    default = None
    if default_block is not None:
        default = _read(default_block, label).get(inject.KEY)
        default = _unescape(default) if interpolated else default
    blocks: dict[str, int] = {}
    if split is None:
        services = _read(text, label).get("services") or {}
    else:
        wanted = [
            i
            for i, block in enumerate(split.blocks)
            if inject.KEY in block or (default is not None and any(h in block for h in _GPU_HINTS))
        ]
        services = {}
        if wanted:
            services = _read("".join(_partial(split.blocks[i]) for i in wanted), label)
            for i, name in zip(wanted, services):
                blocks[name] = i
    plans = decide(
        services,
        default,
        label=label,
        allow_overcommit=allow_overcommit,
        enabled=enabled,
        scale=scale,
        where=where,
        interpolated=interpolated,
    )
    return Project(text, services, plans, split, blocks)


def decide(
    services: Mapping[str, Any],
    default: Any,
    *,
    label: str | None = None,
    allow_overcommit: bool = False,
    enabled: Sequence[str] | None = None,
    scale: Mapping[str, int] | None = None,
    where: Where | None = None,
    interpolated: bool = True,
) -> dict[str, inject.Plan]:
    """The caps of resolved ``services`` (as Compose printed them; the keys of ``_NEEDED`` are
    enough) under the top-level ``default``, checked, with their notes and warnings printed;
    the arguments are :func:`from_text`'s."""
    checked = {
        name: ({**svc, inject.KEY: _unescape(svc[inject.KEY])} if inject.KEY in svc and interpolated else svc)
        for name, svc in services.items()
        if isinstance(svc, dict)
    }
    plans = inject.plan(checked, default, file=label, interpolated=interpolated)
    if not interpolated:
        _note_uninterpolated(checked, plans, default, label)
    where = where or (lambda name, key: f"{label}: service {name!r}")
    _note_decimal_units(plans, where)
    _warn_replaced(checked, plans, default, where)
    for name, count in (scale or {}).items():
        if name in plans:
            plans[name] = plans[name].with_replicas(count)
    if not allow_overcommit:
        groups = [inject.all_shares(plans)] if enabled is None else inject.share_groups(plans, enabled)
        for shares in groups:
            check_overcommit(shares, file=label)
    return plans
