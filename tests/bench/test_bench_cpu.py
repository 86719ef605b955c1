"""CI runs the CPU-side benchmark once on a tiny stack: it must still run and print its table.
(Benchmarks are not tests: no timing is asserted here.)"""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_cpu_bench_runs_on_a_tiny_stack_and_prints_a_row_per_command():
    p = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "cpu" / "run.py"), "--sizes", "4", "--trials", "1"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 0, p.stderr
    rows = re.findall(
        r"^\s+4\s+(docker compose config|gpumem-compose config|gpumem-compose override --check)"
        r"\s+[\d.]+\s+[\d.]+\s+([\d.]+)$",
        p.stdout,
        re.M,
    )
    assert [name for name, _ in rows] == [
        "docker compose config",
        "gpumem-compose config",
        "gpumem-compose override --check",
    ]
    assert rows[0][1] == "1.00"


def test_generated_stack_limits_every_other_service(tmp_path):
    sys.path.insert(0, str(ROOT / "bench" / "cpu"))
    import gen_stack

    text = gen_stack.stack(8)
    assert text.count("x-gpu-memory:") == 4
    assert text.count("  svc") == 8
