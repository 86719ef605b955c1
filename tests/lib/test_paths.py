"""Every way to the driver is capped: linking, dlopen+dlsym, cuGetProcAddress(_v2) incl. _ptsz,
and NVML through dlopen the way nvidia-smi and pynvml reach it."""

import pytest
from libgpumem_support import DEFAULT_RESERVE, GiB, MiB

CAP = 2 * GiB
STEPS = [
    "init",
    "dev=0",
    "primary",
    "info",
    "totalmem",
    "alloc=1536M",
    "alloc=1G",
    "free",
    "alloc=1G",
    "info",
]


@pytest.mark.parametrize("mode", ["link", "dlsym", "gpa1", "gpa2"])
def test_cap_is_enforced_and_reported_on_every_path(gpu, mode):
    r = gpu.run(f"mode={mode}", *STEPS, GPUMEM_LIMIT="2GiB", GPUMEM_CONTEXT_RESERVE=0)
    assert r.rc == 0, r
    assert r.field("info", "total") == CAP and r.field("info", "free") == CAP
    assert r.line("totalmem") == f"totalmem {CAP}"
    assert r.results("alloc") == ["ok", "err=2", "ok"], r
    assert r.field("info", "free", 1) == CAP - 1 * GiB


@pytest.mark.parametrize("mode", ["link", "dlsym", "gpa1", "gpa2"])
def test_without_limit_every_path_passes_through(gpu, mode):
    r = gpu.run(f"mode={mode}", "init", "dev=0", "primary", "info", "totalmem", "alloc=7G", "info")
    assert r.rc == 0, r
    assert r.field("info", "total") == 8 * GiB
    assert r.line("totalmem") == f"totalmem {8 * GiB}"
    assert r.results("alloc") == ["ok"]
    assert r.field("info", "free", 1) == 1 * GiB
    assert "gpumem" not in r.err


@pytest.mark.parametrize("ver", [12000, 12080, 13000])
def test_get_proc_address_per_thread_stream_variants_are_capped(gpu, ver):
    r = gpu.run(
        "mode=gpa2",
        f"ver={ver}",
        "flags=2",
        "init",
        "dev=0",
        "primary",
        "async=1536M",
        "pool=1G",
        "pool=512M",
        "async=1",
        "freeasync",
        "info",
        GPUMEM_LIMIT="2GiB",
        GPUMEM_CONTEXT_RESERVE=0,
        GPUMEM_LOG="debug",
    )
    assert r.rc == 0, r
    assert r.results("async") == ["ok", "err=2"]
    assert r.results("pool") == ["err=2", "ok"]
    assert r.field("info", "free") == 512 * MiB
    assert f"cuGetProcAddress(cuMemAllocAsync, {ver}, 2) -> cuMemAllocAsync_ptsz" in r.err
    assert f"cuGetProcAddress(cuMemFreeAsync, {ver}, 2) -> cuMemFreeAsync_ptsz" in r.err
    assert f"cuGetProcAddress(cuGetProcAddress, {ver}, 0) -> cuGetProcAddress_v2" in r.err


def test_get_proc_address_follows_the_driver_version_rules(gpu):
    r = gpu.run(
        "mode=gpa2",
        "ver=12050",
        "init",
        "dev=0",
        "ctx",
        "alloc=1",
        "destroy",
        GPUMEM_LIMIT="2GiB",
        GPUMEM_LOG="debug",
    )
    assert r.rc == 0, r
    assert r.results("ctx") == ["ok"] and r.results("destroy") == ["ok"]
    for line in [
        "cuGetProcAddress(cuMemAlloc, 12050, 0) -> cuMemAlloc_v2",
        "cuGetProcAddress(cuCtxCreate, 3020, 0) -> cuCtxCreate_v2",
        "cuGetProcAddress(cuCtxDestroy, 12050, 0) -> cuCtxDestroy_v2",
        "cuGetProcAddress(cuDevicePrimaryCtxRelease, 12050, 0) -> cuDevicePrimaryCtxRelease_v2",
        "cuGetProcAddress(cuMemAllocAsync, 12050, 0) -> cuMemAllocAsync",
        "cuGetProcAddress(cuMemGetInfo, 12050, 0) -> cuMemGetInfo_v2",
    ]:
        assert line + " [" in r.err, line


def test_get_proc_address_v1_with_an_old_cuda_version_gets_the_v1_entry_points_capped(gpu):
    r = gpu.run(
        "mode=gpa1",
        "ver=3010",
        "init",
        "dev=0",
        "ctx",
        "info",
        "alloc=1536M",
        "alloc=1G",
        "free",
        "alloc=1G",
        GPUMEM_LIMIT="2GiB",
        GPUMEM_CONTEXT_RESERVE=0,
        GPUMEM_LOG="debug",
    )
    assert r.rc == 0, r
    assert "cuGetProcAddress(cuMemAlloc, 3010, 0) -> cuMemAlloc [" in r.err
    assert "cuGetProcAddress(cuMemGetInfo, 3010, 0) -> cuMemGetInfo [" in r.err
    assert r.field("info", "total") == CAP
    assert r.results("alloc") == ["ok", "err=2", "ok"]


def _hold(gpu, *steps, **env):
    p = gpu.spawn("init", "dev=0", "primary", *steps, "hold", **env)
    assert p.stdout.readline().startswith("init ok")
    for line in iter(p.stdout.readline, ""):
        if line.startswith("holding"):
            return p
    raise AssertionError(p.stderr.read())


def test_nvml_reports_cap_and_container_usage(gpu):
    env = dict(GPUMEM_LIMIT="4GiB", GPUMEM_CONTEXT_RESERVE="512MiB")
    holder = _hold(gpu, "alloc=1G", **env)
    try:
        r = gpu.run(prog="nvclient", **env)
    finally:
        holder.kill()
        holder.wait()
    assert r.rc == 0, r
    used = 1 * GiB + 512 * MiB
    assert r.field("nvml", "total") == 4 * GiB and r.field("nvml", "v2total") == 4 * GiB
    assert r.field("nvml", "used") == used and r.field("nvml", "v2used") == used
    assert r.field("nvml", "free") == 4 * GiB - used and r.field("nvml", "v2free") == 4 * GiB - used
    assert r.field("nvml", "v2reserved") == 0


def test_nvml_without_limit_is_unaltered(gpu):
    r = gpu.run(prog="nvclient")
    assert r.rc == 0, r
    assert r.field("nvml", "total") == 8 * GiB + 480 * MiB


def test_nvml_devices_are_matched_to_cuda_devices_by_uuid(gpu):
    r = gpu.run(
        prog="nvclient",
        FAKE_CUDA_DEVICES=2,
        FAKE_NVML_REVERSE=1,
        GPUMEM_LIMIT_0="1GiB",
        GPUMEM_LIMIT_1="3GiB",
    )
    assert r.rc == 0, r
    assert r.line("nvml", 0).split()[2].endswith("a901")  # NVML index 0 is CUDA device 1
    assert r.field("nvml", "total", 0) == 3 * GiB
    assert r.field("nvml", "total", 1) == 1 * GiB


def test_probe_reports_info_and_exits_3_on_oom(gpu):
    env = dict(GPUMEM_LIMIT="2GiB")
    r = gpu.run("info", prog="gpumem_probe", **env)
    assert r.rc == 0 and r.out == f"total={CAP} free={CAP - DEFAULT_RESERVE}\n", r
    r = gpu.run("alloc", str(1 * GiB), prog="gpumem_probe", **env)
    assert r.rc == 0 and r.out == "ok\n", r
    r = gpu.run("alloc", "2G", prog="gpumem_probe", **env)
    assert r.rc == 3 and r.out == "oom\n", r
    r = gpu.run("totalmem", prog="gpumem_probe", **env)
    assert r.out == f"totalmem={CAP}\n", r


def test_context_create_v3_and_v4_are_charged_and_released(gpu):
    for mode in ("gpa2", "gpa1", "dlsym"):
        r = gpu.run(
            f"mode={mode}",
            "init",
            "dev=0",
            "ctx3",
            "info",
            "ctx4",
            "alloc=1G",
            "info",
            "destroy",
            "destroy",
            "primary",
            "info",
            GPUMEM_LIMIT="4GiB",
            GPUMEM_LOG="debug",
        )
        assert r.results("ctx3") == ["ok"] and r.results("ctx4") == ["ok"], r
        assert r.field("info", "free", 0) == 4 * GiB - DEFAULT_RESERVE
        assert r.field("info", "free", 1) == 3 * GiB - 2 * DEFAULT_RESERVE  # two contexts: two reserves
        assert r.results("destroy") == ["ok", "ok"]
        assert r.field("info", "free", 2) == 4 * GiB - DEFAULT_RESERVE
        if mode.startswith("gpa"):
            assert "cuGetProcAddress(cuCtxCreate, 12050, 0) -> cuCtxCreate_v4 [" in r.err
            assert "cuGetProcAddress(cuCtxCreate, 11040, 0) -> cuCtxCreate_v3 [" in r.err


def test_nvml_only_process_learns_the_cap_from_the_ledger_without_initialising_cuda(gpu):
    gpu.run(*["init", "dev=0", "primary", "alloc=1G"], GPUMEM_LIMIT="4GiB")  # registers the device
    r = gpu.run(prog="nvclient", GPUMEM_LIMIT="4GiB", FAKE_CUDA_INIT_FAIL=1)
    assert r.rc == 0, r
    assert (
        r.field("nvml", "total") == 4 * GiB and r.field("nvml", "used") == 0
    )  # the dead one's share is back


def test_nvml_only_process_that_cannot_learn_the_cap_reports_unaltered_with_one_warning(gpu):
    r = gpu.run(prog="nvclient", GPUMEM_LIMIT="4GiB", FAKE_CUDA_INIT_FAIL=1, FAKE_CUDA_DEVICES=2)
    assert r.rc == 0, r
    assert r.field("nvml", "total") == 8 * GiB + 480 * MiB
    assert r.err.count("NVML memory is reported unaltered") == 1, r.err
