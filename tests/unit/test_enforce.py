"""x-gpu-memory-enforce: every decision and message, on the stand-in NVML (r615 / CUDA 13.4 or
580, MIG on or off) and stand-in CDI spec files with and without the toolkit's hook."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from compose_gpumem import enforce, hostfacts
from compose_gpumem.errors import InvalidValue
from compose_gpumem.project import from_text
from compose_gpumem.validate import parse_value

GiB, MiB = 1 << 30, 1 << 20
NVML_TOTAL = 8 * GiB + 480 * MiB  # the stand-in's NVML total: CUDA's 8 GiB and the driver's reserve
HOOKED = """\
cdiVersion: 0.6.0
kind: nvidia.com/gpu
devices: [{name: "0"}, {name: all}]
containerEdits:
  hooks:
    - hookName: createRuntime
      path: /usr/bin/nvidia-cdi-hook
      args: [nvidia-cdi-hook, apply-cuda-memory-limits]
"""
UNHOOKED = HOOKED.replace("apply-cuda-memory-limits", "update-ldcache")


@pytest.fixture
def host(fake_nvml: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Facts of a host: ``host(driver=..., cuda=..., mig=..., cgroup=..., cdi=HOOKED|UNHOOKED|None)``."""
    counter = iter(range(1000))

    def make(driver="615.12", cuda="13040", mig="0", cgroup="2", cdi=HOOKED, devices="1", local=True):
        for name in list(os.environ):
            if name.startswith(("FAKE_NVML_", "FAKE_CUDA_")):
                monkeypatch.delenv(name)
        copy = tmp_path / f"nv{next(counter)}" / "libnvidia-ml.so.1"
        copy.parent.mkdir()
        shutil.copy(fake_nvml, copy)  # a fresh load: the stand-in reads its variables once
        monkeypatch.setenv(hostfacts.ENV_NVML, str(copy))
        monkeypatch.setenv("FAKE_NVML_DRIVER", driver)
        monkeypatch.setenv("FAKE_NVML_CUDA", cuda)
        monkeypatch.setenv("FAKE_NVML_MIG", mig)
        monkeypatch.setenv("FAKE_CUDA_DEVICES", devices)
        hostfacts.forget()
        nvml = hostfacts.nvml()
        hostfacts.forget()
        dirs: tuple[str, ...] = ()
        if cdi is not None:
            spec_dir = copy.parent / "cdi"
            spec_dir.mkdir()
            (spec_dir / "nvidia.yaml").write_text(cdi)
            dirs = (str(spec_dir),)
        engine = hostfacts.Engine(
            "unix:///var/run/docker.sock" if local else "tcp://gpu-box:2376",
            local,
            version="28.2.2",
            runtimes=("nvidia", "runc"),
            cgroup_version=cgroup,
            cdi_spec_dirs=dirs,
        )
        lib = hostfacts.Library("/usr/local/lib/gpumem/libgpumem.so", True)
        return hostfacts.Facts(nvml, engine, lib, "", hostfacts.cdi_specs(dirs))

    return make


def decide(facts, asked="auto", value=0.3, gpus=("*",), request=None):
    return enforce.decide(
        "svc", asked, parse_value(value), list(gpus), facts, request=request, file="compose.yaml"
    )


def test_auto_on_an_r615_host_with_every_prerequisite_is_both(host):
    facts = host()
    decision = decide(facts)
    limit = int(0.3 * NVML_TOTAL) // MiB
    assert (decision.mode, decision.library, decision.driver) == ("both", True, True)
    assert decision.env == {"NVIDIA_GPU_MEMORY_REQUEST": str(limit), "NVIDIA_GPU_MEMORY_LIMIT": str(limit)}
    assert decision.cdi_devices == (f"nvidia.com/gpu={facts.nvml.gpus[0].uuid}",)


def test_auto_on_the_580_driver_is_the_library_and_says_why(host):
    decision = decide(host(driver="580.159.04", cuda="13000"))
    assert decision.mode == "library" and decision.env == {}
    assert decision.reasons == (
        "driver 580.159.04 (CUDA 13.0) is older than r615 (CUDA 13.4), "
        "the first with per-cgroup memory limits",
    )


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"mig": "1"}, "GPU 0 in MIG mode (the driver's limit is for non-MIG devices)"),
        ({"cgroup": "1"}, "the engine runs cgroup v1; the driver's limit needs v2"),
        ({"cdi": None}, "the engine does not resolve CDI devices (Docker 25 or later with CDI enabled)"),
        ({"cdi": UNHOOKED}, "runs the toolkit's `apply-cuda-memory-limits` hook"),
        ({"cuda": "13030"}, "is older than r615 (CUDA 13.4)"),
        ({"local": False}, "the engine (tcp://gpu-box:2376) is not on this host"),
    ],
)
def test_each_missing_prerequisite_keeps_auto_on_the_library_and_refuses_driver(host, change, reason):
    facts = host(**change)
    decision = decide(facts)
    assert decision.mode == "library" and any(reason in why for why in decision.reasons), decision.reasons
    for asked in ("driver", "both"):
        with pytest.raises(InvalidValue) as caught:
            decide(facts, asked=asked)
        text = str(caught.value)
        assert text.startswith(
            f"compose.yaml: service 'svc': x-gpu-memory-enforce '{asked}': the driver path needs"
        )
        assert reason in text and "\n" not in text


def test_mig_is_read_per_target_gpu(host):
    facts = host(mig="01", devices="2")
    assert decide(facts, gpus=["0"]).mode == "both"
    assert decide(facts, gpus=["1"]).mode == "library"
    assert decide(facts, gpus=[facts.nvml.gpus[0].uuid]).mode == "both"


def test_a_per_device_map_with_different_values_stays_on_the_library(host):
    facts = host(devices="2")
    map_value = {"0": 0.5, "1": "1GiB"}
    decision = decide(facts, value=map_value, gpus=["0", "1"])
    assert decision.mode == "library"
    assert "a per-device map with different values cannot be told to the hook" in decision.reasons[0]
    with pytest.raises(InvalidValue, match="cannot be told to the hook"):
        decide(facts, asked="driver", value=map_value, gpus=["0", "1"])
    assert (
        decide(facts, value={"0": "2GiB", "1": "2GiB"}, gpus=["0", "1"]).env["NVIDIA_GPU_MEMORY_LIMIT"]
        == "2048"
    )


def test_sizes_and_requests_in_mib(host):
    facts = host()
    decision = decide(facts, asked="driver", value="2GiB", request="1GiB")
    assert decision.mode == "driver"
    assert decision.env == {"NVIDIA_GPU_MEMORY_REQUEST": "1024", "NVIDIA_GPU_MEMORY_LIMIT": "2048"}
    with pytest.raises(
        InvalidValue, match=r"x-gpu-memory-request '3GiB': is 3072 MiB, above the limit of 2048 MiB"
    ):
        decide(facts, value="2GiB", request="3GiB")


def test_library_asked_for_needs_no_facts(host):
    assert decide(host(driver="470.1", cuda="11040"), asked="library").mode == "library"


def test_an_unknown_mode_is_named():
    with pytest.raises(
        InvalidValue, match="x-gpu-memory-enforce 'hardware': must be one of auto, library, driver, both"
    ):
        enforce.parse_mode("hardware", file="compose.yaml", service="svc")


def test_enforce_option_is_taken_out_of_the_command_only_before_its_arguments():
    assert enforce.take_option(["-d", "--enforce", "driver", "svc"]) == ("driver", ("-d", "svc"))
    assert enforce.take_option(["--enforce=both"]) == ("both", ())
    assert enforce.take_option(["svc", "--enforce", "x"]) == (None, ("svc", "--enforce", "x"))
    with pytest.raises(InvalidValue):
        enforce.take_option(["--enforce", "bogus"])


SERVICE = {
    "image": "img",
    "gpus": [{"driver": "nvidia", "count": -1, "capabilities": ["gpu"]}],
    "environment": {"GPUMEM_LIMIT": "0.3", "LD_PRELOAD": "/opt/gpumem/libgpumem.so /usr/lib/libjemalloc.so"},
    "volumes": [
        {"type": "bind", "source": "/usr/local/lib/gpumem", "target": "/opt/gpumem", "read_only": True}
    ],
    "devices": [{"source": "/dev/fuse", "target": "/dev/fuse", "permissions": "rwm"}],
    "labels": {"io.gpumem.enforce": "library", "other": "x"},
}


def test_apply_both_keeps_the_library_and_asks_for_the_gpu_through_cdi(host):
    decision = decide(host(), asked="both")
    new = enforce.apply(SERVICE, decision)
    assert "gpus" not in new and new["volumes"] == SERVICE["volumes"]
    assert new["environment"]["LD_PRELOAD"].startswith("/opt/gpumem/libgpumem.so")
    assert new["environment"]["NVIDIA_GPU_MEMORY_LIMIT"] == decision.env["NVIDIA_GPU_MEMORY_LIMIT"]
    cdi = decision.cdi_devices[0]
    assert new["devices"] == [SERVICE["devices"][0], {"source": cdi, "target": cdi, "permissions": "rwm"}]
    assert new["labels"] == {"io.gpumem.enforce": "both", "other": "x"}
    assert "gpus" in SERVICE and SERVICE["labels"]["io.gpumem.enforce"] == "library"  # input untouched


def test_apply_driver_alone_takes_the_library_out(host):
    new = enforce.apply(SERVICE, decide(host(), asked="driver"))
    assert "volumes" not in new
    assert new["environment"]["LD_PRELOAD"] == "/usr/lib/libjemalloc.so"
    assert not [k for k in new["environment"] if k.startswith("GPUMEM_")]


RESOLVED = """\
name: p
services:
  a:
    image: img
    gpus: all
    x-gpu-memory: "2GiB"
    x-gpu-memory-request: "1GiB"
  b:
    image: img
    gpus: all
    x-gpu-memory: 0.5
    x-gpu-memory-enforce: library
x-gpu-memory-enforce: driver
"""


def test_top_level_default_service_override_and_command_line(host):
    facts = host()
    project = from_text(RESOLVED, label="compose.yaml")
    got = enforce.project_decisions(project.text, project.plans, facts, file="compose.yaml")
    assert (got["a"].mode, got["b"].mode) == ("driver", "library")
    assert got["a"].env == {"NVIDIA_GPU_MEMORY_REQUEST": "1024", "NVIDIA_GPU_MEMORY_LIMIT": "2048"}
    forced = enforce.project_decisions(
        project.text, project.plans, facts, override="both", file="compose.yaml"
    )
    assert {d.mode for d in forced.values()} == {"both"}
    with pytest.raises(
        InvalidValue, match="service 'a': x-gpu-memory-enforce 'driver': the driver path needs"
    ):
        enforce.project_decisions(project.text, project.plans, host(driver="580.159.04", cuda="13000"))
