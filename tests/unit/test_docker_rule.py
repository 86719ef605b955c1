"""One rule in both tools: the declared cap (--gpu-memory, x-gpu-memory) wins over a GPUMEM_LIMIT
set by hand, with a warning."""

from __future__ import annotations

import pytest

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
