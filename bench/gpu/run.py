"""GPU side of bench/ (issue 5): the cost of libgpumem.so next to native, in the same run.

    python3 bench/gpu/run.py [--trials N] [--quick]

Each case runs as fresh processes, native and under LD_PRELOAD with a cap that does not bind
(GPUMEM_LIMIT=0.95), alternating trial by trial so that drift hits both alike. Prints min and
median per side and ratio of medians; a short table comes last. Results go to $OUT/bench.json.
Usable memory under GPUMEM_LIMIT=8GiB reuses tests/gpu/fill.py.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
LIB = ROOT / "libinterpose" / "build" / "libgpumem.so"
MIB, GIB = 1 << 20, 1 << 30
STATE = tempfile.mkdtemp(prefix="gpumem-bench-")


def environ(preload: bool, limit="0.95", **extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPUMEM_")}
    env.pop("LD_PRELOAD", None)
    if preload:
        env.update(LD_PRELOAD=str(LIB), GPUMEM_LIMIT=limit, GPUMEM_STATE_DIR=STATE)
    env.update(extra)
    return env


STATS_LINES = []  # libgpumem's GPUMEM_STATS=1 lines, with --stats


def run_kv(argv, env, timeout=120):
    p = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        raise RuntimeError(f"{argv} failed: {p.stderr.strip()[-300:]}")
    STATS_LINES.extend(x for x in p.stderr.splitlines() if x.startswith("gpumem: stats"))
    line = p.stdout.strip().splitlines()[-1]
    return {k: float(v) for k, v in (x.split("=") for x in line.split())}


def wall_ms(argv, env, timeout=120):
    t0 = time.perf_counter()
    subprocess.run(argv, env=env, capture_output=True, timeout=timeout, check=True)
    return (time.perf_counter() - t0) * 1e3


CASES = []  # (name, unit, higher_is_better, fn(env) -> {metric: value})


def case(name, unit, higher_is_better=False):
    def register(fn):
        CASES.append((name, unit, higher_is_better, fn))
        return fn

    return register


MICRO = None


def micro(*args):
    return lambda env: run_kv([MICRO, *map(str, args)], env)


for size, iters in ((MIB, 3000), (64 * MIB, 1500), (GIB, 200)):
    label = f"{size // MIB} MiB" if size < GIB else "1 GiB"
    case(f"cuMemAlloc+Free {label}", "us/pair")(micro("alloc", size, iters))
case("16 threads alloc+free 1 MiB", "pairs/s", True)(micro("threads", 16, MIB, 400))
case("cudaMallocAsync+FreeAsync 1 MiB", "us/pair")(micro("async", MIB, 20000))
case("memory info calls", "us/call")(micro("info", 20000))
case("empty kernel launch", "us/launch")(micro("launch", 20000))
case("C program to first context", "ms")(lambda env: {"ms": wall_ms([MICRO, "start"], env)})
case("python torch.zeros(1) on cuda", "ms")(
    lambda env: {"ms": wall_ms([sys.executable, "-c", "import torch; torch.zeros(1, device='cuda')"], env)}
)
case("torch training loop", "steps/s", True)(
    lambda env: run_kv([sys.executable, str(HERE / "torch_bench.py"), "train", "300"], env)
)
case("torch allocator churn", "steps/s", True)(
    lambda env: run_kv([sys.executable, str(HERE / "torch_bench.py"), "churn", "400"], env)
)


def build():
    global MICRO
    subprocess.run(["make", "-s", "-C", str(ROOT / "libinterpose")], check=True, timeout=120)
    out = Path(tempfile.gettempdir()) / "gpumem-bench-micro"  # kept between runs of one machine
    if out.exists() and out.stat().st_mtime > (HERE / "micro.cu").stat().st_mtime:
        MICRO = str(out)
        return
    # libcuda.so for the link: the driver folder of the device machines, or the toolkit stubs
    libdirs = [
        f"-L{d}" for d in ("/usr/local/nvidia/lib64", "/usr/local/cuda/lib64/stubs") if Path(d).is_dir()
    ]
    subprocess.run(
        ["nvcc", "-O2", "-o", str(out), str(HERE / "micro.cu"), *libdirs, "-lcuda"], check=True, timeout=300
    )
    MICRO = str(out)


def usable_memory(only=None):
    """Bytes each framework holds before its OOM error under an 8 GiB cap, as a share of it."""
    fill = [sys.executable, str(ROOT / "tests" / "gpu" / "fill.py")]
    modes = [
        ("torch default", ["torch"], {}),
        ("torch expandable_segments", ["torch"], {"PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True"}),
        ("torch cudaMallocAsync", ["torch"], {"PYTORCH_CUDA_ALLOC_CONF": "backend:cudaMallocAsync"}),
        ("cupy", ["cupy"], {}),
        # JAX's own policy caps it at 75% of the reported total (XLA_PYTHON_CLIENT_MEM_FRACTION,
        # with or without preallocation); its platform allocator asks the driver as it goes
        ("jax (XLA_PYTHON_CLIENT_ALLOCATOR=platform)", ["jax"], {"XLA_PYTHON_CLIENT_ALLOCATOR": "platform"}),
        ("jax defaults", ["jax"], {}),
    ]
    if only:
        modes = [m for m in modes if any(x in m[0] for x in only.split(","))]
    rows = []
    for name, args, extra in modes:
        env = environ(True, limit="8GiB", **extra)
        env["GPUMEM_STATE_DIR"] = tempfile.mkdtemp(prefix="gpumem-fill-")
        p = subprocess.run(fill + args, env=env, capture_output=True, text=True, timeout=180)
        lines = [x for x in p.stdout.splitlines() if x.startswith("{")]
        r = json.loads(lines[-1]) if lines else {}
        rows.append(
            {
                "mode": name,
                "held": r.get("held", 0),
                "share": r.get("held", 0) / (8 * GIB),
                "error": r.get("error"),
            }
        )
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=5)
    ap.add_argument("--only", help="comma-separated substrings of case names")
    ap.add_argument("--skip-usable", action="store_true")
    ap.add_argument("--usable", help="comma-separated substrings of usable-memory modes")
    ap.add_argument(
        "--stats",
        action="store_true",
        help="run the library side with GPUMEM_STATS=1 and keep its per-hook split of time "
        "(the timing itself costs: take ratios from a run without it)",
    )
    args = ap.parse_args()
    build()
    results = []
    for name, unit, higher, fn in CASES:
        if args.only and not any(s in name for s in args.only.split(",")):
            continue
        samples = {False: {}, True: {}}
        for _ in range(args.trials):
            for preload in (False, True):  # interleaved: native, preload, native, ...
                env = environ(preload, **({"GPUMEM_STATS": "1"} if preload and args.stats else {}))
                for metric, value in fn(env).items():
                    samples[preload].setdefault(metric, []).append(value)
        for metric in samples[False]:
            nat, pre = samples[False][metric], samples[True][metric]
            row = {
                "case": name,
                "metric": metric,
                "unit": unit,
                "higher_is_better": higher,
                "native_min": min(nat),
                "native_median": statistics.median(nat),
                "preload_min": min(pre),
                "preload_median": statistics.median(pre),
            }
            row["ratio"] = row["preload_median"] / row["native_median"]
            results.append(row)
            print(json.dumps(row), flush=True)
    usable = [] if args.skip_usable else usable_memory(args.usable)
    out = Path(os.environ.get("OUT", STATE))
    name = "bench-" + time.strftime("%H%M%S") + ".json"
    (out / name).write_text(json.dumps({"cases": results, "usable": usable}, indent=1))
    print(f"\n{'case':<34} {'metric':<24} {'native min/med':>18} {'gpumem min/med':>18} {'ratio':>6}")
    for r in results:
        print(
            f"{r['case']:<34} {r['metric']:<24} {r['native_min']:>8.2f}/{r['native_median']:<9.2f}"
            f" {r['preload_min']:>8.2f}/{r['preload_median']:<9.2f} {r['ratio']:>6.3f}"
        )
    if STATS_LINES:
        (out / "stats.txt").write_text("\n".join(STATS_LINES) + "\n")
        print("\nlibgpumem per-hook split (the last lines; all of them in stats.txt):")
        for line in STATS_LINES[-12:]:
            print(" ", line)
    for u in usable:
        print(
            f"usable under 8 GiB: {u['mode']:<44} {u['held'] / GIB:6.2f} GiB {u['share']:6.1%} {u['error']}"
        )


if __name__ == "__main__":
    main()
