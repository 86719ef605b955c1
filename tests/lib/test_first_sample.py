"""The README's first sample (samples/first-cap/cap_demo.py) run on this host against the stand-in
driver with libgpumem preloaded, as its container runs it: the capped total, then CUDA's own
out-of-memory error at the cap."""

import subprocess
import sys
from pathlib import Path

from libgpumem_support import DEFAULT_RESERVE, GiB, MiB

DEMO = Path(__file__).resolve().parents[2] / "samples" / "first-cap" / "cap_demo.py"


def run_demo(gpu, **extra):
    return subprocess.run(
        [sys.executable, str(DEMO)], env=gpu.environ(**extra), capture_output=True, text=True, timeout=60
    )


def test_first_sample_shows_the_cap_as_total_and_ends_in_cudas_out_of_memory(gpu):
    done = run_demo(gpu, GPUMEM_LIMIT="0.3", PATH="/usr/bin:/bin")
    assert done.returncode == 0, done.stderr
    cap = int(0.3 * 8 * GiB)
    lines = done.stdout.splitlines()
    assert lines[0] == "nvidia-smi: not in this container"
    assert lines[1] == f"CUDA: total {cap / MiB:.0f} MiB, free {(cap - DEFAULT_RESERVE) / MiB:.0f} MiB"
    held = (cap - DEFAULT_RESERVE) // (256 * MiB) * 256
    assert lines[2] == f"allocated {held} MiB, then cuMemAlloc(256 MiB): CUDA_ERROR_OUT_OF_MEMORY"


def test_first_sample_without_the_cap_sees_the_whole_card(gpu):
    done = run_demo(gpu, GPUMEM_LIMIT=None, PATH="/usr/bin:/bin")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[1].startswith(f"CUDA: total {8 * GiB / MiB:.0f} MiB")
    assert "allocated 8192 MiB, then" in done.stdout
