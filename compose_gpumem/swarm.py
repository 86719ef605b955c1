"""A resolved Compose project as a stack file that ``docker stack deploy`` takes.

Compose resolves the files as for every other command; this module turns the result into the
Compose file format Swarm reads, key by key.  Every key Swarm would reject or silently ignore
is either translated (and a note says how) or refused with an error naming the key and the
service; nothing is dropped unsaid.  Measured on engine and CLI 20.10 and CLI 28 (DESIGN.md).

The cap itself: a GPU request becomes ``deploy.resources.reservations.generic_resources`` of
kind ``NVIDIA-GPU`` (what nodes advertise with ``--node-generic-resource``); ``x-gpu-memory``
goes into the environment as written, so a fraction or percent is resolved by the library
inside the task against the GPU that task received.  The library travels as a Swarm config
whose name carries a hash of its bytes (a config is immutable), mounted read-only with mode
0555 at the path ``LD_PRELOAD`` names: no host path on any node.  Each task keeps its ledger
on a tmpfs of its own at ``/run/gpumem`` (``GPUMEM_STATE_DIR``), as a Compose container does,
so it is per task and writable under ``read_only: true``.

Everything here is a pure function of the resolved document; nothing runs Docker.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

from . import inject
from .errors import GpumemError, Overcommit

GPU_KIND = "NVIDIA-GPU"
#: Written when no file names a ``version:``; CLI 20.10 refuses a file without one.
DEFAULT_VERSION = "3.9"
LIBRARY_CONFIG = "gpumem-lib"
LIBRARY_MODE = 0o555
#: Swarm's config size limit (measured: 1,023,999 bytes are taken).
CONFIG_MAX_BYTES = 1_023_999

#: Service keys of the version 3 format that Swarm applies (``x-*`` pass too).
SWARM_KEYS = frozenset(
    """cap_add cap_drop command configs credential_spec depends_on deploy dns dns_search
    entrypoint env_file environment extra_hosts healthcheck hostname image init isolation labels
    logging networks ports read_only secrets stop_grace_period stop_signal stdin_open sysctls
    tty ulimits user volumes working_dir""".split()
)
#: Keys Swarm rejects or ignores, with what to do instead.
REFUSED = {
    "cgroup_parent": "Swarm ignores it; remove it",
    "container_name": "Swarm names task containers itself; remove it",
    "devices": "Swarm ignores devices; ask for GPUs with `gpus: [{count: N}]` and remove it",
    "domainname": "Swarm ignores it; remove it",
    "external_links": "Swarm ignores it; services reach each other by name on a shared network",
    "links": "Swarm ignores it; services reach each other by name on a shared network",
    "ipc": "Swarm ignores it; each task has its own IPC namespace and its own ledger",
    "mac_address": "Swarm ignores it; remove it",
    "pid": "Swarm ignores it; remove it",
    "privileged": "Swarm ignores it; remove it",
    "security_opt": "Swarm ignores it; remove it",
    "shm_size": "Swarm ignores it; mount a tmpfs volume at /dev/shm instead",
    "userns_mode": "Swarm ignores it; remove it",
    "runtime": (
        "Swarm has no per-service runtime; make nvidia the default runtime of the GPU nodes "
        "(docs/swarm.md) and ask for GPUs with `gpus: [{count: N}]`"
    ),
}
#: Service keys Compose writes that move under ``deploy.resources`` (path, how to convert).
RESOURCE_KEYS = {
    "mem_limit": ("limits", "memory"),
    "mem_reservation": ("reservations", "memory"),
    "cpus": ("limits", "cpus"),
    "pids_limit": ("limits", "pids"),
}
RESTART_POLICY = {"no": "none", "always": "any", "unless-stopped": "any", "on-failure": "on-failure"}
TOP_KEYS = frozenset({"version", "services", "networks", "volumes", "secrets", "configs"})
HOST_NETWORK = "hostnet"
_PIN = re.compile(r"^\s*node\.(hostname|id)\s*==\s*(\S+)\s*$")


class SwarmUnsupported(GpumemError):
    """A key ``docker stack deploy`` would reject or ignore, with no faithful translation."""


@dataclass
class Stack:
    """The stack file, the notes on what was translated, and the caps per service."""

    document: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    plans: dict[str, inject.Plan] = field(default_factory=dict)
    #: GPUs per task of each service that asks for GPUs.
    gpus: dict[str, int] = field(default_factory=dict)


def library_config_name(data: bytes) -> str:
    """The config's name: a new library is a new config (configs are immutable)."""
    return f"{LIBRARY_CONFIG}-{hashlib.sha256(data).hexdigest()[:16]}"


def translate(
    doc: dict[str, Any],
    *,
    library: tuple[str, bytes],
    version: str | None = None,
    file: str | None = None,
) -> Stack:
    """The stack file for a document as ``docker compose config`` prints it.

    ``library``: the path and bytes of ``libgpumem.so`` on this machine (the config's source);
    ``version``: the ``version:`` of the user's file, copied exactly.
    """
    for key in doc:
        if key not in TOP_KEYS and key != "name" and not str(key).startswith("x-"):
            raise SwarmUnsupported(f"top-level key {key!r} is not part of the Swarm stack format", file=file)
    stack = Stack({"version": str(version or DEFAULT_VERSION)})
    default = doc.get(inject.KEY)
    services: dict[str, Any] = {}
    uses_host_network = False
    for name, service in (doc.get("services") or {}).items():
        new, count = _service(name, dict(service or {}), stack.notes, file)
        uses_host_network = uses_host_network or HOST_NETWORK in (new.get("networks") or {})
        plan = _plan(name, service or {}, count, default, file)
        if count:
            stack.gpus[name] = count
        if plan is not None:
            stack.plans[name] = plan
            _add_cap(new, plan)
        services[name] = new
    stack.document["services"] = services
    for key in ("networks", "volumes", "secrets", "configs"):
        if doc.get(key):
            stack.document[key] = dict(doc[key])
    if uses_host_network:
        networks = stack.document.setdefault("networks", {})
        networks.setdefault(HOST_NETWORK, {"external": True, "name": "host"})
    if stack.plans:
        path, data = library
        if len(data) > CONFIG_MAX_BYTES:
            raise GpumemError(f"is {len(data)} bytes, more than a Swarm config holds", file=path)
        configs = stack.document.setdefault("configs", {})
        configs[LIBRARY_CONFIG] = {"name": library_config_name(data), "file": path}
    return stack


def _plan(
    name: str, service: dict[str, Any], count: int, default: Any, file: str | None
) -> inject.Plan | None:
    """The cap of one service, checked as for Compose against its GPU count."""
    if count == 0:
        if inject.KEY in service:
            raise GpumemError(inject.HOW_TO_REQUEST, file=file, service=name, value=service[inject.KEY])
        return None
    asked = {"gpus": [{"count": count}]}
    if inject.KEY in service:
        asked[inject.KEY] = service[inject.KEY]
    return inject.plan({name: asked}, default, file=file).get(name)


def _add_cap(service: dict[str, Any], plan: inject.Plan) -> None:
    """The environment the library reads, the task's own tmpfs for its ledger, and the library
    itself as a config."""
    env = dict(service.get("environment") or {})
    env.update(inject.additions(service, plan, "")["environment"])
    service["environment"] = dict(sorted(env.items()))
    volumes = [v for v in service.get("volumes") or [] if _target(v) != inject.LEDGER_DIR]
    service["volumes"] = [*volumes, inject.ledger_mount()]
    configs = [c for c in service.get("configs") or [] if not _targets_library(c)]
    configs.append(
        {"source": LIBRARY_CONFIG, "target": inject.LIBRARY, "uid": "0", "gid": "0", "mode": LIBRARY_MODE}
    )
    service["configs"] = configs


def _targets_library(item: Any) -> bool:
    return _target(item).startswith(inject.MOUNT_DIR)


def _target(item: Any) -> str:
    """Where a mount (long form, or ``SOURCE:TARGET[:MODE]``) lands in the container."""
    if isinstance(item, dict):
        return str(item.get("target", ""))
    parts = str(item).split(":")
    return parts[1] if len(parts) > 1 else parts[0]


def _service(
    name: str, service: dict[str, Any], notes: list[str], file: str | None
) -> tuple[dict[str, Any], int]:
    """One service in the stack format, and how many GPUs each of its tasks asks for."""

    def refuse(key: str, message: str, value: Any = None) -> SwarmUnsupported:
        return SwarmUnsupported(message, file=file, service=name, value=value, key=key)

    count = _gpu_count(name, service, refuse)
    new: dict[str, Any] = {}
    tmpfs: list[dict[str, Any]] = []  # from the tmpfs key, after the service's own volumes
    deploy = _deploy(service.get("deploy"), refuse)
    for key, value in service.items():
        key = str(key)
        if key in ("gpus", "deploy", inject.KEY):
            continue
        if key in REFUSED:
            raise refuse(key, REFUSED[key], value)
        if key in RESOURCE_KEYS:
            kind, field_name = RESOURCE_KEYS[key]
            deploy.setdefault("resources", {}).setdefault(kind, {})[field_name] = _resource(key, value)
            notes.append(f"service {name!r}: {key} -> deploy.resources.{kind}.{field_name}")
        elif key == "restart":
            _restart(name, value, deploy, notes, refuse)
        elif key == "profiles":
            notes.append(f"service {name!r}: profiles were applied when Compose resolved; key left out")
        elif key == "build":
            if "image" not in service:
                raise refuse(
                    key, "Swarm does not build images; build and push it, then name it in image:", value
                )
            notes.append(f"service {name!r}: build left out (Swarm does not build); image {service['image']}")
        elif key == "tmpfs":
            tmpfs = _tmpfs_volumes(value, refuse)
            notes.append(f"service {name!r}: tmpfs (which Swarm ignores) -> volumes of type tmpfs")
        elif key == "expose":
            notes.append(f"service {name!r}: expose left out (services on one network reach every port)")
        elif key == "network_mode":
            if value != "host":
                raise refuse(key, "Swarm ignores it; use networks: (only `host` is translated)", value)
            new["networks"] = {HOST_NETWORK: None}
            notes.append(
                f"service {name!r}: network_mode: host -> networks: [{HOST_NETWORK}] (the host network)"
            )
        elif key.startswith("x-"):
            new[key] = value
        elif key in SWARM_KEYS:
            new[key] = _convert(key, value)
        else:
            raise refuse(key, "is not part of the Swarm stack format; remove it", value)
    if tmpfs:
        new["volumes"] = [*(new.get("volumes") or []), *tmpfs]
    if count:
        resources = deploy.setdefault("resources", {})
        reservations = resources.setdefault("reservations", {})
        generic = [g for g in reservations.get("generic_resources") or [] if _generic_kind(g) != GPU_KIND]
        generic.append({"discrete_resource_spec": {"kind": GPU_KIND, "value": count}})
        reservations["generic_resources"] = generic
    if deploy:
        new["deploy"] = deploy
    return new, count


def _gpu_count(name: str, service: dict[str, Any], refuse: Any) -> int:
    """GPUs per task: from ``gpus:``, a gpu device reservation, CDI devices or a generic resource."""
    if service.get("runtime") is not None:
        raise refuse("runtime", REFUSED["runtime"], service["runtime"])
    generic = 0
    reservations = (((service.get("deploy") or {}).get("resources") or {}).get("reservations")) or {}
    for item in reservations.get("generic_resources") or []:
        if _generic_kind(item) == GPU_KIND:
            generic += int((item.get("discrete_resource_spec") or {}).get("value") or 1)
    for device in reservations.get("devices") or []:
        if "gpu" not in [str(c) for c in inject._flatten(device.get("capabilities") or [])]:
            raise refuse(
                "deploy.resources.reservations.devices", "Swarm takes no device reservations", device
            )
    if service.get("devices"):  # CDI GPUs (nvidia.com/gpu=N) name ids too: Swarm ignores devices
        raise refuse("devices", REFUSED["devices"], service["devices"])
    request = inject.gpu_request({k: v for k, v in service.items() if k != "runtime"})
    if request is None:
        return generic
    key = "gpus" if "gpus" in service else "deploy.resources.reservations.devices"
    if request.ids:
        raise refuse(
            key,
            "Swarm hands each task GPUs of its own and cannot pin device ids; ask for a count "
            "(`gpus: [{count: 1}]`) and pin the node with placement constraints",
            ",".join(request.ids),
        )
    if request.count < 0:
        raise refuse(key, "Swarm needs a count of GPUs per task; ask for `count: N` instead of all", "all")
    return generic + request.count


def _tmpfs_volumes(value: Any, refuse: Any) -> list[dict[str, Any]]:
    """``tmpfs: PATH`` or ``[PATH, ...]`` as volumes of type tmpfs, which Swarm mounts (it
    ignores the ``tmpfs`` key without a word).  Mount options have no such translation."""
    out = []
    for item in [value] if isinstance(value, str) else list(value or []):
        path, _, options = str(item).partition(":")
        if options:
            raise refuse(
                "tmpfs",
                "Swarm ignores tmpfs: and its options cannot be carried over; write it as a volume "
                "`{type: tmpfs, target: PATH, tmpfs: {size: BYTES}}`",
                item,
            )
        out.append({"type": "tmpfs", "target": path})
    return out


def _generic_kind(item: Any) -> str | None:
    if not isinstance(item, dict):
        return None
    spec = item.get("discrete_resource_spec") or {}
    return str(spec.get("kind")) if spec.get("kind") is not None else None


def _deploy(value: Any, refuse: Any) -> dict[str, Any]:
    """``deploy`` without the GPU device reservations and ``x-*`` keys (Swarm rejects both)."""
    deploy = {k: v for k, v in (value or {}).items()}
    for key in deploy:
        if str(key).startswith("x-"):
            raise refuse(
                f"deploy.{key}", "Swarm rejects x-* keys inside deploy; move it to the service", deploy[key]
            )
    resources = dict(deploy.get("resources") or {})
    reservations = dict(resources.get("reservations") or {})
    reservations.pop("devices", None)
    for kind, spec in (("reservations", reservations), ("limits", dict(resources.get("limits") or {}))):
        if spec:
            resources[kind] = spec
        else:
            resources.pop(kind, None)
    if resources:
        deploy["resources"] = resources
    else:
        deploy.pop("resources", None)
    return deploy


def _resource(key: str, value: Any) -> Any:
    if key == "cpus":
        return str(value)
    if key == "pids_limit":
        return int(value)
    return str(value)


def _restart(name: str, value: Any, deploy: dict[str, Any], notes: list[str], refuse: Any) -> None:
    text = str(value)
    condition, _, attempts = text.partition(":")
    if condition not in RESTART_POLICY:
        raise refuse("restart", "is not a restart policy Swarm can express", value)
    if "restart_policy" in deploy:
        notes.append(f"service {name!r}: restart left out; deploy.restart_policy is set")
        return
    policy: dict[str, Any] = {"condition": RESTART_POLICY[condition]}
    if attempts:
        policy["max_attempts"] = int(attempts)
    deploy["restart_policy"] = policy
    notes.append(
        f"service {name!r}: restart: {text} -> deploy.restart_policy.condition: {policy['condition']}"
    )


def _convert(key: str, value: Any) -> Any:
    """What Compose v2+ prints in a shape the version 3 format does not take."""
    if key == "depends_on" and isinstance(value, dict):
        return list(value)  # Swarm starts services in no order; the names stay for readers
    if key == "ports":
        return [_port(p) for p in value]
    if key == "volumes":
        return [_volume(v) for v in value]
    if key == "networks" and isinstance(value, dict):
        return {n: ({k: v for k, v in (opts or {}).items()} or None) for n, opts in value.items()}
    return value


def _port(port: Any) -> Any:
    if not isinstance(port, dict):
        return port
    out = dict(port)
    if "published" in out:
        out["published"] = int(str(out["published"]).split("-")[0])
    out.pop("app_protocol", None)
    out.pop("name", None)
    out.pop("host_ip", None)
    return out


def _volume(volume: Any) -> Any:
    if not isinstance(volume, dict):
        return volume
    out = dict(volume)
    for key in ("bind", "volume", "tmpfs"):
        options = {k: v for k, v in (out.get(key) or {}).items() if k not in ("create_host_path", "selinux")}
        if options:
            out[key] = options
        else:
            out.pop(key, None)
    return out


# ------------------------------------------------------------------------------- overcommit


def pinned_node(service: dict[str, Any]) -> tuple[str, str] | None:
    """``("hostname"|"id", value)`` when placement constraints pin the service to one node."""
    constraints = (((service.get("deploy") or {}).get("placement") or {}).get("constraints")) or []
    for constraint in constraints:
        match = _PIN.match(str(constraint))
        if match:
            return match.group(1), match.group(2)
    return None


@dataclass(frozen=True)
class Node:
    """A Swarm node as ``docker node inspect`` describes it: its names and its GPUs."""

    id: str
    hostname: str
    gpus: tuple[str, ...]


def check_nodes(stack: Stack, nodes: list[Node], *, file: str | None = None) -> list[str]:
    """Raise :class:`Overcommit` where the caps of the tasks pinned to one node add up to more
    than its GPUs hold, or the caps of the whole stack to more than the swarm's GPUs of the kind;
    notes for the services Swarm places freely and for caps given as sizes."""
    notes: list[str] = []
    per_node: dict[str, list[tuple[str, float]]] = {}
    everywhere: list[tuple[str, float]] = []
    for name, count in sorted(stack.gpus.items()):
        service = stack.document["services"][name]
        plan = stack.plans.get(name)
        per_task = _task_demand(plan, count) if plan is not None else float(count)
        if per_task is None:
            notes.append(f"service {name!r}: a cap given as a size is not checked against the nodes' GPUs")
            continue
        everywhere.append((name, per_task * _replicas(service)))
        pin = pinned_node(service)
        if pin is None:
            if plan is None:
                continue
            notes.append(
                f"service {name!r}: Swarm places its tasks on any node with a free {GPU_KIND}, and each "
                "task holds its GPUs alone: its caps are checked against the swarm's GPUs of that kind only"
            )
            continue
        node = next((n for n in nodes if (n.hostname if pin[0] == "hostname" else n.id) == pin[1]), None)
        if node is None:
            notes.append(f"service {name!r}: pinned to node {pin[1]}, which is not in the swarm")
            continue
        per_node.setdefault(node.hostname, []).append((name, per_task * _replicas(service)))
    for hostname, items in sorted(per_node.items()):
        gpus = len(set(next(n for n in nodes if n.hostname == hostname).gpus))
        _check_sum(items, gpus, f"tasks pinned to node {hostname}", "it has", file)
    all_gpus = sum(len(set(n.gpus)) for n in nodes)
    _check_sum(everywhere, all_gpus, "the stack's tasks", f"the swarm's nodes advertise as {GPU_KIND}", file)
    return notes


def _task_demand(plan: inject.Plan, count: int) -> float | None:
    """GPUs' worth of memory one task is promised; ``None`` when a cap is a size."""
    total = 0.0
    for index in range(count):
        limit = plan.limits.get(index, plan.limits.get(None))
        if limit is None:
            total += 1.0  # a device without a cap: all of it
        elif limit.fraction is None:
            return None
        else:
            total += limit.fraction
    return total


def _check_sum(items: list[tuple[str, float]], gpus: int, who: str, has: str, file: str | None) -> None:
    total = sum(amount for _, amount in items)
    if total > gpus + 1e-9:
        names = ", ".join(f"{name}={amount:.2f}" for name, amount in items)
        raise Overcommit(
            f"{who} are promised {total:.2f} GPUs of memory and {has} {gpus} ({names}); "
            "lower the shares or pass --allow-overcommit",
            file=file,
        )


def _replicas(service: dict[str, Any]) -> int:
    deploy = service.get("deploy") or {}
    if deploy.get("mode") == "global":
        return 1
    return int(deploy.get("replicas", 1))


def parse_nodes(inspected: list[dict[str, Any]]) -> list[Node]:
    """Nodes from the JSON of ``docker node inspect``: each named or counted NVIDIA-GPU."""
    nodes = []
    for item in inspected:
        description = item.get("Description") or {}
        gpus: list[str] = []
        for resource in (description.get("Resources") or {}).get("GenericResources") or []:
            named = resource.get("NamedResourceSpec") or {}
            discrete = resource.get("DiscreteResourceSpec") or {}
            if named.get("Kind") == GPU_KIND:
                gpus.append(str(named.get("Value")))
            elif discrete.get("Kind") == GPU_KIND:
                gpus += [f"#{i}" for i in range(int(discrete.get("Value") or 0))]
        nodes.append(Node(str(item.get("ID")), str(description.get("Hostname")), tuple(gpus)))
    return nodes
