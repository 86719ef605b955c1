"""Build hook: ``pip install .`` compiles libinterpose and ships libgpumem.so in the package.

``make -C libinterpose`` builds ``libinterpose/build/libgpumem.so`` and the ledger reader
``libinterpose/build/gpumem-ledger`` with the system C compiler; both are copied to
``compose_gpumem/lib/`` inside the build so the wheel carries them as package data, in a wheel
tagged for this machine (:class:`PlatformWheel`).  ``GPUMEM_ARCH=aarch64`` cross-builds both for
that machine instead (with ``aarch64-linux-gnu-gcc``, or ``CC``; into
``libinterpose/build-aarch64``) and tags the wheel for it.  ``GPUMEM_SKIP_LIB=1`` builds without
them (a wheel for tooling only, ``py3-none-any``: ``gpumem-compose install-lib`` then says the
library is missing).
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import Distribution, setup
from setuptools.command.build_py import build_py

try:
    from setuptools.command.bdist_wheel import bdist_wheel
except ImportError:  # setuptools before 70.1
    from wheel.bdist_wheel import bdist_wheel  # type: ignore[no-redef]

ROOT = Path(__file__).resolve().parent
LIBDIR = ROOT / "libinterpose"
LIBRARY = "libgpumem.so"
#: shipped beside the library: ``gpumem-compose top`` reads ledgers through it
READER = "gpumem-ledger"
#: the machines a wheel can be built for (the library pins its glibc symbols for these two)
ARCHES = ("x86_64", "aarch64")


def target_arch() -> str:
    """The machine the wheel is for: ``GPUMEM_ARCH``, else this one."""
    arch = os.environ.get("GPUMEM_ARCH") or platform.machine()
    if arch not in ARCHES:
        sys.exit(f"compose_gpumem: GPUMEM_ARCH={arch}: a wheel is built for {' or '.join(ARCHES)}")
    return arch


def make_variables(arch: str) -> dict[str, str]:
    """``make`` variables for ``arch``: none for this machine; a cross compiler and a build
    directory of its own otherwise (objects of two machines never mix)."""
    if arch == platform.machine():
        return {}
    cc = os.environ.get("CC") or f"{arch}-linux-gnu-gcc"
    if shutil.which(cc) is None:
        libc = {"aarch64": "arm64", "x86_64": "amd64"}[arch]
        sys.exit(
            f"compose_gpumem: cannot build for {arch}: `{cc}` not found "
            f"(Debian: apt-get install gcc-{arch.replace('_', '-')}-linux-gnu libc6-dev-{libc}-cross)"
        )
    return {"CC": cc, "BUILD": str(LIBDIR / f"build-{arch}")}


def build_library() -> Path:
    """Run ``make -C libinterpose``; the directory holding what it built, or exit with a clear
    message."""
    if not (LIBDIR / "Makefile").is_file():
        sys.exit(f"compose_gpumem: cannot build libgpumem.so: {LIBDIR / 'Makefile'} is missing")
    make = os.environ.get("MAKE", "make")
    if shutil.which(make) is None:
        sys.exit(
            f"compose_gpumem: cannot build libgpumem.so: `{make}` not found (install make and a C compiler)"
        )
    variables = make_variables(target_arch())
    argv = [make, "-C", str(LIBDIR), *(f"{name}={value}" for name, value in variables.items())]
    done = subprocess.run(argv, check=False)
    if done.returncode != 0:
        sys.exit(f"compose_gpumem: `{' '.join(argv)}` failed (exit {done.returncode}); see above")
    out = Path(variables.get("BUILD", LIBDIR / "build"))
    for built in (out / LIBRARY, out / READER):
        if not built.is_file():
            sys.exit(f"compose_gpumem: `{' '.join(argv)}` did not produce {built}")
    return out


class BuildPyWithLibrary(build_py):
    """build_py that also builds and ships the C library."""

    def run(self) -> None:
        super().run()
        if os.environ.get("GPUMEM_SKIP_LIB") == "1":
            return
        built = build_library()
        for base in {Path(self.build_lib), ROOT} if self.editable_mode else {Path(self.build_lib)}:
            target = base / "compose_gpumem" / "lib"
            target.mkdir(parents=True, exist_ok=True)
            for name in (LIBRARY, READER):
                shutil.copy2(built / name, target / name)


class PlatformWheel(bdist_wheel):  # type: ignore[misc]
    """A wheel that carries libgpumem.so is for one machine: ``py3-none-manylinux_2_17_<arch>``.

    No Python ABI is involved (the library is loaded by containers, not by Python); the library
    needs nothing newer than GLIBC_2.17 and the ledger reader is linked statically
    (tests/unit/test_wheel.py checks both in the wheel), so the manylinux2014 baseline holds.
    ``GPUMEM_SKIP_LIB=1`` gives a wheel without them: ``py3-none-any``.
    """

    def get_tag(self) -> tuple[str, str, str]:
        if self.root_is_pure:
            return super().get_tag()
        arch = target_arch()
        return "py3", "none", f"manylinux_2_17_{arch}.manylinux2014_{arch}"


class LibraryDistribution(Distribution):
    """Counts as holding native code (files go to platlib, the wheel is not pure) unless built
    with ``GPUMEM_SKIP_LIB=1``."""

    def has_ext_modules(self) -> bool:
        return os.environ.get("GPUMEM_SKIP_LIB") != "1"


setup(
    cmdclass={"build_py": BuildPyWithLibrary, "bdist_wheel": PlatformWheel},
    distclass=LibraryDistribution,
)
