"""One card, many containers, on a real engine: replicas and --scale counted, projects admitted
against what the engine's capped containers already hold, racing starts, and a ledger per
container whatever shares its /dev/shm."""

from __future__ import annotations

import subprocess
import threading

import pytest
from test_compose_e2e import finish, gpumem_compose, hold, project_name, write_stack

pytestmark = pytest.mark.docker

ON_GPU0 = {"runtime": "nvidia", "environment": {"NVIDIA_VISIBLE_DEVICES": "0"}}


@pytest.fixture
def projects(e2e, tmp_path):
    """Make projects (folder, name) in tmp_path; every one is taken down at the end."""
    made = []

    def make(tag: str, services: dict) -> tuple:
        folder = tmp_path / f"{tag}-{len(made)}"
        folder.mkdir()
        write_stack(folder / "compose.yaml", e2e.image, services)
        made.append((folder, project_name(tag)))
        return made[-1]

    yield make
    for folder, name in made:
        gpumem_compose(e2e, folder, name, "down", "-t", "0")


#: said while a start waits for the previous one's containers to show up running (the lock is
#: held until then); a note, not part of the error
WAITING = "waiting for another start on this host to finish"


def one_line_error(proc: subprocess.CompletedProcess) -> str:
    lines = [
        line
        for line in proc.stderr.splitlines()
        if line.strip() and "warning" not in line and WAITING not in line
    ]
    assert proc.returncode != 0 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


def test_replicas_and_scale_past_the_gpu_are_refused_naming_each_replica(e2e, projects):
    for extra in ({"deploy": {"replicas": 2}}, {"scale": 2}):
        folder, name = projects("replicas", {"trainer": {**ON_GPU0, "x-gpu-memory": 0.6, **extra}})
        line = one_line_error(gpumem_compose(e2e, folder, name, "up", "-d"))
        assert "trainer-1=0.6, trainer-2=0.6" in line and "120%" in line, line
        assert e2e.project_leftovers(name)["containers"] == []
    folder, name = projects("scale", {"trainer": {**ON_GPU0, "x-gpu-memory": 0.6}})
    line = one_line_error(gpumem_compose(e2e, folder, name, "up", "-d", "--scale", "trainer=2"))
    assert "trainer-1=0.6, trainer-2=0.6" in line, line
    assert e2e.project_leftovers(name)["containers"] == []


def test_a_second_project_past_the_gpu_is_refused_naming_the_first_and_allow_overcommit_starts_it(
    e2e, projects
):
    first_folder, first = projects("first", {"trainer": {**ON_GPU0, "x-gpu-memory": 0.6}})
    up = gpumem_compose(e2e, first_folder, first, "up", "-d")
    assert up.returncode == 0, up.stderr
    second_folder, second = projects("second", {"trainer": {**ON_GPU0, "x-gpu-memory": 0.6}})
    line = one_line_error(gpumem_compose(e2e, second_folder, second, "up", "-d"))
    assert f"{first}-trainer-1=0.6" in line and "would be promised 120%" in line, line
    assert line.split(": ")[1].startswith("GPU 0"), line
    assert "--allow-overcommit" in line
    assert e2e.project_leftovers(second)["containers"] == []  # nothing of it was created
    forced = gpumem_compose(e2e, second_folder, second, "--allow-overcommit", "up", "-d")
    assert forced.returncode == 0, forced.stderr
    assert "warning: --allow-overcommit: GPU 0" in forced.stderr and "120%" in forced.stderr
    assert e2e.container_of(second, "trainer")
    # a one-off `run` of the first project counts too
    line = one_line_error(gpumem_compose(e2e, first_folder, first, "run", "--rm", "-d", "trainer"))
    assert "180%" in line, line


def test_a_capped_dependency_that_compose_starts_counts_and_is_named_unless_no_deps(e2e, projects):
    held_folder, held = projects("held", {"trainer": {**ON_GPU0, "x-gpu-memory": 0.6}})
    assert gpumem_compose(e2e, held_folder, held, "up", "-d").returncode == 0
    # app has no GPU; `up app` and `run app` start the encoder it depends on
    folder, name = projects(
        "deps", {"app": {"depends_on": ["encoder"]}, "encoder": {**ON_GPU0, "x-gpu-memory": 0.6}}
    )
    for args in (("up", "-d", "app"), ("run", "--rm", "-d", "app")):
        line = one_line_error(gpumem_compose(e2e, folder, name, *args))
        assert "would be promised 120%" in line and f"held by {held}-trainer-1=0.6" in line, line
        assert f"starting {name}-encoder-1=0.6 (a dependency of app)" in line, line
        assert e2e.project_leftovers(name)["containers"] == []
    alone = gpumem_compose(e2e, folder, name, "up", "-d", "--no-deps", "app")  # starts app alone
    assert alone.returncode == 0, alone.stderr
    assert e2e.container_of(name, "app")
    assert len(e2e.project_leftovers(name)["containers"]) == 1


def test_gpumem_docker_run_is_admitted_against_compose_projects(e2e, projects):
    folder, name = projects("holder", {"trainer": {**ON_GPU0, "x-gpu-memory": 0.7}})
    assert gpumem_compose(e2e, folder, name, "up", "-d").returncode == 0
    argv = [e2e.gpumem_docker, "run", "--rm", "--runtime", "nvidia", "-e", "NVIDIA_VISIBLE_DEVICES=0"]
    refused = subprocess.run(
        [*argv, "--gpu-memory", "0.5", e2e.image, "true"], capture_output=True, text=True, timeout=120
    )
    line = one_line_error(refused)
    assert line.startswith("gpumem-docker: ") and f"{name}-trainer-1=0.7" in line, line
    fits = subprocess.run(
        [*argv, "--gpu-memory", "0.3", e2e.image, "gpumem_probe", "info"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert fits.returncode == 0, fits.stderr


def test_two_starts_racing_for_the_last_60_percent_exactly_one_starts(e2e, projects):
    folder, name = projects("base", {"base": {**ON_GPU0, "x-gpu-memory": 0.4}})
    assert gpumem_compose(e2e, folder, name, "up", "-d").returncode == 0
    racers = [projects("racer", {"job": {**ON_GPU0, "x-gpu-memory": 0.6}}) for _ in range(2)]
    results: list = [None, None]
    gate = threading.Barrier(2)

    def start(i: int) -> None:
        gate.wait()
        results[i] = gpumem_compose(e2e, racers[i][0], racers[i][1], "up", "-d")

    threads = [threading.Thread(target=start, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    codes = sorted(r.returncode for r in results)
    assert codes[0] == 0 and codes[1] != 0, [(r.returncode, r.stderr) for r in results]
    started = [len(e2e.project_leftovers(n)["containers"]) for _, n in racers]
    assert sorted(started) == [0, 1]


def test_ipc_host_services_of_two_projects_and_two_replicas_hold_separate_ledgers(e2e, projects):
    service = {"runtime": "nvidia", "ipc": "host", "x-gpu-memory": 0.3}
    a_folder, a = projects("ipc-a", {"svc": {**service, "scale": 2}})
    b_folder, b = projects("ipc-b", {"svc": service})
    for folder, name in ((a_folder, a), (b_folder, b)):
        up = gpumem_compose(e2e, folder, name, "--allow-overcommit", "up", "-d")
        assert up.returncode == 0, up.stderr
    ids = e2e.containers_of(a, "svc") + e2e.containers_of(b, "svc")
    assert len(ids) == 3
    free = {c: e2e.info(c)["free"] for c in ids}
    share = free[ids[0]] * 3 // 4
    holder = hold(ids[0], share, 5)
    try:
        assert e2e.alloc(ids[0], share) == "oom"  # its own cap is spent
        for other in ids[1:]:
            assert e2e.info(other)["free"] == free[other]  # the others see none of it
            assert e2e.alloc(other, share) == "ok"
    finally:
        finish(holder)


def test_a_gpu_container_with_no_cap_on_the_same_gpu_is_warned_about(e2e, projects):
    plain = subprocess.run(
        [
            "docker",
            "run",
            "-d",
            "--runtime",
            "nvidia",
            "-e",
            "NVIDIA_VISIBLE_DEVICES=0",
            e2e.image,
            "sleep",
            "60",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    try:
        name = e2e.inspect(plain)["Name"].lstrip("/")
        folder, project = projects("beside", {"trainer": {**ON_GPU0, "x-gpu-memory": 0.2}})
        up = gpumem_compose(e2e, folder, project, "up", "-d")
        assert up.returncode == 0, up.stderr
        assert f"warning: container {name} uses GPU 0" in up.stderr and "with no cap" in up.stderr, up.stderr
    finally:
        subprocess.run(["docker", "rm", "-f", plain], capture_output=True)
