"""`gpumem-compose stack deploy` on a real Swarm of two private engines (tests/e2e/swarm_nodes.py):
each capped task runs the stand-in driver on its own node and reports the cap the library gave
it, resolved there against the GPU that task received; a service asking for more GPUs than any
node advertises stays pending with Swarm's reason."""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid

import pytest
import swarm_nodes

pytestmark = pytest.mark.docker

STAND_IN_TOTAL = 8 << 30  # the stand-in driver's memory per device (tests/stubs/fake_cuda.c)
SERVE = ["sh", "-c", "gpumem_probe totalmem; trap 'exit 0' TERM; sleep 600 & wait"]
WAIT_S = 40


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() not in ("", "0", "false", "no"):
        pytest.fail(f"swarm e2e cannot run under CI: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def swarm(e2e, tmp_path_factory):
    """Two engines of this session only, each holding the e2e image (saved from the session's
    engine); torn down whatever happens."""
    if os.geteuid() != 0:
        _unavailable("a swarm of private engines needs root")
    if swarm_nodes.missing_tools():
        _unavailable(
            f"missing {', '.join(swarm_nodes.missing_tools())} (Debian: iproute2, util-linux, docker.io)"
        )
    tar = tmp_path_factory.mktemp("swarm-image") / "image.tar"
    swarm_nodes.sh(["docker", "save", "-o", tar, e2e.image], env=e2e.engine.env(), timeout=120)
    try:
        cluster = swarm_nodes.start(tar)
    except RuntimeError as error:
        _unavailable(str(error))
    if cluster.single_reason:
        print(f"swarm e2e on one node: {cluster.single_reason}")
    try:
        yield cluster
    finally:
        swarm_nodes.stop(cluster)


@pytest.fixture
def stack(swarm):
    """A fresh stack name; the stack is removed afterwards, and its tasks gone from every node,
    so that the next test finds the nodes' GPUs free."""
    name = f"gs{uuid.uuid4().hex[:6]}"
    yield name
    swarm.manager.docker("stack", "rm", name, check=False)
    deadline = time.monotonic() + WAIT_S
    label = f"label=com.docker.stack.namespace={name}"
    while time.monotonic() < deadline:
        if not any(
            node.docker("ps", "-aq", "--filter", label, check=False).stdout.split() for node in swarm.nodes
        ):
            break
        time.sleep(0.3)


def service(image: str, cap, gpus: int, node: str | None) -> dict:
    spec = {
        "image": image,
        "command": SERVE,
        "gpus": [{"count": gpus}],
        "x-gpu-memory": cap,
        # engine 20.10 never runs a generic-resource task on an overlay network (DESIGN.md)
        "network_mode": "host",
    }
    if node:
        spec["deploy"] = {"placement": {"constraints": [f"node.hostname == {node}"]}}
    return spec


def deploy(e2e, cluster, folder, stack: str, services: dict) -> subprocess.CompletedProcess:
    (folder / "compose.yaml").write_text(json.dumps({"services": services}, indent=2))
    return subprocess.run(
        [e2e.gpumem_compose, "-f", "compose.yaml", "stack", "deploy", "--resolve-image", "never", stack],
        capture_output=True,
        text=True,
        cwd=folder,
        env=cluster.manager.env(),
        stdin=subprocess.DEVNULL,
        timeout=120,
    )


def task_report(node: swarm_nodes.Node, service_name: str, done: str = "totalmem=") -> tuple[str, str]:
    """The task's container on ``node``: what it printed (once ``done`` is in it) and its
    environment's GPU."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        ids = node.docker(
            "ps", "-q", "--filter", f"label=com.docker.swarm.service.name={service_name}"
        ).stdout
        if ids.split():
            container = ids.split()[0]
            logs = node.docker("logs", container).stdout
            if done in logs:
                env = json.loads(node.docker("inspect", container).stdout)[0]["Config"]["Env"]
                gpu = next(
                    (e.split("=", 1)[1] for e in env if e.startswith("DOCKER_RESOURCE_NVIDIA-GPU=")), ""
                )
                return logs.strip(), gpu
        time.sleep(0.3)
    tasks = node.docker("service", "ps", "--no-trunc", service_name, check=False).stdout
    pytest.fail(
        f"no task of {service_name} reported on {node.name} within {WAIT_S}s:\n{tasks}", pytrace=False
    )


def test_capped_tasks_report_their_cap_on_their_own_node_and_too_greedy_stays_pending(
    e2e, swarm, stack, tmp_path
):
    nodes = swarm.nodes
    caps = {"small": (0.25, nodes[0]), "half": ("50%", nodes[-1])}
    services = {name: service(e2e.image, cap, 1, node.name) for name, (cap, node) in caps.items()}
    if len(nodes) == 1:  # one GPU on the one node: only one capped task can run
        del services["half"], caps["half"]
    services["greedy"] = service(e2e.image, 0.1, 2, None)
    proc = deploy(e2e, swarm, tmp_path, stack, services)
    assert proc.returncode == 0, proc.stderr
    assert "network_mode: host -> networks: [hostnet]" in proc.stderr
    assert "service 'greedy': Swarm places its tasks on any node" in proc.stderr

    for name, (cap, node) in caps.items():
        printed, gpu = task_report(node, f"{stack}_{name}")
        fraction = cap if isinstance(cap, float) else float(cap.rstrip("%")) / 100
        assert printed == f"totalmem={int(fraction * STAND_IN_TOTAL)}", (name, node.name)
        assert gpu == node.gpu, f"{name}: the task did not get its node's advertised GPU"

    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        state = swarm.manager.docker(
            "service", "ps", "--no-trunc", "--format", "{{.CurrentState}}|{{.Error}}", f"{stack}_greedy"
        ).stdout
        if "insufficient resources" in state:
            break
        time.sleep(0.3)
    print(f"greedy: {state.strip()}")
    assert state.startswith("Pending") and "no suitable node (insufficient resources" in state, state


def test_caps_pinned_to_one_node_past_its_gpu_are_refused_before_deploying(e2e, swarm, stack, tmp_path):
    node = swarm.manager.name
    services = {"a": service(e2e.image, 0.6, 1, node), "b": service(e2e.image, 0.5, 1, node)}
    proc = deploy(e2e, swarm, tmp_path, stack, services)
    assert proc.returncode == 1
    assert f"tasks pinned to node {node} are promised 1.10 GPUs of memory and it has 1" in proc.stderr
    assert stack not in swarm.manager.docker("service", "ls").stdout


#: In a read-only task: its mounts, then an allocation that needs the ledger, then the cap (a
#: library that cannot write its ledger refuses every allocation).
READ_ONLY_SERVE = [
    "sh",
    "-c",
    "cat /proc/mounts; gpumem_probe alloc 1073741824; gpumem_probe totalmem; echo done;"
    " trap 'exit 0' TERM; sleep 600 & wait",
]


def test_a_read_only_task_keeps_its_ledger_on_a_tmpfs_of_its_own_and_allocates_under_its_cap(
    e2e, swarm, stack, tmp_path
):
    node = swarm.manager
    spec = {**service(e2e.image, 0.25, 1, node.name), "read_only": True, "command": READ_ONLY_SERVE}
    proc = deploy(e2e, swarm, tmp_path, stack, {"ro": spec})
    assert proc.returncode == 0, proc.stderr
    printed, _ = task_report(node, f"{stack}_ro", done="done")
    lines = printed.splitlines()
    mounts = {fields[1]: fields for fields in (line.split() for line in lines) if len(fields) == 6}
    assert mounts["/"][3].split(",")[0] == "ro", mounts["/"]  # the root is read-only
    assert mounts["/run/gpumem"][2] == "tmpfs" and mounts["/run/gpumem"][3].startswith("rw,"), mounts
    assert lines[-3:] == ["ok", f"totalmem={STAND_IN_TOTAL // 4}", "done"], printed
