"""`gpumem-compose doctor` and `gpumem-docker doctor` on the real engine: what this CPU host offers
each path, told truthfully, and the exit code that says whether every capped service will run
capped as declared."""

import json
import os
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.docker

REPO = Path(__file__).resolve().parents[2]


def doctor(argv, env, cwd):
    return subprocess.run(
        argv, capture_output=True, text=True, env=env, cwd=cwd, timeout=120, stdin=subprocess.DEVNULL
    )


@pytest.mark.skipif(os.path.exists("/dev/nvidiactl"), reason="this host has an NVIDIA driver")
def test_doctor_on_this_cpu_host_says_no_gpu_and_why_the_driver_path_is_absent(e2e):
    env = dict(os.environ)
    env.pop("GPUMEM_NVML_LIBRARY")  # this host's own NVML: none
    done = doctor([e2e.gpumem_compose, "doctor", "--format", "json"], env, REPO / "samples" / "first-cap")
    assert done.returncode == 1, done.stderr
    data = json.loads(done.stdout)
    assert data["ok"] is False
    assert data["host"]["engine"]["reachable"] is True and "nvidia" in data["host"]["engine"]["runtimes"]
    assert data["host"]["nvml"]["gpus"] == []
    library = data["paths"]["library"]["missing"]
    assert any(m.startswith("no NVIDIA GPU on this host (no /dev/nvidiactl") for m in library), library
    driver = data["paths"]["driver"]["missing"]
    assert "no NVIDIA driver answers (no /dev/nvidiactl: no NVIDIA driver is loaded)" in driver
    assert "the engine does not resolve CDI devices (Docker 25 or later with CDI enabled)" in driver
    assert data["services"]["cuda"]["enforce"] == "library"
    text = doctor([e2e.gpumem_compose, "doctor"], env, REPO / "samples" / "first-cap").stdout
    assert "  cuda: library (auto)" in text and "  driver: not ready" in text and text.endswith("not ok\n")


def test_doctor_with_the_stand_in_gpu_and_a_runtime_service_is_ok(e2e, tmp_path):
    (tmp_path / "compose.yaml").write_text(
        json.dumps({"services": {"app": {"image": e2e.image, "runtime": "nvidia", "x-gpu-memory": "2GiB"}}})
    )
    done = doctor([e2e.gpumem_compose, "doctor", "--format", "json"], dict(os.environ), tmp_path)
    data = json.loads(done.stdout)
    assert done.returncode == 0, data["paths"]
    assert data["host"]["nvml"]["driver"] == "580.159.04" and data["host"]["nvml"]["cuda_text"] == "13.0"
    assert data["services"]["app"]["enforce"] == "library"
    assert any("older than r615" in why for why in data["services"]["app"]["why"])
    asked = doctor([e2e.gpumem_compose, "doctor", "--enforce", "driver"], dict(os.environ), tmp_path)
    assert asked.returncode == 1 and "app: refused: " in asked.stdout and "older than r615" in asked.stdout


def test_gpumem_docker_doctor_reports_the_host_alone(e2e, tmp_path):
    done = doctor([e2e.gpumem_docker, "doctor", "--format", "json"], dict(os.environ), tmp_path)
    data = json.loads(done.stdout)
    assert data["services"] == {} and data["host"]["nvml"]["gpus"][0]["uuid"].startswith("GPU-")
    assert done.returncode == 0, data["paths"]


def test_up_with_enforce_driver_on_this_host_is_refused_naming_what_lacks(e2e, tmp_path):
    (tmp_path / "compose.yaml").write_text(
        json.dumps({"services": {"app": {"image": e2e.image, "runtime": "nvidia", "x-gpu-memory": "2GiB"}}})
    )
    project = f"gpumem-e2e-enforce-{os.getpid()}"
    done = subprocess.run(
        [e2e.gpumem_compose, "-p", project, "up", "-d", "--enforce", "driver"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1 and len(lines) == 1, done.stderr
    assert lines[0].startswith(
        "gpumem-compose: compose.yaml: service 'app': x-gpu-memory-enforce 'driver': the driver path needs"
    )
    assert "driver 580.159.04 (CUDA 13.0) is older than r615" in lines[0]
    assert e2e.project_leftovers(project) == {"containers": [], "networks": [], "volumes": []}


# an nvidia-smi for the stand-in image: the CSV doctor --live asks for, read from NVML as the
# real one reads it (dlopen), so the library's answer is what comes back
NVIDIA_SMI = """#!/bin/sh
gpumem_nvml | while read -r _ index _ total _; do
    echo "${index#index=}, $(( ${total#total=} / 1048576 ))"
done
"""


@pytest.fixture(scope="module")
def smi_image(e2e, tmp_path_factory):
    script = tmp_path_factory.mktemp("smi") / "nvidia-smi"
    script.write_text(NVIDIA_SMI)
    script.chmod(0o755)
    tag = f"{e2e.image}-smi"
    box = subprocess.run(["docker", "create", e2e.image, "true"], capture_output=True, text=True, check=True)
    container = box.stdout.strip()
    try:
        subprocess.run(["docker", "cp", str(script), f"{container}:/usr/local/bin/nvidia-smi"], check=True)
        subprocess.run(["docker", "commit", container, tag], capture_output=True, check=True)
    finally:
        subprocess.run(["docker", "rm", "-f", container], capture_output=True)
    yield tag
    subprocess.run(["docker", "rmi", "-f", tag], capture_output=True)


def test_doctor_live_reads_back_the_cap_from_inside_a_container(e2e, smi_image, tmp_path):
    services = {
        "capped": {"image": smi_image, "runtime": "nvidia", "x-gpu-memory": "2GiB"},
        "half": {"image": smi_image, "runtime": "nvidia", "x-gpu-memory": 0.5},
    }
    (tmp_path / "compose.yaml").write_text(json.dumps({"services": services}))
    done = doctor([e2e.gpumem_compose, "doctor", "--live", "--format", "json"], dict(os.environ), tmp_path)
    data = json.loads(done.stdout)
    assert data["services"]["capped"]["live"] == {"total_mib": {"0": 2048}}, done.stderr
    assert data["services"]["half"]["live"] == {"total_mib": {"0": 4096}}  # half the stand-in's 8 GiB
    assert done.returncode == 0 and data["ok"] is True
    projects = subprocess.run(
        ["docker", "ps", "-a", "--format", '{{.Label "com.docker.compose.project"}}'],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert not [p for p in projects if p.startswith("gpumem-doctor-")]  # the throwaway ones are gone
    text = doctor([e2e.gpumem_compose, "doctor", "--live", "capped"], dict(os.environ), tmp_path).stdout
    assert "    live: nvidia-smi in a throwaway container shows GPU 0: 2048 MiB" in text
    assert "half" not in text


def test_doctor_live_without_nvidia_smi_in_the_image_is_not_ok(e2e, tmp_path):
    services = {"bare": {"image": e2e.image, "runtime": "nvidia", "x-gpu-memory": "2GiB"}}
    (tmp_path / "compose.yaml").write_text(json.dumps({"services": services}))
    done = doctor([e2e.gpumem_compose, "doctor", "--live", "--format", "json"], dict(os.environ), tmp_path)
    data = json.loads(done.stdout)
    assert done.returncode == 1 and data["ok"] is False
    assert data["services"]["bare"]["live"]["error"].startswith("exit ")


def test_doctor_reads_the_images_glibc_and_the_running_containers_ledger(e2e, tmp_path):
    (tmp_path / "compose.yaml").write_text(
        json.dumps(
            {
                "services": {
                    "app": {
                        "image": e2e.image,
                        "runtime": "nvidia",
                        "x-gpu-memory": "2GiB",
                        "command": ["sleep", "300"],
                    }
                }
            }
        )
    )
    project = f"gpumem-e2e-doctor-{os.getpid()}"
    env = dict(os.environ, COMPOSE_PROJECT_NAME=project)
    up = doctor([e2e.gpumem_compose, "up", "-d"], env, tmp_path)
    assert up.returncode == 0, up.stderr
    try:
        box = e2e.container_of(project, "app")
        before = json.loads(doctor([e2e.gpumem_compose, "doctor", "--format", "json"], env, tmp_path).stdout)
        assert e2e.alloc(box, 1 << 20) == "ok"  # the first CUDA process makes the ledger
        done = doctor([e2e.gpumem_compose, "doctor", "--format", "json"], env, tmp_path)
        data = json.loads(done.stdout)
        release = os.confstr("CS_GNU_LIBC_VERSION").split()[-1]  # the image holds this host's libc
        assert data["services"]["app"]["image"] == {
            "name": e2e.image,
            "loads": True,
            "why": f"glibc {release}",
        }
        (running,) = data["running"]
        assert (running["service"], running["enforce"], running["problem"]) == ("app", "library", "")
        ledger = running["ledger"]
        assert ledger["dir"] == "/run/gpumem" and ledger["problem"] == "" and ledger["free"] > 0
        assert before["running"][0]["ledger"]["ledger_bytes"] is None
        assert ledger["ledger_bytes"] == 283752  # sizeof(struct ledger): doctor's LEDGER_BYTES
        assert done.returncode == 0, data
        text = doctor([e2e.gpumem_compose, "doctor"], env, tmp_path).stdout
        assert f"    image {e2e.image}: glibc {release} (libgpumem.so loads)\n" in text
        assert "running capped containers:\n  " in text and "277.1 KiB ledger" in text
    finally:
        doctor([e2e.gpumem_compose, "down", "-t", "0"], env, tmp_path)


def _import(tmp_path, tag, files):
    """An image of a few files (path -> bytes), imported (no registry)."""
    import tarfile

    tar_path = tmp_path / f"{tag.replace(':', '-')}.tar"
    with tarfile.open(tar_path, "w") as tar:
        for path, data in files.items():
            info = tarfile.TarInfo(path)
            info.size, info.mode = len(data), 0o755
            tar.addfile(info, fileobj=__import__("io").BytesIO(data))
    subprocess.run(["docker", "import", str(tar_path), tag], capture_output=True, check=True)


def test_doctor_says_when_the_library_cannot_load_in_an_image_or_cannot_tell(e2e, tmp_path):
    suffix = os.getpid()
    musl, bare = f"gpumem-e2e-musl:{suffix}", f"gpumem-e2e-bare:{suffix}"
    _import(tmp_path, musl, {"lib/ld-musl-x86_64.so.1": b"\x7fELF musl stand-in", "bin/sh": b"#!"})
    _import(tmp_path, bare, {"app": b"a static program"})
    services = {
        name: {"image": image, "runtime": "nvidia", "x-gpu-memory": "1GiB"}
        for name, image in (("musl", musl), ("bare", bare), ("absent", f"gpumem-e2e-absent:{suffix}"))
    }
    (tmp_path / "compose.yaml").write_text(json.dumps({"services": services}))
    try:
        done = doctor([e2e.gpumem_compose, "doctor", "--format", "json"], dict(os.environ), tmp_path)
        data = json.loads(done.stdout)
        images = {name: svc["image"] for name, svc in data["services"].items()}
        assert images["musl"]["loads"] is False and images["musl"]["why"].startswith("musl libc, no glibc")
        assert images["bare"] == {
            "name": bare,
            "loads": None,
            "why": "unknown: no libc.so.6 where distributions keep it",
        }
        assert images["absent"]["why"] == "unknown: the image is not on the engine (pull or build it first)"
        assert done.returncode == 1 and data["ok"] is False  # musl alone makes it not ok
        left = subprocess.run(
            ["docker", "ps", "-aq", "--filter", f"ancestor={musl}"], capture_output=True, text=True
        )
        assert left.stdout.split() == []  # the containers read from are gone
    finally:
        subprocess.run(["docker", "rmi", "-f", musl, bare], capture_output=True)
