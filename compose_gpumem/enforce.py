"""Which mechanism caps a service: the library, NVIDIA's driver, or both; chosen and stated.

``x-gpu-memory-enforce`` (top level as the default, per service to override; ``--enforce`` on the
command line wins over both) is ``auto``, ``library``, ``driver`` or ``both``:

- ``library``: ``libgpumem.so`` (LD_PRELOAD) caps what the container's processes allocate and
  reports the cap as the device's memory; works with any driver.
- ``driver``: NVIDIA's own per-cgroup limit.  With driver r615 or newer (CUDA 13.4), cgroup v2
  and a GPU not in MIG mode, the NVIDIA Container Toolkit's CDI hook ``apply-cuda-memory-limits``
  calls ``nvmlDeviceSetMemoryLimits_v1`` on the container's cgroup when both
  ``NVIDIA_GPU_MEMORY_REQUEST`` and ``NVIDIA_GPU_MEMORY_LIMIT`` (MiB, request <= limit) are set
  and the GPU comes through CDI (``nvidia.com/gpu=...``).  It counts all memory the driver holds
  for the container (contexts included).  What CUDA then reports to the container is not
  documented; NVIDIA documents NVML's ``nvmlDeviceGetMemoryInfo_v2``, read inside the cgroup,
  as what is left to allocate.
- ``both``: the driver's limit under the library (the cap in ``nvidia-smi`` and
  ``mem_get_info``, one ledger for ``top``).
- ``auto`` (the default): ``both`` where every prerequisite of the driver path holds, else
  ``library``.

``driver`` or ``both`` asked for on a host that lacks a prerequisite is an error naming it:
nothing ever falls back to no cap silently.  The driver path follows NVIDIA's documented
interface; it has not yet been run on an r615 host here.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import hostfacts
from .containers import ENFORCE as ENFORCE_LABEL
from .errors import InvalidValue
from .validate import Limit, parse_value

KEY = "x-gpu-memory-enforce"
REQUEST_KEY = "x-gpu-memory-request"
MODES = ("auto", "library", "driver", "both")
DRIVER_MIN = 615  # r615: nvmlDeviceSetMemoryLimits_v1
CUDA_MIN = 13040  # CUDA 13.4, as nvmlSystemGetCudaDriverVersion_v2 reports it
ENV_REQUEST = "NVIDIA_GPU_MEMORY_REQUEST"
ENV_LIMIT = "NVIDIA_GPU_MEMORY_LIMIT"
CDI_GPU = "nvidia.com/gpu="
MiB = 1 << 20


def parse_mode(value: Any, *, file: str | None = None, service: str | None = None, key: str = KEY) -> str:
    """One of :data:`MODES`; :class:`InvalidValue` naming where otherwise."""
    if value in MODES:
        return str(value)
    raise InvalidValue(f"must be one of {', '.join(MODES)}", file=file, service=service, value=value, key=key)


@dataclass(frozen=True)
class Target:
    """The host GPUs one service gets (NVML's view), or why they are not known."""

    gpus: tuple[hostfacts.Gpu, ...]
    unknown: str = ""


def target(ids: Sequence[str], nvml: hostfacts.Nvml) -> Target:
    """The GPUs behind a service's request: ``ids`` as the host names them (indexes or UUIDs;
    ``*``: every GPU)."""
    if nvml.error:
        return Target((), nvml.error)
    if "*" in ids:
        return Target(nvml.gpus)
    found = []
    for gpu_id in ids:
        match = [g for g in nvml.gpus if gpu_id in (str(g.index), g.uuid)]
        if not match:
            return Target((), f"GPU {gpu_id} is not on this host")
        found.append(match[0])
    return Target(tuple(found))


def driver_missing(facts: hostfacts.Facts, gpus: Target, limits: Mapping[int | None, Limit]) -> list[str]:
    """Every prerequisite of the driver path this service lacks, in words (empty: it can run)."""
    missing = []
    nvml, engine = facts.nvml, facts.engine
    if not engine.local:
        missing.append(f"the engine ({engine.host}) is not on this host, whose driver was read")
    if nvml.error:
        missing.append(f"no NVIDIA driver answers ({nvml.error})")
    elif nvml.driver_major < DRIVER_MIN or nvml.cuda < CUDA_MIN:
        missing.append(
            f"driver {nvml.driver} (CUDA {nvml.cuda_text}) is older than r{DRIVER_MIN} (CUDA 13.4), "
            "the first with per-cgroup memory limits"
        )
    if engine.reachable and engine.cgroup_version != "2":
        missing.append(f"the engine runs cgroup v{engine.cgroup_version or '?'}; the driver's limit needs v2")
    if gpus.unknown and not nvml.error:
        missing.append(gpus.unknown)
    migs = [str(g.index) for g in gpus.gpus if g.mig]
    if migs:
        missing.append(f"GPU {', '.join(migs)} in MIG mode (the driver's limit is for non-MIG devices)")
    if engine.no_cdi():
        missing.append(engine.no_cdi())
    elif not any(s.memory_limit_hook and s.kind == "nvidia.com/gpu" for s in facts.cdi):
        missing.append(
            f"no CDI spec in {', '.join(engine.cdi_spec_dirs)} runs the toolkit's "
            f"`{hostfacts.MEMORY_LIMIT_HOOK}` hook (NVIDIA Container Toolkit with it, then "
            "`nvidia-ctk cdi generate`)"
        )
    if len({limit.text for limit in limits.values()}) > 1:
        missing.append(
            "a per-device map with different values cannot be told to the hook (one pair for all GPUs)"
        )
    return missing


def mib(limit: Limit, gpus: Sequence[hostfacts.Gpu]) -> int:
    """A cap in whole MiB: a size as it is, a fraction of the smallest targeted GPU's NVML total."""
    if limit.size is not None:
        return limit.size // MiB
    assert limit.fraction is not None
    return int(limit.fraction * min(g.total for g in gpus)) // MiB


@dataclass(frozen=True)
class Decision:
    """How one service is capped, and why."""

    service: str
    asked: str  # the mode as written (or from --enforce)
    mode: str  # library, driver or both
    reasons: tuple[str, ...] = ()  # why not the driver path (auto), or what it lacks
    env: dict[str, str] = field(default_factory=dict)  # NVIDIA_GPU_MEMORY_REQUEST/LIMIT
    cdi_devices: tuple[str, ...] = ()  # nvidia.com/gpu=<uuid>, the hook runs only for these

    @property
    def library(self) -> bool:
        return self.mode in ("library", "both")

    @property
    def driver(self) -> bool:
        return self.mode in ("driver", "both")


def decide(
    service: str,
    asked: str,
    limits: Mapping[int | None, Limit],
    gpu_ids: Sequence[str],
    facts: hostfacts.Facts,
    *,
    request: Any = None,
    file: str | None = None,
    keys: tuple[str, str] = (KEY, REQUEST_KEY),
    named: bool = True,
) -> Decision:
    """The enforcement of one service; :class:`InvalidValue` when ``driver``/``both`` is asked
    for and a prerequisite is missing (named), or the request exceeds the limit.  ``keys``: how
    errors name the mode and the request (``gpumem-docker``: its options); ``named``: whether
    they name the service."""
    where = {"file": file, "service": service if named else None}
    if asked == "library":
        return Decision(service, asked, "library", ("asked for",))
    gpus = target(gpu_ids, facts.nvml)
    missing = driver_missing(facts, gpus, limits)
    if missing:
        if asked == "auto":
            return Decision(service, asked, "library", tuple(missing))
        raise InvalidValue(
            f"the driver path needs what this host lacks: {'; '.join(missing)}",
            value=asked,
            key=keys[0],
            **where,
        )
    (limit,) = {limit.text: limit for limit in limits.values()}.values()
    limit_mib = mib(limit, gpus.gpus)
    request_mib = limit_mib
    if request is not None:
        try:
            asked_request = parse_value(request, file=where["file"], service=where["service"])
        except InvalidValue as error:
            error.key = keys[1]  # the request's own name, not x-gpu-memory's
            raise
        request_mib = mib(next(iter(asked_request.values())), gpus.gpus)
        if request_mib > limit_mib:
            raise InvalidValue(
                f"is {request_mib} MiB, above the limit of {limit_mib} MiB",
                value=request,
                key=keys[1],
                **where,
            )
    mode = "both" if asked == "auto" else asked
    env = {ENV_REQUEST: str(request_mib), ENV_LIMIT: str(limit_mib)}
    return Decision(service, asked, mode, (), env, tuple(CDI_GPU + g.uuid for g in gpus.gpus))


def apply(service: dict[str, Any], decision: Decision) -> dict[str, Any]:
    """The resolved service with the driver path's additions: the two variables, and its GPUs as
    CDI devices in place of ``gpus:`` and GPU device reservations (the hook runs only for CDI
    devices).  A ``driver``-only decision also takes the library's additions out again."""
    if not decision.driver:
        return service
    new = copy.deepcopy(service)
    env = dict(new.get("environment") or {})
    env.update(decision.env)
    if not decision.library:
        for name in [n for n in env if n.startswith("GPUMEM_")]:
            del env[name]
        preload = [p for p in str(env.get("LD_PRELOAD", "")).split() if not p.endswith("/libgpumem.so")]
        if preload:
            env["LD_PRELOAD"] = " ".join(preload)
        else:
            env.pop("LD_PRELOAD", None)
        new["volumes"] = [v for v in new.get("volumes") or () if not _library_mount(v)]
        if not new["volumes"]:
            del new["volumes"]
    new["environment"] = env
    labels = new.get("labels")
    if isinstance(labels, dict) and ENFORCE_LABEL in labels:
        new["labels"] = {**labels, ENFORCE_LABEL: decision.mode}  # what `top` and admission read
    new.pop("gpus", None)
    deploy = new.get("deploy")
    if isinstance(deploy, dict):
        reservations = ((deploy.get("resources") or {}).get("reservations")) or {}
        devices = [d for d in reservations.get("devices") or () if "gpu" not in str(d.get("capabilities"))]
        if "devices" in reservations:
            reservations["devices"] = devices
            if not devices:
                del reservations["devices"]
    kept = [d for d in new.get("devices") or () if not _source(d).startswith(CDI_GPU)]
    new["devices"] = kept + [{"source": d, "target": d, "permissions": "rwm"} for d in decision.cdi_devices]
    return new


def _source(device: Any) -> str:
    return str(device.get("source") if isinstance(device, dict) else device).split(":")[0]


def _library_mount(volume: Any) -> bool:
    return isinstance(volume, dict) and str(volume.get("target", "")).startswith("/opt/gpumem")


def project_decisions(
    text: str,
    plans: Mapping[str, Any],
    facts: hostfacts.Facts,
    *,
    override: str | None = None,
    file: str | None = None,
) -> dict[str, Decision]:
    """The decision of every capped service of a resolved project (``text``: Compose's YAML;
    ``plans``: :func:`inject.plan`'s result); ``override``: ``--enforce``."""
    services: dict[str, Any] = {}
    default: Any = None
    if KEY in text or REQUEST_KEY in text:
        from .yamlio import load_fast

        doc = load_fast(text) or {}
        services = doc.get("services") or {}
        default = doc.get(KEY)
    top = parse_mode(default, file=file) if default is not None else "auto"
    out = {}
    for name, plan in plans.items():
        service = services.get(name) or {}
        asked = override or (parse_mode(service[KEY], file=file, service=name) if KEY in service else top)
        out[name] = decide(
            name, asked, plan.limits, plan.request.gpus(), facts, request=service.get(REQUEST_KEY), file=file
        )
    return out


def take_option(args: Sequence[str]) -> tuple[str | None, tuple[str, ...]]:
    """``--enforce MODE`` (or ``--enforce=MODE``) taken out of a Compose command's own options
    (before its first argument)."""
    out: list[str] = []
    mode, i = None, 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("-") or arg == "--":
            out += args[i:]
            break
        if arg == "--enforce" and i + 1 < len(args):
            mode, i = parse_mode(args[i + 1], file="--enforce"), i + 2
            continue
        if arg.startswith("--enforce="):
            mode, i = parse_mode(arg.split("=", 1)[1], file="--enforce"), i + 1
            continue
        out.append(arg)
        i += 1
    return mode, tuple(out)


def enforced_yaml(project: Any, override: str | None, file: str | None) -> str | None:
    """The project's YAML with the driver path added where it is decided; ``None`` where every
    service stays on the library alone (the caller's spliced text is then what Compose gets)."""
    facts = hostfacts.Facts(
        hostfacts.nvml(), hostfacts.engine(), hostfacts.library(), hostfacts.gpu_hook(), ()
    )
    if not (facts.engine.cdi_spec_dirs and facts.nvml.driver_major >= DRIVER_MIN) and override is None:
        if KEY not in project.text:
            return None  # no driver path possible here and none asked for: skip reading specs
    facts = hostfacts.gather()
    decisions = project_decisions(project.text, project.plans, facts, override=override, file=file)
    if not any(d.driver for d in decisions.values()):
        return None
    from .yamlio import dump

    doc = project.injected_document()
    services = doc.get("services") or {}
    for name, decision in decisions.items():
        services[name] = apply(services[name], decision)
    return dump(doc)
