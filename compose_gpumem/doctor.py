"""``gpumem-compose doctor`` / ``gpumem-docker doctor``: what this host offers each path, and
what each capped service of the project will get, and why.

Reads :mod:`hostfacts` (nothing is started), runs the run path's prerequisite checks of
:mod:`prereq` all at once instead of stopping at the first, and :mod:`enforce`'s decision per
service.  Exit 0 only when every capped service will run capped as declared.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from . import enforce, hostfacts, prereq
from .errors import GpumemError

GiB = 1 << 30


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


def report(
    facts: hostfacts.Facts,
    services: Mapping[str, Mapping[str, Any]],
    decisions: Mapping[str, enforce.Decision | str],
) -> dict[str, Any]:
    """Everything doctor says, as data (``--format json``); ``decisions``: a decision, or the
    error that refuses the service."""
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
    return {
        "ok": ok,
        "host": facts.as_dict(),
        "paths": {
            "library": {"ready": not lib_missing, "missing": lib_missing},
            "driver": {"ready": not driver_missing, "missing": driver_missing},
        },
        "services": per_service,
    }


def render(data: dict[str, Any]) -> str:
    host = data["host"]
    nv, engine, lib = host["nvml"], host["engine"], host["library"]
    out = ["host:"]
    if engine["reachable"]:
        out.append(
            f"  Docker engine {engine['version']} at {engine['host']}: "
            f"runtimes {', '.join(engine['runtimes'])}; cgroup v{engine['cgroup_version'] or '?'}; CDI "
            + (", ".join(engine["cdi_spec_dirs"]) if engine["cdi_spec_dirs"] else "not resolved")
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
        if "live" in svc:
            reading = svc["live"]
            if "total_mib" in reading:
                shown = ", ".join(f"GPU {i}: {mib} MiB" for i, mib in reading["total_mib"].items())
                out.append(f"    live: nvidia-smi in a throwaway container shows {shown}")
            else:
                out.append(f"    live: no reading ({reading['error']})")
    out.append("ok: every capped service will run capped as declared" if data["ok"] else "not ok")
    return "\n".join(out) + "\n"


def run(
    project: Any | None,
    *,
    override: str | None = None,
    only: tuple[str, ...] = (),
    file: str | None = None,
) -> dict[str, Any]:
    """Gather the facts and decide for ``project`` (a resolved :class:`project.Project`, or
    ``None``: the host alone); ``only``: these services."""
    facts = hostfacts.gather()
    services: dict[str, Mapping[str, Any]] = {}
    decisions: dict[str, enforce.Decision | str] = {}
    if project is not None:
        plans = {n: p for n, p in project.plans.items() if not only or n in only}
        services = {n: project.services[n] for n in plans}
        for name in plans:
            try:
                decisions.update(
                    enforce.project_decisions(
                        project.text, {name: plans[name]}, facts, override=override, file=file
                    )
                )
            except GpumemError as error:
                decisions[name] = str(error)
    return report(facts, services, decisions)


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


def add_live(data: dict[str, Any], seen: dict[str, Any]) -> None:
    """Fold ``--live``'s readings into the report: a service that saw no total, or a total as
    large as the card's, is not capped as declared."""
    cards = [gpu["total"] // (1 << 20) for gpu in data["host"]["nvml"]["gpus"]]
    for service, reading in seen.items():
        entry = data["services"].setdefault(service, {"enforce": None})
        entry["live"] = reading
        totals = reading.get("total_mib") or {}
        if not totals or (cards and max(totals.values()) >= min(cards)):
            data["ok"] = False
