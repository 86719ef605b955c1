"""The GPU acceptance checks of acceptance.py as pytest tests; skipped without an NVIDIA GPU."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import acceptance

pytestmark = pytest.mark.gpu


def _gpu_present() -> bool:
    if shutil.which("nvidia-smi") is None:
        return False
    return subprocess.run(["nvidia-smi", "-L"], capture_output=True).returncode == 0


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    if not _gpu_present():
        pytest.skip("needs an NVIDIA GPU and nvidia-smi")
    acceptance.build_library()
    return acceptance.Env(tmp_path_factory.mktemp("acceptance"))


@pytest.mark.parametrize("name,check", acceptance.CHECKS, ids=[n for n, _ in acceptance.CHECKS])
def test_gpu_acceptance(env, name, check):
    passed, figures = check(env)
    assert passed, f"{name}: {figures}"
