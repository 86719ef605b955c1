"""`gpumem-compose` on a real engine with real Compose: a multi-service stack whose `runtime: nvidia`
services run the stand-in CUDA driver; the probe inside reports what the library makes it see."""

import json
import select
import subprocess
import uuid

import pytest

MiB = 1 << 20

pytestmark = pytest.mark.docker

SERVE = ["sh", "-c", "trap 'exit 0' TERM; sleep 600 & wait"]


def write_stack(path, image: str, services: dict, top: dict | None = None):
    """A compose file: each service runs `image` idle; `services` maps name -> extra keys."""
    doc = dict(top or {})
    doc["services"] = {name: {"image": image, "command": SERVE, **extra} for name, extra in services.items()}
    # JSON is YAML, and Compose reads it as such
    path.write_text(json.dumps(doc, indent=2))
    return path


def project_name(tag: str) -> str:
    return f"gpumem-e2e-{tag}-{uuid.uuid4().hex[:8]}"


STACK = {
    "limited": {"runtime": "nvidia", "x-gpu-memory": 0.3},
    "sized": {"runtime": "nvidia", "x-gpu-memory": "2GiB"},
    "neighbour": {"runtime": "nvidia"},
    # two stand-in devices, a cap of its own on each
    "per_device": {
        "runtime": "nvidia",
        # 0.4: with limited's 0.3 and sized's 2 GiB, GPU 0 is promised no more than it holds
        "x-gpu-memory": {"0": 0.4, "1": "1GiB"},
        "environment": {"FAKE_CUDA_DEVICES": "2"},
    },
}


def gpumem_compose(e2e, folder, project, *args, env=None) -> subprocess.CompletedProcess:
    """`gpumem-compose -p PROJECT -f FOLDER/compose.yaml ARGS` run in FOLDER."""
    return subprocess.run(
        [e2e.gpumem_compose, "-p", project, "-f", str(folder / "compose.yaml"), *map(str, args)],
        capture_output=True,
        text=True,
        cwd=folder,
        env=env,
        stdin=subprocess.DEVNULL,
        timeout=180,
    )


@pytest.fixture(scope="module")
def stack(e2e, tmp_path_factory):
    """STACK up with `gpumem-compose up -d`: service name -> container id, plus `_project` and
    `_folder`; taken down at the end."""
    folder = tmp_path_factory.mktemp("stack")
    write_stack(folder / "compose.yaml", e2e.image, STACK)
    project = project_name("stack")
    up = gpumem_compose(e2e, folder, project, "up", "-d")
    try:
        assert up.returncode == 0, f"gpumem-compose up -d failed:\n{up.stdout}\n{up.stderr}"
        containers = {name: e2e.container_of(project, name) for name in STACK}
        yield {**containers, "_project": project, "_folder": folder}
    finally:
        gpumem_compose(e2e, folder, project, "down", "-v", "-t", "1")


@pytest.fixture(scope="module")
def device_total(e2e, stack) -> int:
    """The stand-in device's memory, as a process without a cap sees it."""
    return e2e.info(stack["neighbour"])["total"]


def test_limited_service_reports_its_fraction_of_the_device_as_total(e2e, stack, device_total):
    seen = e2e.info(stack["limited"])
    assert seen["total"] == int(device_total * 0.3)
    assert seen["free"] <= seen["total"]


def test_limited_service_reports_its_size_cap_as_total(e2e, stack):
    assert e2e.info(stack["sized"])["total"] == 2048 * MiB


def test_per_device_mapping_caps_each_device_on_its_own(e2e, stack, device_total):
    container = stack["per_device"]
    assert e2e.info(container, device=0)["total"] == int(device_total * 0.4)
    assert e2e.info(container, device=1)["total"] == 1024 * MiB
    assert e2e.alloc(container, 1024 * MiB, device=0) == "ok"
    assert e2e.alloc(container, 1024 * MiB, device=1) == "oom"


def test_limited_service_allocation_under_cap_succeeds(e2e, stack, device_total):
    # what a new process may take: the cap less its own CUDA context (which the cap counts)
    available = e2e.info(stack["limited"])["free"]
    assert available > 0
    assert e2e.alloc(stack["limited"], available // 2) == "ok"


def test_limited_service_allocation_past_cap_is_refused(e2e, stack, device_total):
    cap = int(device_total * 0.3)
    assert e2e.alloc(stack["limited"], cap + 1 * MiB) == "oom"
    assert e2e.alloc(stack["sized"], 2048 * MiB + 1 * MiB) == "oom"


def test_neighbour_without_x_gpu_memory_sees_whole_device_and_allocates_past_others_cap(
    e2e, stack, device_total
):
    seen = e2e.info(stack["neighbour"])
    assert seen["total"] == device_total
    assert seen["total"] > int(device_total * 0.3)
    assert e2e.alloc(stack["neighbour"], int(device_total * 0.3) + 64 * MiB) == "ok"


def test_neighbour_without_x_gpu_memory_gets_no_injection(e2e, stack):
    info = e2e.inspect(stack["neighbour"])
    env = info["Config"]["Env"] or []
    assert not [e for e in env if e.startswith(("LD_PRELOAD=", "GPUMEM_"))]
    assert not [m for m in info["Mounts"] if m["Destination"].startswith("/opt/gpumem")]


def test_limited_service_gets_library_read_only_preload_and_limit(e2e, stack):
    info = e2e.inspect(stack["limited"])
    env = dict(e.split("=", 1) for e in info["Config"]["Env"])
    assert env["GPUMEM_LIMIT"] == "0.3"
    assert env["LD_PRELOAD"] == "/opt/gpumem/libgpumem.so"
    assert env["GPUMEM_STATE_DIR"] == "/run/gpumem"
    (ledger,) = [m for m in info["Mounts"] if m["Destination"] == "/run/gpumem"]
    assert ledger["Type"] == "tmpfs"
    (lib,) = [m for m in info["Mounts"] if m["Destination"] == "/opt/gpumem/libgpumem.so"]
    assert lib["Type"] == "bind"
    assert lib["RW"] is False
    assert lib["Source"] == f"{e2e.lib_dir}/libgpumem.so"  # the file: a directory without it mounts fine


def hold(container: str, nbytes: int, seconds: int) -> subprocess.Popen:
    """A probe process in container holding nbytes for seconds; returns once it has them (the
    probe prints `ok` once its allocation succeeded, then holds)."""
    holder = subprocess.Popen(
        ["docker", "exec", container, "gpumem_probe", "alloc", str(nbytes), str(seconds)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    ready, _, _ = select.select([holder.stdout], [], [], 30)
    first = holder.stdout.readline().strip() if ready else ""
    if first != "ok":
        holder.kill()
        out, err = holder.communicate()
        pytest.fail(f"the holder did not get its {nbytes} bytes: {first!r} {out!r} {err!r}")
    return holder


def finish(holder: subprocess.Popen) -> None:
    try:
        _, err = holder.communicate(timeout=30)
    finally:
        if holder.poll() is None:
            holder.kill()
    assert holder.returncode == 0, f"holder exited {holder.returncode}: {err!r}"


def test_two_processes_in_one_container_share_the_cap(e2e, stack):
    container = stack["limited"]
    # most of what one process may take (the cap counts each process's CUDA context too)
    share = e2e.info(container)["free"] * 3 // 4
    holder = hold(container, share, 4)
    try:
        assert e2e.alloc(container, share) == "oom"
    finally:
        finish(holder)
    # the holder's share came back when it exited
    assert e2e.alloc(container, share) == "ok"


def test_two_services_have_separate_ledgers(e2e, stack):
    """The limited service holding most of its cap takes nothing from the sized service."""
    share = e2e.info(stack["limited"])["free"] * 3 // 4
    other = e2e.info(stack["sized"])["free"] // 2
    holder = hold(stack["limited"], share, 4)
    try:
        assert e2e.alloc(stack["limited"], share) == "oom"
        assert e2e.alloc(stack["sized"], other) == "ok"
    finally:
        finish(holder)


def test_nvml_in_limited_service_shows_cap_as_total_and_container_usage_as_used(e2e, stack, device_total):
    container = stack["limited"]
    share = e2e.info(container)["free"] // 2
    holder = hold(container, share, 3)
    try:
        seen = e2e.nvml(container)  # another process, through NVML (no CUDA context)
    finally:
        finish(holder)
    assert seen["total"] == int(device_total * 0.3)
    assert share <= seen["used"] <= seen["total"]


def test_compose_exec_through_gpumem_compose_is_capped_and_keeps_the_exit_code(e2e, stack, device_total):
    past = int(device_total * 0.3) + 1 * MiB
    proc = gpumem_compose(
        e2e, stack["_folder"], stack["_project"], "exec", "-T", "limited", "gpumem_probe", "alloc", past
    )
    assert (proc.returncode, proc.stdout.split()[:1]) == (3, ["oom"]), proc.stderr


def test_top_level_default_caps_gpu_services_without_own_value_and_leaves_others_alone(
    e2e, tmp_path, device_total
):
    services = {
        "gpu": {"runtime": "nvidia"},
        "own": {"runtime": "nvidia", "x-gpu-memory": 0.1},
        "cpu": {},
    }
    write_stack(tmp_path / "compose.yaml", e2e.image, services, top={"x-gpu-memory": "25%"})
    project = project_name("default")
    # the module's stack already holds most of GPU 0: host-wide admission is tested elsewhere
    up = gpumem_compose(e2e, tmp_path, project, "--allow-overcommit", "up", "-d")
    try:
        assert up.returncode == 0, up.stderr
        seen = {name: e2e.info(e2e.container_of(project, name))["total"] for name in services}
        assert seen == {"gpu": int(device_total * 0.25), "own": int(device_total * 0.1), "cpu": device_total}
        cpu_env = e2e.inspect(e2e.container_of(project, "cpu"))["Config"]["Env"] or []
        assert not [e for e in cpu_env if e.startswith(("LD_PRELOAD=", "GPUMEM_"))]
    finally:
        gpumem_compose(e2e, tmp_path, project, "down", "-t", "1")


def test_down_removes_every_container_and_network(e2e, tmp_path):
    write_stack(tmp_path / "compose.yaml", e2e.image, STACK)
    project = project_name("down")
    try:
        up = gpumem_compose(e2e, tmp_path, project, "--allow-overcommit", "up", "-d")  # beside `stack`
        assert up.returncode == 0, up.stderr
        up_state = e2e.project_leftovers(project)
        assert len(up_state["containers"]) == len(STACK) and up_state["networks"]
        down = gpumem_compose(e2e, tmp_path, project, "down", "-t", "1")
        assert down.returncode == 0, down.stderr
        assert e2e.project_leftovers(project) == {"containers": [], "networks": [], "volumes": []}
    finally:
        gpumem_compose(e2e, tmp_path, project, "down", "-t", "0")


def test_up_with_library_missing_fails_in_one_line_and_starts_nothing(e2e, tmp_path):
    write_stack(tmp_path / "compose.yaml", e2e.image, STACK)
    empty = tmp_path / "no-lib-here"
    empty.mkdir()
    project = project_name("nolib")
    try:
        proc = gpumem_compose(
            e2e, tmp_path, project, "up", "-d", env=dict(e2e.engine.env(), GPUMEM_LIB_DIR=str(empty))
        )
        assert proc.returncode != 0
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert len(lines) == 1, f"expected a one-line error, got:\n{proc.stderr}"
        assert "Traceback" not in proc.stderr
        assert str(empty) in lines[0] and "install-lib" in lines[0], lines[0]
        assert e2e.project_leftovers(project) == {"containers": [], "networks": [], "volumes": []}
    finally:
        gpumem_compose(e2e, tmp_path, project, "down", "-t", "0")


def _injected_view(info: dict) -> dict:
    """What injection decides about a container: its environment, mounts and runtime."""
    return {
        "env": sorted(e for e in info["Config"]["Env"] or [] if not e.startswith("HOSTNAME=")),
        "mounts": sorted((m["Type"], m["Source"], m["Destination"], m["RW"]) for m in info["Mounts"]),
        "runtime": info["HostConfig"]["Runtime"],
    }


def test_committed_override_with_plain_compose_gives_same_containers_as_gpumem_compose_up(
    e2e, tmp_path, device_total
):
    compose_file = write_stack(tmp_path / "compose.yaml", e2e.image, STACK)
    override = tmp_path / "gpumem.override.yaml"
    made = subprocess.run(
        [e2e.gpumem_compose, "-f", compose_file, "override", "-o", override],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        timeout=120,
    )
    assert made.returncode == 0, made.stderr
    assert str(e2e.lib_dir) not in override.read_text(), "the committed file names a local path"
    ours, plain = project_name("ours"), project_name("plain")
    runs = {
        ours: [e2e.gpumem_compose, "-p", ours, "-f", compose_file, "--allow-overcommit"],  # beside `stack`
        plain: [*e2e.compose, "-p", plain, "-f", compose_file, "-f", override],
    }
    try:
        for project, base in runs.items():
            up = subprocess.run(
                [*base, "up", "-d"],
                capture_output=True,
                text=True,
                cwd=tmp_path,
                stdin=subprocess.DEVNULL,
                timeout=180,
            )
            assert up.returncode == 0, f"{project}: {up.stderr}"
        for service in STACK:
            views = [_injected_view(e2e.inspect(e2e.container_of(p, service))) for p in runs]
            assert views[0] == views[1], service
        # and the plain-Compose container is really capped
        assert e2e.info(e2e.container_of(plain, "limited"))["total"] == int(device_total * 0.3)
    finally:
        for base in runs.values():
            subprocess.run(
                [*base, "down", "-t", "1"],
                capture_output=True,
                cwd=tmp_path,
                stdin=subprocess.DEVNULL,
                timeout=180,
            )
