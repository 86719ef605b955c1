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
