"""Time per `config` call on the fidelity suite's public compose files: plain Docker Compose
beside gpumem-compose (the console script, as users run it), with a top-level x-gpu-memory added
by a second -f file so that GPU services are injected.  Prints a Markdown table of medians.

    python bench/fidelity_times.py [RUNS]      # default 5 runs per call
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from compose_gpumem import compose

PROJECTS = sorted(
    p.parent for p in (Path(__file__).parents[1] / "tests/fidelity/projects").glob("*/compose.yaml")
)


def median_ms(argv: list[str], cwd: Path, env: dict[str, str], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(
            argv, cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    tool = shutil.which("gpumem-compose") or sys.exit("gpumem-compose is not installed")
    plain = compose.command()
    with tempfile.TemporaryDirectory() as tmp:
        cap = Path(tmp) / "cap.yaml"
        cap.write_text("x-gpu-memory: 0.25\n")
        env = {**os.environ, "GPUMEM_LIB_DIR": tmp}
        files = ["-f", "compose.yaml", "-f", str(cap)]
        print("| project | services | Compose (ms) | gpumem-compose (ms) | ratio |")
        print("|---|---|---|---|---|")
        totals = [0.0, 0.0]
        for project in PROJECTS:
            services = subprocess.run(
                [*plain, "config", "--services"], cwd=project, capture_output=True, text=True
            )
            theirs = median_ms([*plain, *files, "config"], project, env, runs)
            ours = median_ms([tool, *files, "--allow-overcommit", "config"], project, env, runs)
            totals[0] += theirs
            totals[1] += ours
            count = len(services.stdout.split())
            print(f"| {project.name} | {count} | {theirs:.0f} | {ours:.0f} | {ours / theirs:.2f} |")
        print(f"| all {len(PROJECTS)} | | {totals[0]:.0f} | {totals[1]:.0f} | {totals[1] / totals[0]:.2f} |")


if __name__ == "__main__":
    main()
