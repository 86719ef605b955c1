"""What this host offers a capped container, read without starting one.

One place for the facts that the run path's prerequisite checks (:mod:`prereq`), the choice of
enforcement and ``doctor`` all read, each gathered once per process:

- :func:`nvml`: the NVIDIA driver as NVML reports it: driver and CUDA driver versions, and per
  GPU its index, UUID, name, total memory and MIG mode.  NVML is read through ``ctypes`` (no
  ``pynvml`` import); ``GPUMEM_NVML_LIBRARY`` names another ``libnvidia-ml.so.1`` (the tests'
  stand-in).
- :func:`engine`: the Docker engine the ``docker`` client reaches: whether it answers, its
  version, runtimes, cgroup version and CDI spec directories (one ``docker info``).
- :func:`cdi_specs`: the CDI spec files in those directories: their kind, device names and
  whether they carry the NVIDIA toolkit's ``apply-cuda-memory-limits`` hook.
- :func:`library`: ``libgpumem.so`` where containers mount it from: present, and an ELF shared
  object for this machine.
- :func:`gpu_hook`: ``nvidia-container-runtime-hook``, which Docker needs to serve ``gpus:``.

Each fact records why it is missing (``error``), so a message can say what to fix.
"""

from __future__ import annotations

import ctypes
import functools
import json
import os
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from . import library as lib
from .driverhint import ENV_NVML, driver_present

NVML_SONAME = "libnvidia-ml.so.1"
GPU_HOOK = "nvidia-container-runtime-hook"
#: The NVIDIA Container Toolkit's CDI hook that applies NVIDIA_GPU_MEMORY_REQUEST/LIMIT.
MEMORY_LIMIT_HOOK = "apply-cuda-memory-limits"
DEFAULT_CDI_DIRS = ("/etc/cdi", "/var/run/cdi")
CDI_SINCE = 25  # the first Docker engine that resolves CDI devices (opt-in until 28)
DOCKER_INFO_TIMEOUT = 10.0


@dataclass(frozen=True)
class Gpu:
    """One GPU as NVML numbers it."""

    index: int
    uuid: str
    name: str
    total: int  # bytes, NVML's total (the driver's reserve included)
    mig: bool | None  # None: NVML could not tell (no MIG support)


@dataclass(frozen=True)
class Nvml:
    """The NVIDIA driver on this host; ``error`` says why nothing is known."""

    error: str = ""
    driver: str = ""
    cuda: int = 0  # nvmlSystemGetCudaDriverVersion_v2: 13040 is CUDA 13.4
    gpus: tuple[Gpu, ...] = ()

    @property
    def cuda_text(self) -> str:
        return f"{self.cuda // 1000}.{self.cuda % 1000 // 10}" if self.cuda else ""

    @property
    def driver_major(self) -> int:
        head = self.driver.split(".", 1)[0]
        return int(head) if head.isdigit() else 0


@dataclass(frozen=True)
class Engine:
    """The Docker engine the client reaches; ``error`` is the client's own words when none."""

    host: str
    local: bool  # a unix socket on this host: its GPUs and files are this host's
    error: str = ""
    version: str = ""
    runtimes: tuple[str, ...] = ()
    default_runtime: str = ""
    cgroup_version: str = ""
    cdi_spec_dirs: tuple[str, ...] = ()
    #: The client's ``docker info`` has the field: a client older than Docker 25 drops it, so an
    #: empty ``cdi_spec_dirs`` then says nothing of the engine.
    cdi_reported: bool = True

    @property
    def reachable(self) -> bool:
        return not self.error

    @property
    def major(self) -> int:
        """The engine's major version (``26`` of ``26.1.5+dfsg1``); 0 when unknown."""
        head = self.version.split(".", 1)[0]
        return int(head) if head.isdigit() else 0

    @property
    def cdi_unknown(self) -> bool:
        """An engine new enough for CDI whose client does not show its spec directories."""
        return not self.cdi_reported and self.major >= CDI_SINCE

    def no_cdi(self) -> str:
        """Why the engine is not known to resolve CDI devices, in words (``""``: it does)."""
        if self.cdi_spec_dirs:
            return ""
        if self.cdi_unknown:  # an older engine has no CDI at all, whatever its client shows
            return (
                "the docker client is older than Docker 25 and does not show whether the engine "
                f"{self.version} resolves CDI devices (use a client of the engine's version)"
            )
        return "the engine does not resolve CDI devices (Docker 25 or later with CDI enabled)"


@dataclass(frozen=True)
class CdiSpec:
    """One CDI spec file: ``kind`` (``nvidia.com/gpu``), its device names, and whether its
    edits run the toolkit's memory-limit hook."""

    path: str
    kind: str
    devices: tuple[str, ...]
    memory_limit_hook: bool
    error: str = ""


@dataclass(frozen=True)
class Library:
    """``libgpumem.so`` on the host path containers mount."""

    path: str
    present: bool
    error: str = ""  # why it cannot serve (missing, not an ELF shared object of this machine)


@dataclass(frozen=True)
class Facts:
    """Everything above, for ``doctor --format json``."""

    nvml: Nvml
    engine: Engine
    library: Library
    gpu_hook: str
    cdi: tuple[CdiSpec, ...] = field(default_factory=tuple)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["nvml"]["cuda_text"] = self.nvml.cuda_text
        data["engine"]["reachable"] = self.engine.reachable
        data["engine"]["cdi_unknown"] = self.engine.cdi_unknown
        return data


# ------------------------------------------------------------------------------------------- NVML


class _Memory(ctypes.Structure):
    _fields_ = [("total", ctypes.c_ulonglong), ("free", ctypes.c_ulonglong), ("used", ctypes.c_ulonglong)]


@functools.cache
def nvml() -> Nvml:
    """The driver and its GPUs per NVML; an ``error`` when there is no usable NVIDIA driver."""
    if not driver_present():
        return Nvml(error="no /dev/nvidiactl: no NVIDIA driver is loaded")
    path = os.environ.get(ENV_NVML)
    try:
        handle = ctypes.CDLL(path or NVML_SONAME)
    except OSError as error:
        return Nvml(error=f"cannot load {path or NVML_SONAME}: {error}")
    return _read_nvml(handle)


def _read_nvml(nv: Any) -> Nvml:
    def failed(call: str, code: int) -> str:
        try:
            nv.nvmlErrorString.restype = ctypes.c_char_p
            text = nv.nvmlErrorString(code).decode(errors="replace")
        except (AttributeError, OSError):
            text = f"error {code}"
        return f"NVML {call}: {text}"

    code = nv.nvmlInit_v2()
    if code:
        return Nvml(error=failed("nvmlInit", code))
    try:
        buf = ctypes.create_string_buffer(96)
        driver = buf.value.decode() if nv.nvmlSystemGetDriverVersion(buf, 96) == 0 else ""
        cuda = ctypes.c_int(0)
        getter = getattr(nv, "nvmlSystemGetCudaDriverVersion_v2", None) or nv.nvmlSystemGetCudaDriverVersion
        getter(ctypes.byref(cuda))
        count = ctypes.c_uint(0)
        code = nv.nvmlDeviceGetCount_v2(ctypes.byref(count))
        if code:
            return Nvml(error=failed("nvmlDeviceGetCount", code), driver=driver, cuda=cuda.value)
        gpus = [_read_gpu(nv, i) for i in range(count.value)]
        return Nvml(driver=driver, cuda=cuda.value, gpus=tuple(g for g in gpus if g is not None))
    finally:
        nv.nvmlShutdown()


def _read_gpu(nv: Any, index: int) -> Gpu | None:
    device = ctypes.c_void_p()
    if nv.nvmlDeviceGetHandleByIndex_v2(index, ctypes.byref(device)):
        return None
    uuid, name = ctypes.create_string_buffer(96), ctypes.create_string_buffer(96)
    nv.nvmlDeviceGetUUID(device, uuid, 96)
    nv.nvmlDeviceGetName(device, name, 96)
    memory = _Memory()
    total = memory.total if nv.nvmlDeviceGetMemoryInfo(device, ctypes.byref(memory)) == 0 else 0
    current, pending = ctypes.c_uint(0), ctypes.c_uint(0)
    try:
        mig: bool | None = (
            bool(current.value)
            if nv.nvmlDeviceGetMigMode(device, ctypes.byref(current), ctypes.byref(pending)) == 0
            else None
        )
    except AttributeError:  # an NVML older than MIG
        mig = None
    return Gpu(index, uuid.value.decode(errors="replace"), name.value.decode(errors="replace"), total, mig)


# ----------------------------------------------------------------------------------------- engine


def engine_host() -> tuple[str, bool]:
    """Where the client connects, and whether that is this host (a unix socket)."""
    host = os.environ.get("DOCKER_HOST", "")
    if not host and os.environ.get("DOCKER_CONTEXT", "default") not in ("", "default"):
        return f"context {os.environ['DOCKER_CONTEXT']}", False
    host = host or "unix:///var/run/docker.sock"
    return host, host.startswith("unix://")


@functools.cache
def engine(docker: str = "docker") -> Engine:
    """One ``docker info``: the engine's runtimes, cgroup version and CDI spec directories."""
    host, local = engine_host()
    try:
        done = subprocess.run(
            [docker, "info", "--format", "{{json .}}"],
            capture_output=True,
            text=True,
            timeout=DOCKER_INFO_TIMEOUT,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except FileNotFoundError:
        return Engine(host, local, error=f"no `{docker}` client on PATH")
    except subprocess.TimeoutExpired:
        return Engine(host, local, error=f"`docker info` did not answer within {DOCKER_INFO_TIMEOUT:.0f}s")
    try:
        info = json.loads(done.stdout or "{}")
    except ValueError:
        info = {}
    errors = [str(e) for e in info.get("ServerErrors") or ()]
    if done.returncode != 0 or errors or not info.get("ServerVersion"):
        lines = [line for line in (done.stderr or "").splitlines() if line.strip()] + errors
        return Engine(host, local, error=(lines[-1] if lines else f"`docker info` exited {done.returncode}"))
    return engine_from_info(host, local, info)


def engine_from_info(host: str, local: bool, info: dict[str, Any]) -> Engine:
    """An answering engine, from the JSON ``docker info --format '{{json .}}'`` prints."""
    return Engine(
        host,
        local,
        version=str(info.get("ServerVersion", "")),
        runtimes=tuple(sorted(info.get("Runtimes") or {})),
        default_runtime=str(info.get("DefaultRuntime") or ""),
        cgroup_version=str(info.get("CgroupVersion") or ""),
        cdi_spec_dirs=tuple(info.get("CDISpecDirs") or ()),
        cdi_reported="CDISpecDirs" in info,
    )


# -------------------------------------------------------------------------------------------- CDI


def cdi_specs(directories: tuple[str, ...] = DEFAULT_CDI_DIRS) -> tuple[CdiSpec, ...]:
    """The CDI spec files (``*.yaml``, ``*.json``) in ``directories``, in name order."""
    specs = []
    for directory in directories:
        try:
            names = sorted(os.listdir(directory))
        except OSError:
            continue
        for name in names:
            if name.endswith((".yaml", ".yml", ".json")):
                specs.append(_read_spec(os.path.join(directory, name)))
    return tuple(specs)


def _read_spec(path: str) -> CdiSpec:
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    try:
        with open(path, encoding="utf-8") as text:
            spec = YAML(typ="safe", pure=True).load(text)
    except (OSError, YAMLError, ValueError) as error:
        return CdiSpec(path, "", (), False, error=f"unreadable: {str(error).splitlines()[0]}")
    if not isinstance(spec, dict):
        return CdiSpec(path, "", (), False, error="not a CDI spec (no mapping)")
    devices = tuple(str(d["name"]) for d in spec.get("devices") or () if isinstance(d, dict) and "name" in d)
    edits = [spec.get("containerEdits")] + [
        d.get("containerEdits") for d in spec.get("devices") or () if isinstance(d, dict)
    ]
    hook = any(
        MEMORY_LIMIT_HOOK in (h.get("args") or ())
        for e in edits
        if isinstance(e, dict)
        for h in e.get("hooks") or ()
        if isinstance(h, dict)
    )
    return CdiSpec(path, str(spec.get("kind", "")), devices, hook)


# ---------------------------------------------------------------------------------------- library

_ELF_MACHINES = {"x86_64": 62, "aarch64": 183, "ppc64le": 21}


def library(directory: str | None = None) -> Library:
    """``libgpumem.so`` in the host directory containers mount: present and an ELF shared object
    of this machine (read from its header; loading it here would hook this process)."""
    path = Path(directory or lib.host_dir()) / lib.NAME
    try:
        with path.open("rb") as data:
            header = data.read(20)
    except FileNotFoundError:
        return Library(str(path), False, error="not installed")
    except OSError as error:
        return Library(str(path), False, error=f"unreadable: {error.strerror}")
    if len(header) < 20 or header[:4] != b"\x7fELF" or header[16] != 3:  # e_type ET_DYN
        return Library(str(path), True, error="not an ELF shared object")
    machine = int.from_bytes(header[18:20], "little" if header[5] == 1 else "big")
    wanted = _ELF_MACHINES.get(os.uname().machine)
    if wanted is not None and machine != wanted:
        return Library(str(path), True, error=f"built for another machine (ELF machine {machine})")
    return Library(str(path), True)


def gpu_hook() -> str:
    """Where ``nvidia-container-runtime-hook`` is, or ``""``: Docker serves ``gpus:`` and GPU
    device reservations only when its daemon finds this hook on its PATH."""
    from .compose import _which

    for directory in ("", "/usr/bin", "/usr/local/bin"):
        found = os.path.join(directory, GPU_HOOK) if directory else _which(GPU_HOOK)
        if found and os.access(found, os.X_OK):
            return found
    return ""


def gather() -> Facts:
    """Every fact at once (``doctor``)."""
    eng = engine()
    dirs = eng.cdi_spec_dirs or (DEFAULT_CDI_DIRS if eng.local else ())
    return Facts(nvml(), eng, library(), gpu_hook(), cdi_specs(tuple(dirs)))


def forget() -> None:
    """Drop what was read (tests that change the host between two readings)."""
    nvml.cache_clear()
    engine.cache_clear()
