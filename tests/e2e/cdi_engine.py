"""A private Docker engine that resolves CDI devices, with a stand-in NVIDIA CDI spec, for the
driver path's e2e (``test_driver_path_e2e.py``).

The driver path asks for its GPU as a CDI device (``nvidia.com/gpu=<UUID>``) so that the NVIDIA
Container Toolkit's ``apply-cuda-memory-limits`` hook runs; Debian 12's engine (20.10) has no
CDI.  So this engine is Docker 26 (Debian 13's ``dockerd``, fetched once by
``fetch_cdi_engine.sh``; the host's own when it is 25 or later) with ``features.cdi`` on and its
spec directory in the session's folder, on the host's containerd and runc.

The driver's limit needs cgroup v2.  On a host that mounts the hybrid layout (cgroup v1
controllers, the v2 hierarchy at ``/sys/fs/cgroup/unified``, as this kind of machine does), the
engine runs in a mount namespace of its own where ``/sys/fs/cgroup`` is that v2 hierarchy: it
and runc then place containers in cgroup v2 and ``docker info`` says ``CgroupVersion: 2``.

The stand-in spec gives ``nvidia.com/gpu=0``, ``=all`` and ``=<UUID>`` of each stand-in GPU a
harmless device node (``/dev/null`` at ``/dev/gpumem-standin<N>``) and an env, and runs, as the
toolkit's spec does, a ``createRuntime`` hook whose arguments name ``apply-cuda-memory-limits``.
The hook is a stand-in: it reads the OCI state on stdin, the bundle's ``config.json``, and
records in ``hooked/<container id>.json`` what the real hook would act on (its arguments, the two
variables, the device nodes and the cgroup path) and the spec's own env (the engine applied it).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FETCH = Path(__file__).with_name("fetch_cdi_engine.sh")
CDI_SINCE = 25  # the first Docker engine with CDI (behind features.cdi until 28)
PREFIX = "gpumem-e2e-cdi-"  # under the e2e engines' prefix: a dead session's is reaped the same way

# the stand-in hook: what the toolkit's apply-cuda-memory-limits would act on, recorded
HOOK = """#!{python}
import json, os, sys
state = json.load(sys.stdin)
with open(os.path.join(state["bundle"], "config.json")) as spec:
    config = json.load(spec)
env = dict(e.split("=", 1) for e in config["process"]["env"] if "=" in e)
record = {{
    "args": sys.argv[1:],
    "status": state.get("status"),
    "env": {{k: v for k, v in env.items() if k.startswith(("NVIDIA_GPU_MEMORY_", "STANDIN_"))}},
    "devices": [d["path"] for d in config.get("linux", {{}}).get("devices") or ()],
    "cgroups_path": config.get("linux", {{}}).get("cgroupsPath", ""),
}}
with open(os.path.join({records!r}, state["id"] + ".json"), "w") as out:
    json.dump(record, out)
"""


class Unavailable(Exception):
    """Why this engine cannot be had here."""


@dataclass
class CdiEngine:
    host: str
    bin_dir: str  # its dockerd and docker; "" where the host's own serve
    records: Path  # hooked/<container id>.json
    spec: Path

    def env(self, **more: str) -> dict[str, str]:
        """The environment for a command that talks to this engine (its `docker` client first)."""
        env = dict(os.environ, DOCKER_HOST=self.host, **more)
        env.pop("DOCKER_CONTEXT", None)
        if self.bin_dir:
            env["PATH"] = f"{self.bin_dir}:{env.get('PATH', '')}"
        return env

    def hooked(self, container_id: str) -> dict | None:
        path = self.records / f"{container_id}.json"
        return json.loads(path.read_text()) if path.exists() else None


def _major(binary: str) -> int:
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30).stdout
    except OSError:
        return 0
    words = out.replace(",", " ").split()
    version = words[2] if len(words) > 2 and words[:2] == ["Docker", "version"] else ""
    head = version.split(".", 1)[0]
    return int(head) if head.isdigit() else 0


def engine_bin() -> str:
    """Where a dockerd and docker with CDI are: ``""`` for the host's own, else the directory
    ``fetch_cdi_engine.sh`` keeps them in (fetched now when absent)."""
    own = [shutil.which("dockerd"), shutil.which("docker")]
    if all(own) and min(_major(str(b)) for b in own) >= CDI_SINCE:
        return ""
    if os.geteuid() != 0:
        raise Unavailable(f"the host's Docker is older than {CDI_SINCE} and fetching a newer one needs root")
    done = subprocess.run(["bash", str(FETCH)], capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise Unavailable(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "fetch failed")
    return str(Path(done.stdout.strip().splitlines()[-1]) / "bin")


def cgroup_wrap() -> tuple[str, ...]:
    """The command that gives the engine a cgroup v2 ``/sys/fs/cgroup`` (``()``: it has one)."""
    with open("/proc/self/mounts") as mounts:
        kinds = {line.split()[1]: line.split()[2] for line in mounts}
    if kinds.get("/sys/fs/cgroup") == "cgroup2":
        return ()
    if kinds.get("/sys/fs/cgroup/unified") == "cgroup2" and shutil.which("unshare"):
        script = 'mount --bind /sys/fs/cgroup/unified /sys/fs/cgroup && exec "$@"'
        return ("unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh")
    raise Unavailable("no cgroup v2 hierarchy on this host (the driver's limit needs one)")


def spec_text(uuids: list[str], hook: Path) -> str:
    """The stand-in NVIDIA CDI spec: a device per index, per UUID and ``all``."""
    devices = []
    for index, uuid in enumerate(uuids):
        node = {"path": f"/dev/gpumem-standin{index}", "hostPath": "/dev/null"}
        for name in (str(index), uuid):
            devices.append({"name": name, "containerEdits": {"deviceNodes": [node]}})
    nodes = [{"path": f"/dev/gpumem-standin{i}", "hostPath": "/dev/null"} for i in range(len(uuids))]
    devices.append({"name": "all", "containerEdits": {"deviceNodes": nodes}})
    spec = {
        "cdiVersion": "0.6.0",
        "kind": "nvidia.com/gpu",
        "devices": devices,
        "containerEdits": {
            "env": ["STANDIN_CDI=1"],
            "hooks": [
                {
                    "hookName": "createRuntime",
                    "path": str(hook),
                    "args": ["nvidia-cdi-hook", "apply-cuda-memory-limits"],
                }
            ],
        },
    }
    return json.dumps(spec, indent=1)


def prepare(base: Path, uuids: list[str]) -> tuple[CdiEngine, tuple[str, ...]]:
    """The spec, hook and daemon configuration in ``base``; the engine (not started yet) and
    the flags that start it so."""
    records, cdi = base / "hooked", base / "cdi"
    records.mkdir()
    cdi.mkdir()
    hook = base / "apply-cuda-memory-limits"
    hook.write_text(HOOK.format(python=sys.executable, records=str(records)))
    hook.chmod(0o755)
    spec = cdi / "nvidia.yaml"
    spec.write_text(spec_text(uuids, hook))
    config = base / "daemon.json"
    config.write_text(json.dumps({"features": {"cdi": True}, "cdi-spec-dirs": [str(cdi)]}))
    engine = CdiEngine(f"unix://{base / 'docker.sock'}", "", records, spec)
    return engine, ("--config-file", str(config))


def new_base() -> Path:
    return Path(tempfile.mkdtemp(prefix=PREFIX, dir="/tmp"))
