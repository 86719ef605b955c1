"""Before a capped container starts, `gpumem-compose` and `gpumem-docker` stop at the first missing
prerequisite: one line naming it and its fix, a non-zero exit, and no container created. Run on
the real engine and the real Compose; the GPU is the stand-in NVML's, or none."""

import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.docker

REPO = Path(__file__).resolve().parents[2]
FIRST_SAMPLE = REPO / "samples" / "first-cap" / "compose.yaml"
README_CPU_HOST_LINE = (
    "gpumem-compose: no NVIDIA GPU on this host (no /dev/nvidiactl: no NVIDIA driver is loaded), "
    "and service 'cuda' needs one: run it on a host with an NVIDIA GPU and its driver "
    "(`nvidia-smi` lists the GPUs there)"
)


def project_name(tag: str) -> str:
    return f"gpumem-e2e-{tag}-{uuid.uuid4().hex[:8]}"


def stack(folder: Path, image: str, service: dict) -> Path:
    doc = {"services": {"app": {"image": image, "command": ["sleep", "60"], "x-gpu-memory": 0.3, **service}}}
    (folder / "compose.yaml").write_text(json.dumps(doc))
    return folder / "compose.yaml"


def one_line_refusal(proc: subprocess.CompletedProcess, *needles: str) -> str:
    """The command failed with exactly one line on stderr that holds every needle."""
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert len(lines) == 1, f"expected one line, got:\n{proc.stderr}"
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def up(e2e, compose_file: Path, project: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [e2e.gpumem_compose, "-p", project, "-f", str(compose_file), "up", "-d"],
        capture_output=True,
        text=True,
        env=env,
        stdin=subprocess.DEVNULL,
        timeout=120,
    )


def nothing_created(e2e, project: str) -> None:
    assert e2e.project_leftovers(project) == {"containers": [], "networks": [], "volumes": []}


def test_no_compose_is_named_with_the_extra_that_brings_it(e2e, tmp_path):
    empty_path = tmp_path / "bin"
    empty_path.mkdir()
    env = dict(os.environ, PATH=str(empty_path), DOCKER_CONFIG=str(tmp_path / "docker-config"))
    env.pop("COMPOSE_BIN", None)
    project = project_name("nocompose")
    proc = up(e2e, stack(tmp_path, e2e.image, {"runtime": "nvidia"}), project, env)
    one_line_refusal(proc, "Docker Compose v2+ not found", "gpumem-compose[compose]")
    nothing_created(e2e, project)


def test_no_engine_says_how_to_start_one(e2e, tmp_path):
    env = dict(os.environ, DOCKER_HOST=f"unix://{tmp_path}/no-engine.sock")
    env.pop("DOCKER_CONTEXT", None)
    project = project_name("noengine")
    proc = up(e2e, stack(tmp_path, e2e.image, {"runtime": "nvidia"}), project, env)
    one_line_refusal(
        proc, f"no Docker engine answers at unix://{tmp_path}/no-engine.sock", "systemctl start docker"
    )
    nothing_created(e2e, project)


def test_no_gpu_per_nvml_is_said_in_our_words(e2e, tmp_path):
    env = dict(os.environ, FAKE_CUDA_DEVICES="0")  # the stand-in NVML lists no GPU
    project = project_name("nogpu")
    proc = up(e2e, stack(tmp_path, e2e.image, {"runtime": "nvidia"}), project, env)
    one_line_refusal(proc, "no NVIDIA GPU on this host (NVML lists no GPU)", "service 'app' needs one")
    nothing_created(e2e, project)


@pytest.mark.skipif(os.path.exists("/dev/nvidiactl"), reason="this host has an NVIDIA driver")
def test_readme_main_job_on_a_cpu_host_ends_at_no_nvidia_gpu(e2e, tmp_path):
    env = dict(os.environ)
    env.pop("GPUMEM_NVML_LIBRARY")  # this host's own NVML: there is none
    project = project_name("first")
    proc = up(e2e, FIRST_SAMPLE, project, env)
    line = one_line_refusal(proc)
    assert line == README_CPU_HOST_LINE and proc.returncode == 3  # README.md quotes both
    nothing_created(e2e, project)


@pytest.mark.skipif(shutil.which("nvidia-container-runtime-hook") is not None, reason="the toolkit is here")
def test_gpus_without_the_nvidia_toolkit_is_said_in_our_words(e2e, tmp_path):
    project = project_name("nohook")
    proc = up(e2e, stack(tmp_path, e2e.image, {"gpus": "all"}), project, dict(os.environ))
    one_line_refusal(proc, "service 'app' asks for a GPU", "NVIDIA Container Toolkit", "not installed")
    assert "could not select device driver" not in proc.stderr
    nothing_created(e2e, project)


def test_cdi_device_on_an_engine_without_cdi_is_named(e2e, tmp_path):
    info = json.loads(
        subprocess.run(["docker", "info", "--format", "{{json .}}"], capture_output=True, text=True).stdout
    )
    if info.get("CDISpecDirs"):
        pytest.skip("this engine resolves CDI devices")
    project = project_name("nocdi")
    proc = up(e2e, stack(tmp_path, e2e.image, {"devices": ["nvidia.com/gpu=0"]}), project, dict(os.environ))
    one_line_refusal(proc, "asks for a CDI device (`nvidia.com/gpu=0`)", "does not resolve CDI devices")
    nothing_created(e2e, project)


def test_gpumem_docker_checks_the_same_before_docker_run(e2e, tmp_path):
    env = dict(os.environ, FAKE_CUDA_DEVICES="0")
    name = f"gpumem-e2e-nogpu-{uuid.uuid4().hex[:8]}"
    proc = subprocess.run(
        [
            e2e.gpumem_docker,
            "run",
            "--name",
            name,
            "--runtime",
            "nvidia",
            "--gpu-memory",
            "0.3",
            e2e.image,
            "true",
        ],
        capture_output=True,
        text=True,
        env=env,
        stdin=subprocess.DEVNULL,
        timeout=60,
    )
    one_line_refusal(proc, "gpumem-docker: no NVIDIA GPU on this host", "the container needs one")
    ps = subprocess.run(["docker", "ps", "-aq", "--filter", f"name={name}"], capture_output=True, text=True)
    assert ps.stdout.strip() == ""
