"""The quick path (`config` and `override` without click) gives what the click commands give, and
leaves everything else to click."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from unit_helpers import PACKAGE_ROOT, cli, write

from compose_gpumem.quick import parse

STACK = "services:\n  t:\n    image: i\n    gpus: all\n    x-gpu-memory: 0.3\n  db:\n    image: pg\n"


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["config"], ("config", {}, {"services": []})),
        (
            ["-f", "a.yaml", "--profile", "p", "config", "--format=json", "-o", "out", "-q", "db"],
            (
                "config",
                {"files": ("a.yaml",), "profiles": ("p",)},
                {"services": ["db"], "fmt": "json", "output": "out", "quiet": True},
            ),
        ),
        (
            ["override", "--check", "--output", "o.yaml"],
            ("override", {}, {"services": [], "check": True, "output": "o.yaml"}),
        ),
    ],
)
def test_plain_calls_are_read(argv: list[str], expected: tuple) -> None:
    assert parse(argv) == expected


@pytest.mark.parametrize(
    "argv",
    [
        ["config", "--help"],
        ["--version"],
        ["config", "-f", "x.yaml"],  # the shared options after the command: click's job
        ["config", "--format", "toml"],
        ["config", "--format"],
        ["config", "-qo", "out"],
        ["config", "--quiet=yes"],
        ["override", "--check"],  # no -o: click says it is required
        ["override", "-o", "o.yaml", "extra"],
        ["up", "-d"],
        ["stack", "config"],
    ],
)
def test_anything_else_goes_to_click(argv: list[str]) -> None:
    assert parse(argv) is None


def test_quick_config_imports_no_click_and_prints_what_click_prints(
    tmp_path: Path, compose_cmd: list[str], lib_dir: Path
) -> None:
    write(tmp_path / "compose.yaml", STACK)
    probe = (
        "import sys\nfrom compose_gpumem import launch\nsys.argv = ['gpumem-compose', *sys.argv[1:]]\n"
        "try:\n    launch.main()\nexcept SystemExit:\n    pass\n"
        "print('click loaded' if 'click' in sys.modules else 'no click', file=sys.stderr)\n"
    )
    env = {**os.environ, "PYTHONPATH": PACKAGE_ROOT}
    for fmt in ("yaml", "json"):
        quick = subprocess.run(
            [sys.executable, "-c", probe, "config", "--format", fmt],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
        )
        assert quick.stderr.strip().splitlines()[-1] == "no click"
        through_click = cli("config", "-f", "compose.yaml", "--format", fmt, cwd=tmp_path)  # -f after: click
        assert through_click.returncode == 0, through_click.stderr
        assert quick.stdout == through_click.stdout
        assert "GPUMEM_LIMIT" in quick.stdout


def test_quick_override_check_and_errors_match_click(tmp_path: Path, compose_cmd: list[str]) -> None:
    write(tmp_path / "compose.yaml", STACK)
    assert cli("override", "-o", "o.yaml", cwd=tmp_path).returncode == 0
    assert cli("override", "--check", "-o", "o.yaml", cwd=tmp_path).returncode == 0
    write(tmp_path / "compose.yaml", STACK.replace("0.3", "1.5"))
    quick = cli("override", "--check", "-o", "o.yaml", cwd=tmp_path)
    slow = cli("override", "-f", "compose.yaml", "--check", "-o", "o.yaml", cwd=tmp_path)
    assert quick.returncode == slow.returncode == 1
    assert quick.stderr == slow.stderr
    assert quick.stderr.startswith("gpumem-compose: compose.yaml: service 't': x-gpu-memory 1.5: ")
