"""A Docker Swarm of two private engines on this one machine, for the stack e2e.

Each engine runs in a network namespace of its own, the two joined by a veth pair, so nothing
of either (swarm ports, gossip, host-network tasks) meets the host's network or another test
session's.  ``ip netns exec`` would remount ``/sys`` and hide the cgroup v1 mounts dockerd needs,
so an engine is entered with ``nsenter --net`` plus ``unshare --mount --uts``: a fresh sysfs (the
namespace's own interfaces) and the saved ``/sys/fs/cgroup`` bound back, a hostname of its own,
its own data root, exec root, pidfile, socket and containerd namespace.  Each node advertises
one stand-in GPU (``--node-generic-resource NVIDIA-GPU=<uuid>``).  Measured on this kind of host:
DESIGN.md, "Swarm: measured facts".

Teardown is total: engines stopped, every process left in the namespaces killed, namespaces and
files removed; a session that died without tearing down is cleaned by the next one.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

PREFIX = "gpumem-swarm-"
PARENT = "/tmp"
SUBNET = "10.213.0"  # private to the two namespaces: no route of the host is involved
START_TIMEOUT = 60
TOOLS = ("dockerd", "docker", "ip", "nsenter", "unshare", "mount")

_ENTER = """set -e
hostname "$NODE_NAME"
mkdir -p "$NODE_DIR/cgroup"
mount --rbind /sys/fs/cgroup "$NODE_DIR/cgroup"
mount -t sysfs sysfs /sys
mount --rbind "$NODE_DIR/cgroup" /sys/fs/cgroup
ip link set lo up
exec "$@"
"""


def sh(
    argv: list[str], *, check: bool = True, timeout: float = 60, **kw: object
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [str(a) for a in argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        **kw,
    )
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, argv))} exited {proc.returncode}: {proc.stderr.strip()}")
    return proc


def missing_tools() -> list[str]:
    return [tool for tool in TOOLS if shutil.which(tool) is None]


@dataclass
class Node:
    name: str  # hostname inside its namespace, and the node's name in the swarm
    dir: Path
    netns: str | None
    address: str
    gpu: str  # the stand-in GPU it advertises
    proc: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        return f"unix://{self.dir / 'docker.sock'}"

    def env(self) -> dict[str, str]:
        env = dict(os.environ, DOCKER_HOST=self.host)
        env.pop("DOCKER_CONTEXT", None)
        return env

    def docker(
        self, *args: object, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        return sh(["docker", *args], env=self.env(), check=check, timeout=timeout)


@dataclass
class Swarm:
    base: Path
    nodes: list[Node] = field(default_factory=list)
    #: Why the swarm has one node only, when it has.
    single_reason: str | None = None

    @property
    def manager(self) -> Node:
        return self.nodes[0]


def _start_engine(node: Node) -> None:
    node.dir.mkdir(parents=True, exist_ok=True)
    namespace = f"{PREFIX}{uuid.uuid4().hex[:10]}"
    dockerd = [
        "dockerd",
        "--data-root", node.dir / "data",
        "--exec-root", node.dir / "exec",
        "--pidfile", node.dir / "dockerd.pid",
        "-H", node.host,
        "--containerd-namespace", namespace,
        "--containerd-plugins-namespace", f"{namespace}-plugins",
        "--bridge=none",
        "--iptables=false",
        "--node-generic-resource", f"NVIDIA-GPU={node.gpu}",
        "--shutdown-timeout", "2",
        "--log-level", "warn",
    ]  # fmt: skip
    argv: list[object] = dockerd
    if node.netns is not None:
        argv = [
            "nsenter", f"--net=/run/netns/{node.netns}",
            "unshare", "--mount", "--uts", "--propagation", "private",
            "sh", "-c", _ENTER, "enter", *dockerd,
        ]  # fmt: skip
    env = dict(
        os.environ, NODE_NAME=node.name, NODE_DIR=str(node.dir), DOCKER_SERVICE_PREFER_OFFLINE_IMAGE="1"
    )
    with open(node.dir / "dockerd.log", "wb") as log:
        node.proc = subprocess.Popen(
            [str(a) for a in argv], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=env, start_new_session=True,
        )  # fmt: skip
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if node.proc.poll() is not None:
            break
        if node.docker("version", check=False, timeout=10).returncode == 0:
            return
        time.sleep(0.2)
    tail = (node.dir / "dockerd.log").read_text(errors="replace")[-1500:]
    raise RuntimeError(f"dockerd of {node.name} did not answer within {START_TIMEOUT}s: {tail}")


def _make_netns(base: Path) -> tuple[str, str]:
    """Two namespaces joined by a veth pair, addresses .1 and .2; their names are kept in base."""
    tag = uuid.uuid4().hex[:8]
    names = (f"{PREFIX}{tag}-m", f"{PREFIX}{tag}-w")
    (base / "netns").write_text("\n".join(names) + "\n")
    for name in names:
        sh(["ip", "netns", "add", name])
    sh(
        [
            "ip",
            "link",
            "add",
            f"gsm{tag}",
            "netns",
            names[0],
            "type",
            "veth",
            "peer",
            "name",
            f"gsw{tag}",
            "netns",
            names[1],
        ]
    )
    for name, link, address in ((names[0], f"gsm{tag}", 1), (names[1], f"gsw{tag}", 2)):
        sh(["ip", "-n", name, "addr", "add", f"{SUBNET}.{address}/30", "dev", link])
        sh(["ip", "-n", name, "link", "set", link, "up"])
    return names


def start(image_tar: Path) -> Swarm:
    """A swarm of two engines (one if the second cannot run here: ``single_reason`` says why),
    each holding the image from ``image_tar``.  Raises RuntimeError when not even one runs."""
    reap_abandoned()
    base = Path(tempfile.mkdtemp(prefix=PREFIX, dir=PARENT))
    (base / "owner").write_text(f"{os.getpid()}\n")
    swarm = Swarm(base)
    tag = base.name[len(PREFIX) :][:6].lower().replace("_", "x")  # a hostname: no "_" (mkdtemp uses it)
    try:
        try:
            manager_ns, worker_ns = _make_netns(base)
        except (RuntimeError, OSError) as error:
            raise RuntimeError(f"cannot make network namespaces: {error}") from error
        manager = Node(f"gpumem-m-{tag}", base / "m", manager_ns, f"{SUBNET}.1", f"GPU-{uuid.uuid4()}")
        _start_engine(manager)
        swarm.nodes.append(manager)
        manager.docker(
            "swarm", "init", "--advertise-addr", manager.address, "--listen-addr", f"{manager.address}:2377",
            "--default-addr-pool", "10.96.0.0/16",
        )  # fmt: skip
        worker = Node(f"gpumem-w-{tag}", base / "w", worker_ns, f"{SUBNET}.2", f"GPU-{uuid.uuid4()}")
        try:
            _start_engine(worker)
            swarm.nodes.append(worker)
            token = manager.docker("swarm", "join-token", "-q", "worker").stdout.strip()
            worker.docker(
                "swarm", "join", "--token", token, "--advertise-addr", worker.address,
                "--listen-addr", f"{worker.address}:2377", f"{manager.address}:2377",
            )  # fmt: skip
        except (RuntimeError, subprocess.TimeoutExpired) as error:
            swarm.single_reason = f"the second engine could not join: {error}"
            if worker in swarm.nodes:
                _stop_engine(worker)
                swarm.nodes.remove(worker)
        for node in swarm.nodes:
            node.docker("load", "-i", image_tar, timeout=120)
        _wait_ready(swarm)
        return swarm
    except BaseException:
        stop(swarm)
        raise


def _wait_ready(swarm: Swarm) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        states = swarm.manager.docker("node", "ls", "--format", "{{.Status}}").stdout.split()
        if states.count("Ready") == len(swarm.nodes):
            return
        time.sleep(0.2)
    raise RuntimeError(f"swarm nodes not Ready within 30s: {states}")


def _stop_engine(node: Node) -> None:
    if node.proc is None or node.proc.poll() is not None:
        return
    node.proc.send_signal(signal.SIGTERM)
    try:
        node.proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(node.proc.pid, signal.SIGKILL)
        node.proc.wait(timeout=10)


def stop(swarm: Swarm) -> None:
    """Stop the engines, kill what is left in their namespaces, remove namespaces and files."""
    for node in reversed(swarm.nodes):
        _stop_engine(node)
    _remove(swarm.base)


def _remove(base: Path) -> None:
    netns_file = base / "netns"
    names = netns_file.read_text().split() if netns_file.exists() else []
    for name in names:
        pids = sh(["ip", "netns", "pids", name], check=False).stdout.split()
        for pid in pids:  # shims and task processes that outlived their engine
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
        sh(["ip", "netns", "delete", name], check=False)
    with open("/proc/self/mounts") as mounts:
        left = [line.split()[1] for line in mounts if line.split()[1].startswith(f"{base}/")]
    for mount in sorted(left, key=len, reverse=True):
        sh(["umount", "-l", mount], check=False)
    shutil.rmtree(base, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def reap_abandoned() -> None:
    """Swarms of test sessions that died without tearing down (their owner is gone)."""
    for base in Path(PARENT).glob(f"{PREFIX}*"):
        try:
            owner = int((base / "owner").read_text())
        except (OSError, ValueError):
            continue
        if _alive(owner):
            continue
        for pidfile in base.glob("*/dockerd.pid"):
            try:
                os.kill(int(pidfile.read_text()), signal.SIGKILL)
            except (OSError, ValueError):
                pass
        _remove(base)
