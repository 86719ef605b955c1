"""One rule in both tools: the declared cap (--gpu-memory, x-gpu-memory) wins over a GPUMEM_LIMIT
set by hand, with a warning."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from unit_helpers import cli, write

from compose_gpumem.docker_cli import rewrite_and_plan


@pytest.mark.parametrize(
    "own", [["-e", "GPUMEM_LIMIT=0.9"], ["--env=GPUMEM_LIMIT=0.9"], ["-e", "GPUMEM_LIMIT_0=8GiB"]]
)
def test_gpu_memory_wins_over_a_hand_set_limit_with_a_warning(
    own: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["run", "--gpus", "all", *own, "--gpu-memory", "0.3", "-e", "A=1", "img", "cmd"]
    out = rewrite_and_plan(args, lib_dir="/L", environ={}).args
    assert "GPUMEM_LIMIT=0.3" in out
    assert not [a for a in out if a.endswith(("GPUMEM_LIMIT=0.9", "GPUMEM_LIMIT_0=8GiB"))]
    assert out[-4:] == ["-e", "A=1", "img", "cmd"]
    assert "--gpu-memory 0.3 wins over -e GPUMEM_LIMIT" in capsys.readouterr().err


def test_a_hand_set_limit_alone_is_left_as_it_is(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["run", "--gpus", "all", "-e", "GPUMEM_LIMIT=0.9", "img"]
    assert rewrite_and_plan(args, lib_dir="/L", environ={}).args == args
    assert capsys.readouterr().err == ""


def test_a_hand_set_state_dir_loses_to_the_cap_with_a_warning(capsys: pytest.CaptureFixture[str]) -> None:
    """Each capped container keeps its ledger on its own tmpfs: a GPUMEM_STATE_DIR by hand is
    replaced, not placed after ours (where Docker would take it)."""
    args = [
        "run",
        "--gpus",
        "all",
        "-e",
        "GPUMEM_STATE_DIR=/x",
        "-e",
        "GPUMEM_LOG=debug",
        "--gpu-memory",
        "0.3",
    ]
    out = rewrite_and_plan([*args, "img"], lib_dir="/L", environ={}).args
    assert "GPUMEM_STATE_DIR=/x" not in out and "GPUMEM_STATE_DIR=/run/gpumem" in out
    assert "GPUMEM_LOG=debug" in out  # not a variable of the cap: the user's own
    err = capsys.readouterr().err
    assert (
        err == "gpumem-docker: warning: --gpu-memory 0.3 wins over -e GPUMEM_STATE_DIR=/x (now /run/gpumem)\n"
    )


def test_a_device_limit_from_an_env_file_gets_the_declared_cap(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env_file = tmp_path / "env"
    env_file.write_text("GPUMEM_LIMIT_1=8GiB\n")
    args = ["run", "--env-file", str(env_file), "--gpus", "all", "--gpu-memory", "0.3", "img"]
    out = rewrite_and_plan(args, lib_dir="/L", environ={}).args
    assert "GPUMEM_LIMIT_1=0.3" in out  # an -e: Docker takes it over the file's
    assert "GPUMEM_LIMIT_1=8GiB (now 0.3)" in capsys.readouterr().err


def _docker_env(args: list[str], environ: dict[str, str]) -> dict[str, str]:
    """The environment Docker gives the container for `args`: --env-file first, then each -e
    in order, the last one winning."""
    env: dict[str, str] = {}
    for i, arg in enumerate(args):
        if arg == "--env-file":
            for line in Path(args[i + 1]).read_text().splitlines():
                name, _, value = line.partition("=")
                env[name] = value
    for i, arg in enumerate(args):
        if arg == "-e":
            name, eq, value = args[i + 1].partition("=")
            env[name] = value if eq else environ.get(name, "")
    return {k: v for k, v in env.items() if k.startswith("GPUMEM_LIMIT") or k == "GPUMEM_STATE_DIR"}


HAND_SET = [
    {"GPUMEM_LIMIT": "0.9"},
    {"GPUMEM_LIMIT_0": "8GiB", "GPUMEM_LIMIT_3": "1GiB"},
    {"GPUMEM_STATE_DIR": "/x", "GPUMEM_LIMIT": "0.3"},
    {"GPUMEM_LIMIT": "0.9", "GPUMEM_LIMIT_1": "2GiB"},
]


@pytest.mark.parametrize("hand_set", HAND_SET)
@pytest.mark.parametrize("declared", ["0.3", '{"0": 0.5, "1": "8GiB"}'])
def test_both_tools_give_a_container_the_same_cap_variables(
    tmp_path: Path, compose_cmd: list[str], hand_set: dict[str, str], declared: str
) -> None:
    """The rule, one for both: the same hand-set variables and the same declared cap give the
    same GPUMEM_LIMIT*, GPUMEM_STATE_DIR from gpumem-docker and from gpumem-compose."""
    env_lines = "".join(f"      {k}: {json.dumps(v)}\n" for k, v in hand_set.items())
    write(
        tmp_path / "compose.yaml",
        f"services:\n  t:\n    image: x\n    gpus: all\n    x-gpu-memory: '{declared}'\n"
        f"    environment:\n{env_lines}",
    )
    if declared.startswith("{"):
        (tmp_path / "compose.yaml").write_text(
            (tmp_path / "compose.yaml").read_text().replace(f"'{declared}'", declared)
        )
    done = cli("config", "--format", "json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    composed = json.loads(done.stdout)["services"]["t"]["environment"]
    from_compose = {
        k: v for k, v in composed.items() if k.startswith("GPUMEM_LIMIT") or k == "GPUMEM_STATE_DIR"
    }
    hand = [a for k, v in hand_set.items() for a in ("-e", f"{k}={v}")]
    args = ["run", "--gpus", "all", *hand, "--gpu-memory", declared, "img"]
    assert _docker_env(rewrite_and_plan(args, lib_dir="/L", environ={}).args, {}) == from_compose


def test_a_service_environment_the_cap_changes_is_one_warning_naming_file_service_and_values(
    tmp_path: Path, compose_cmd: list[str]
) -> None:
    write(tmp_path / "compose.yaml", "x-gpu-memory: 0.3\ninclude:\n  - sub/gpu.yaml\n")
    write(
        tmp_path / "sub/gpu.yaml",
        "services:\n  t:\n    image: x\n    gpus: all\n    environment:\n"
        "      GPUMEM_LIMIT: '0.9'\n      GPUMEM_LIMIT_1: 8GiB\n      GPUMEM_LOG: debug\n",
    )
    done = cli("config", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stderr == (
        "gpumem-compose: warning: sub/gpu.yaml: service 't': x-gpu-memory 0.3 wins over its environment's "
        "GPUMEM_LIMIT=0.9 (now 0.3), GPUMEM_LIMIT_1=8GiB (now 0.3)\n"
    )
    env = json.loads(cli("config", "--format", "json", cwd=tmp_path).stdout)["services"]["t"]["environment"]
    assert (env["GPUMEM_LIMIT"], env["GPUMEM_LIMIT_1"], env["GPUMEM_LOG"]) == ("0.3", "0.3", "debug")
    write(tmp_path / "again.yaml", done.stdout)
    again = cli("-f", "again.yaml", "config", cwd=tmp_path)  # injecting twice: nothing to warn about
    assert again.returncode == 0 and again.stderr == "", again.stderr


def test_the_committed_override_sets_a_hand_set_device_limit_to_the_cap(
    tmp_path: Path, compose_cmd: list[str]
) -> None:
    """An override cannot delete a variable: it gives GPUMEM_LIMIT_1 the declared cap instead."""
    write(
        tmp_path / "compose.yaml",
        "services:\n  t:\n    image: x\n    gpus: all\n    x-gpu-memory: 0.3\n"
        "    environment:\n      GPUMEM_LIMIT_1: 8GiB\n",
    )
    done = cli("override", "-o", "gpumem.override.yaml", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert '      GPUMEM_LIMIT_1: "0.3"\n' in (tmp_path / "gpumem.override.yaml").read_text()
