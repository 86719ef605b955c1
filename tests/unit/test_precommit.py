"""The pre-commit hook (.pre-commit-hooks.yaml), run by the real `pre-commit try-repo` against this
checkout: it passes on a fresh override and fails, with the diff, on a stale one."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from unit_helpers import PACKAGE_ROOT, write

CHECKOUT = Path(__file__).resolve().parents[2]
HOOK = "gpumem-override-system"  # the offline one: the gpumem-compose on PATH
COMPOSE = "services:\n  trainer:\n    image: i\n    gpus: all\n    x-gpu-memory: {cap}\n"


def _pre_commit() -> str:
    found = shutil.which("pre-commit") or str(Path(sys.executable).parent / "pre-commit")
    if not os.access(found, os.X_OK):
        pytest.skip("pre-commit is not installed (pip install pre-commit; in the test extras)")
    if shutil.which("git") is None or not (CHECKOUT / ".git").exists():
        pytest.skip("needs git and a git checkout of this repository")
    return found


@pytest.fixture
def project(tmp_path: Path, compose_cmd: list[str]) -> tuple[Path, dict[str, str]]:
    """A git repository of a user's project, and an environment that finds gpumem-compose."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "gpumem-compose"
    script.write_text(f"#!{sys.executable}\nfrom compose_gpumem.launch import main\nmain()\n")
    script.chmod(0o755)
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": PACKAGE_ROOT,
        "PRE_COMMIT_HOME": str(tmp_path / "pre-commit-home"),
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.invalid",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.invalid",
    }
    repo = tmp_path / "project"
    repo.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=repo, env=env, check=True)
    write(repo / "compose.yaml", COMPOSE.format(cap=0.3))
    made = subprocess.run(
        ["gpumem-compose", "override", "-o", "gpumem.override.yaml"],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
    )
    assert made.returncode == 0, made.stderr
    subprocess.run(["git", "add", "."], cwd=repo, env=env, check=True)
    return repo, env


def try_repo(repo: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_pre_commit(), "try-repo", str(CHECKOUT), HOOK, "--all-files"],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_hook_passes_on_a_fresh_override_and_fails_with_a_diff_on_a_stale_one(
    project: tuple[Path, dict[str, str]],
) -> None:
    repo, env = project
    fresh = try_repo(repo, env)
    assert fresh.returncode == 0, fresh.stdout + fresh.stderr
    assert "Passed" in fresh.stdout

    write(repo / "compose.yaml", COMPOSE.format(cap=0.5))
    stale = try_repo(repo, env)
    assert stale.returncode == 1, stale.stdout + stale.stderr
    assert "Failed" in stale.stdout
    assert '-      GPUMEM_LIMIT: "0.3"' in stale.stdout and '+      GPUMEM_LIMIT: "0.5"' in stale.stdout
    assert (repo / "gpumem.override.yaml").read_text().count('"0.3"') == 1  # --check writes nothing
