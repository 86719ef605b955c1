"""Build hook: ``pip install .`` compiles libinterpose and ships libgpumem.so in the package.

``make -C libinterpose`` builds ``libinterpose/build/libgpumem.so`` with the system C compiler;
the file is copied to ``compose_gpumem/lib/libgpumem.so`` inside the build so the wheel carries
it as package data.  ``GPUMEM_SKIP_LIB=1`` builds without it (a wheel for tooling only:
``gpumem-compose install-lib`` then says the library is missing).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
LIBDIR = ROOT / "libinterpose"
BUILT = LIBDIR / "build" / "libgpumem.so"


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
    if not BUILT.is_file():
        sys.exit(f"compose_gpumem: `make -C libinterpose` did not produce {BUILT}")
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


setup(cmdclass={"build_py": BuildPyWithLibrary})
