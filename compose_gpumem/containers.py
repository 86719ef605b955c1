"""What a capped container is, as the engine knows it: one contract for admission, ``top`` and
``doctor``.

The labels each capped container carries are in :mod:`compose_gpumem.caplabels` (re-exported
here).

:func:`inventory` reads every container of the engine once (``docker ps`` and one ``docker
inspect``) and sorts them into :class:`Capped` containers and :class:`Uncapped` GPU users.
:func:`gpu_key` names a GPU the one way that sums compare: the UUID where NVML knows it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterable

from .caplabels import (
    ALL,
    ENFORCE,
    LABELS_VERSION,
    LIMIT,
    PREFIX,
    PROMISE,
    STATE_DIR,
    VERSION,
    GpuNames,
    labels,
    promise,
)
from .errors import GpumemError
from .validate import Limit, parse_value

#: the label contract's names, from caplabels, stay importable from here
__all__ = [
    "ALL",
    "ENFORCE",
    "LABELS_VERSION",
    "LIMIT",
    "PREFIX",
    "PROMISE",
    "STATE_DIR",
    "VERSION",
    "Capped",
    "GpuNames",
    "Inventory",
    "Uncapped",
    "gpu_names",
    "inventory",
    "labels",
    "promise",
    "read_capped",
    "sort",
]

DOCKER_TIMEOUT = 30.0


def gpu_names() -> GpuNames:
    """The host's GPUs per :func:`compose_gpumem.hostfacts.nvml` (empty without a driver)."""
    from . import hostfacts

    found = hostfacts.nvml()
    return GpuNames(
        {str(g.index): g.uuid for g in found.gpus}, {g.uuid: g.total for g in found.gpus if g.total}
    )


@dataclass(frozen=True)
class Capped:
    """A container with our labels, as the engine reports it."""

    id: str
    name: str
    status: str  # the engine's: created, running, paused, restarting, exited, dead
    pid: int  # its first process on the host; 0 when not running
    limit: dict[str, Limit]  # container device index ("all": every device) -> cap
    promise: dict[str, Limit]  # host GPU (UUID, index or "all") -> cap
    enforce: str
    state_dir: str
    project: str = ""
    service: str = ""
    oneoff: bool = False
    problem: str = ""  # labels that could not be read: its promise is unknown

    @property
    def running(self) -> bool:
        return self.status in ("running", "paused", "restarting")

    @property
    def ledger_dir(self) -> str:
        """Its ledger directory seen from the host, through its root (needs the container's
        user or root; works for images with no shell at all); ``""`` when it is not running."""
        return f"/proc/{self.pid}/root{self.state_dir}" if self.pid else ""


@dataclass(frozen=True)
class Uncapped:
    """A container that asks for GPUs without a cap of ours: it can take the card."""

    id: str
    name: str
    status: str
    gpus: tuple[str, ...]  # host GPUs as the container names them; ("all",) for all
    project: str = ""
    service: str = ""

    @property
    def running(self) -> bool:
        return self.status in ("running", "paused", "restarting")


@dataclass(frozen=True)
class Inventory:
    capped: tuple[Capped, ...] = ()
    uncapped: tuple[Uncapped, ...] = ()


def inventory(*, everything: bool = False, docker: str = "docker") -> Inventory:
    """The engine's containers that hold or use GPUs (running ones; ``everything``: any state)."""
    ids = _docker([docker, "ps", "-q", "--no-trunc", *(["--all"] if everything else [])]).split()
    if not ids:
        return Inventory()
    try:
        described = json.loads(
            _docker([docker, "inspect", "--type", "container", *ids], gone_ok=True) or "[]"
        )
    except ValueError as error:
        raise GpumemError(f"`docker inspect` printed no JSON: {error}") from error
    return sort(described)


def _docker(argv: list[str], *, gone_ok: bool = False) -> str:
    import subprocess  # only commands that ask the engine pay for it

    try:
        done = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=DOCKER_TIMEOUT,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except FileNotFoundError as error:
        raise GpumemError(f"cannot run {argv[0]}: {error.strerror}") from error
    except subprocess.TimeoutExpired as error:
        raise GpumemError(f"`{' '.join(argv[:2])}` did not answer within {DOCKER_TIMEOUT:.0f}s") from error
    # a container removed between `ps` and `inspect` makes inspect exit 1 with the others printed
    if done.returncode != 0 and not (gone_ok and done.stdout.strip().startswith("[")):
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        raise GpumemError(
            f"`{' '.join(argv[:2])}` failed: {lines[-1] if lines else f'exit {done.returncode}'}"
        )
    return done.stdout


def sort(described: Iterable[dict[str, Any]]) -> Inventory:
    """``docker inspect`` output sorted into capped containers and uncapped GPU users."""
    capped: list[Capped] = []
    uncapped: list[Uncapped] = []
    for item in described:
        found = read_capped(item)
        if found is not None:
            capped.append(found)
            continue
        gpus = gpu_use(item)
        if gpus:
            uncapped.append(_uncapped(item, gpus))
    return Inventory(tuple(capped), tuple(uncapped))


def _common(item: dict[str, Any]) -> dict[str, Any]:
    config = item.get("Config") or {}
    state = item.get("State") or {}
    names = config.get("Labels") or {}
    return {
        "id": str(item.get("Id", "")),
        "name": str(item.get("Name", "")).lstrip("/"),
        "status": str(state.get("Status", "")),
        "project": str(names.get("com.docker.compose.project", "")),
        "service": str(names.get("com.docker.compose.service", "")),
    }


def _uncapped(item: dict[str, Any], gpus: tuple[str, ...]) -> Uncapped:
    return Uncapped(gpus=gpus, **_common(item))


def read_capped(item: dict[str, Any]) -> Capped | None:
    """One ``docker inspect`` entry as a :class:`Capped`; ``None`` without our labels; with
    ``problem`` set when they are there but unreadable."""
    given = (item.get("Config") or {}).get("Labels") or {}
    if VERSION not in given:
        return None
    common = _common(item)
    state = item.get("State") or {}
    pid = int(state.get("Pid") or 0) if common["status"] in ("running", "paused", "restarting") else 0
    base = {
        **common,
        "pid": pid,
        "enforce": str(given.get(ENFORCE, "library")),
        "state_dir": str(given.get(STATE_DIR, "")),
        "oneoff": str(given.get("com.docker.compose.oneoff", "")).lower() == "true",
    }
    try:
        if given[VERSION] != LABELS_VERSION:
            raise ValueError(f"{VERSION}={given[VERSION]!r}; this tool reads {LABELS_VERSION}")
        limit = _limits(given.get(LIMIT))
        promised = _limits(given.get(PROMISE))
    except (ValueError, GpumemError) as error:
        return Capped(limit={}, promise={}, problem=f"labels unreadable: {error}", **base)
    return Capped(limit=limit, promise=promised, **base)


def _limits(text: Any) -> dict[str, Limit]:
    out: dict[str, Limit] = {}
    for item in str(text or "").split(","):
        gpu, equals, value = item.partition("=")
        if not equals or not gpu.strip():
            raise ValueError(f"{text!r} is not a list of GPU=cap")
        out[gpu.strip()] = parse_value(value.strip())[None]
    return out


def gpu_use(item: dict[str, Any]) -> tuple[str, ...]:
    """The host GPUs a container asks the engine for (``("all",)``: all), ``()`` for none:
    ``--gpus`` / device reservations, CDI devices ``nvidia.com/gpu=...``, ``--runtime nvidia``."""
    host = item.get("HostConfig") or {}
    found: list[str] = []
    for request in host.get("DeviceRequests") or ():
        capabilities = {c for group in request.get("Capabilities") or () for c in group or ()}
        ids = [str(i) for i in request.get("DeviceIDs") or ()]
        if request.get("Driver") == "cdi" or any(i.startswith("nvidia.com/gpu=") for i in ids):
            found += [i.split("=", 1)[1] for i in ids if i.startswith("nvidia.com/gpu=")]
        elif "gpu" in capabilities or request.get("Driver") == "nvidia":
            count = int(request.get("Count") or 0)
            found += ids or ([ALL] if count < 0 else [str(i) for i in range(count)])
    if host.get("Runtime") == "nvidia":
        env = dict(str(e).split("=", 1) for e in (item.get("Config") or {}).get("Env") or () if "=" in str(e))
        visible = env.get("NVIDIA_VISIBLE_DEVICES", "all").strip()
        if visible not in ("", "none", "void"):
            found += [ALL] if visible == "all" else [v.strip() for v in visible.split(",")]
    return tuple(dict.fromkeys(found))
