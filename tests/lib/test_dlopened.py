"""The library dlopen'ed RTLD_LOCAL instead of preloaded (bench/gpu/abhook.c times its hooks that
way, next to the plain driver calls in the same process): its exported hooks are its own and cap,
while the process's own references to the driver stay the driver's."""

import subprocess

import pytest
from libgpumem_support import ROOT, MiB


@pytest.fixture(scope="module")
def abhook(built, tmp_path_factory):
    exe = tmp_path_factory.mktemp("abhook") / "abhook"
    src = ROOT / "bench" / "gpu" / "abhook.c"
    cc = [
        "cc",
        "-O2",
        "-Wall",
        "-Wextra",
        "-Werror",
        "-o",
        str(exe),
        str(src),
        "-ldl",
        f"-L{built['stubs']}",
        "-lcuda",
    ]
    r = subprocess.run(cc, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return exe


def run(gpu, abhook, *args, **env):
    environ = gpu.environ(LD_PRELOAD=None, GPUMEM_CONTEXT_RESERVE=0, **env)
    return subprocess.run(
        [str(abhook), str(gpu.built["so"]), *map(str, args)],
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("mode", ["alloc", "async", "info", "nvml"])
def test_abhook_times_both_sides_in_one_process(gpu, abhook, mode):
    r = run(gpu, abhook, mode, MiB, 3, 2000, GPUMEM_LIMIT="0.95")
    assert r.returncode == 0, r.stderr
    fields = dict(x.split("=") for x in r.stdout.split())
    assert set(fields) == {"a_us", "b_us", "ratio"}
    assert all(float(v) > 0 for v in fields.values())


@pytest.mark.parametrize("mode", ["alloc", "async"])
def test_the_dlopened_hooks_cap_and_the_plain_calls_do_not(gpu, abhook, mode):
    # a cap below one allocation: the plain side's warm-up block passes, the hooked one is refused
    r = run(gpu, abhook, mode, 2 * MiB, 1, 10, GPUMEM_LIMIT="1MiB")
    assert r.returncode == 1
    assert "failed: 2" in r.stderr  # CUDA_ERROR_OUT_OF_MEMORY, from the library
    assert "out of memory on device 0" in r.stderr
    assert "a_us" not in r.stdout
