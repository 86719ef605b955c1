"""The driver path on a real engine that resolves CDI devices (Docker 26, cgroup v2; see
cdi_engine.py), with the stand-in NVML reporting r615 / CUDA 13.4 and a stand-in NVIDIA CDI spec
whose ``apply-cuda-memory-limits`` hook records what it is given: the two variables and the CDI
device reach the container's OCI spec, and the hook runs with them."""

import json
import os
import subprocess

import pytest

pytestmark = pytest.mark.docker

GiB, MiB = 1 << 30, 1 << 20
NVML_TOTAL_MIB = 8 * 1024 + 480  # the stand-in's NVML total: CUDA's 8 GiB and the driver's reserve
R615 = {"FAKE_NVML_DRIVER": "615.20", "FAKE_NVML_CUDA": "13040"}


def gpumem(cli, args, env, cwd):
    return subprocess.run(
        [cli, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=180, stdin=subprocess.DEVNULL
    )


def inspect(env, container):
    out = subprocess.run(
        ["docker", "inspect", container], capture_output=True, text=True, env=env, check=True
    )
    return json.loads(out.stdout)[0]


@pytest.fixture
def project(e2e, cdi_docker, tmp_path):
    """A project of two services on the stand-in GPU: `driver` alone, and `auto` (which is
    `both` here); brought down at the end."""
    services = {
        "drv": {
            "image": e2e.image,
            "command": ["sleep", "300"],
            "gpus": "all",
            "x-gpu-memory": 0.5,
            "x-gpu-memory-request": 0.25,
            "x-gpu-memory-enforce": "driver",
        },
        "auto": {"image": e2e.image, "command": ["sleep", "300"], "gpus": "all", "x-gpu-memory": "2GiB"},
    }
    (tmp_path / "compose.yaml").write_text(json.dumps({"services": services}))
    name = f"gpumem-e2e-driver-{tmp_path.name[-12:].lower().replace('_', '-')}"
    env = cdi_docker.env(**R615)
    yield name, env, tmp_path
    gpumem(e2e.gpumem_compose, ["-p", name, "down", "-t", "0"], env, tmp_path)


def test_up_gives_the_driver_path_its_variables_and_cdi_device_and_the_hook_runs_with_them(
    e2e, cdi_docker, project
):
    name, env, cwd = project
    done = gpumem(e2e.gpumem_compose, ["-p", name, "up", "-d"], env, cwd)
    assert done.returncode == 0, done.stderr
    doctor = json.loads(gpumem(e2e.gpumem_docker, ["doctor", "--format", "json"], env, cwd).stdout)
    uuid = doctor["host"]["nvml"]["gpus"][0]["uuid"]
    limit, request = NVML_TOTAL_MIB // 2, NVML_TOTAL_MIB // 4

    for service, mode, want in (("drv", "driver", (request, limit)), ("auto", "both", (2048, 2048))):
        box = inspect(env, f"{name}-{service}-1")
        variables = dict(e.split("=", 1) for e in box["Config"]["Env"])
        # what the engine was given: the pair in MiB, the GPU as a CDI device, no `gpus:` request
        assert (variables["NVIDIA_GPU_MEMORY_REQUEST"], variables["NVIDIA_GPU_MEMORY_LIMIT"]) == tuple(
            map(str, want)
        ), service
        assert box["HostConfig"]["DeviceRequests"] == [
            {
                "Driver": "cdi",
                "Count": 0,
                "DeviceIDs": [f"nvidia.com/gpu={uuid}"],
                "Capabilities": None,
                "Options": None,
            }
        ], service
        assert box["Config"]["Labels"]["io.gpumem.enforce"] == mode
        # the engine resolved the device through the spec (its env and node are in the OCI spec)
        # and ran its hook at createRuntime, which read the pair from that spec
        hooked = cdi_docker.hooked(box["Id"])
        assert hooked is not None, f"the hook did not run for {service}"
        assert hooked["args"] == ["apply-cuda-memory-limits"] and hooked["status"] == "creating"
        assert hooked["env"] == {
            "NVIDIA_GPU_MEMORY_REQUEST": str(want[0]),
            "NVIDIA_GPU_MEMORY_LIMIT": str(want[1]),
            "STANDIN_CDI": "1",
        }
        assert "/dev/gpumem-standin0" in hooked["devices"] and hooked["cgroups_path"]

    # driver alone: no library in the container; both: the library's cap too, as CUDA reports it
    drv = dict(e.split("=", 1) for e in inspect(env, f"{name}-drv-1")["Config"]["Env"])
    assert not [k for k in drv if k.startswith("GPUMEM_")] and "LD_PRELOAD" not in drv
    probe = subprocess.run(
        ["docker", "exec", f"{name}-auto-1", "gpumem_probe", "info"], capture_output=True, text=True, env=env
    )
    assert e2e.parse_info(probe.stdout)["total"] == 2 * GiB


def test_doctor_on_the_cdi_engine_with_r615_finds_the_driver_path_ready(e2e, cdi_docker, project):
    _, env, cwd = project
    done = gpumem(e2e.gpumem_compose, ["doctor", "--format", "json"], env, cwd)
    data = json.loads(done.stdout)
    assert data["paths"]["driver"] == {"ready": True, "missing": []}
    assert data["host"]["engine"]["cgroup_version"] == "2" and data["host"]["engine"]["cdi_spec_dirs"]
    assert [s["memory_limit_hook"] for s in data["host"]["cdi"]] == [True]
    assert (data["services"]["drv"]["enforce"], data["services"]["auto"]["enforce"]) == ("driver", "both")
    assert done.returncode == 0, data
    # the same host with the 580 driver: auto stays on the library, and says why
    old = gpumem(
        e2e.gpumem_compose, ["doctor", "--format", "json"], {**env, "FAKE_NVML_DRIVER": "580.159.04"}, cwd
    )
    services = json.loads(old.stdout)["services"]
    assert services["auto"]["enforce"] == "library" and any(
        "older than r615" in w for w in services["auto"]["why"]
    )
    assert services["drv"]["enforce"] is None and "older than r615" in services["drv"]["error"]


def _client_major(docker):
    done = subprocess.run([docker, "--version"], capture_output=True, text=True)
    words = done.stdout.replace(",", " ").split()  # Docker version 20.10.24+dfsg1, build ...
    return int(words[2].split(".")[0]) if len(words) > 2 and words[2][:1].isdigit() else 0


def test_doctor_through_a_client_older_than_the_engine_says_it_cannot_see_cdi(
    e2e, cdi_docker, project, tmp_path
):
    _, env, cwd = project
    # Debian 12's own client (20.10) drops CDISpecDirs from `docker info`
    found = [d for d in ("/usr/bin/docker", "/bin/docker") if os.path.exists(d) and 0 < _client_major(d) < 25]
    if not found:
        pytest.skip("no docker client older than 25 on this host")
    old_bin = tmp_path / "old-client"
    old_bin.mkdir()
    (old_bin / "docker").symlink_to(found[0])
    old = {**env, "PATH": f"{old_bin}:{env['PATH']}"}
    data = json.loads(gpumem(e2e.gpumem_compose, ["doctor", "--format", "json"], old, cwd).stdout)
    why = "the docker client is older than Docker 25 and does not show whether the engine 26."
    assert any(m.startswith(why) for m in data["paths"]["driver"]["missing"]), data["paths"]["driver"]
    assert data["services"]["auto"]["enforce"] == "library" and data["services"]["drv"]["enforce"] is None


@pytest.mark.parametrize(("asked", "mode"), [("driver", "driver"), ("auto", "both")])
def test_gpumem_docker_run_enforce_gives_the_same_to_one_container(e2e, cdi_docker, tmp_path, asked, mode):
    env = cdi_docker.env(**R615)
    name = f"gpumem-e2e-docker-{asked}-{tmp_path.name[-8:].lower().replace('_', '-')}"
    argv = [
        "run",
        "-d",
        "--name",
        name,
        "--gpus",
        "all",
        "--gpu-memory",
        "0.5",
        "--gpu-memory-request",
        "1GiB",
    ]
    done = gpumem(e2e.gpumem_docker, [*argv, "--enforce", asked, e2e.image, "sleep", "300"], env, tmp_path)
    try:
        assert done.returncode == 0, done.stderr
        box = inspect(env, name)
        variables = dict(e.split("=", 1) for e in box["Config"]["Env"])
        pair = {"NVIDIA_GPU_MEMORY_REQUEST": "1024", "NVIDIA_GPU_MEMORY_LIMIT": str(NVML_TOTAL_MIB // 2)}
        assert {k: variables[k] for k in pair} == pair
        assert [r["Driver"] for r in box["HostConfig"]["DeviceRequests"]] == ["cdi"]  # no `--gpus` request
        assert box["Config"]["Labels"]["io.gpumem.enforce"] == mode
        assert ("GPUMEM_LIMIT" in variables) == (mode == "both")
        hooked = cdi_docker.hooked(box["Id"])
        assert hooked is not None and hooked["env"] == {**pair, "STANDIN_CDI": "1"}
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, env=env)
