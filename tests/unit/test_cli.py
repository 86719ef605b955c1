"""gpumem-compose as a user runs it, against the real Docker Compose (no engine needed)."""

from __future__ import annotations

import json
import os
import shlex
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from unit_helpers import PACKAGE_ROOT, cli, write

from compose_gpumem.yamlio import load

STACK = """\
x-gpu-memory: 0.2
services:
  trainer:
    image: example/trainer
    gpus: all
    x-gpu-memory: "${SHARE:-0.3}"
    command: ["sh", "-c", "echo $$HOME"]
    environment:
      - LD_PRELOAD=/usr/lib/libjemalloc.so
      - PRICE=$$5
    volumes:
      - ./data:/data
  server:
    image: example/server
    deploy:
      resources:
        reservations:
          devices:
            - driver: nvidia
              device_ids: ["0"]
              capabilities: [gpu]
  db:
    image: example/db
"""


@pytest.fixture
def project(tmp_path: Path, compose_cmd: list[str]) -> Path:
    directory = tmp_path / "proj"
    write(directory / "compose.yaml", STACK)
    write(directory / ".env", "SHARE=0.25\n")
    return directory


def compose_config(cmd: list[str], *args: str, cwd: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [*cmd, *args, "config"],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **(env or {})},
    )
    return done.stdout


def test_config_injects_limited_services_only(project: Path, lib_dir: Path) -> None:
    done = cli("config", cwd=project)
    assert done.returncode == 0, done.stderr
    services = load(done.stdout)["services"]
    assert services["trainer"]["environment"]["GPUMEM_LIMIT"] == "0.25"
    assert (
        services["trainer"]["environment"]["LD_PRELOAD"] == "/opt/gpumem/libgpumem.so /usr/lib/libjemalloc.so"
    )
    assert services["server"]["environment"]["GPUMEM_LIMIT"] == "0.2"
    assert {
        "type": "bind",
        "source": f"{lib_dir}/libgpumem.so",
        "target": "/opt/gpumem/libgpumem.so",
        "read_only": True,
        "bind": {"create_host_path": False},
    } in services["server"]["volumes"]
    assert "environment" not in services["db"] and "volumes" not in services["db"]


def test_config_output_reads_back_the_same_through_compose(
    project: Path, lib_dir: Path, compose_cmd: list[str]
) -> None:
    ours = cli("config", cwd=project).stdout
    assert "$$5" in ours and "echo $$HOME" in ours
    out = write(project / "resolved.yaml", ours)
    again = compose_config(compose_cmd, "-f", str(out), "--project-directory", str(project), cwd=project)
    assert again == ours


def test_config_json_has_the_same_document(project: Path, lib_dir: Path) -> None:
    as_json = json.loads(cli("config", "--format", "json", cwd=project).stdout)
    as_yaml = load(cli("config", cwd=project).stdout)
    for name in ("trainer", "server"):  # the same caps; the JSON is Compose's (no service x-*)
        assert as_json["services"][name]["environment"] == as_yaml["services"][name]["environment"]
        assert as_json["services"][name]["volumes"] == as_yaml["services"][name]["volumes"]
    assert as_yaml["services"]["trainer"]["x-gpu-memory"] == "0.25"
    assert "x-gpu-memory" not in as_json["services"]["trainer"]


def test_override_gives_what_gpumem_compose_gives(
    project: Path, lib_dir: Path, compose_cmd: list[str]
) -> None:
    done = cli("-f", "compose.yaml", "override", "-o", "gpumem.override.yaml", cwd=project)
    assert done.returncode == 0, done.stderr
    text = (project / "gpumem.override.yaml").read_text()
    assert "${GPUMEM_LIB_DIR:-/usr/local/lib/gpumem}" in text
    assert str(lib_dir) not in text and str(project) not in text
    plain = compose_config(compose_cmd, "-f", "compose.yaml", "-f", "gpumem.override.yaml", cwd=project)
    assert load(plain) == load(cli("config", cwd=project).stdout)


def test_override_is_byte_for_byte_reproducible(project: Path, tmp_path: Path) -> None:
    cli("-f", "compose.yaml", "override", "-o", "a.yaml", cwd=project)
    cli(
        "-f",
        str(project / "compose.yaml"),
        "override",
        "-o",
        str(project / "b.yaml"),
        cwd=tmp_path,
        env={"GPUMEM_LIB_DIR": "/somewhere/else"},
    )
    a = (project / "a.yaml").read_text().replace("a.yaml", "X")
    b = (project / "b.yaml").read_text().replace("b.yaml", "X")
    assert a == b


def test_check_passes_when_fresh_and_fails_with_a_diff_when_stale(project: Path) -> None:
    cli("override", "-o", "gpumem.override.yaml", cwd=project)
    fresh = cli("override", "--check", "-o", "gpumem.override.yaml", cwd=project)
    assert fresh.returncode == 0, fresh.stderr
    write(project / ".env", "SHARE=0.35\n")
    stale = cli("override", "--check", "-o", "gpumem.override.yaml", cwd=project)
    assert stale.returncode == 1
    assert '-      GPUMEM_LIMIT: "0.25"' in stale.stdout and '+      GPUMEM_LIMIT: "0.35"' in stale.stdout
    assert stale.stderr.count("\n") == 1 and "is stale" in stale.stderr
    assert '"0.25"' in (project / "gpumem.override.yaml").read_text()


def test_check_fails_when_the_override_is_missing(project: Path) -> None:
    done = cli("override", "--check", "-o", "nothing.yaml", cwd=project)
    assert done.returncode == 1 and "does not exist" in done.stderr
    assert not (project / "nothing.yaml").exists()


@pytest.mark.parametrize(
    ("value", "fragment"),
    [("1.5", "x-gpu-memory '1.5': must be a fraction"), ("lots", "x-gpu-memory 'lots'")],
)
def test_invalid_value_is_one_line_naming_file_service_value_and_nothing_is_written(
    project: Path, value: str, fragment: str
) -> None:
    write(project / ".env", f"SHARE={value}\n")
    for args in (["config", "-o", "out.yaml"], ["override", "-o", "out.yaml"]):
        done = cli(*args, cwd=project)
        assert done.returncode == 1
        assert done.stderr.startswith("gpumem-compose: compose.yaml: service 'trainer': ")
        assert fragment in done.stderr and done.stderr.count("\n") == 1
        assert "Traceback" not in done.stderr and done.stdout == ""
        assert not (project / "out.yaml").exists()


def test_overcommit_is_refused_unless_allowed(project: Path) -> None:
    write(project / ".env", "SHARE=0.9\n")
    refused = cli("config", cwd=project)
    assert refused.returncode == 1 and "GPU 0 are promised 110%" in refused.stderr
    assert cli("--allow-overcommit", "config", cwd=project).returncode == 0


def test_x_gpu_memory_without_gpu_says_how_to_request_one(tmp_path: Path, compose_cmd: list[str]) -> None:
    write(tmp_path / "compose.yaml", "services:\n  web:\n    image: x\n    x-gpu-memory: 0.3\n")
    done = cli("config", cwd=tmp_path)
    assert done.returncode == 1
    assert "service 'web': x-gpu-memory 0.3: requests no GPU; add `gpus: all`" in done.stderr


def test_compose_errors_keep_composes_message_and_exit_non_zero(
    tmp_path: Path, compose_cmd: list[str]
) -> None:
    write(tmp_path / "compose.yaml", "services:\n  web:\n    image: x\n    ports: [oops: 1]\n")
    done = cli("config", cwd=tmp_path)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("gpumem-compose: docker compose could not resolve")


def test_compose_not_found_is_a_clear_error(project: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    done = cli("config", cwd=project, env={"PATH": str(empty), "COMPOSE_BIN": ""})
    assert done.returncode == 1
    assert "Docker Compose v2+ not found" in done.stderr and done.stderr.count("\n") == 1


def test_other_commands_pass_through_with_flags_and_exit_code(
    project: Path, lib_dir: Path, recorder: Path
) -> None:
    done = cli(
        "--profile",
        "debug",
        "up",
        "-d",
        "--build",
        "--wait",
        "trainer",
        cwd=project,
        env={"COMPOSE_BIN": str(recorder)},
    )
    assert done.returncode == 7, done.stderr
    args = (recorder.parent / "record").read_text().split("\n")
    assert args[-6:] == ["up", "-d", "--build", "--wait", "trainer", ""]
    assert ["--project-directory", str(project)] == args[args.index("--project-directory") :][:2]
    assert ["--profile", "debug"] == args[args.index("--profile") :][:2]
    passed = load((recorder.parent / "record.yaml").read_text())
    assert passed["services"]["trainer"]["environment"]["GPUMEM_LIMIT"] == "0.25"
    assert passed["name"] == "proj"


def test_up_refuses_to_start_without_the_library(project: Path, tmp_path: Path, recorder: Path) -> None:
    missing = tmp_path / "no-lib"
    done = cli("up", "-d", cwd=project, env={"COMPOSE_BIN": str(recorder), "GPUMEM_LIB_DIR": str(missing)})
    assert done.returncode == 1
    assert f"{missing}/libgpumem.so not found" in done.stderr and "install-lib" in done.stderr
    assert not (recorder.parent / "record").exists()


def test_down_needs_no_library(project: Path, tmp_path: Path, recorder: Path) -> None:
    done = cli("down", cwd=project, env={"COMPOSE_BIN": str(recorder), "GPUMEM_LIB_DIR": str(tmp_path / "x")})
    assert done.returncode == 7


def test_install_lib_copies_the_library(tmp_path: Path) -> None:
    source = write(tmp_path / "built.so", "library bytes")
    target = tmp_path / "a" / "b"
    done = cli("install-lib", "--dir", str(target), "--source", str(source), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (target / "libgpumem.so").read_text() == "library bytes"
    assert [p.name for p in target.iterdir()] == ["libgpumem.so"]


def test_install_lib_without_a_library_says_so(tmp_path: Path) -> None:
    done = cli("install-lib", "--dir", str(tmp_path), "--source", str(tmp_path / "none.so"), cwd=tmp_path)
    assert done.returncode == 1 and "none.so not found" in done.stderr


def test_config_of_some_services_prints_only_those(project: Path, lib_dir: Path) -> None:
    done = cli("config", "server", cwd=project)
    assert done.returncode == 0, done.stderr
    assert set(load(done.stdout)["services"]) == {"server"}


def test_options_after_the_subcommand_are_added_to_the_global_ones(project: Path, lib_dir: Path) -> None:
    write(project / "more.yaml", "services:\n  extra:\n    image: x\n    gpus: all\n")
    done = cli("-f", "compose.yaml", "config", "-f", "more.yaml", cwd=project)
    assert done.returncode == 0, done.stderr
    services = load(done.stdout)["services"]
    assert services["extra"]["environment"]["GPUMEM_LIMIT"] == "0.2"
    assert "trainer" in services


def test_a_usage_error_prints_nothing_from_compose(tmp_path: Path, compose_cmd: list[str]) -> None:
    write(tmp_path / "compose.yaml", "services:\n  web:\n    image: x\n    ports: [oops: 1]\n")
    done = cli("config", "--format", "xml", cwd=tmp_path)
    assert done.returncode == 2
    assert "'xml' is not one of" in done.stderr and "ports" not in done.stderr


def test_passed_global_options_reach_compose(project: Path, lib_dir: Path, recorder: Path) -> None:
    done = cli("--ansi", "never", "--dry-run", "up", cwd=project, env={"COMPOSE_BIN": str(recorder)})
    assert done.returncode == 7, done.stderr
    args = (recorder.parent / "record").read_text().split("\n")
    assert "--dry-run" in args and args[args.index("--ansi") + 1] == "never"


PROFILES = """\
services:
  main:
    image: x
  train:
    image: x
    profiles: [train]
    gpus: all
    x-gpu-memory: 0.8
  serve:
    image: x
    profiles: [serve]
    gpus: all
    x-gpu-memory: 0.8
"""


def test_override_covers_every_profile(tmp_path: Path, compose_cmd: list[str]) -> None:
    write(tmp_path / "compose.yaml", PROFILES)
    done = cli("override", "-o", "o.yaml", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert set(load((tmp_path / "o.yaml").read_text())["services"]) == {"train", "serve"}


def test_pass_through_keeps_profiled_services_for_compose_to_activate(
    tmp_path: Path, lib_dir: Path, recorder: Path
) -> None:
    write(tmp_path / "compose.yaml", PROFILES)
    done = cli("run", "--rm", "train", cwd=tmp_path, env={"COMPOSE_BIN": str(recorder)})
    assert done.returncode == 7, done.stderr
    passed = load((recorder.parent / "record.yaml").read_text())["services"]
    assert passed["train"]["profiles"] == ["train"]
    assert passed["train"]["environment"]["GPUMEM_LIMIT"] == "0.8"
    assert "--profile" not in (recorder.parent / "record").read_text().split("\n")


def test_profiles_enabled_together_are_checked_together(tmp_path: Path, compose_cmd: list[str]) -> None:
    write(tmp_path / "compose.yaml", PROFILES)
    done = cli("--profile", "train", "--profile", "serve", "config", cwd=tmp_path)
    assert done.returncode == 1 and "promised 160%" in done.stderr


def test_profiles_enabled_together_for_up_are_checked_together(
    tmp_path: Path, lib_dir: Path, recorder: Path
) -> None:
    write(tmp_path / "compose.yaml", PROFILES)
    env = {"COMPOSE_BIN": str(recorder)}
    assert cli("--profile", "train", "up", cwd=tmp_path, env=env).returncode == 7
    both = cli("--profile", "train", "up", cwd=tmp_path, env={**env, "COMPOSE_PROFILES": "serve"})
    assert both.returncode == 1 and "promised 160%" in both.stderr


def test_compose_file_variable_is_honoured(
    project: Path, lib_dir: Path, recorder: Path, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {"COMPOSE_FILE": str(project / "compose.yaml")}
    done = cli("config", cwd=elsewhere, env=env)
    assert done.returncode == 0, done.stderr
    assert load(done.stdout)["services"]["trainer"]["environment"]["GPUMEM_LIMIT"] == "0.25"
    cli("up", cwd=elsewhere, env={**env, "COMPOSE_BIN": str(recorder)})
    args = (recorder.parent / "record").read_text().split("\n")
    assert args[args.index("--project-directory") + 1] == str(project)


def test_config_output_file_is_written(project: Path, lib_dir: Path) -> None:
    done = cli("config", "-o", "resolved.yaml", cwd=project)
    assert done.returncode == 0 and done.stdout == ""
    assert (
        load((project / "resolved.yaml").read_text())["services"]["server"]["environment"]["GPUMEM_LIMIT"]
        == "0.2"
    )


def test_sigterm_is_passed_on_to_compose_and_its_status_comes_back(
    project: Path, lib_dir: Path, tmp_path: Path, compose_cmd: list[str]
) -> None:
    import signal
    import time

    marker = tmp_path / "got-term"
    started = tmp_path / "started"
    script = tmp_path / "compose-waits"
    script.write_text(
        "#!/bin/sh\n"
        f'for a in "$@"; do [ "$a" = config ] && exec {shlex.join(compose_cmd)} "$@"; done\n'
        f"trap 'touch {marker}; exit 143' TERM\n"
        f"touch {started}\n"
        "sleep 30 & wait\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    env = {**os.environ, "PYTHONPATH": PACKAGE_ROOT, "COMPOSE_BIN": str(script)}
    process = subprocess.Popen([sys.executable, "-m", "compose_gpumem", "up"], cwd=project, env=env)
    deadline = time.monotonic() + 20
    while not started.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=20) == 143
    assert marker.exists()


def test_help_inside_a_container_command_still_gets_the_cap(
    project: Path, lib_dir: Path, recorder: Path
) -> None:
    done = cli(
        "run", "trainer", "python", "train.py", "--help", cwd=project, env={"COMPOSE_BIN": str(recorder)}
    )
    assert done.returncode == 7, done.stderr
    passed = load((recorder.parent / "record.yaml").read_text())
    assert passed["services"]["trainer"]["environment"]["GPUMEM_LIMIT"] == "0.25"
