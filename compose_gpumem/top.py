"""``top``: how much of its cap each capped container uses, live, from the host side.

Every capped container keeps its ledger on a tmpfs of its own (:data:`inject.LEDGER_DIR`); the
host reads it through ``/proc/PID/root`` (:attr:`containers.Capped.ledger_dir`), so nothing runs
inside the container and images with no shell work.  The ledger is read by ``gpumem-ledger``,
the C reader shipped beside the library (:func:`library.packaged_reader`), never parsed here.
``--state-dir DIR`` reads one ledger directory of a process run with ``LD_PRELOAD`` by hand.

Formats: ``table`` (one row per container and GPU), ``json`` (one object per refresh), and
``prometheus`` (the text format of node-exporter's textfile collector).  The metric names are
ours, since dcgm-exporter's ``DCGM_FI_DEV_FB_*`` describe the whole device, not a container's
share of it; the labels are dcgm-exporter's (``gpu``, ``UUID``, ``container``), so a dashboard
joins the two on them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import containers, library
from .errors import GpumemError

READ_TIMEOUT_S = 15.0
FORMATS = ("table", "json", "prometheus")


@dataclass
class View:
    """One ledger as ``top`` shows it."""

    name: str  # the container's name, or the state directory
    ledger: str  # the directory read
    container: containers.Capped | None = None
    valid: bool = False
    problems: list[str] = field(default_factory=list)
    devices: list[dict[str, Any]] = field(default_factory=list)
    processes: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        c = self.container
        return {
            "name": self.name,
            "id": c.id if c else None,
            "project": c.project if c else None,
            "service": c.service if c else None,
            "limit": ",".join(f"{k}={v.text}" for k, v in c.limit.items()) if c else None,
            "enforce": c.enforce if c else None,
            "ledger": self.ledger,
            "valid": self.valid,
            "problems": self.problems,
            "gpus": self.devices,
            "processes": self.processes,
            "denials": sum(int(p.get("denials") or 0) for p in self.processes),
        }


def read_ledger(directory: str) -> tuple[bool, list[str], list[dict[str, Any]], list[dict[str, Any]]]:
    """``gpumem-ledger DIRECTORY``: valid, problems, devices, processes."""
    reader = library.packaged_reader()
    if not reader.is_file():
        raise GpumemError(f"{reader} not found: reinstall with `pip install .` (it builds the ledger reader)")
    try:
        done = subprocess.run(
            [str(reader), directory],
            capture_output=True,
            text=True,
            timeout=READ_TIMEOUT_S,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return False, [f"the reader did not answer within {READ_TIMEOUT_S:.0f}s"], [], []
    if done.returncode == 3 or not done.stdout.strip():
        why = done.stderr.strip().splitlines()[-1:] or [f"exit {done.returncode}"]
        return False, why, [], []
    data = json.loads(done.stdout)
    devices = [
        {**d, "used_pct": round(100 * d["used"] / d["cap"], 1) if d.get("cap") else None}
        for d in data.get("devices") or ()
    ]
    return (
        bool(data.get("valid")),
        list(data.get("problems") or ()),
        devices,
        list(data.get("processes") or ()),
    )


def host_pids(init_pid: int) -> dict[int, int]:
    """Pid inside the container -> pid on the host, for the processes of ``init_pid``'s pid
    namespace (from each process's ``NSpid``); empty where ``/proc`` does not tell."""
    try:
        namespace = os.readlink(f"/proc/{init_pid}/ns/pid")
    except OSError:
        return {}
    out: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.readlink(f"/proc/{entry}/ns/pid") != namespace:
                continue
            with open(f"/proc/{entry}/status", encoding="utf-8") as status:
                for line in status:
                    if line.startswith("NSpid:"):
                        out[int(line.split()[-1])] = int(entry)
                        break
        except (OSError, ValueError):
            continue
    return out


def view_of(container: containers.Capped) -> View:
    view = View(container.name, container.ledger_dir, container)
    if container.problem:
        view.problems = [container.problem]
        return view
    view.valid, view.problems, view.devices, view.processes = read_ledger(container.ledger_dir)
    mapping = host_pids(container.pid)
    for process in view.processes:
        process["host_pid"] = mapping.get(int(process.get("pid") or 0))
    return view


def views(
    *,
    project: str | None = None,
    services: Sequence[str] = (),
    names: Sequence[str] = (),
    docker: str = "docker",
) -> list[View]:
    """The running capped containers of ``project`` (its ``services``), or those ``names``
    (container names or id prefixes), each with its ledger read."""
    found = [c for c in containers.inventory(docker=docker).capped if c.running]
    if project is not None:
        found = [c for c in found if c.project == project and (not services or c.service in services)]
    if names:
        found = [c for c in found if any(c.name == n or c.id.startswith(n) for n in names)]
        missing = [n for n in names if not any(c.name == n or c.id.startswith(n) for c in found)]
        if missing:
            raise GpumemError(f"no running capped container named {', '.join(missing)}")
    return [view_of(c) for c in sorted(found, key=lambda c: c.name)]


def state_dir_view(directory: str) -> View:
    view = View(directory, directory)
    view.valid, view.problems, view.devices, view.processes = read_ledger(directory)
    return view


# ------------------------------------------------------------------------------------ formats


def _size(value: Any) -> str:
    if value is None:
        return "-"
    number = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(number) < 1024 or unit == "TiB":
            return f"{number:.0f}{unit}" if unit == "B" else f"{number:.1f}{unit}"
        number /= 1024
    return str(value)  # pragma: no cover


def table(shown: Iterable[View]) -> str:
    rows = [("CONTAINER", "GPU", "CAP", "USED", "USE %", "DENIALS", "PROCESSES (pid/host pid: used)")]
    for view in shown:
        denials = str(sum(int(p.get("denials") or 0) for p in view.processes))
        if not view.devices:
            rows.append(
                (view.name, "-", "-", "-", "-", denials, "; ".join(view.problems) or "no GPU used yet")
            )
        for i, device in enumerate(view.devices):
            holders = [
                f"{p.get('pid')}/{p.get('host_pid') or '-'}: {_size(p['used'][i])}"
                for p in view.processes
                if i < len(p.get("used") or ()) and p["used"][i]
            ]
            pct = device.get("used_pct")
            rows.append(
                (
                    view.name,
                    str(device.get("index")),
                    _size(device.get("cap")),
                    _size(device.get("used")),
                    "-" if pct is None else f"{pct:.1f}%",
                    denials,
                    ", ".join(holders) or "-",
                )
            )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() + "\n" for row in rows)


def as_json(shown: Iterable[View]) -> str:
    return json.dumps({"containers": [v.as_dict() for v in shown]}) + "\n"


def _labels(pairs: dict[str, Any]) -> str:
    def escape(text: str) -> str:
        return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")

    return "{" + ",".join(f'{k}="{escape(str(v))}"' for k, v in pairs.items() if v is not None) + "}"


METRICS = (
    ("gpumem_memory_cap_bytes", "gauge", "GPU memory cap of the container on the GPU"),
    ("gpumem_memory_used_bytes", "gauge", "GPU memory the container's processes hold, per its ledger"),
    ("gpumem_memory_total_bytes", "gauge", "GPU memory of the device as the CUDA driver reports it"),
    ("gpumem_process_memory_used_bytes", "gauge", "GPU memory one process of the container holds"),
    ("gpumem_oom_denials_total", "counter", "allocations refused for the cap"),
    ("gpumem_ledger_valid", "gauge", "1 when the container's ledger reads as valid"),
)


def prometheus(shown: Iterable[View]) -> str:
    samples: dict[str, list[str]] = {name: [] for name, _, _ in METRICS}
    for view in shown:
        c = view.container
        base = {
            "container": view.name,
            "project": c.project or None if c else None,
            "service": c.service or None if c else None,
        }
        if c is None:
            base = {"state_dir": view.ledger}
        samples["gpumem_ledger_valid"].append(f"gpumem_ledger_valid{_labels(base)} {int(view.valid)}")
        denials = sum(int(p.get("denials") or 0) for p in view.processes)
        samples["gpumem_oom_denials_total"].append(f"gpumem_oom_denials_total{_labels(base)} {denials}")
        for i, device in enumerate(view.devices):
            gpu = {**base, "gpu": device.get("index"), "UUID": device.get("uuid")}
            for metric, key in (
                ("gpumem_memory_cap_bytes", "cap"),
                ("gpumem_memory_used_bytes", "used"),
                ("gpumem_memory_total_bytes", "total"),
            ):
                if device.get(key) is not None:
                    samples[metric].append(f"{metric}{_labels(gpu)} {int(device[key])}")
            for p in view.processes:
                used = p.get("used") or ()
                if i < len(used) and used[i]:
                    labels = {**gpu, "pid": p.get("pid"), "host_pid": p.get("host_pid")}
                    samples["gpumem_process_memory_used_bytes"].append(
                        f"gpumem_process_memory_used_bytes{_labels(labels)} {int(used[i])}"
                    )
    out: list[str] = []
    for name, kind, help_text in METRICS:
        out += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", *samples[name]]
    return "\n".join(out) + "\n"


RENDER = {"table": table, "json": as_json, "prometheus": prometheus}


def show(read: Any, fmt: str, *, stream: bool, interval: float = 1.0) -> int:
    """Print ``read()`` once, or every ``interval`` seconds until interrupted (the table
    redrawn in place, as ``docker stats`` does; other formats one document per refresh)."""
    render = RENDER[fmt]
    try:
        while True:
            text = render(read())
            if stream and fmt == "table" and sys.stdout.isatty():
                text = "\033[2J\033[H" + text
            sys.stdout.write(text)
            sys.stdout.flush()
            if not stream:
                return 0
            time.sleep(interval)
    except KeyboardInterrupt:
        return 0


# ---------------------------------------------------------------------------------- commands


def run(
    fmt: str,
    *,
    stream: bool,
    state_dir: str | None = None,
    project: str | None = None,
    services: Sequence[str] = (),
    names: Sequence[str] = (),
    docker: str = "docker",
    interval: float = 1.0,
) -> int:
    """One ``top``: the containers asked for, or the bare ``state_dir``."""
    if fmt not in RENDER:
        raise GpumemError(f"--format {fmt!r}: must be one of {', '.join(FORMATS)}")
    if state_dir is not None:
        if not os.path.isdir(state_dir):
            raise GpumemError(f"--state-dir {state_dir}: no such directory")
        return show(lambda: [state_dir_view(state_dir)], fmt, stream=stream, interval=interval)
    return show(
        lambda: views(project=project, services=services, names=names, docker=docker),
        fmt,
        stream=stream,
        interval=interval,
    )


DOCKER_USAGE = (
    "usage: gpumem-docker top [--no-stream] [--format table|json|prometheus] [--state-dir DIR] [CONTAINER...]"
)


def docker_main(args: Sequence[str], docker: str) -> int:
    """``gpumem-docker top``: our options, then container names (none: every capped one)."""
    fmt, stream, state_dir, names = "table", True, None, []
    i = 0
    while i < len(args):
        arg = args[i]
        flag, eq, attached = arg.partition("=")
        if arg == "--no-stream":
            stream = False
        elif flag in ("--format", "--state-dir"):
            if not eq:
                if i + 1 >= len(args):
                    raise GpumemError(f"{flag} needs a value; {DOCKER_USAGE}")
                attached, i = args[i + 1], i + 1
            if flag == "--format":
                fmt = attached
            else:
                state_dir = attached
        elif arg in ("-h", "--help"):
            print(DOCKER_USAGE)
            return 0
        elif arg.startswith("-"):
            raise GpumemError(f"unknown option {arg}; {DOCKER_USAGE}")
        else:
            names.append(arg)
        i += 1
    return run(fmt, stream=stream, state_dir=state_dir, names=names, docker=docker)
