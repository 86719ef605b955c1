"""Pure functions from resolved Compose services to what the cap needs.

Everything here takes the services as ``docker compose config`` resolves them (map-form
``environment``, long-form ``volumes``, ``gpus:`` and device reservations normalised) and
returns new dictionaries; nothing reads files or runs Docker, so every rule is unit-testable.

Per limited service: a read-only bind mount of the library file at ``/opt/gpumem/libgpumem.so``,
``LD_PRELOAD`` with ``/opt/gpumem/libgpumem.so`` put in front of any value already there,
``GPUMEM_LIMIT`` (or ``GPUMEM_LIMIT_<n>`` per device index) with the value as written,
``GPUMEM_STATE_DIR=/run/gpumem`` on a tmpfs mount of its own (see :data:`LEDGER_DIR`), and the
labels of :mod:`compose_gpumem.caplabels`.  Nothing else changes, and injecting twice gives
the same result as injecting once.
"""

from __future__ import annotations

from . import caplabels
from .errors import InvalidValue, NoGpuRequest
from .records import Record
from .validate import Share, parse_value

TYPE_CHECKING = False  # `typing` stays off the path of `config` (see options.py)
if TYPE_CHECKING:
    from typing import Any, Mapping, Sequence

    from .validate import Limit

KEY = "x-gpu-memory"
MOUNT_DIR = "/opt/gpumem"
LIBRARY = f"{MOUNT_DIR}/libgpumem.so"
#: The ledger's directory in every capped container: a tmpfs mounted there for that container
#: alone.  So every container is its own capped unit whatever shares its ``/dev/shm`` (replicas
#: and ``scale`` of one service, ``run`` one-offs, other projects, ``ipc: host`` or
#: ``service:X``), where a directory named for the service would be shared by all of them; and
#: the host reads it through ``/proc/PID/root`` (``top``), with no shell in the image.
LEDGER_DIR = "/run/gpumem"
STATE_DIR = LEDGER_DIR
CDI_GPU = "nvidia.com/gpu="
HOW_TO_REQUEST = (
    "requests no GPU; add `gpus: all` (or a device reservation with `capabilities: [gpu]`, "
    "or `runtime: nvidia`) to the service, or remove x-gpu-memory"
)


class GpuRequest(Record):
    """The GPUs a service asks for: host ids in container order, or a count (``-1``: all)."""

    FIELDS = ("ids", "count")
    __slots__ = FIELDS

    def __init__(self, ids: tuple[str, ...] = (), count: int = -1) -> None:
        self.ids = ids
        self.count = count

    def host_gpu(self, index: int) -> str | None:
        """The host GPU behind container device ``index``; ``None`` when there is none."""
        if self.ids:
            return self.ids[index] if index < len(self.ids) else None
        if self.count >= 0 and index >= self.count:
            return None
        return str(index)

    def gpus(self) -> list[str]:
        """Every host GPU the service gets; ``["*"]`` for all of them."""
        if self.ids:
            return list(self.ids)
        if self.count < 0:
            return ["*"]
        return [str(i) for i in range(self.count)]


def _count(value: Any) -> int:
    if value in (None, "all", -1):
        return -1
    try:
        return int(value)
    except (TypeError, ValueError):
        return -1


def _merge(requests: list[GpuRequest]) -> GpuRequest:
    if len(requests) == 1:
        return requests[0]
    ids: list[str] = []
    for request in requests:
        if not request.ids:
            return GpuRequest()
        ids.extend(request.ids)
    return GpuRequest(tuple(ids))


def gpu_request(service: dict[str, Any]) -> GpuRequest | None:
    """The service's GPU request (``gpus:``, a device reservation with the gpu capability, a CDI
    device ``nvidia.com/gpu=...`` or ``runtime: nvidia``), or ``None`` when it asks for no GPU."""
    requests: list[GpuRequest] = []
    gpus = service.get("gpus")
    if gpus == "all":
        requests.append(GpuRequest())
    elif isinstance(gpus, list):
        for item in gpus:
            if isinstance(item, dict):
                ids = tuple(str(i) for i in item.get("device_ids") or ())
                requests.append(GpuRequest(ids, _count(item.get("count")) if not ids else len(ids)))
    deploy = service.get("deploy") or {}
    devices = (((deploy.get("resources") or {}).get("reservations") or {}).get("devices")) or []
    for device in devices:
        capabilities = [str(c) for c in _flatten(device.get("capabilities") or [])]
        # Docker hands a device request to the nvidia driver when it names that driver, whatever
        # the capabilities (`[compute, utility]` alone gets the GPU), or when it asks for `gpu`.
        if "gpu" in capabilities or device.get("driver") == "nvidia":
            ids = tuple(str(i) for i in device.get("device_ids") or ())
            requests.append(GpuRequest(ids, len(ids) if ids else _count(device.get("count"))))
    cdi = []
    for device in service.get("devices") or []:
        source = str(device.get("source") if isinstance(device, dict) else device).split(":")[0]
        if source.startswith(CDI_GPU):
            cdi.append(source[len(CDI_GPU) :])
    if cdi:
        requests.append(GpuRequest() if "all" in cdi else GpuRequest(tuple(cdi)))
    if service.get("runtime") == "nvidia":
        visible = str((service.get("environment") or {}).get("NVIDIA_VISIBLE_DEVICES") or "all")
        if visible not in ("none", "void", ""):
            ids = () if visible == "all" else tuple(v.strip() for v in visible.split(","))
            requests.append(GpuRequest(ids))
    return _merge(requests) if requests else None


def _flatten(items: Any) -> list[Any]:
    out: list[Any] = []
    for item in items if isinstance(items, list) else [items]:
        out.extend(_flatten(item) if isinstance(item, list) else [item])
    return out


class Plan(Record):
    """What one service gets: caps per device index (``None``: every device) and its GPUs;
    ``replicas``: containers of the service (``deploy.replicas``, ``scale``, ``up --scale``),
    each capped."""

    FIELDS = ("limits", "request", "profiles", "state_dir", "replicas")
    __slots__ = FIELDS

    def __init__(
        self,
        limits: dict[int | None, Limit],
        request: GpuRequest,
        profiles: tuple[str, ...] = (),
        state_dir: str = STATE_DIR,
        replicas: int = 1,
    ) -> None:
        self.limits = limits
        self.request = request
        self.profiles = profiles
        self.state_dir = state_dir
        self.replicas = replicas

    def with_replicas(self, replicas: int) -> Plan:
        """The same plan for ``replicas`` containers (``up --scale``)."""
        return Plan(self.limits, self.request, self.profiles, self.state_dir, replicas)

    def shares(self, service: str) -> list[Share]:
        """One container's caps as shares of host GPUs."""
        if None in self.limits:
            return [Share(service, gpu, self.limits[None]) for gpu in self.request.gpus()]
        out = []
        for index, limit in self.limits.items():
            gpu = self.request.host_gpu(index if index is not None else 0)
            if gpu is not None:
                out.append(Share(service, gpu, limit))
        return out

    def container_shares(self, service: str) -> list[Share]:
        """Every container's shares, for the overcommit check: replicas are named
        ``service-1``, ``service-2``... as Compose numbers their containers."""
        if self.replicas == 1:
            return self.shares(service)
        return [s for n in range(1, self.replicas + 1) for s in self.shares(f"{service}-{n}")]

    def labels(self, service: str, names: caplabels.GpuNames | None = None) -> dict[str, str]:
        """The labels a container of this service carries (:mod:`compose_gpumem.caplabels`);
        GPUs by UUID where ``names`` knows them, else as the file names them."""
        shares = [(s.gpu, s.limit) for s in self.shares(service)]
        promised = caplabels.promise(shares, names or caplabels.GpuNames())
        return caplabels.labels(self.limits, promised, state_dir=self.state_dir)


def plan(
    services: dict[str, Any], default: Any = None, *, file: str | None = None, interpolated: bool = True
) -> dict[str, Plan]:
    """Which services get a cap and which; raises on invalid values and missing GPU requests.

    ``default`` is the top-level ``x-gpu-memory``: it applies to every service that requests a
    GPU and has no value of its own.  ``interpolated=False``: values may hold ``${VAR}``
    (:func:`compose_gpumem.validate.parse_value`).
    """
    plans: dict[str, Plan] = {}
    defer = not interpolated
    default_limits = parse_value(default, file=file, defer=defer) if default is not None else None
    for name, service in services.items():
        if not isinstance(service, dict):
            continue
        request = gpu_request(service)
        if KEY in service:
            if request is None:
                raise NoGpuRequest(HOW_TO_REQUEST, file=file, service=name, value=service[KEY])
            limits = parse_value(service[KEY], file=file, service=name, defer=defer)
        elif request is not None and default_limits is not None:
            limits = default_limits
        else:
            continue
        for index in limits:
            if index is not None and request.host_gpu(index) is None:
                raise InvalidValue(
                    f"names device {index}, but the service requests only "
                    f"{len(request.ids) or request.count} GPU(s); device indexes count from 0 "
                    "inside the container",
                    file=file,
                    service=name,
                    value=service.get(KEY, default),
                )
        profiles = tuple(str(p) for p in service.get("profiles") or ())
        plans[name] = Plan(limits, request, profiles, replicas=replicas(service))
    return plans


def replicas(service: dict[str, Any]) -> int:
    """How many containers the service runs: ``scale``, else ``deploy.replicas``, else 1."""
    for value in (service.get("scale"), (service.get("deploy") or {}).get("replicas")):
        if value is not None:
            try:
                return max(int(value), 0)
            except (TypeError, ValueError):
                return 1  # Compose itself refuses it
    return 1


def all_shares(plans: dict[str, Plan]) -> list[Share]:
    """Every container's shares, for :func:`compose_gpumem.validate.check_overcommit`."""
    return [share for name, p in plans.items() for share in p.container_shares(name)]


def share_groups(plans: dict[str, Plan], enabled: Sequence[str] = ()) -> list[list[Share]]:
    """The shares of services that can run together: the services without a profile plus
    those of one profile, for each profile, and those of all ``enabled`` profiles at once.
    Services of two profiles that are never enabled together are not counted together."""
    groups = []
    for together in [*({profile} for profile in _profiles(plans)), set(enabled)]:
        members = {name: p for name, p in plans.items() if not p.profiles or together & set(p.profiles)}
        groups.append(all_shares(members))
    return groups


def _profiles(plans: dict[str, Plan]) -> list[str]:
    return sorted({profile for p in plans.values() for profile in p.profiles})


def preload(existing: Any) -> str:
    """``LD_PRELOAD`` with our library first; an existing value is kept, never replaced."""
    if existing is None or str(existing).strip() == "":
        return LIBRARY
    text = str(existing)
    if LIBRARY in text.replace(":", " ").split():
        return text
    return f"{LIBRARY} {text}"


def ledger_mount() -> dict[str, Any]:
    """The container's own tmpfs for its ledger (mode 1777, Docker's default for a tmpfs: any
    user of the container can write its ledger there)."""
    return {"type": "tmpfs", "target": LEDGER_DIR}


def mount(source: str) -> dict[str, Any]:
    """The read-only bind mount of the library file from the directory ``source`` (long form,
    as Compose prints it).  The file, not the directory: a directory without the library would
    mount fine and leave the container uncapped; a missing file stops the container instead."""
    return {
        "type": "bind",
        "source": f"{source}/{LIBRARY.rsplit('/', 1)[1]}",
        "target": LIBRARY,
        "read_only": True,
        "bind": {"create_host_path": False},
    }


def cap_environment(p: Plan) -> dict[str, str]:
    """The variables a declared cap sets: ``GPUMEM_STATE_DIR`` and ``GPUMEM_LIMIT[_<N>]``."""
    env = {"GPUMEM_STATE_DIR": p.state_dir}
    for index, limit in sorted(p.limits.items(), key=lambda item: -1 if item[0] is None else item[0]):
        env["GPUMEM_LIMIT" if index is None else f"GPUMEM_LIMIT_{index}"] = limit.text
    return env


def _device_limit(variable: str) -> bool:
    """``GPUMEM_LIMIT_[0-9]+``."""
    index = variable.removeprefix("GPUMEM_LIMIT_")
    return index != variable and index.isascii() and index.isdigit()


def replaced(own: Mapping[str, Any], p: Plan) -> dict[str, tuple[str, str]]:
    """The variables of ``own`` (a service's environment, ``-e``) that the declared cap sets
    too, each with its value and the declared one, which wins (one rule for both tools).  A
    ``GPUMEM_LIMIT_<N>`` set by hand for a device the declared cap covers through
    ``GPUMEM_LIMIT`` gets that cap (the library reads ``GPUMEM_LIMIT_<N>`` first); one for a
    device the declared cap leaves alone is no conflict and stays."""
    ours = cap_environment(p)
    out = {}
    for variable, value in own.items():
        new = ours.get(str(variable))
        if new is None and None in p.limits and _device_limit(str(variable)):
            new = p.limits[None].text
        if new is not None:
            out[str(variable)] = ("" if value is None else str(value), new)
    return out


def conflicts(taken: Mapping[str, tuple[str, str]]) -> str | None:
    """``GPUMEM_LIMIT=0.9 (now 0.3), ...`` for the hand-set variables (see :func:`replaced`)
    whose value the declared cap changes; ``None`` when there are none (injecting twice changes
    nothing)."""
    changed = [f"{name}={old} (now {new})" for name, (old, new) in taken.items() if old != new]
    return ", ".join(changed) or None


def additions(
    service: dict[str, Any], p: Plan, source: str, *, name: str = "", names: caplabels.GpuNames | None = None
) -> dict[str, Any]:
    """Only what the cap adds to one service: its environment entries, the two mounts and the
    labels (GPUs by UUID where ``names`` knows them)."""
    own = service.get("environment") or {}
    env: dict[str, Any] = cap_environment(p)
    env.update({variable: new for variable, (_, new) in replaced(own, p).items()})
    env["LD_PRELOAD"] = preload(own.get("LD_PRELOAD"))
    return {
        "environment": dict(sorted(env.items())),
        "labels": p.labels(name, names),
        "volumes": [mount(source), ledger_mount()],
    }


def _is_sorted(keys: list[Any]) -> bool:
    as_text = [str(k) for k in keys]
    return as_text == sorted(as_text)


def _merged(old: dict[str, Any], added: dict[str, Any]) -> dict[str, Any]:
    """``old`` with ``added`` over it, sorted when ``old`` was (as Compose prints maps)."""
    merged = {**old, **added}
    if _is_sorted(list(old)):
        merged = dict(sorted(merged.items(), key=lambda item: str(item[0])))
    return merged


def inject_service(
    service: dict[str, Any],
    p: Plan,
    source: str,
    *,
    name: str = "",
    names: caplabels.GpuNames | None = None,
) -> dict[str, Any]:
    """A new service with the additions merged in as Compose would merge an override."""
    added = additions(service, p, source, name=name, names=names)
    new = dict(service)
    new["environment"] = _merged(service.get("environment") or {}, added["environment"])
    new["labels"] = _merged(service.get("labels") or {}, added["labels"])
    ours = {MOUNT_DIR, LIBRARY, LEDGER_DIR}
    volumes = [
        v for v in service.get("volumes") or [] if not (isinstance(v, dict) and v.get("target") in ours)
    ]
    new["volumes"] = volumes + added["volumes"]
    if _is_sorted(list(service)):
        new = dict(sorted(new.items(), key=lambda item: str(item[0])))
    return new
