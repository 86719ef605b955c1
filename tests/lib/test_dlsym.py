"""Our dlsym must not disturb anyone else's: RTLD_NEXT keeps the caller, other names pass."""

import subprocess
from pathlib import Path

import pytest
from libgpumem_support import _cc


def test_rtld_next_still_resolves_relative_to_the_caller(gpu, tmp_path):
    lib = Path(__file__).parent
    _cc(
        ["-shared", "-fPIC", "-o", str(tmp_path / "libnextcaller.so"), str(lib / "next_caller.c"), "-ldl"],
        tmp_path,
    )
    _cc(
        ["-shared", "-fPIC", "-o", str(tmp_path / "libnextmarker2.so"), str(lib / "next_marker2.c")], tmp_path
    )
    _cc(
        [
            "-o",
            str(tmp_path / "next_main"),
            str(lib / "next_main.c"),
            "-Wl,--no-as-needed",
            f"-L{tmp_path}",
            "-lnextcaller",
            "-lnextmarker2",
            f"-Wl,-rpath,{tmp_path}",
        ],
        tmp_path,
    )
    for limit in (None, "1GiB"):
        r = subprocess.run(
            [str(tmp_path / "next_main")], env=gpu.environ(GPUMEM_LIMIT=limit), capture_output=True, text=True
        )
        assert r.stdout == "next 2\n", r.stderr


def test_dlsym_hands_out_our_hooks_only_for_hooked_driver_symbols(gpu):
    names = ["cuMemAlloc_v2", "cuGetProcAddress_v2", "cuDeviceGet", "cuNoSuchEntryPoint", "malloc"]
    r = gpu.run(*[f"dlsym={n}" for n in names], GPUMEM_LIMIT="2GiB")
    assert r.results("dlsym") == [
        "cuMemAlloc_v2 libgpumem.so",
        "cuGetProcAddress_v2 libgpumem.so",
        "cuDeviceGet libcuda.so.1",
        "cuNoSuchEntryPoint NULL",
        "malloc libc.so.6",
    ], r


def test_dlsym_without_limit_hands_out_the_drivers_own_functions(gpu):
    r = gpu.run("dlsym=cuMemAlloc_v2", "dlsym=cuGetProcAddress_v2")
    assert r.results("dlsym") == ["cuMemAlloc_v2 libcuda.so.1", "cuGetProcAddress_v2 libcuda.so.1"]


def test_library_preloaded_before_us_may_call_dlsym_during_its_own_init(gpu):
    # ASan's runtime resolves its interceptors with dlsym(RTLD_NEXT, ...) before its own
    # __tls_get_addr interceptor works: our dlsym must not touch TLS for such names
    import glob

    asan = sorted(
        glob.glob("/usr/lib/x86_64-linux-gnu/libasan.so.*") + glob.glob("/lib/x86_64-linux-gnu/libasan.so.*")
    )
    if not asan:
        pytest.skip("no libasan here")
    env = gpu.environ(GPUMEM_LIMIT="2GiB", ASAN_OPTIONS="detect_leaks=0")
    env["LD_PRELOAD"] = f"{asan[0]} {env['LD_PRELOAD']}"
    r = subprocess.run(
        gpu.cmd("cuclient", "mode=gpa2", "init", "dev=0", "primary", "alloc=1G", "alloc=1G"),
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[3:] == ["alloc ok", "alloc err=2"]
