"""compose_gpumem.hostfacts against the stand-in NVML, real CDI spec files and real library files."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from compose_gpumem import driverhint, hostfacts

GiB = 1 << 30
MiB = 1 << 20


@pytest.fixture(autouse=True)
def _fresh(monkeypatch: pytest.MonkeyPatch):
    for name in list(os.environ):
        if name.startswith(("FAKE_NVML_", "FAKE_CUDA_")) or name == hostfacts.ENV_NVML:
            monkeypatch.delenv(name)
    hostfacts.forget()
    yield
    hostfacts.forget()


def test_nvml_reports_driver_cuda_version_gpus_and_mig_of_the_stand_in(nvml_lib, monkeypatch):
    monkeypatch.setenv(hostfacts.ENV_NVML, str(nvml_lib))
    monkeypatch.setenv("FAKE_CUDA_DEVICES", "2")
    monkeypatch.setenv("FAKE_CUDA_TOTAL", str(16 * GiB))
    monkeypatch.setenv("FAKE_NVML_DRIVER", "615.12")
    monkeypatch.setenv("FAKE_NVML_CUDA", "13040")
    monkeypatch.setenv("FAKE_NVML_MIG", "01")
    found = hostfacts.nvml()
    assert found.error == ""
    assert (found.driver, found.driver_major, found.cuda, found.cuda_text) == ("615.12", 615, 13040, "13.4")
    assert [g.index for g in found.gpus] == [0, 1]
    assert [g.mig for g in found.gpus] == [False, True]
    assert found.gpus[0].total == 16 * GiB + 480 * MiB  # NVML counts the driver's reserve
    assert found.gpus[1].uuid.startswith("GPU-") and found.gpus[0].uuid != found.gpus[1].uuid


def test_nvml_defaults_to_the_580_driver_of_the_h200(nvml_lib, monkeypatch):
    monkeypatch.setenv(hostfacts.ENV_NVML, str(nvml_lib))
    found = hostfacts.nvml()
    assert (found.driver, found.cuda_text, [g.mig for g in found.gpus]) == ("580.159.04", "13.0", [False])


def test_nvml_that_cannot_start_says_why(nvml_lib, monkeypatch):
    monkeypatch.setenv(hostfacts.ENV_NVML, str(nvml_lib))
    monkeypatch.setenv("FAKE_NVML_FAIL_INIT", "1")
    found = hostfacts.nvml()
    assert found.gpus == () and found.error == "NVML nvmlInit: Driver Not Loaded"


def test_nvml_library_that_cannot_load_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv(hostfacts.ENV_NVML, str(tmp_path / "libnvidia-ml.so.1"))
    found = hostfacts.nvml()
    assert found.gpus == () and found.error.startswith(f"cannot load {tmp_path}")


@pytest.mark.skipif(
    any(os.path.exists(n) for n in driverhint.DRIVER_NODES), reason="this host has an NVIDIA driver"
)
def test_nvml_on_a_host_without_driver_says_so_without_loading_anything():
    assert hostfacts.nvml().error == "no /dev/nvidiactl: no NVIDIA driver is loaded"


SPEC_WITH_HOOK = """\
cdiVersion: 0.6.0
kind: nvidia.com/gpu
devices:
  - name: "0"
    containerEdits:
      deviceNodes: [{path: /dev/nvidia0}]
  - name: all
containerEdits:
  hooks:
    - hookName: createRuntime
      path: /usr/bin/nvidia-cdi-hook
      args: [nvidia-cdi-hook, apply-cuda-memory-limits]
"""
SPEC_WITHOUT_HOOK = """\
{"cdiVersion": "0.5.0", "kind": "nvidia.com/gpu", "devices": [{"name": "0"}],
 "containerEdits": {"hooks": [{"hookName": "createContainer", "path": "/usr/bin/nvidia-cdi-hook",
   "args": ["nvidia-cdi-hook", "update-ldcache"]}]}}
"""


def test_cdi_specs_tell_the_memory_limit_hook_apart(tmp_path):
    (tmp_path / "a.yaml").write_text(SPEC_WITH_HOOK)
    (tmp_path / "b.json").write_text(SPEC_WITHOUT_HOOK)
    (tmp_path / "c.yaml").write_text("kind: [unclosed\n")
    (tmp_path / "notes.txt").write_text("ignored")
    a, b, c = hostfacts.cdi_specs((str(tmp_path), str(tmp_path / "missing")))
    assert (a.kind, a.devices, a.memory_limit_hook, a.error) == ("nvidia.com/gpu", ("0", "all"), True, "")
    assert (b.kind, b.devices, b.memory_limit_hook) == ("nvidia.com/gpu", ("0",), False)
    assert c.error.startswith("unreadable:") and not c.memory_limit_hook


def test_library_missing_foreign_and_real(tmp_path):
    assert hostfacts.library(str(tmp_path)).error == "not installed"
    (tmp_path / "libgpumem.so").write_bytes(b"\x7fELF stand-in")
    fake = hostfacts.library(str(tmp_path))
    assert fake.present and fake.error == "not an ELF shared object"
    packaged = Path(hostfacts.lib.packaged())
    if not packaged.is_file():
        pytest.skip("this install carries no libgpumem.so")
    real = tmp_path / "real"
    real.mkdir()
    shutil.copy(packaged, real / "libgpumem.so")
    assert hostfacts.library(str(real)) == hostfacts.Library(str(real / "libgpumem.so"), True)


def test_engine_that_does_not_answer_is_reported_in_dockers_words(tmp_path, monkeypatch):
    if shutil.which("docker") is None:
        pytest.skip("no docker client")
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/none.sock")
    found = hostfacts.engine()
    assert not found.reachable and found.local
    assert "Cannot connect to the Docker daemon" in found.error


def test_engine_without_client_says_so(monkeypatch):
    found = hostfacts.engine("/nonexistent/docker")
    assert found.error == "no `/nonexistent/docker` client on PATH"


def test_cdi_spec_dirs_absent_from_docker_info_are_unknown_not_missing():
    base = {"ServerVersion": "26.1.5", "CgroupVersion": "2", "Runtimes": {"runc": {}}}
    with_cdi = hostfacts.engine_from_info("unix:///s", True, {**base, "CDISpecDirs": ["/etc/cdi"]})
    assert (with_cdi.cdi_spec_dirs, with_cdi.cdi_reported, with_cdi.no_cdi()) == (("/etc/cdi",), True, "")
    off = hostfacts.engine_from_info("unix:///s", True, {**base, "CDISpecDirs": []})
    assert off.no_cdi() == "the engine does not resolve CDI devices (Docker 25 or later with CDI enabled)"
    old_client = hostfacts.engine_from_info("unix:///s", True, base)  # a 20.10 client drops the field
    assert old_client.cdi_reported is False
    assert old_client.no_cdi() == (
        "the docker client is older than Docker 25 and does not show whether the engine 26.1.5 "
        "resolves CDI devices (use a client of the engine's version)"
    )
    # an engine older than 25 has no CDI, whatever its client shows
    old_engine = hostfacts.engine_from_info("unix:///s", True, {**base, "ServerVersion": "20.10.24+dfsg1"})
    assert old_engine.no_cdi() == off.no_cdi()
