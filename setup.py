"""Build hook: ``pip install .`` compiles libinterpose and ships libgpumem.so in the package.

``make -C libinterpose`` builds ``libinterpose/build/libgpumem.so`` and the ledger reader
``libinterpose/build/gpumem-ledger`` with the system C compiler; both are copied to
``compose_gpumem/lib/`` inside the build so the wheel carries them as package data, in a wheel
tagged for this machine (:class:`PlatformWheel`).  ``GPUMEM_SKIP_LIB=1`` builds without them (a
wheel for tooling only, ``py3-none-any``: ``gpumem-compose install-lib`` then says the library
is missing).
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
BUILT = LIBDIR / "build" / "libgpumem.so"
#: shipped beside the library: ``gpumem-compose top`` reads ledgers through it
READER = LIBDIR / "build" / "gpumem-ledger"


def build_library() -> Path:
    """Run ``make -C libinterpose``; the built library's path, or exit with a clear message."""
    if not (LIBDIR / "Makefile").is_file():
        sys.exit(f"compose_gpumem: cannot build libgpumem.so: {LIBDIR / 'Makefile'} is missing")
    make = os.environ.get("MAKE", "make")
    if shutil.which(make) is None:
        sys.exit(
            f"compose_gpumem: cannot build libgpumem.so: `{make}` not found (install make and a C compiler)"
        )
    done = subprocess.run([make, "-C", str(LIBDIR)], check=False)
    if done.returncode != 0:
        sys.exit(f"compose_gpumem: `make -C libinterpose` failed (exit {done.returncode}); see above")
    for built in (BUILT, READER):
        if not built.is_file():
            sys.exit(f"compose_gpumem: `make -C libinterpose` did not produce {built}")
    return BUILT


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
            shutil.copy2(built, target / "libgpumem.so")
            shutil.copy2(READER, target / READER.name)


class PlatformWheel(bdist_wheel):  # type: ignore[misc]
    """A wheel that carries libgpumem.so is for one machine: ``py3-none-manylinux_2_17_<arch>``.

    No Python ABI is involved (the library is loaded by containers, not by Python); the library
    needs nothing newer than GLIBC_2.17 (tests/lib/test_build.py checks it), which is the
    manylinux2014 baseline.  ``GPUMEM_SKIP_LIB=1`` gives a wheel without it: ``py3-none-any``.
    """

    def get_tag(self) -> tuple[str, str, str]:
        if self.root_is_pure:
            return super().get_tag()
        arch = platform.machine()
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
