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


#: Modules whose import cost more than Compose's whole run of a small project on the bench host
#: (bench/RESULTS.md, "CPU side, start-up"); a plain `config` needs none of them.
HEAVY = {
    "click",
    "dataclasses",
    "inspect",
    "typing",
    "decimal",
    "re",
    "json",
    "enum",
    "compose_gpumem.containers",
}


def test_quick_config_and_override_import_nothing_heavy(tmp_path: Path, compose_cmd: list[str]) -> None:
    sized = "  sized:\n    image: i\n    gpus: all\n    x-gpu-memory: 64MiB\n"  # no driver here: no NVML
    write(tmp_path / "compose.yaml", STACK + sized)
    probe = (
        "import sys\nfrom compose_gpumem import launch\nsys.argv = ['gpumem-compose', *sys.argv[1:]]\n"
        "try:\n    launch.main()\nexcept SystemExit:\n    pass\n"
        "print(' '.join(sorted(sys.modules)), file=sys.stderr)\n"
    )
    env = {**os.environ, "PYTHONPATH": PACKAGE_ROOT}
    writes = HEAVY - {"re", "enum"}  # writing a file atomically takes tempfile, which imports re
    for args, heavy in (
        (["config"], HEAVY),
        (["override", "-o", "o.yaml"], writes),
        (["override", "--check", "-o", "o.yaml"], HEAVY),
    ):
        done = subprocess.run(
            [sys.executable, "-c", probe, *args], cwd=tmp_path, env=env, capture_output=True, text=True
        )
        loaded = set(done.stderr.strip().splitlines()[-1].split())
        assert "compose_gpumem.project" in loaded, done.stderr  # it did resolve the project
        assert not heavy & loaded, (args, heavy & loaded)


def test_the_script_imports_nothing_heavy_before_compose_starts() -> None:
    """The installed `gpumem-compose` (scripts/gpumem-compose, beside the interpreter once
    installed) and what it imports before launch.main starts Compose: no regex engine, enum,
    typing or collections."""
    script = Path(sys.executable).parent / "gpumem-compose"
    if not script.is_file():  # the tests run from a checkout, not installed
        script = Path(__file__).resolve().parents[2] / "scripts" / "gpumem-compose"
    probe = (
        "import sys\nbefore = set(sys.modules)\n"
        f"exec(compile(open({str(script)!r}).read(), 'gpumem-compose', 'exec'), {{'__name__': 'probe'}})\n"
        "print(' '.join(sorted(set(sys.modules) - before)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        env={**os.environ, "PYTHONPATH": PACKAGE_ROOT},
        capture_output=True,
        text=True,
        check=True,
    )
    loaded = set(done.stdout.split())
    assert "compose_gpumem.launch" in loaded
    assert not {"re", "enum", "typing", "collections", "signal", "subprocess"} & loaded, loaded


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
