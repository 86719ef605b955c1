"""The wheel carries a native library, so it is tagged for this machine, not py3-none-any."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def build_wheel(out: Path, **env: str) -> Path:
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(ROOT)],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=300,
    )
    if done.returncode != 0:
        pytest.fail(f"pip wheel failed:\n{done.stderr[-3000:]}", pytrace=False)
    (wheel,) = out.glob("*.whl")
    return wheel


def test_wheel_with_the_library_is_a_manylinux2014_platform_wheel(tmp_path: Path) -> None:
    wheel = build_wheel(tmp_path)
    arch = platform.machine()
    assert wheel.name.endswith(f"-py3-none-manylinux_2_17_{arch}.manylinux2014_{arch}.whl")
    with zipfile.ZipFile(wheel) as archive:
        assert "compose_gpumem/lib/libgpumem.so" in archive.namelist()
        meta = next(n for n in archive.namelist() if n.endswith(".dist-info/WHEEL"))
        assert "Root-Is-Purelib: false" in archive.read(meta).decode()
