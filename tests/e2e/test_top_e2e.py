"""`top` on a real engine: two capped services of an image with no shell hold 700 MiB and 300 MiB
through the stand-in driver; `top` reads their ledgers from the host side."""

from __future__ import annotations

import io
import json
import os
import subprocess
import tarfile
import time
import uuid

import pytest
from test_compose_e2e import gpumem_compose, project_name, write_stack

pytestmark = pytest.mark.docker

MiB = 1 << 20
HELD = {"big": 700 * MiB, "small": 300 * MiB}


@pytest.fixture(scope="module")
def shellless_image(e2e, tmp_path_factory):
    """The e2e image without /bin/sh (and sleep, cat): only the probe and its libraries."""
    created = subprocess.run(
        ["docker", "create", e2e.image, "gpumem_probe"], capture_output=True, text=True, check=True
    ).stdout.strip()
    try:
        exported = subprocess.run(["docker", "export", created], capture_output=True, check=True).stdout
    finally:
        subprocess.run(["docker", "rm", "-f", created], capture_output=True)
    path = tmp_path_factory.mktemp("shellless") / "rootfs.tar"
    with tarfile.open(fileobj=io.BytesIO(exported)) as source, tarfile.open(path, "w") as out:
        for member in source.getmembers():
            if member.name.lstrip("./") in ("bin/sh", "bin/sleep", "bin/cat"):
                continue
            out.addfile(member, source.extractfile(member) if member.isfile() else None)
    tag = f"gpumem-e2e-noshell:{uuid.uuid4().hex[:12]}"
    subprocess.run(
        ["docker", "import", "--change", "ENV PATH=/usr/local/bin:/usr/bin:/bin", str(path), tag],
        capture_output=True,
        check=True,
    )
    gone = subprocess.run(["docker", "run", "--rm", tag, "sh", "-c", "true"], capture_output=True)
    assert gone.returncode != 0, "the image still has a shell"
    yield tag
    subprocess.run(["docker", "rmi", "-f", tag], capture_output=True)


@pytest.fixture(scope="module")
def holding(e2e, shellless_image, tmp_path_factory):
    """Two capped services, each one probe holding its bytes forever (no context reserve, so
    the ledger holds exactly the allocation)."""
    folder = tmp_path_factory.mktemp("top")
    services = {
        name: {
            "runtime": "nvidia",
            "x-gpu-memory": "1GiB",
            "environment": {"GPUMEM_CONTEXT_RESERVE": "0"},
            "command": ["gpumem_probe", "alloc", str(nbytes), "-1"],
        }
        for name, nbytes in HELD.items()
    }
    write_stack(folder / "compose.yaml", shellless_image, services)
    project = project_name("top")
    up = gpumem_compose(e2e, folder, project, "up", "-d")
    try:
        assert up.returncode == 0, up.stderr
        ids = {name: e2e.container_of(project, name) for name in HELD}
        yield {"folder": folder, "project": project, "ids": ids}
    finally:
        gpumem_compose(e2e, folder, project, "down", "-t", "0")


def top_json(e2e, holding, *, until=None) -> dict:
    """`gpumem-compose top --no-stream --format json`, asked again until ``until(doc)`` holds
    (the probes take their memory a moment after the containers start)."""
    deadline = time.monotonic() + 30
    while True:
        proc = gpumem_compose(
            e2e, holding["folder"], holding["project"], "top", "--no-stream", "--format", "json"
        )
        assert proc.returncode == 0, proc.stderr
        doc = json.loads(proc.stdout)
        if until is None or until(doc) or time.monotonic() > deadline:
            return doc
        time.sleep(0.3)


def by_service(doc: dict) -> dict:
    return {c["service"]: c for c in doc["containers"]}


def test_top_reports_what_each_service_holds_with_its_pids(e2e, holding):
    def settled(doc):
        seen = by_service(doc)
        return all(
            seen.get(s) and seen[s]["gpus"] and seen[s]["gpus"][0]["used"] >= n for s, n in HELD.items()
        )

    seen = by_service(top_json(e2e, holding, until=settled))
    assert set(seen) == set(HELD)
    for service, nbytes in HELD.items():
        entry = seen[service]
        assert entry["valid"] is True, entry
        assert abs(entry["gpus"][0]["used"] - nbytes) <= MiB, entry
        assert entry["gpus"][0]["cap"] == 1024 * MiB
        (process,) = [p for p in entry["processes"] if p["live"]]
        assert abs(process["used"][0] - nbytes) <= MiB
        init = e2e.inspect(holding["ids"][service])["State"]["Pid"]
        assert (process["pid"], process["host_pid"]) == (1, init)  # the probe is the container's PID 1


def test_a_denial_shows_in_the_count(e2e, holding):
    before = by_service(top_json(e2e, holding))["small"]["denials"]
    refused = subprocess.run(
        ["docker", "exec", holding["ids"]["small"], "gpumem_probe", "alloc", str(900 * MiB)],
        capture_output=True,
        text=True,
    )
    assert refused.returncode == 3 and refused.stdout.split()[:1] == ["oom"], refused.stderr
    # the exec'd process has exited; its slot, with its denial, stays until it is reclaimed
    after = by_service(top_json(e2e, holding))
    assert after["small"]["denials"] == before + 1, after["small"]
    assert after["big"]["denials"] == 0


def test_gpumem_docker_top_prints_prometheus_text(e2e, holding):
    container = holding["ids"]["big"]
    proc = subprocess.run(
        [e2e.gpumem_docker, "top", "--no-stream", "--format", "prometheus", container],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert "# TYPE gpumem_memory_used_bytes gauge" in lines
    used = [line for line in lines if line.startswith("gpumem_memory_used_bytes{")]
    assert len(used) == 1 and 'gpu="0"' in used[0] and 'UUID="GPU-' in used[0], used
    assert abs(int(used[0].rsplit(" ", 1)[1]) - HELD["big"]) <= MiB
    assert any(
        line.startswith("gpumem_memory_cap_bytes{") and line.endswith(f" {1024 * MiB}") for line in lines
    )


def test_state_dir_reads_a_ledger_of_ld_preload_by_hand(e2e, stubs, tmp_path):
    state = tmp_path / "ledger"
    env = {
        **os.environ,
        "LD_PRELOAD": str(e2e.lib_dir / "libgpumem.so"),
        "LD_LIBRARY_PATH": str(stubs.libcuda.parent),
        "GPUMEM_LIMIT": "1GiB",
        "GPUMEM_CONTEXT_RESERVE": "0",
        "GPUMEM_STATE_DIR": str(state),
    }
    probe = subprocess.Popen(
        [str(stubs.probe), "alloc", str(200 * MiB), "30"], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert probe.stdout is not None and probe.stdout.readline().strip() == "ok"
        proc = subprocess.run(
            [e2e.gpumem_compose, "top", "--no-stream", "--format", "json", "--state-dir", str(state)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 0, proc.stderr
        (entry,) = json.loads(proc.stdout)["containers"]
        assert entry["gpus"][0]["used"] == 200 * MiB
        assert [p["pid"] for p in entry["processes"]] == [probe.pid]
    finally:
        probe.kill()
        probe.wait()
