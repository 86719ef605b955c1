"""Helpers shared by the unit tests: run a CLI as a user would, write files."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import compose_gpumem

#: The package the tests import (installed by tox, or the checkout): the CLIs run the same one.
PACKAGE_ROOT = str(Path(compose_gpumem.__file__).resolve().parent.parent)


def cli(
    *args: str, cwd: Path, env: dict[str, str] | None = None, prog: str = "compose_gpumem"
) -> subprocess.CompletedProcess[str]:
    """Run a CLI as a user would (a fresh process), capturing its output."""
    module = (
        ["-m", prog]
        if prog == "compose_gpumem"
        else ["-c", "from compose_gpumem.docker_cli import entry; entry()"]
    )
    return subprocess.run(
        [sys.executable, *module, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": PACKAGE_ROOT, **(env or {})},
        check=False,
    )


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path
