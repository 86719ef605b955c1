"""gpumem-docker run --enforce / --gpu-memory-request: the same decision as x-gpu-memory-enforce
in a compose file (enforce.decide), told to `docker run` as arguments, with errors naming our
options."""

from __future__ import annotations

from pathlib import Path

import pytest
from unit_helpers import cli

from compose_gpumem import enforce, hostfacts
from compose_gpumem.docker_cli import ENFORCE, REQUEST, rewrite, rewrite_and_plan
from compose_gpumem.enforce import Decision
from compose_gpumem.errors import InvalidValue, UsageError

UUID = "GPU-8a5f0c31-7e2d-4b10-9c55-21436587a900"
PAIR = {"NVIDIA_GPU_MEMORY_REQUEST": "1024", "NVIDIA_GPU_MEMORY_LIMIT": "2048"}


def decision(mode: str) -> Decision:
    return Decision("the container", mode, mode, (), dict(PAIR), (f"nvidia.com/gpu={UUID}",))


def test_driver_alone_asks_for_the_gpu_by_cdi_with_the_pair_and_leaves_the_library_out() -> None:
    args = ["run", "--rm", "--gpus", "all", "--gpu-memory", "2GiB", "--enforce", "driver", "img", "prog"]
    out = rewrite(args, lib_dir="/L", environ={}, decision=decision("driver"))
    assert "--gpus" not in out and "all" not in out
    assert not [a for a in out if "libgpumem" in a or a.startswith(("GPUMEM_", "LD_PRELOAD"))]
    assert out[out.index("--device") + 1] == f"nvidia.com/gpu={UUID}"
    assert "NVIDIA_GPU_MEMORY_REQUEST=1024" in out and "NVIDIA_GPU_MEMORY_LIMIT=2048" in out
    assert "io.gpumem.enforce=driver" in out and "--enforce" not in out
    assert out[0] == "run" and out[-3:] == ["--rm", "img", "prog"]


def test_both_keeps_the_library_and_adds_the_driver_pair() -> None:
    args = ["run", "--device", "nvidia.com/gpu=0", "--gpu-memory", "2GiB", "img"]
    out = rewrite(args, lib_dir="/L", environ={}, decision=decision("both"))
    assert "GPUMEM_LIMIT=2GiB" in out and "LD_PRELOAD=/opt/gpumem/libgpumem.so" in out
    assert [out[i + 1] for i, a in enumerate(out) if a == "--device"] == [f"nvidia.com/gpu={UUID}"]
    assert "NVIDIA_GPU_MEMORY_LIMIT=2048" in out and "io.gpumem.enforce=both" in out


def test_a_library_decision_is_the_plain_injection() -> None:
    args = ["run", "--gpus", "all", "--gpu-memory", "0.3", "img"]
    library = Decision("the container", "auto", "library", ("why",))
    assert rewrite(args, lib_dir="/L", environ={}, decision=library) == rewrite(
        args, lib_dir="/L", environ={}
    )


def test_the_declared_pair_wins_over_a_hand_set_one_with_a_warning(
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = ["run", "--gpus", "all", "-e", "NVIDIA_GPU_MEMORY_LIMIT=99", "--gpu-memory", "2GiB", "img"]
    out = rewrite(args, lib_dir="/L", environ={}, decision=decision("driver"))
    assert "NVIDIA_GPU_MEMORY_LIMIT=99" not in out and "NVIDIA_GPU_MEMORY_LIMIT=2048" in out
    assert "wins over -e NVIDIA_GPU_MEMORY_LIMIT=99" in capsys.readouterr().err
    # on the library path the variable is the user's own business, as docker gives it
    assert "NVIDIA_GPU_MEMORY_LIMIT=99" in rewrite(args, lib_dir="/L", environ={})


def test_our_options_need_a_cap_and_a_known_mode() -> None:
    with pytest.raises(UsageError, match="--enforce without --gpu-memory"):
        rewrite(["run", "--gpus", "all", "--enforce", "driver", "img"], environ={})
    with pytest.raises(UsageError, match="--gpu-memory-request without --gpu-memory"):
        rewrite(["run", "--gpus", "all", "--gpu-memory-request=1GiB", "img"], environ={})
    with pytest.raises(UsageError, match="--enforce needs a value"):
        rewrite(["run", "--gpus", "all", "--gpu-memory", "0.3", "--enforce"], environ={})
    with pytest.raises(InvalidValue) as caught:
        rewrite(["run", "--gpus", "all", "--gpu-memory", "0.3", "--enforce=cgroup", "img"], environ={})
    assert str(caught.value) == "--enforce 'cgroup': must be one of auto, library, driver, both"


def _run(tmp_path: Path, fake_docker: Path, fake_nvml: Path, *args: str, driver: str = "580.159.04"):
    env = {
        "GPUMEM_DOCKER_BIN": str(fake_docker),
        "GPUMEM_NVML_LIBRARY": str(fake_nvml),
        "FAKE_NVML_DRIVER": driver,
        "DOCKER_HOST": f"unix://{tmp_path}/no-engine.sock",  # no engine: no CDI, as on this host
    }
    return cli(
        "run", "--gpus", "all", "--gpu-memory", "2GiB", *args, "img", cwd=tmp_path, prog="docker", env=env
    )


def test_enforce_driver_on_a_host_without_the_driver_path_is_one_line_naming_what_lacks(
    tmp_path: Path, fake_docker: Path, fake_nvml: Path, lib_dir: Path
) -> None:
    done = _run(tmp_path, fake_docker, fake_nvml, "--enforce", "driver")
    assert done.returncode == 1 and not (tmp_path / "record").exists()
    (line,) = done.stderr.splitlines()
    assert line.startswith("gpumem-docker: --enforce 'driver': the driver path needs what this host lacks: ")
    assert "driver 580.159.04 (CUDA 13.0) is older than r615" in line
    assert "the engine does not resolve CDI devices" in line


def test_auto_there_is_the_library_and_library_reads_nothing_of_the_host(
    tmp_path: Path, fake_docker: Path, fake_nvml: Path, lib_dir: Path
) -> None:
    for asked in ((), ("--enforce=auto",), ("--enforce", "library")):
        done = _run(tmp_path, fake_docker, fake_nvml, *asked, driver="615.20")
        assert done.returncode == 5, done.stderr
        recorded = (tmp_path / "record").read_text().splitlines()
        assert "GPUMEM_LIMIT=2GiB" in recorded and "io.gpumem.enforce=library" in recorded
        assert "--gpus" in recorded and not [a for a in recorded if a.startswith("NVIDIA_GPU_MEMORY")]


def driver_ready_host() -> hostfacts.Facts:
    """Every prerequisite of the driver path, as plain facts."""
    gpu = hostfacts.Gpu(0, UUID, "Fake GPU 0", 8 << 30, False)
    engine = hostfacts.Engine(
        "unix:///var/run/docker.sock", True, version="28.2.2", cgroup_version="2", cdi_spec_dirs=("/etc/cdi",)
    )
    spec = hostfacts.CdiSpec("/etc/cdi/nvidia.yaml", "nvidia.com/gpu", ("0", UUID), True)
    library = hostfacts.Library("/usr/local/lib/gpumem/libgpumem.so", True)
    return hostfacts.Facts(
        hostfacts.Nvml(driver="615.20", cuda=13040, gpus=(gpu,)), engine, library, "", (spec,)
    )


def test_the_decision_for_a_container_names_our_options() -> None:
    def decide(*args: str) -> Decision:
        done = rewrite_and_plan(["run", "--gpus", "all", "--gpu-memory", "2GiB", *args, "img"], environ={})
        return enforce.decide(
            "the container",
            done.enforce,
            done.plan.limits,
            done.plan.request.gpus(),
            driver_ready_host(),
            request=done.request,
            keys=(ENFORCE, REQUEST),
            named=False,
        )

    assert decide().mode == "both"  # auto, with every prerequisite
    ours = decide("--enforce", "driver", "--gpu-memory-request", "0.125")
    assert (ours.mode, ours.env) == ("driver", PAIR)  # an eighth of 8 GiB; the cap 2 GiB
    assert ours.cdi_devices == (f"nvidia.com/gpu={UUID}",)
    with pytest.raises(InvalidValue) as caught:
        decide("--gpu-memory-request=3GiB")
    assert str(caught.value) == "--gpu-memory-request '3GiB': is 3072 MiB, above the limit of 2048 MiB"
    with pytest.raises(InvalidValue) as caught:
        decide("--gpu-memory-request", "lots")
    assert str(caught.value).startswith("--gpu-memory-request 'lots': ")
