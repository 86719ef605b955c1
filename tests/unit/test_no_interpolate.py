"""`config --no-interpolate`: Compose's uninterpolated model, with the injection uninterpolated
too, so that Compose filling in the variables later gives what `config` gives at once."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from unit_helpers import cli, write

CAPPED = """\
x-gpu-memory: ${DEFAULT_CAP:-0.1}
services:
  trainer:
    image: x
    gpus: all
    x-gpu-memory: ${CAP:-0.3}
  pinned:
    image: x
    gpus: [{device_ids: ["0", "1"]}]
    x-gpu-memory: {"0": "${CAP0}", "1": 2GiB}
  server:
    image: x
    gpus: all
"""


def _env_and_labels(doc: dict, name: str) -> tuple[dict, dict]:
    service = doc["services"][name]
    return service["environment"], service["labels"]


@pytest.mark.parametrize("fmt", ["yaml", "json"])
def test_the_uninterpolated_output_filled_in_by_compose_is_what_config_gives(
    tmp_path: Path, compose_cmd: list[str], lib_dir: Path, fmt: str
) -> None:
    write(tmp_path / "compose.yaml", CAPPED)
    done = cli("config", "--no-interpolate", "--format", fmt, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "${CAP:-0.3}" in done.stdout and "${CAP0}" in done.stdout
    write(tmp_path / "out" / f"compose.{fmt}", done.stdout)
    values = {"CAP": "0.25", "CAP0": "40%", "DEFAULT_CAP": "0.2"}
    filled = subprocess.run(
        [*compose_cmd, "-f", f"out/compose.{fmt}", "--project-directory", ".", "config", "--format", "json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, **values},
    )
    assert filled.returncode == 0, filled.stderr
    at_once = cli("config", "--format", "json", cwd=tmp_path, env=values)
    assert at_once.returncode == 0, at_once.stderr
    for name in ("trainer", "pinned", "server"):
        assert _env_and_labels(json.loads(filled.stdout), name) == _env_and_labels(
            json.loads(at_once.stdout), name
        )
    assert json.loads(at_once.stdout)["services"]["trainer"]["environment"]["GPUMEM_LIMIT"] == "0.25"


def test_a_note_names_the_services_checked_only_once_interpolated(
    tmp_path: Path, compose_cmd: list[str], lib_dir: Path
) -> None:
    write(tmp_path / "compose.yaml", CAPPED)
    done = cli("config", "--no-interpolate", cwd=tmp_path)
    (line,) = done.stderr.splitlines()
    assert line.startswith("gpumem-compose: note: compose.yaml: --no-interpolate: x-gpu-memory of ")
    assert "'pinned', 'server', 'trainer'" in line and "once interpolated" in line


def test_a_value_without_variables_is_still_checked(tmp_path: Path, compose_cmd: list[str]) -> None:
    write(tmp_path / "compose.yaml", CAPPED.replace("2GiB", "1.5"))
    done = cli("config", "--no-interpolate", cwd=tmp_path)
    assert done.returncode == 1
    assert "service 'pinned': x-gpu-memory" in done.stderr and "must be a fraction at most 1" in done.stderr
