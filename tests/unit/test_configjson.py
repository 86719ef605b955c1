"""`config --format json` is Compose's own JSON plus our keys; Compose's `config` flags work."""

from __future__ import annotations

import json
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest
from unit_helpers import cli, write

STACK = """\
name: shop
x-gpu-memory: 0.2
services:
  trainer:
    image: "example/trainer<1>&2"
    gpus: all
    x-gpu-memory: 0.3
    x-note: kept by the YAML, dropped by Compose's JSON
    command: ["sh", "-c", "echo $$HOME"]
    environment: {LD_PRELOAD: /usr/lib/libjemalloc.so, EMPTY: null, Z: "1", A: "2"}
    volumes: ["./data:/data"]
    profiles: [train]
  web:
    image: nginx
    networks: [front]
  cache:
    image: redis
    deploy:
      resources:
        reservations:
          devices: [{driver: nvidia, count: 1, capabilities: [gpu]}]
networks:
  front: {}
volumes:
  data: {}
"""

INJECTED_ENV = {"GPUMEM_LIMIT", "GPUMEM_STATE_DIR", "LD_PRELOAD"}


def compose_json(cmd: list[str], cwd: Path, *args: str) -> str:
    done = subprocess.run(
        [*cmd, *args, "config", "--format", "json"], cwd=cwd, capture_output=True, text=True, check=True
    )
    return done.stdout


def without_injection(doc: dict[str, Any], original: dict[str, Any]) -> dict[str, Any]:
    """``doc`` with what the caps added taken out again, the original's values put back."""
    for name, service in doc["services"].items():
        before = original["services"][name]
        env = service.get("environment") or {}
        for key in INJECTED_ENV:
            if key in (before.get("environment") or {}):
                env[key] = before["environment"][key]
            else:
                env.pop(key, None)
        if not env and "environment" not in before:
            service.pop("environment", None)
        volumes = [
            v
            for v in service.get("volumes") or []
            if not str(v.get("target")).startswith(("/opt/gpumem", "/run/gpumem"))
        ]
        if volumes or "volumes" in before:
            service["volumes"] = volumes
        else:
            service.pop("volumes", None)
        labels = {k: v for k, v in (service.get("labels") or {}).items() if not k.startswith("io.gpumem.")}
        if labels or "labels" in before:
            service["labels"] = labels
        else:
            service.pop("labels", None)
    return doc


@pytest.mark.parametrize("profiles", [[], ["--profile", "train"]])
def test_config_json_is_composes_json_plus_the_injection(
    tmp_path: Path, compose_cmd: list[str], lib_dir: Path, profiles: list[str]
) -> None:
    write(tmp_path / "compose.yaml", STACK)
    theirs_text = compose_json(compose_cmd, tmp_path, *profiles)
    done = cli(*profiles, "config", "--format", "json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    ours = json.loads(done.stdout)
    theirs = json.loads(theirs_text)
    assert ours["services"]["cache"]["environment"]["GPUMEM_LIMIT"] == "0.2"
    if profiles:
        assert ours["services"]["trainer"]["environment"]["GPUMEM_LIMIT"] == "0.3"
        assert ours["services"]["trainer"]["environment"]["LD_PRELOAD"].endswith(" /usr/lib/libjemalloc.so")
    stripped = without_injection(ours, theirs)
    assert stripped == theirs
    # same key order everywhere, same escapes: byte for byte once the injection is out
    assert (
        json.dumps(stripped, indent=2, ensure_ascii=False)
        .replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
        == theirs_text
    )


def counting_compose(tmp_path: Path, compose_cmd: list[str]) -> tuple[Path, Path]:
    """COMPOSE_BIN that runs the real Compose and logs each call's arguments on one line."""
    log = tmp_path / "calls"
    script = tmp_path / "compose-counter"
    script.write_text(f'#!/bin/sh\necho "$*" >> {log}\nexec {shlex.join(compose_cmd)} "$@"\n')
    script.chmod(0o755)
    return script, log


CAPS_BY_VARIABLE = """\
services:
  trainer:
    image: busybox
    gpus: all
    x-gpu-memory: "${SHARE:-30%}"
  server:
    image: busybox
    runtime: nvidia
    x-gpu-memory: 0.2
"""


@pytest.mark.parametrize(
    ("stack", "full_yaml_runs", "limits"),
    [
        (STACK.replace("    profiles: [train]\n", ""), 0, {"trainer": "0.3", "cache": "0.2"}),
        (CAPS_BY_VARIABLE, 1, {"trainer": "30%", "server": "0.2"}),  # a `$`: resolved in full
        (CAPS_BY_VARIABLE.replace("30%", "$$5"), 1, None),  # `$$` reads `$` once resolved: refused
    ],
)
def test_config_json_resolves_in_full_only_where_an_uninterpolated_value_may_differ(
    tmp_path: Path,
    compose_cmd: list[str],
    lib_dir: Path,
    stack: str,
    full_yaml_runs: int,
    limits: dict[str, str] | None,
) -> None:
    """Compose's JSON drops the services' x-gpu-memory; they come from a run with
    --no-interpolate beside it, and from the full YAML only where a value holds a `$`."""
    write(tmp_path / "compose.yaml", stack)
    counter, log = counting_compose(tmp_path, compose_cmd)
    done = cli("config", "--format", "json", cwd=tmp_path, env={"COMPOSE_BIN": str(counter)})
    calls = log.read_text().splitlines()
    assert sum("--format json" in call for call in calls) == 1, calls
    assert sum("--format yaml" in call and "--no-interpolate" in call for call in calls) == 1, calls
    full = [call for call in calls if "--format yaml" in call and "--no-interpolate" not in call]
    assert len(full) == full_yaml_runs, calls
    if limits is None:
        assert done.returncode == 1
        assert "x-gpu-memory '$5'" in done.stderr, done.stderr
        return
    assert done.returncode == 0, done.stderr
    services = json.loads(done.stdout)["services"]
    assert {
        name: s["environment"]["GPUMEM_LIMIT"]
        for name, s in services.items()
        if "environment" in s and "GPUMEM_LIMIT" in s["environment"]
    } == limits


def test_config_json_prints_nothing_of_its_own_compose_run(tmp_path: Path, compose_cmd: list[str]) -> None:
    """The run with --no-interpolate is ours: its warnings (it renders every service, whatever
    the command line names) are not the user's."""
    write(tmp_path / "compose.yaml", STACK)
    done = cli("config", "--format", "json", "web", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    theirs = subprocess.run(
        [*compose_cmd, "config", "--format", "json", "web"], cwd=tmp_path, capture_output=True, text=True
    )
    assert done.stderr == theirs.stderr
    assert done.stdout == theirs.stdout


def test_config_json_without_caps_is_byte_for_byte_composes(tmp_path: Path, compose_cmd: list[str]) -> None:
    write(
        tmp_path / "compose.yaml", "services:\n  web:\n    image: 'a<b>&c'\n    x-y: 1\n  db: {image: pg}\n"
    )
    done = cli("config", "--format", "json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout == compose_json(compose_cmd, tmp_path)


@pytest.mark.parametrize(
    "flag",
    ["--services", "--volumes", "--profiles", "--images", "--networks", "--variables"],
)
def test_composes_listing_flags_print_what_compose_prints(
    tmp_path: Path, compose_cmd: list[str], flag: str
) -> None:
    write(tmp_path / "compose.yaml", STACK)
    theirs = subprocess.run([*compose_cmd, "config", flag], cwd=tmp_path, capture_output=True, text=True)
    done = cli("config", flag, cwd=tmp_path)
    assert done.returncode == theirs.returncode == 0, done.stderr
    assert sorted(done.stdout.splitlines()) == sorted(theirs.stdout.splitlines())  # Compose's order varies


@pytest.mark.parametrize("flag", ["--no-interpolate", "--no-normalize", "--no-path-resolution"])
def test_composes_shaping_flags_shape_the_output(
    tmp_path: Path, compose_cmd: list[str], lib_dir: Path, flag: str
) -> None:
    write(tmp_path / "compose.yaml", STACK.replace("./data:/data", "./${DIR:-data}:/data"))
    theirs = subprocess.run([*compose_cmd, "config", flag], cwd=tmp_path, capture_output=True, text=True)
    done = cli("config", flag, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert theirs.stdout.split("services:")[0] == done.stdout.split("services:")[0]
    # what Compose printed of a service without a cap is there as it printed it
    web = theirs.stdout[theirs.stdout.index("  web:") :].split("\n  ")[0]
    assert web in done.stdout


def test_hash_is_the_hash_of_what_runs(tmp_path: Path, compose_cmd: list[str], lib_dir: Path) -> None:
    write(tmp_path / "compose.yaml", STACK)
    ours = cli("config", "--hash", "cache,web", cwd=tmp_path)
    assert ours.returncode == 0, ours.stderr
    plain = subprocess.run(
        [*compose_cmd, "config", "--hash", "cache,web"], cwd=tmp_path, capture_output=True, text=True
    )
    ours_lines = dict(line.split() for line in ours.stdout.splitlines())
    plain_lines = dict(line.split() for line in plain.stdout.splitlines())
    assert ours_lines["web"] == plain_lines["web"]  # no cap: the same container
    assert ours_lines["cache"] != plain_lines["cache"]  # capped: Compose sees the injection
