"""The run path's prerequisite checks, on facts built here and real CDI spec files in tmp_path
(the engine-backed cases are in tests/e2e/test_prereq_e2e.py)."""

from __future__ import annotations

import pytest

from compose_gpumem import hostfacts, prereq
from compose_gpumem.prereq import PrerequisiteMissing, Route

LOCAL = hostfacts.Engine("unix:///var/run/docker.sock", True, version="28.2.2", runtimes=("runc",))
CDI_ENGINE = hostfacts.Engine(
    "unix:///var/run/docker.sock", True, version="28.2.2", runtimes=("runc",), cdi_spec_dirs=("/etc/cdi",)
)
SPEC = hostfacts.CdiSpec("/etc/cdi/nvidia.yaml", "nvidia.com/gpu", ("0", "all"), True)


def refused(engine, routes, *, hook="", cdi=()) -> str:
    with pytest.raises(PrerequisiteMissing) as caught:
        prereq.check_routes(engine, routes, gpu_hook=hook, cdi=cdi)
    assert "\n" not in str(caught.value)
    return str(caught.value)


def test_route_reads_each_way_of_asking_for_a_gpu():
    assert prereq.route({"gpus": "all"}) == Route(True, False, ())
    reservation = {"deploy": {"resources": {"reservations": {"devices": [{"capabilities": ["gpu"]}]}}}}
    assert prereq.route(reservation) == Route(True, False, ())
    assert prereq.route({"runtime": "nvidia"}) == Route(False, True, ())
    assert prereq.route({"devices": [{"source": "nvidia.com/gpu=1", "target": "nvidia.com/gpu=1"}]}) == Route(
        False, False, ("1",)
    )


def test_docker_run_arguments_become_the_same_routes():
    argv = ["run", "--gpus=all", "--runtime", "nvidia", "--device", "nvidia.com/gpu=0", "img"]
    assert prereq.route(prereq.docker_run_service(argv)) == Route(True, True, ("0",))


def test_runtime_nvidia_on_an_engine_without_it_names_the_toolkit_fix():
    text = refused(LOCAL, {"service 'a'": Route(False, True, ())})
    assert text.startswith(
        "service 'a' asks for `runtime: nvidia`, and the Docker engine has no NVIDIA runtime"
    )
    assert "(it has: runc)" in text and "nvidia-ctk runtime configure --runtime=docker" in text


def test_gpus_need_the_toolkit_hook_or_an_nvidia_cdi_spec():
    assert "nvidia-container-runtime-hook" in refused(LOCAL, {"service 'a'": Route(True, False, ())})
    prereq.check_routes(
        LOCAL, {"a": Route(True, False, ())}, gpu_hook="/usr/bin/nvidia-container-runtime-hook", cdi=()
    )
    prereq.check_routes(CDI_ENGINE, {"a": Route(True, False, ())}, gpu_hook="", cdi=(SPEC,))


def test_a_remote_engine_is_not_judged_by_this_hosts_files():
    remote = hostfacts.Engine("tcp://gpu-box:2376", False, version="28.2.2", runtimes=("nvidia", "runc"))
    prereq.check_routes(remote, {"a": Route(True, True, ())}, gpu_hook="", cdi=())


def test_cdi_devices_need_an_engine_that_resolves_them_and_a_spec_naming_them():
    assert "does not resolve CDI devices" in refused(
        LOCAL, {"service 'a'": Route(False, False, ("0",))}, cdi=(SPEC,)
    )
    text = refused(CDI_ENGINE, {"service 'a'": Route(False, False, ("3",))}, cdi=(SPEC,))
    assert "`nvidia.com/gpu=3`" in text and "nvidia-ctk cdi generate" in text
    prereq.check_routes(CDI_ENGINE, {"a": Route(False, False, ("0",))}, gpu_hook="", cdi=(SPEC,))


def test_no_gpu_names_the_services_and_nvmls_reason():
    with pytest.raises(PrerequisiteMissing) as caught:
        prereq.check_gpu(
            hostfacts.Nvml(error="NVML nvmlInit: Driver Not Loaded"), ["service 'a'", "service 'b'"]
        )
    assert str(caught.value).startswith(
        "no NVIDIA GPU on this host (NVML nvmlInit: Driver Not Loaded), and service 'a', service 'b' need one"
    )
    prereq.check_gpu(hostfacts.Nvml(gpus=(hostfacts.Gpu(0, "GPU-x", "H200", 1, False),)), ["a"])


def test_a_library_that_is_no_shared_object_is_refused(lib_dir):
    with pytest.raises(PrerequisiteMissing, match="is not an ELF shared object: reinstall it with"):
        prereq.check_library()


def test_host_checks_off_still_require_the_library(tmp_path, monkeypatch):
    monkeypatch.setenv("GPUMEM_LIB_DIR", str(tmp_path))
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/none.sock")
    with pytest.raises(Exception, match=r"libgpumem\.so not found"):
        prereq.require_for_run({"service 'a'": {"gpus": "all"}})


def test_host_checks_on_stop_at_the_engine_first(tmp_path, monkeypatch):
    monkeypatch.setenv("GPUMEM_HOST_CHECKS", "1")
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/none.sock")
    hostfacts.forget()
    with pytest.raises(
        PrerequisiteMissing, match=f"^no Docker engine answers at unix://{tmp_path}/none.sock"
    ):
        prereq.require_for_run({"service 'a'": {"gpus": "all"}})
    hostfacts.forget()


def test_a_client_that_does_not_show_cdi_is_not_taken_for_an_engine_without_it():
    # a docker client older than 25 drops CDISpecDirs from `docker info`: the engine may have CDI
    old_client = hostfacts.Engine(
        "unix:///var/run/docker.sock", True, version="26.1.5", runtimes=("runc",), cdi_reported=False
    )
    route = {"service 'app'": Route(False, False, ("0",))}
    prereq.check_routes(old_client, route, gpu_hook="", cdi=(SPEC,))  # Docker itself says the rest
    assert refused(old_client, route, cdi=()) == (
        "service 'app' asks for `nvidia.com/gpu=0`, and no CDI spec in /etc/cdi, /var/run/cdi names it: "
        "generate one with `nvidia-ctk cdi generate --output=/etc/cdi/nvidia.yaml`"
    )
