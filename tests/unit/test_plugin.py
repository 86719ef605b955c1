"""`docker gpumem ...`: the Docker CLI plugin, installed by our command, found by the real docker CLI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from unit_helpers import PACKAGE_ROOT, cli, write

from compose_gpumem import __version__


@pytest.fixture
def docker_config(tmp_path: Path) -> Path:
    if shutil.which("docker") is None:
        pytest.skip("no docker CLI on PATH")
    return tmp_path / "docker-config"


def docker(*args: str, config: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DOCKER_CONFIG": str(config), "PYTHONPATH": PACKAGE_ROOT}
    return subprocess.run(["docker", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60)


def test_installed_plugin_is_found_by_docker_gpumem_version(tmp_path: Path, docker_config: Path) -> None:
    proc = cli("install-plugin", cwd=tmp_path, env={"DOCKER_CONFIG": str(docker_config)})
    assert proc.returncode == 0, proc.stderr
    plugin = docker_config / "cli-plugins" / "docker-gpumem"
    assert os.access(plugin, os.X_OK)
    found = docker("gpumem", "version", config=docker_config, cwd=tmp_path)
    assert found.returncode == 0, found.stderr
    assert found.stdout == f"gpumem-compose version {__version__}\n"


def test_plugin_metadata_is_what_docker_reads(tmp_path: Path) -> None:
    plugin = cli("install-plugin", "--dir", str(tmp_path / "plugins"), cwd=tmp_path)
    assert plugin.returncode == 0, plugin.stderr
    proc = subprocess.run(
        [str(tmp_path / "plugins" / "docker-gpumem"), "docker-cli-plugin-metadata"],
        env={**os.environ, "PYTHONPATH": PACKAGE_ROOT},
        capture_output=True,
        text=True,
        check=True,
    )
    meta = json.loads(proc.stdout)
    assert meta["SchemaVersion"] == "0.1.0" and meta["Version"] == __version__


def test_docker_gpumem_config_is_gpumem_compose_config(
    tmp_path: Path, docker_config: Path, compose_cmd: list[str], lib_dir: Path
) -> None:
    cli("install-plugin", cwd=tmp_path, env={"DOCKER_CONFIG": str(docker_config)})
    write(tmp_path / "compose.yaml", "services:\n  t:\n    image: i\n    gpus: all\n    x-gpu-memory: 0.4\n")
    proc = docker("gpumem", "config", config=docker_config, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert 'GPUMEM_LIMIT: "0.4"' in proc.stdout
    refused = docker("gpumem", "-f", "missing.yaml", "config", config=docker_config, cwd=tmp_path)
    assert refused.returncode != 0


def test_install_plugin_into_an_unwritable_place_is_one_line(tmp_path: Path) -> None:
    blocker = write(tmp_path / "file", "")
    proc = cli("install-plugin", "--dir", str(blocker / "sub"), cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.startswith("gpumem-compose: cannot write ") and len(proc.stderr.splitlines()) == 1
