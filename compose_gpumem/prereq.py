"""Before a capped container starts: the first missing prerequisite, in one line with its fix.

The order is the order a user fixes them in: a Docker engine that answers, an NVIDIA GPU, a way
for the engine to hand the GPU to a container (the ``nvidia`` runtime, the NVIDIA Container
Toolkit's hook, or CDI, as the service asks for it), and ``libgpumem.so`` where containers mount
it.  (Compose itself is found, or reported missing, before the project is resolved.)  Every fact
comes from :mod:`hostfacts`, which ``doctor`` reads too; nothing here starts a container.

``GPUMEM_HOST_CHECKS=0`` leaves out everything but the library's presence (an engine this module
cannot judge; the unit tests, whose Compose is a recorder).

On an engine that is not this host's (``DOCKER_HOST=tcp://...``, a context) the GPU and the
toolkit are that host's: they are not checked here, and the engine's runtimes still are.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from . import hostfacts, inject, library
from .errors import GpumemError

TOOLKIT_URL = "https://docs.nvidia.com/datacenter/cloud-native/container-toolkit/latest/install-guide.html"
ENV_SWITCH = "GPUMEM_HOST_CHECKS"
RESTART = "then restart Docker (`systemctl restart docker`)"


class PrerequisiteMissing(GpumemError):
    """The host lacks something a capped container needs; nothing was started."""

    exit_code = 3


@dataclass(frozen=True)
class Route:
    """How a service asks Docker for its GPU."""

    device_request: bool  # `gpus:` or a device reservation: the toolkit's hook serves it
    runtime: bool  # `runtime: nvidia`
    cdi: tuple[str, ...]  # CDI device names after `nvidia.com/gpu=`


def route(service: Mapping[str, Any]) -> Route:
    """The ways ``service`` (as Compose resolved it) asks for a GPU."""
    reservations = ((service.get("deploy") or {}).get("resources") or {}).get("reservations") or {}
    device_request = bool(service.get("gpus")) or any(
        "gpu" in str(d.get("capabilities")) for d in reservations.get("devices") or () if isinstance(d, dict)
    )
    cdi = []
    for device in service.get("devices") or ():
        source = str(device.get("source") if isinstance(device, dict) else device).split(":")[0]
        if source.startswith(inject.CDI_GPU):
            cdi.append(source[len(inject.CDI_GPU) :])
    return Route(device_request, service.get("runtime") == "nvidia", tuple(cdi))


def docker_run_service(args: list[str]) -> dict[str, Any]:
    """The GPU request of ``docker run`` arguments in a Compose service's shape (for :func:`route`)."""
    service: dict[str, Any] = {"devices": []}
    for arg, following in zip(args, [*args[1:], ""]):
        flag, _, value = arg.partition("=")
        value = value if "=" in arg else following
        if flag == "--gpus":
            service["gpus"] = value or "all"
        elif flag == "--runtime":
            service["runtime"] = value
        elif flag == "--device" and value.startswith(inject.CDI_GPU):
            service["devices"].append(value)
    return service


def _names(services: list[str]) -> str:
    shown = ", ".join(services[:3])
    return shown + (f" and {len(services) - 3} more" if len(services) > 3 else "")


def check_engine(engine: hostfacts.Engine) -> None:
    if engine.reachable:
        return
    if engine.error.startswith("no `"):
        fix = "install Docker (Debian: `apt-get install docker.io`; elsewhere: https://docs.docker.com/engine/install/)"
    else:
        fix = (
            "start it (`systemctl start docker`, or `dockerd &` where there is no systemd), or install one "
            "(Debian: `apt-get install docker.io`), or point DOCKER_HOST at one"
        )
    raise PrerequisiteMissing(f"no Docker engine answers at {engine.host} ({engine.error}): {fix}")


def check_gpu(nvml: hostfacts.Nvml, services: list[str]) -> None:
    if nvml.gpus:
        return
    why = nvml.error or "NVML lists no GPU"
    raise PrerequisiteMissing(
        f"no NVIDIA GPU on this host ({why}), and {_names(services)} "
        f"{'needs' if len(services) == 1 else 'need'} one: "
        "run it on a host with an NVIDIA GPU and its driver (`nvidia-smi` lists the GPUs there)"
    )


def check_routes(
    engine: hostfacts.Engine,
    routes: Mapping[str, Route],
    *,
    gpu_hook: str,
    cdi: tuple[hostfacts.CdiSpec, ...],
) -> None:
    """The engine can hand each service its GPU the way the service asks for it."""
    gpu_devices = {d for spec in cdi if spec.kind == "nvidia.com/gpu" for d in spec.devices}
    for name, way in routes.items():
        if way.runtime and "nvidia" not in engine.runtimes:
            raise PrerequisiteMissing(
                f"{name} asks for `runtime: nvidia`, and the Docker engine has no NVIDIA runtime "
                f"(it has: {', '.join(engine.runtimes) or 'none'}): install the NVIDIA Container Toolkit "
                f"({TOOLKIT_URL}), run `nvidia-ctk runtime configure --runtime=docker`, {RESTART}"
            )
        if way.device_request and engine.local and not gpu_hook and not gpu_devices:
            raise PrerequisiteMissing(
                f"{name} asks for a GPU (`gpus:` or a device reservation), and Docker cannot give "
                f"one here: the NVIDIA Container Toolkit (`{hostfacts.GPU_HOOK}`) is not installed; install "
                f"it ({TOOLKIT_URL}), {RESTART}"
            )
        if way.cdi and not engine.cdi_spec_dirs and not engine.cdi_unknown:  # unknown: Docker says
            raise PrerequisiteMissing(
                f"{name} asks for a CDI device (`{inject.CDI_GPU}{way.cdi[0]}`), and the Docker "
                f"engine {engine.version or ''} does not resolve CDI devices: use Docker 25 or later with "
                "CDI enabled (on by default from Docker 28)"
            )
        missing = [d for d in way.cdi if d not in gpu_devices]
        spec_dirs = engine.cdi_spec_dirs or hostfacts.DEFAULT_CDI_DIRS
        if way.cdi and engine.local and missing:
            raise PrerequisiteMissing(
                f"{name} asks for `{inject.CDI_GPU}{missing[0]}`, and no CDI spec in "
                f"{', '.join(spec_dirs)} names it: generate one with "
                "`nvidia-ctk cdi generate --output=/etc/cdi/nvidia.yaml`"
            )


def check_library() -> None:
    found = hostfacts.library()
    if found.present and not found.error:
        return
    if not found.present:
        library.require()  # its message names the install command
    raise PrerequisiteMissing(
        f"{found.path} is {found.error}: reinstall it with `{_root_prefix()}gpumem-compose install-lib`"
    )


def _root_prefix() -> str:
    return "" if os.geteuid() == 0 else "sudo "


def require_for_run(services: Mapping[str, Mapping[str, Any]]) -> None:
    """Raise :class:`PrerequisiteMissing` for the first thing the capped ``services`` lack (keys:
    how messages name them, ``service 'x'``; values: as Compose resolved them); they would
    otherwise start uncapped or fail in Docker's words."""
    if not services:
        return
    if os.environ.get(ENV_SWITCH) == "0":
        library.require()  # never skipped: a missing bind source would mount an empty directory
        return
    engine = hostfacts.engine()
    check_engine(engine)
    routes = {name: route(svc) for name, svc in services.items()}
    if engine.local:
        check_gpu(hostfacts.nvml(), sorted(services))
    # a client that does not show the engine's spec directories: the default ones
    dirs = (
        (hostfacts.DEFAULT_CDI_DIRS if engine.cdi_unknown else engine.cdi_spec_dirs) if engine.local else ()
    )
    check_routes(engine, routes, gpu_hook=hostfacts.gpu_hook(), cdi=hostfacts.cdi_specs(dirs))
    check_library()
