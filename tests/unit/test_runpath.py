"""The run path as users hit it: profiles, `.env`, stopping a broken stack, signals, drivers."""

from __future__ import annotations

import os
import shlex
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from unit_helpers import PACKAGE_ROOT, cli, write

from compose_gpumem.yamlio import load


def _recorded(recorder: Path) -> dict:
    return load((recorder.parent / "record.yaml").read_text())


SHARED_NAME = """\
services:
  ollama-cpu:
    image: ollama/ollama
    container_name: ollama
    profiles: [cpu]
  ollama-gpu:
    image: ollama/ollama
    container_name: ollama
    profiles: [gpu-nvidia]
    gpus: all
    x-gpu-memory: 0.5
"""


@pytest.mark.parametrize("command", [["up", "-d"], ["run", "ollama-gpu"], ["create"]])
def test_profiles_sharing_a_container_name_run(
    tmp_path: Path, lib_dir: Path, recorder: Path, command: list[str]
) -> None:
    write(tmp_path / "compose.yaml", SHARED_NAME)
    done = cli("--profile", "gpu-nvidia", *command, cwd=tmp_path, env={"COMPOSE_BIN": str(recorder)})
    assert done.returncode == 7, done.stderr
    assert _recorded(recorder)["services"]["ollama-gpu"]["environment"]["GPUMEM_LIMIT"] == "0.5"


def test_profiles_sharing_a_container_name_get_an_override(tmp_path: Path, compose_cmd: list[str]) -> None:
    write(tmp_path / "compose.yaml", SHARED_NAME)
    done = cli("--profile", "gpu-nvidia", "override", "-o", "-", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert load(done.stdout)["services"]["ollama-gpu"]["environment"]["GPUMEM_LIMIT"] == "0.5"


TWO_PROFILES = """\
services:
  a:
    image: x
    profiles: [a]
    x-gpu-memory: 0.6
    deploy: {resources: {reservations: {devices: [{driver: nvidia, device_ids: ["0"], capabilities: [gpu]}]}}}
  b:
    image: x
    profiles: [b]
    x-gpu-memory: 0.6
    deploy: {resources: {reservations: {devices: [{driver: nvidia, device_ids: ["0"], capabilities: [gpu]}]}}}
"""


@pytest.mark.parametrize("command", [["up", "-d"], ["config"]])
def test_compose_profiles_in_dotenv_enable_profiles_for_the_overcommit_check(
    tmp_path: Path, lib_dir: Path, recorder: Path, command: list[str]
) -> None:
    write(tmp_path / "compose.yaml", TWO_PROFILES)
    write(tmp_path / ".env", "COMPOSE_PROFILES=a,b\n")
    done = cli(*command, cwd=tmp_path, env={"COMPOSE_BIN": str(recorder)})
    assert done.returncode == 1, done.stderr
    assert "promised 120%" in done.stderr
    assert not (recorder.parent / "record").exists()


def test_compose_profiles_in_an_env_file_option_count_too(
    tmp_path: Path, lib_dir: Path, recorder: Path
) -> None:
    write(tmp_path / "compose.yaml", TWO_PROFILES)
    write(tmp_path / "gpu.env", "export COMPOSE_PROFILES='a,b'\n")
    done = cli("--env-file", "gpu.env", "up", cwd=tmp_path, env={"COMPOSE_BIN": str(recorder)})
    assert done.returncode == 1 and "promised 120%" in done.stderr


@pytest.mark.parametrize("command", ["down", "stop", "ps", "logs", "kill", "rm"])
def test_an_invalid_value_never_blocks_stopping_or_reading_a_stack(
    tmp_path: Path, recorder: Path, command: str
) -> None:
    write(tmp_path / "compose.yaml", "services:\n  t:\n    image: x\n    gpus: all\n    x-gpu-memory: 7\n")
    done = cli(command, cwd=tmp_path, env={"COMPOSE_BIN": str(recorder)})
    assert done.returncode == 7, done.stderr
    assert (recorder.parent / "record").read_text().split("\n")[-2] == command


def test_an_invalid_value_still_blocks_up(tmp_path: Path, recorder: Path, lib_dir: Path) -> None:
    write(tmp_path / "compose.yaml", "services:\n  t:\n    image: x\n    gpus: all\n    x-gpu-memory: 7\n")
    done = cli("up", cwd=tmp_path, env={"COMPOSE_BIN": str(recorder)})
    assert done.returncode == 1 and "x-gpu-memory 7" in done.stderr


NVIDIA_DRIVER = """\
services:
  own:
    image: x
    x-gpu-memory: 0.25
    deploy:
      resources: {reservations: {devices: [{driver: nvidia, count: 1, capabilities: [compute, utility]}]}}
  defaulted:
    image: x
    deploy: {resources: {reservations: {devices: [{driver: nvidia, capabilities: [utility, compute]}]}}}
x-gpu-memory: 0.5
"""


def test_the_nvidia_driver_without_the_gpu_capability_is_a_gpu_request(
    tmp_path: Path, compose_cmd: list[str], lib_dir: Path
) -> None:
    write(tmp_path / "compose.yaml", NVIDIA_DRIVER)
    done = cli("config", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    services = load(done.stdout)["services"]
    assert services["own"]["environment"]["GPUMEM_LIMIT"] == "0.25"
    assert services["defaulted"]["environment"]["GPUMEM_LIMIT"] == "0.5"


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_sent_to_the_wrapper_reaches_compose(
    tmp_path: Path, lib_dir: Path, compose_cmd: list[str], signum: int
) -> None:
    write(tmp_path / "compose.yaml", "services:\n  t:\n    image: x\n")
    marker = tmp_path / "got"
    started = tmp_path / "started"
    script = write(
        tmp_path / "compose-waits",
        "#!/bin/sh\n"
        f'for a in "$@"; do [ "$a" = config ] && exec {shlex.join(compose_cmd)} "$@"; done\n'
        f"trap 'echo INT > {marker}; exit 130' INT\n"
        f"trap 'echo TERM > {marker}; exit 143' TERM\n"
        f"touch {started}\n"
        "i=0; while [ $i -lt 200 ]; do sleep 0.1; i=$((i+1)); done\n",  # bounded: never left behind
    )
    script.chmod(0o755)
    env = {**os.environ, "PYTHONPATH": PACKAGE_ROOT, "COMPOSE_BIN": str(script)}
    process = subprocess.Popen([sys.executable, "-m", "compose_gpumem", "up"], cwd=tmp_path, env=env)
    deadline = time.monotonic() + 20
    while not started.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signum)
    try:
        code = process.wait(timeout=10)
    finally:
        process.kill()
    assert marker.read_text().strip() == signal.Signals(signum).name[3:]
    assert code == 128 + signum


def test_the_committed_override_mounts_the_library_file_not_its_directory(
    tmp_path: Path, compose_cmd: list[str]
) -> None:
    # A directory without libgpumem.so would mount fine and leave the container uncapped; a
    # missing file makes Compose refuse to start it ("bind source path does not exist").
    write(tmp_path / "compose.yaml", "services:\n  t:\n    image: x\n    gpus: all\n    x-gpu-memory: 0.3\n")
    done = cli("override", "-o", "-", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    (lib,) = [v for v in load(done.stdout)["services"]["t"]["volumes"] if v["type"] == "bind"]
    assert lib["source"] == "${GPUMEM_LIB_DIR:-/usr/local/lib/gpumem}/libgpumem.so"
    assert lib["target"] == "/opt/gpumem/libgpumem.so"
    assert lib["bind"] == {"create_host_path": False} and lib["read_only"] is True


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_compose_resolving_is_stopped_with_us_never_left_running(tmp_path: Path, signum: int) -> None:
    write(tmp_path / "compose.yaml", "services:\n  t:\n    image: x\n")
    pid_file = tmp_path / "compose.pid"
    script = write(tmp_path / "compose-hangs", f"#!/bin/sh\necho $$ > {pid_file}\nexec sleep 30\n")
    script.chmod(0o755)
    env = {**os.environ, "PYTHONPATH": PACKAGE_ROOT, "COMPOSE_BIN": str(script)}
    process = subprocess.Popen(
        [sys.executable, "-m", "compose_gpumem", "config"],
        cwd=tmp_path,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 20
    while not (pid_file.exists() and pid_file.read_text().strip()) and time.monotonic() < deadline:
        time.sleep(0.05)
    compose_pid = int(pid_file.read_text())
    process.send_signal(signum)
    try:
        _, err = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 128 + signum
    assert "Traceback" not in err and "internal error" not in err
    with pytest.raises(ProcessLookupError):
        os.kill(compose_pid, 0)  # killed and reaped by us, not left behind (nor a zombie)


def test_the_file_compose_records_for_ls_and_labels_exists_after_the_command(
    tmp_path: Path, lib_dir: Path, recorder: Path
) -> None:
    # Compose puts the -f path in each container's config_files label and `docker compose ls`
    write(
        tmp_path / "p" / "compose.yaml",
        "services:\n  t:\n    image: x\n    gpus: all\n    x-gpu-memory: 0.3\n",
    )
    cache = tmp_path / "cache"
    done = cli(
        "up", "-d", cwd=tmp_path / "p", env={"COMPOSE_BIN": str(recorder), "XDG_CACHE_HOME": str(cache)}
    )
    assert done.returncode == 7, done.stderr
    args = (recorder.parent / "record").read_text().split("\n")
    path = Path(args[args.index("-f") + 1])
    assert path.is_file() and cache in path.parents
    assert load(path.read_text())["services"]["t"]["environment"]["GPUMEM_LIMIT"] == "0.3"
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    again = cli(
        "up", "-d", cwd=tmp_path / "p", env={"COMPOSE_BIN": str(recorder), "XDG_CACHE_HOME": str(cache)}
    )
    assert again.returncode == 7
    assert len(list(cache.rglob("compose.yaml"))) == 1  # one per project, not one per call
