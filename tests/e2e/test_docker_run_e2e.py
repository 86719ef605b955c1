"""`gpumem-docker run --gpu-memory` on a real engine: one container, the same injection as Compose."""

import json
import os
import shutil
import subprocess
import uuid

import pytest

pytestmark = pytest.mark.docker

MiB = 1 << 20


def docker_run(e2e, *args, gpumem=True):
    """`gpumem-docker run --rm --runtime nvidia ARGS` (or plain `docker run` for gpumem=False)."""
    argv = [e2e.gpumem_docker if gpumem else "docker", "run", "--rm", "--runtime", "nvidia", *args]
    return subprocess.run(
        [str(a) for a in argv], capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120
    )


@pytest.fixture(scope="module")
def device_total(e2e) -> int:
    """The stand-in device's memory as a plain `docker run` (no cap) sees it."""
    proc = docker_run(e2e, e2e.image, "gpumem_probe", "info", gpumem=False)
    assert proc.returncode == 0, proc.stderr
    return e2e.parse_info(proc.stdout)["total"]


def test_gpu_memory_fraction_is_the_total_the_container_sees(e2e, device_total):
    proc = docker_run(e2e, "--gpu-memory", "0.3", e2e.image, "gpumem_probe", "info")
    assert proc.returncode == 0, proc.stderr
    assert e2e.parse_info(proc.stdout)["total"] == int(device_total * 0.3)


def test_gpu_memory_size_is_the_total_the_container_sees(e2e):
    proc = docker_run(e2e, "--gpu-memory", "1GiB", e2e.image, "gpumem_probe", "info")
    assert proc.returncode == 0, proc.stderr
    assert e2e.parse_info(proc.stdout)["total"] == 1024 * MiB


def test_gpu_memory_allocation_past_cap_is_refused(e2e, device_total):
    past = int(device_total * 0.3) + 1 * MiB
    proc = docker_run(e2e, "--gpu-memory", "0.3", e2e.image, "gpumem_probe", "alloc", past)
    assert e2e.alloc_outcome(proc) == "oom"


def test_gpu_memory_allocation_under_cap_succeeds(e2e, device_total):
    under = int(device_total * 0.3 * 0.25)  # its CUDA context counts against the cap too
    proc = docker_run(e2e, "--gpu-memory", "0.3", e2e.image, "gpumem_probe", "alloc", under)
    assert e2e.alloc_outcome(proc) == "ok"


def test_plain_docker_run_allocates_past_what_the_cap_would_be(e2e, device_total):
    """The refusal above comes from the cap, not from the stand-in device itself."""
    past = int(device_total * 0.3) + 1 * MiB
    proc = docker_run(e2e, e2e.image, "gpumem_probe", "alloc", past, gpumem=False)
    assert e2e.alloc_outcome(proc) == "ok"


def test_other_docker_run_options_pass_through_untouched(e2e):
    proc = docker_run(
        e2e,
        "--gpu-memory",
        "0.3",
        "-e",
        "LD_PRELOAD=/nonexistent-but-kept.so",
        "-e",
        "KEEP=me",
        "--workdir",
        "/tmp",
        e2e.image,
        "sh",
        "-c",
        'echo "$KEEP|$PWD|$LD_PRELOAD"',
    )
    assert proc.returncode == 0, proc.stderr
    keep, pwd, preload = proc.stdout.strip().split("|")
    assert (keep, pwd) == ("me", "/tmp")
    # ours first, the existing value kept after it
    assert preload.replace(" ", ":").split(":") == ["/opt/gpumem/libgpumem.so", "/nonexistent-but-kept.so"]


def test_container_whose_library_file_is_gone_fails_to_start_rather_than_run_uncapped(e2e, tmp_path):
    """The library file is mounted, not its directory: a directory that exists without
    libgpumem.so (removed after `create`, an empty GPUMEM_LIB_DIR) would mount fine and leave the
    container uncapped; the missing file stops the container with Docker's own error instead."""
    lib_dir = tmp_path / "lib"
    lib_dir.mkdir()
    shutil.copy2(e2e.lib_dir / "libgpumem.so", lib_dir / "libgpumem.so")
    name = f"gpumem-e2e-gone-{uuid.uuid4().hex[:8]}"
    argv = [e2e.gpumem_docker, "create", "--runtime", "nvidia", "--name", name, "--gpu-memory", "0.3"]
    created = subprocess.run(
        [*argv, e2e.image, "gpumem_probe", "info"],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=120,
        env={**os.environ, "GPUMEM_LIB_DIR": str(lib_dir)},
    )
    try:
        assert created.returncode == 0, created.stderr
        (mount,) = [m for m in e2e.inspect(name)["Mounts"] if m["Destination"].startswith("/opt/gpumem")]
        assert (mount["Source"], mount["Destination"]) == (
            f"{lib_dir}/libgpumem.so",
            "/opt/gpumem/libgpumem.so",
        )
        (lib_dir / "libgpumem.so").unlink()  # the directory stays, without the library
        started = subprocess.run(
            ["docker", "start", "-a", name],
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=120,
        )
        assert started.returncode != 0, f"started uncapped: {started.stdout}"
        assert f"{lib_dir}/libgpumem.so" in started.stderr, started.stderr
        assert "total=" not in started.stdout  # the probe never ran
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, timeout=60)


def test_the_declared_cap_wins_over_a_hand_set_limit_in_both_tools(e2e, device_total, tmp_path):
    """One rule on the real engine: a hand-set GPUMEM_LIMIT / GPUMEM_LIMIT_0 (a service's
    environment, `-e`) loses to the declared cap, which the probe then sees as its total, and
    each tool says so in one warning."""
    hand_set = {"GPUMEM_LIMIT": "0.9", "GPUMEM_LIMIT_0": "0.8"}
    cap = int(device_total * 0.3)
    ours = docker_run(
        e2e,
        *(a for k, v in hand_set.items() for a in ("-e", f"{k}={v}")),
        "--gpu-memory",
        "0.3",
        e2e.image,
        "gpumem_probe",
        "info",
    )
    assert ours.returncode == 0, ours.stderr
    assert e2e.parse_info(ours.stdout)["total"] == cap
    assert (
        "--gpu-memory 0.3 wins over -e GPUMEM_LIMIT=0.9 (now 0.3), GPUMEM_LIMIT_0=0.8 (now 0.3)"
        in ours.stderr
    )
    service = {"image": e2e.image, "runtime": "nvidia", "x-gpu-memory": 0.3, "environment": hand_set}
    (tmp_path / "compose.yaml").write_text(json.dumps({"services": {"t": service}}))
    project = f"gpumem-e2e-rule-{uuid.uuid4().hex[:8]}"
    compose = [e2e.gpumem_compose, "-p", project]
    try:
        ran = subprocess.run(
            [*compose, "run", "--rm", "t", "gpumem_probe", "info"],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            stdin=subprocess.DEVNULL,
            timeout=180,
        )
        assert ran.returncode == 0, ran.stderr
        assert e2e.parse_info(ran.stdout)["total"] == cap
        assert (
            "gpumem-compose: warning: compose.yaml: service 't': x-gpu-memory 0.3 wins over its "
            "environment's GPUMEM_LIMIT=0.9 (now 0.3), GPUMEM_LIMIT_0=0.8 (now 0.3)"
        ) in ran.stderr
    finally:
        subprocess.run([*compose, "down", "-t", "0"], cwd=tmp_path, capture_output=True, timeout=120)
