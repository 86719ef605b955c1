"""Fidelity on public compose files (tests/fidelity/SOURCES.md): gpumem-compose gives what
Docker Compose gives, plus only our injection.

Per project: `config` is byte for byte Compose's when nothing asks for a cap; with a top-level
`x-gpu-memory` added by a second `-f` file, `config` and `config --format json` are Compose's
own YAML and JSON once the injection is taken out again, and exactly the services that request
a GPU are injected; on the run path, the file handed to Compose resolves (by Compose) to what
`config` printed.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import compose_gpumem
from compose_gpumem import compose, inject
from compose_gpumem.errors import ComposeNotFound
from compose_gpumem.yamlio import load

PROJECTS = sorted(p.parent for p in (Path(__file__).parent / "projects").glob("*/compose.yaml"))
PACKAGE_ROOT = str(Path(compose_gpumem.__file__).resolve().parent.parent)
CAP = "x-gpu-memory: 0.25\n"
OURS = ("GPUMEM_LIMIT", "GPUMEM_STATE_DIR", "LD_PRELOAD")


@pytest.fixture(scope="module")
def compose_cmd() -> list[str]:
    try:
        return compose.command()
    except ComposeNotFound as error:
        pytest.skip(str(error))


def run(argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        argv, cwd=cwd, capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=120
    )
    assert done.returncode == 0, (argv, done.stderr)
    return done.stdout


def ours(cwd: Path, *args: str, env: dict[str, str] | None = None) -> str:
    return run(
        [sys.executable, "-m", "compose_gpumem", *args], cwd, {"PYTHONPATH": PACKAGE_ROOT, **(env or {})}
    )


def strip(service: dict[str, Any], before: dict[str, Any]) -> dict[str, Any]:
    """A service with our additions taken out, the original's values put back in place."""
    out = dict(service)
    env = dict(out.get("environment") or {})
    for key in OURS:
        if key in (before.get("environment") or {}):
            env[key] = before["environment"][key]
        else:
            env.pop(key, None)
    volumes = [
        v
        for v in out.get("volumes") or []
        if not str(v.get("target", "")).startswith(("/opt/gpumem", "/run/gpumem"))
    ]
    labels = {k: v for k, v in (out.get("labels") or {}).items() if not k.startswith("io.gpumem.")}
    for key, value in (("environment", env), ("volumes", volumes), ("labels", labels)):
        if value or key in before:
            out[key] = value
        else:
            out.pop(key, None)
    return out


def assert_only_injection(ours_doc: dict[str, Any], theirs: dict[str, Any]) -> None:
    assert {k: v for k, v in ours_doc.items() if k != "services"} == {
        k: v for k, v in theirs.items() if k != "services"
    }
    assert list(ours_doc["services"]) == list(theirs["services"])
    for name, service in ours_doc["services"].items():
        before = theirs["services"][name]
        requests_gpu = inject.gpu_request(before) is not None
        assert ("GPUMEM_LIMIT" in (service.get("environment") or {})) == requests_gpu, name
        assert strip(service, before) == before, name


@pytest.mark.parametrize("project", PROJECTS, ids=lambda p: p.name)
def test_config_without_a_cap_is_composes_byte_for_byte(project: Path, compose_cmd: list[str]) -> None:
    assert ours(project, "config") == run([*compose_cmd, "config"], project)


@pytest.mark.parametrize("project", PROJECTS, ids=lambda p: p.name)
def test_config_with_a_cap_is_composes_plus_only_the_injection(
    project: Path, compose_cmd: list[str], tmp_path: Path
) -> None:
    cap = tmp_path / "cap.yaml"
    cap.write_text(CAP)
    files = ["-f", "compose.yaml", "-f", str(cap)]
    env = {"GPUMEM_LIB_DIR": str(tmp_path)}
    theirs_yaml = load(run([*compose_cmd, *files, "config"], project))
    assert_only_injection(load(ours(project, *files, "--allow-overcommit", "config", env=env)), theirs_yaml)
    theirs_json = json.loads(run([*compose_cmd, *files, "config", "--format", "json"], project))
    ours_json = json.loads(ours(project, *files, "--allow-overcommit", "config", "--format", "json", env=env))
    assert_only_injection(ours_json, theirs_json)


GPU_PROJECTS = [
    p for p in PROJECTS if any(h in (p / "compose.yaml").read_text() for h in ("nvidia", "gpus:"))
]


@pytest.mark.parametrize("project", GPU_PROJECTS, ids=lambda p: p.name)
def test_the_run_path_hands_compose_what_config_prints(
    project: Path, compose_cmd: list[str], tmp_path: Path
) -> None:
    cap = tmp_path / "cap.yaml"
    cap.write_text(CAP)
    record = tmp_path / "record.yaml"
    script = tmp_path / "compose-recorder"
    script.write_text(
        "#!/bin/sh\n"
        f'for a in "$@"; do [ "$a" = config ] && exec {shlex.join(compose_cmd)} "$@"; done\n'
        f'prev=; for a in "$@"; do [ "$prev" = -f ] && cp "$a" {record}; prev=$a; done\n'
    )
    script.chmod(0o755)
    env = {
        "GPUMEM_LIB_DIR": str(tmp_path),
        "COMPOSE_BIN": str(script),
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
    }
    files = ["-f", "compose.yaml", "-f", str(cap), "--allow-overcommit"]
    ours(project, *files, "--profile", "*", "pull", env=env)  # the run path without an engine
    printed = load(ours(project, *files, "--profile", "*", "config", env={"GPUMEM_LIB_DIR": str(tmp_path)}))
    handed = load(
        run(
            [
                *compose_cmd,
                "-f",
                str(record),
                "--project-directory",
                str(project),
                "--profile",
                "*",
                "config",
            ],
            project,
        )
    )
    assert handed == printed
