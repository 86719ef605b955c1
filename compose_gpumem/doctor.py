"""``gpumem-compose doctor`` / ``gpumem-docker doctor``: what this host offers each path, and
what each capped service of the project will get, and why.

Reads :mod:`hostfacts` (nothing is started), runs the run path's prerequisite checks of
:mod:`prereq` all at once instead of stopping at the first, and :mod:`enforce`'s decision per
service.  For each service the library caps, whether it loads in the service's image
(:mod:`imagelibc`: the image's glibc, read from its files); for each running capped container
(of the project, or of the engine outside one; read by :mod:`containers`, the one reader of
the ``io.gpumem.*`` labels), the file system its ledger lives on, its size and room.  Exit 0
only when every capped service will run capped as declared.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from . import containers, enforce, hostfacts, imagelibc, prereq
from .errors import GpumemError

GiB, MiB, KiB = 1 << 30, 1 << 20, 1 << 10
#: The ledger's file and its size: ``sizeof(struct ledger)`` of libinterpose/src/ledger_layout.h
#: (1024 process slots, 32 devices; tests/unit/test_doctor.py compiles it to hold this true).
LEDGER_FILE = "ledger-v4"
LEDGER_BYTES = 283752


def library_path(facts: hostfacts.Facts, services: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """What the library path lacks here (empty: ready), for ``services`` (label -> service)."""
    missing = []
    routes = {name: prereq.route(svc) for name, svc in services.items()}

    def engine() -> None:
        prereq.check_engine(facts.engine)

    def gpu() -> None:
        if facts.engine.local:
            prereq.check_gpu(facts.nvml, sorted(services) or ["a GPU service"])

    def ways() -> None:
        prereq.check_routes(facts.engine, routes, gpu_hook=facts.gpu_hook, cdi=facts.cdi)

    for check in (engine, gpu, ways, prereq.check_library):
        try:
            check()
        except GpumemError as error:
            missing.append(str(error))
    return missing


def ledger_room(container: containers.Capped) -> dict[str, Any]:
    """The file system of a running container's ledger, read from the host through its root:
    size and free bytes, the ledger's own size (``None``: no CUDA process has made it yet), and
    a ``problem`` when a ledger still to be made has no room (every allocation would then be
    refused)."""
    room: dict[str, Any] = {"dir": container.state_dir}
    if not container.ledger_dir:
        return {**room, "error": "not running"}
    try:
        fs = os.statvfs(container.ledger_dir)
    except OSError as error:
        return {**room, "error": f"unreadable from here ({error.strerror}): doctor reads it as root"}
    try:
        ledger: int | None = os.stat(os.path.join(container.ledger_dir, LEDGER_FILE)).st_size
    except OSError:
        ledger = None
    size, free = fs.f_blocks * fs.f_frsize, fs.f_bavail * fs.f_frsize
    return {**room, "size": size, "free": free, "ledger_bytes": ledger, "problem": room_problem(free, ledger)}


def room_problem(free: int, ledger: int | None) -> str:
    """Why a ledger cannot be made in ``free`` bytes (``""``: it can, or it is there)."""
    if ledger is not None or free >= LEDGER_BYTES:
        return ""
    return (
        f"{_size(free)} free, and the ledger takes {_size(LEDGER_BYTES)}: its first CUDA process "
        "will have every allocation refused"
    )


def _size(n: int) -> str:
    for unit, name in ((GiB, "GiB"), (MiB, "MiB"), (KiB, "KiB")):
        if n >= unit:
            return f"{n / unit:.1f} {name}"
    return f"{n} bytes"


def report(
    facts: hostfacts.Facts,
    services: Mapping[str, Mapping[str, Any]],
    decisions: Mapping[str, enforce.Decision | str],
    *,
    images: Mapping[str, imagelibc.ImageLibc] | None = None,
    running: Iterable[containers.Capped] = (),
) -> dict[str, Any]:
    """Everything doctor says, as data (``--format json``); ``decisions``: a decision, or the
    error that refuses the service; ``images``: per service the library caps, what its image's
    C library says; ``running``: the capped containers to report on."""
    lib_missing = library_path(facts, {f"service {n!r}": s for n, s in services.items()})
    driver_missing = enforce.driver_missing(facts, enforce.target(["*"], facts.nvml), {})
    per_service: dict[str, dict[str, Any]] = {}
    ok = not lib_missing
    for name, decision in decisions.items():
        if isinstance(decision, str):
            per_service[name] = {"enforce": None, "error": decision}
            ok = False
            continue
        per_service[name] = {
            "asked": decision.asked,
            "enforce": decision.mode,
            "why": list(decision.reasons),
            "driver_env": decision.env,
            "cdi_devices": list(decision.cdi_devices),
        }
        found = (images or {}).get(name)
        if found is not None and decision.library:
            per_service[name]["image"] = {"name": found.image, "loads": found.loads, "why": found.why}
            ok = ok and found.loads is not False
    boxes = []
    for box in running:
        entry: dict[str, Any] = {
            "name": box.name,
            "service": box.service,
            "enforce": box.enforce,
            "problem": box.problem,
        }
        if box.enforce in ("library", "both") and not box.problem:
            # its pid is the engine's host's: /proc here is another machine's
            entry["ledger"] = (
                ledger_room(box)
                if facts.engine.local
                else {"dir": box.state_dir, "error": "the engine is on another host: not read from here"}
            )
            ok = ok and not entry["ledger"].get("problem")
        ok = ok and not box.problem
        boxes.append(entry)
    return {
        "ok": ok,
        "host": facts.as_dict(),
        "paths": {
            "library": {"ready": not lib_missing, "missing": lib_missing},
            "driver": {"ready": not driver_missing, "missing": driver_missing},
        },
        "services": per_service,
        "running": boxes,
    }


def render(data: dict[str, Any]) -> str:
    host = data["host"]
    nv, engine, lib = host["nvml"], host["engine"], host["library"]
    out = ["host:"]
    if engine["reachable"]:
        out.append(
            f"  Docker engine {engine['version']} at {engine['host']}: "
            f"runtimes {', '.join(engine['runtimes'])}; cgroup v{engine['cgroup_version'] or '?'}; CDI "
            + (
                ", ".join(engine["cdi_spec_dirs"])
                or ("not shown by this client" if engine["cdi_unknown"] else "not resolved")
            )
        )
    else:
        out.append(f"  Docker engine at {engine['host']}: none answers ({engine['error']})")
    if nv["error"]:
        out.append(f"  NVIDIA driver: none ({nv['error']})")
    else:
        out.append(f"  NVIDIA driver {nv['driver']}, CUDA {nv['cuda_text']}")
    for gpu in nv["gpus"]:
        mig = {True: "on", False: "off", None: "n/a"}[gpu["mig"]]
        out.append(
            f"  GPU {gpu['index']}: {gpu['name']}, {gpu['uuid']}, {gpu['total'] / GiB:.1f} GiB, MIG {mig}"
        )
    out.append(f"  NVIDIA Container Toolkit hook: {host['gpu_hook'] or 'not installed'}")
    for spec in host["cdi"]:
        hook = "with" if spec["memory_limit_hook"] else "without"
        out.append(
            f"  CDI spec {spec['path']}: {spec['kind'] or '?'} {', '.join(spec['devices'])}, "
            f"{hook} {hostfacts.MEMORY_LIMIT_HOOK}" + (f" ({spec['error']})" if spec["error"] else "")
        )
    out.append(f"  libgpumem.so: {lib['path']}, " + (lib["error"] or "ready"))
    out.append("paths:")
    for name, path in data["paths"].items():
        out.append(f"  {name}: " + ("ready" if path["ready"] else "not ready"))
        out += [f"    - {why}" for why in path["missing"]]
    if data["services"]:
        out.append("services:")
    for name, svc in data["services"].items():
        if svc["enforce"] is None:
            out.append(f"  {name}: refused: {svc['error']}")
            continue
        line = f"  {name}: {svc['enforce']}"
        if svc["asked"] != svc["enforce"]:
            line += f" ({svc['asked']})"
        if svc["driver_env"]:
            line += " " + " ".join(f"{k}={v}" for k, v in svc["driver_env"].items())
        out.append(line)
        if svc["enforce"] == "library" and svc["asked"] == "auto":
            out += [f"    not the driver's limit: {why}" for why in svc["why"]]
        if "image" in svc:
            verdict = {True: "libgpumem.so loads", False: "NOT CAPPED", None: "cannot tell"}
            image = svc["image"]
            out.append(f"    image {image['name']}: {image['why']} ({verdict[image['loads']]})")
        if "live" in svc:
            reading = svc["live"]
            if "total_mib" in reading:
                shown = ", ".join(f"GPU {i}: {mib} MiB" for i, mib in reading["total_mib"].items())
                out.append(f"    live: nvidia-smi in a throwaway container shows {shown}")
                if "note" in reading:
                    out.append(f"      ({reading['note']})")
            else:
                out.append(f"    live: no reading ({reading['error']})")
    if data["running"]:
        out.append("running capped containers:")
    for box in data["running"]:
        line = f"  {box['name']}: {box['enforce']}"
        if box["problem"]:
            line += f": {box['problem']}"
        ledger = box.get("ledger")
        if ledger and "error" in ledger:
            line += f"; ledger {ledger['dir']}: {ledger['error']}"
        elif ledger:
            made = (
                f"{_size(ledger['ledger_bytes'])} ledger"
                if ledger["ledger_bytes"] is not None
                else "no ledger yet"
            )
            line += f"; ledger {ledger['dir']}: {_size(ledger['size'])}, {_size(ledger['free'])} free, {made}"
            if ledger["problem"]:
                line += f": {ledger['problem']}"
        out.append(line)
    out.append("ok: every capped service will run capped as declared" if data["ok"] else "not ok")
    return "\n".join(out) + "\n"


def run(
    project: Any | None,
    *,
    override: str | None = None,
    only: tuple[str, ...] = (),
    file: str | None = None,
    relabel: Callable[[GpumemError], None] | None = None,
) -> dict[str, Any]:
    """Gather the facts and decide for ``project`` (a resolved :class:`project.Project`, or
    ``None``: the host alone); ``only``: these services; ``relabel``: points a service's refusal
    at the file its value is written in (:func:`commands.name_its_file`)."""
    facts = hostfacts.gather()
    services: dict[str, Mapping[str, Any]] = {}
    decisions: dict[str, enforce.Decision | str] = {}
    name = ""
    if project is not None:
        plans = {n: p for n, p in project.plans.items() if not only or n in only}
        services = {n: project.services[n] for n in plans}
        name, image_of = service_images(project.text)
        for service in plans:
            try:
                decisions.update(
                    enforce.project_decisions(
                        project.text, {service: plans[service]}, facts, override=override, file=file
                    )
                )
            except GpumemError as error:
                if relabel is not None:
                    relabel(error)
                decisions[service] = str(error)
    images: dict[str, imagelibc.ImageLibc] = {}
    running: list[containers.Capped] = []
    if facts.engine.reachable:
        seen: dict[str, imagelibc.ImageLibc] = {}
        for service, decision in decisions.items():
            if isinstance(decision, enforce.Decision) and decision.library:
                image = image_of.get(service) or f"{name}-{service}"
                images[service] = seen[image] = seen.get(image) or imagelibc.read(image)
        try:
            found = containers.inventory().capped
        except GpumemError:
            found = ()
        running = [
            c for c in found if project is None or (c.project == name and (not only or c.service in only))
        ]
    return report(facts, services, decisions, images=images, running=running)


def service_images(text: str) -> tuple[str, dict[str, str]]:
    """The project's name and each service's image, from Compose's resolved YAML (a service
    with ``build:`` and no ``image:`` is ``<project>-<service>``, as Compose names it)."""
    from .yamlio import load_fast

    doc = load_fast(text) or {}
    name = str(doc.get("name") or "")
    services = doc.get("services") or {}
    return name, {
        service: str(spec.get("image") or f"{name}-{service}")
        for service, spec in services.items()
        if isinstance(spec, dict)
    }


#: What ``--live`` runs in each service's image: nvidia-smi, which the NVIDIA runtime mounts into
#: every container given the ``utility`` capability, and which the library answers with the cap.
LIVE_PROBE = ("nvidia-smi", "--query-gpu=index,memory.total", "--format=csv,noheader,nounits")


def live(
    project: Any, options: Any, services: tuple[str, ...], text: str, timeout: float = 120.0
) -> dict[str, Any]:
    """``doctor --live``: a throwaway container of each capped service (its image, its injection,
    no dependencies, a project of its own, removed at the end) runs :data:`LIVE_PROBE`; per
    service, the totals it saw (MiB per device) or why it saw none."""
    import subprocess
    import tempfile
    import uuid

    from . import compose

    cmd = compose.command(options.compose_bin)
    name = f"gpumem-doctor-{uuid.uuid4().hex[:8]}"
    seen: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="gpumem-doctor.") as tmp:
        path = f"{tmp}/compose.yaml"
        with open(path, "w", encoding="utf-8") as out:
            out.write(text)
        base = [*cmd, "-f", path, "-p", name, "--project-directory", options.directory()]
        try:
            for service in [s for s in project.plans if not services or s in services]:
                argv = [*base, "run", "--rm", "--no-deps", "-T", "--entrypoint", LIVE_PROBE[0], service]
                try:
                    done = subprocess.run(
                        [*argv, *LIVE_PROBE[1:]],
                        capture_output=True,
                        text=True,
                        timeout=timeout,
                        stdin=subprocess.DEVNULL,
                        check=False,
                    )
                except subprocess.TimeoutExpired:
                    seen[service] = {"error": f"no answer within {timeout:.0f}s"}
                    continue
                totals = _totals(done.stdout)
                if done.returncode != 0 or totals is None:
                    tail = (done.stderr or done.stdout).strip().splitlines()
                    seen[service] = {"error": f"exit {done.returncode}: {tail[-1] if tail else 'no output'}"}
                else:
                    seen[service] = {"total_mib": totals}
        finally:
            subprocess.run(
                [*base, "down", "--remove-orphans", "-t", "0"],
                capture_output=True,
                timeout=timeout,
                check=False,
            )
    return seen


def _totals(stdout: str) -> dict[str, int] | None:
    """``index, MiB`` lines of nvidia-smi's CSV; ``None`` when the output is something else."""
    totals = {}
    for line in stdout.strip().splitlines():
        index, _, total = line.partition(",")
        if not index.strip().isdigit() or not total.strip().isdigit():
            return None
        totals[index.strip()] = int(total.strip())
    return totals or None


#: Why ``--live`` does not judge a service the driver alone caps by what ``nvidia-smi`` shows.
DRIVER_LIVE = (
    "whether the driver's limit shows in nvidia-smi's total is not documented: not judged by this reading"
)


def add_live(data: dict[str, Any], seen: dict[str, Any]) -> None:
    """Fold ``--live``'s readings into the report: a service that saw no total, or a total as
    large as the card's, is not capped as declared; a service the driver alone caps is judged
    only by having answered (whether its limit shows as the total is not documented)."""
    cards = [gpu["total"] // (1 << 20) for gpu in data["host"]["nvml"]["gpus"]]
    for service, reading in seen.items():
        entry = data["services"].setdefault(service, {"enforce": None})
        entry["live"] = reading
        totals = reading.get("total_mib") or {}
        if totals and entry.get("enforce") == "driver":
            reading["note"] = DRIVER_LIVE
            continue
        if not totals or (cards and max(totals.values()) >= min(cards)):
            data["ok"] = False
