"""`gpumem-compose version`: ours, the library's (packaged and installed) and Compose's."""

from __future__ import annotations

import json
from pathlib import Path

from unit_helpers import cli

from compose_gpumem import __version__, library, versions


def test_version_names_ours_the_library_and_the_compose_that_runs(
    tmp_path: Path, lib_dir: Path, compose_cmd: list[str]
) -> None:
    done = cli("version", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == f"gpumem-compose {__version__}"
    if library.packaged().is_file():
        assert lines[1].startswith(f"libgpumem.so {__version__} (sha256 ")
        # lib_dir holds a stand-in, not the packaged build
        assert (
            lines[2].startswith(f"  installed: {lib_dir}/libgpumem.so (sha256 ")
            and "another build" in lines[2]
        )
    assert lines[3].startswith("Docker Compose ") and f"from {compose_cmd[0]}" in lines[3]


def test_version_json_and_short(tmp_path: Path, lib_dir: Path, compose_cmd: list[str]) -> None:
    info = json.loads(cli("version", "--format", "json", cwd=tmp_path).stdout)
    assert info["gpumem-compose"] == __version__
    assert info["library"]["installed"] == str(lib_dir / "libgpumem.so")
    assert info["compose"]["argv"] == compose_cmd
    assert cli("version", "--short", cwd=tmp_path).stdout == f"{__version__}\n"


def test_a_docker_plugin_in_use_is_said_so(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "docker-compose").write_text("#!/bin/sh\n")
    (tmp_path / "docker-compose").chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    origin = versions.compose_origin(["/usr/bin/docker", "compose"])
    assert (
        origin
        == f"Docker's `docker compose` plugin (already installed, used instead of {tmp_path}/docker-compose)"
    )
