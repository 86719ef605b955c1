"""Helpers of the libgpumem tests (a module of its own name, so no other conftest shadows it):
build the library, the stand-in driver and the clients, and run clients under LD_PRELOAD."""

import os
import subprocess
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GiB = 1 << 30
MiB = 1 << 20
# libgpumem's GPUMEM_CONTEXT_RESERVE default (libinterpose/src/devices.c)
DEFAULT_RESERVE = 768 * MiB
CFLAGS = ["-O2", "-Wall", "-Wextra"]


def _cc(args, cwd):
    r = subprocess.run(["cc", *args], cwd=cwd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return r.stderr


def build_all():
    """Build everything into a fresh directory; return paths and the library's build log."""
    out = ROOT / "tests" / ".build" / f"lib-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    out.mkdir(parents=True)
    make = subprocess.run(
        ["make", "-C", str(ROOT / "libinterpose"), f"BUILD={out / 'gpumem'}"], capture_output=True, text=True
    )
    assert make.returncode == 0, make.stdout + make.stderr
    stubs = out / "stubs"
    stubs.mkdir()
    src = ROOT / "tests" / "stubs"
    warn = _cc(
        [
            *CFLAGS,
            "-shared",
            "-fPIC",
            "-fvisibility=hidden",
            "-Wl,-soname,libcuda.so.1",
            "-o",
            str(stubs / "libcuda.so.1"),
            str(src / "fake_cuda.c"),
            "-lpthread",
        ],
        out,
    )
    warn += _cc(
        [
            *CFLAGS,
            "-shared",
            "-fPIC",
            "-fvisibility=hidden",
            "-Wl,-soname,libnvidia-ml.so.1",
            "-o",
            str(stubs / "libnvidia-ml.so.1"),
            str(src / "fake_nvml.c"),
        ],
        out,
    )
    (stubs / "libcuda.so").symlink_to("libcuda.so.1")
    bins = out / "bin"
    bins.mkdir()
    lib = ROOT / "tests" / "lib"
    warn += _cc(
        [
            *CFLAGS,
            "-o",
            str(bins / "cuclient"),
            str(lib / "cuclient.c"),
            f"-L{stubs}",
            "-lcuda",
            "-ldl",
            "-lpthread",
        ],
        out,
    )
    warn += _cc([*CFLAGS, "-o", str(bins / "nvclient"), str(lib / "nvclient.c"), "-ldl"], out)
    warn += _cc(
        [*CFLAGS, "-o", str(bins / "gpumem_probe"), str(src / "gpumem_probe.c"), f"-L{stubs}", "-lcuda"], out
    )
    return out, {
        "so": out / "gpumem" / "libgpumem.so",
        "reader": out / "gpumem" / "gpumem-ledger",
        "make_log": make.stdout + make.stderr,
        "stub_warnings": warn,
        "stubs": stubs,
        "bin": bins,
    }


class Gpu:
    """Runs the test clients against the stand-in driver with libgpumem preloaded."""

    def __init__(self, built, tmp_path):
        self.built = built
        self.tmp = tmp_path
        self.state = tmp_path / "state"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("GPUMEM_", "FAKE_", "LD_"))}
        # GPUMEM_TEST_LIB / GPUMEM_TEST_PRELOAD: run the suite against another build of the library
        # (e.g. one with -fsanitize=address, preloaded after libasan.so)
        so = os.environ.get("GPUMEM_TEST_LIB") or str(built["so"])
        preload = " ".join(filter(None, [os.environ.get("GPUMEM_TEST_PRELOAD"), so]))
        self.env.update(
            {
                "LD_LIBRARY_PATH": str(built["stubs"]),
                "LD_PRELOAD": preload,
                "GPUMEM_STATE_DIR": str(self.state),
                "GPUMEM_LOG": "info",
                "FAKE_CUDA_TOTAL": str(8 * GiB),
            }
        )

    def environ(self, **extra):
        env = dict(self.env)
        for k, v in extra.items():
            if v is None:
                env.pop(k, None)
            else:
                env[k] = str(v)
        return env

    def cmd(self, prog, *args):
        return [str(self.built["bin"] / prog), *map(str, args)]

    def run(self, *args, prog="cuclient", timeout=30, **extra):
        r = subprocess.run(
            self.cmd(prog, *args), env=self.environ(**extra), capture_output=True, text=True, timeout=timeout
        )
        return Result(r)

    def spawn(self, *args, prog="cuclient", **extra):
        return subprocess.Popen(
            self.cmd(prog, *args),
            env=self.environ(**extra),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )


class Result:
    def __init__(self, r):
        self.rc = r.returncode
        self.out = r.stdout
        self.err = r.stderr
        self.lines = r.stdout.splitlines()

    def line(self, prefix, n=0):
        found = [ln for ln in self.lines if ln.split(" ")[0] == prefix]
        assert len(found) > n, f"no {prefix!r} line #{n} in:\n{self.out}\n{self.err}"
        return found[n]

    def field(self, prefix, key, n=0):
        for part in self.line(prefix, n).split(" ")[1:]:
            k, _, v = part.partition("=")
            if k == key:
                return int(v)
        raise AssertionError(f"no {key} in {self.line(prefix, n)!r}")

    def results(self, prefix):
        return [ln.split(" ", 1)[1] for ln in self.lines if ln.split(" ")[0] == prefix]

    def __repr__(self):
        return f"rc={self.rc}\n--- stdout\n{self.out}--- stderr\n{self.err}"
