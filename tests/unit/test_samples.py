"""The samples' committed overrides are golden files: fresh, and equivalent to the tool."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from unit_helpers import cli

from compose_gpumem.yamlio import load

SAMPLES = sorted(p.parent for p in (Path(__file__).parents[2] / "samples").glob("*/compose.yaml"))


def test_there_are_samples_to_copy() -> None:
    assert len(SAMPLES) >= 2
    for sample in SAMPLES:
        assert (sample / "README.md").is_file() and (sample / "gpumem.override.yaml").is_file()


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda p: p.name)
def test_committed_override_is_fresh(sample: Path, compose_cmd: list[str]) -> None:
    done = cli("-f", "compose.yaml", "override", "--check", "-o", "gpumem.override.yaml", cwd=sample)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda p: p.name)
def test_plain_compose_with_the_override_equals_gpumem_compose(
    sample: Path, compose_cmd: list[str], lib_dir: Path
) -> None:
    plain = subprocess.run(
        [*compose_cmd, "-f", "compose.yaml", "-f", "gpumem.override.yaml", "config"],
        cwd=sample,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    ours = cli("-f", "compose.yaml", "config", cwd=sample)
    assert ours.returncode == 0, ours.stderr
    assert load(plain) == load(ours.stdout)
    assert "GPUMEM_LIMIT" in ours.stdout


def _host_path(path: str, mounts: list[dict]) -> Path | None:
    """Where a path inside the container comes from on the host, through the service's binds."""
    for mount in mounts:
        target = mount.get("target", "")
        if mount.get("type") == "bind" and (path == target or path.startswith(target.rstrip("/") + "/")):
            return Path(mount["source"]) / path[len(target) :].lstrip("/")
    return None


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda p: p.name)
def test_samples_run_as_shipped_every_bind_source_and_python_entry_exists(
    sample: Path, compose_cmd: list[str]
) -> None:
    import json

    resolved = subprocess.run(
        [*compose_cmd, "-f", "compose.yaml", "--profile", "*", "config", "--format", "json"],
        cwd=sample,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for name, service in json.loads(resolved)["services"].items():
        mounts = service.get("volumes") or []
        for mount in mounts:
            if mount.get("type") == "bind" and mount["source"].startswith(str(sample)):
                assert Path(mount["source"]).exists(), f"{sample.name}: {name}: {mount['source']} is missing"
        command = service.get("command") or []
        if command[:1] == ["python"] and command[1:2] == ["-m"]:
            directory = _host_path(service.get("working_dir", "/"), mounts)
            assert directory is not None, f"{sample.name}: {name}: working_dir is not from the sample"
            module = command[2]
            assert (directory / f"{module}.py").is_file() or (directory / module / "__main__.py").is_file()
        elif command[:1] == ["python"]:
            script = _host_path(command[1], mounts)
            assert script is not None and script.is_file(), f"{sample.name}: {name}: {command[1]} is missing"
            compile(script.read_text(), str(script), "exec")
