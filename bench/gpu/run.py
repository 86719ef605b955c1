"""GPU side of bench/ (issue 5): the cost of libgpumem.so next to native, in the same run.

    python3 bench/gpu/run.py [--trials N] [--only A,B] [--skip-usable | --usable A,B] [--stats] [--ab]
                             [--list]

Each case runs as fresh processes, native and under LD_PRELOAD with a cap that does not bind
(GPUMEM_LIMIT=0.95), alternating trial by trial so that drift hits both alike. Prints min and
median per side and ratio of medians; a short table comes last. Results go to $OUT/bench-*.json,
rewritten after every case so that a run cut short keeps what it measured.
Usable memory under GPUMEM_LIMIT=8GiB reuses tests/gpu/fill.py.
`--list` prints what the other options select, without a GPU: use it to split a run in parts.
`--ab` adds abhook.c's rows: the library's hooks and the plain driver calls timed in alternating
blocks of one process (the library dlopen'ed, not preloaded), which the spread between fresh
processes on the device VMs does not blur.
"""

import argparse
import json
import os
import re
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
CAP = 8 * GIB  # the usable-memory rows' GPUMEM_LIMIT
STATE = tempfile.mkdtemp(prefix="gpumem-bench-")


def environ(preload: bool, limit="0.95", **extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPUMEM_")}
    env.pop("LD_PRELOAD", None)
    if preload:
        env.update(LD_PRELOAD=str(LIB), GPUMEM_LIMIT=limit, GPUMEM_STATE_DIR=STATE)
    env.update(extra)
    return env


STATS_LINES = []  # libgpumem's GPUMEM_STATS=1 lines, with --stats
# libinterpose/src/stats.c prints one per hook and process; a line in another format is still
# kept in stats.txt, only left out of the summary
STATS_RE = re.compile(
    r"gpumem: stats (\S+): (\d+) calls, ([\d.]+) us in gpumem and ([\d.]+) us in the driver"
)
# the cost of the timing itself: each "in gpumem" figure holds about two clock reads
CLOCK_RE = re.compile(r"gpumem: stats clock read: ([\d.]+) ns")


def keep_stats(stderr: str):
    STATS_LINES.extend(x for x in stderr.splitlines() if x.startswith("gpumem: stats"))


def run_kv(argv, env, timeout=120):
    p = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        raise RuntimeError(f"{argv} failed: {p.stderr.strip()[-300:]}")
    keep_stats(p.stderr)
    line = p.stdout.strip().splitlines()[-1]
    return {k: float(v) for k, v in (x.split("=") for x in line.split())}


def wall_ms(argv, env, timeout=120):
    t0 = time.perf_counter()
    p = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout, check=True)
    ms = (time.perf_counter() - t0) * 1e3
    keep_stats(p.stderr)
    return ms


def mean_wall_ms(argv, env, runs):
    """One run of a tiny program (about 1 ms) is within the timer's and the scheduler's noise."""
    return statistics.fmean(wall_ms(argv, env, timeout=10) for _ in range(runs))


CASES = []  # (name, unit, higher_is_better, trial_factor, fn(env) -> {metric: value})
UNPINNED = set()  # cases that need more cores than --cpus gives


def case(name, unit, higher_is_better=False, trial_factor=1, pinned=True):
    """trial_factor: this case's trials per --trials (process start varies by tens of ms per trial)."""

    def register(fn):
        CASES.append((name, unit, higher_is_better, trial_factor, fn))
        if not pinned:
            UNPINNED.add(name)
        return fn

    return register


MICRO = None


def micro(*args):
    return lambda env: run_kv([MICRO, *map(str, args)], env)


def torch_bench(mode, steps):
    return lambda env: run_kv([sys.executable, str(HERE / "torch_bench.py"), mode, str(steps)], env)


# iteration counts: each timed loop lasts a few hundred ms, so that one trial is not timer noise
for size, iters in ((MIB, 3000), (64 * MIB, 1500), (GIB, 200)):
    label = f"{size // MIB} MiB" if size < GIB else "1 GiB"
    case(f"cuMemAlloc+Free {label}", "us/pair")(micro("alloc", size, iters))
case("16 threads alloc+free 1 MiB", "pairs/s", True, pinned=False)(micro("threads", 16, MIB, 1000))
case("cudaMallocAsync+FreeAsync 1 MiB", "us/pair")(micro("async", MIB, 200000))
case("memory info calls", "us/call")(micro("info", 20000))
case("empty kernel launch", "us/launch")(micro("launch", 20000))
# the library's own load and constructor, without CUDA: the part of process start it adds
case("exec /bin/true (load cost)", "ms", trial_factor=3)(
    lambda env: {"ms": mean_wall_ms(["/bin/true"], env, 50)}
)
case("C program to first context", "ms", trial_factor=3)(lambda env: {"ms": wall_ms([MICRO, "start"], env)})
case("python torch.zeros(1) on cuda", "ms")(
    lambda env: {"ms": wall_ms([sys.executable, "-c", "import torch; torch.zeros(1, device='cuda')"], env)}
)
case("torch training loop", "steps/s", True)(torch_bench("train", 300))
case("torch allocator churn", "steps/s", True)(torch_bench("churn", 1000))

FILL = [sys.executable, str(ROOT / "tests" / "gpu" / "fill.py")]
# (name, fill.py arguments, extra environment, under the library): held as a share of the cap,
# or of the whole card for the native row
USABLE = [
    ("torch default", ["torch"], {}, True),
    ("torch expandable_segments", ["torch"], {"PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True"}, True),
    ("torch cudaMallocAsync", ["torch"], {"PYTORCH_CUDA_ALLOC_CONF": "backend:cudaMallocAsync"}, True),
    ("cupy", ["cupy"], {}, True),
    # JAX's own policy caps it at 75% of the reported total (XLA_PYTHON_CLIENT_MEM_FRACTION,
    # with or without preallocation); its platform allocator asks the driver as it goes
    (
        "jax (XLA_PYTHON_CLIENT_ALLOCATOR=platform)",
        ["jax"],
        {"XLA_PYTHON_CLIENT_ALLOCATOR": "platform"},
        True,
    ),
    ("jax defaults", ["jax"], {}, True),
    ("jax XLA_PYTHON_CLIENT_MEM_FRACTION=0.90", ["jax"], {"XLA_PYTHON_CLIENT_MEM_FRACTION": "0.90"}, True),
    # the reference: JAX's share of a whole card with no library, to hold the capped rows against
    ("jax defaults, native (no library, whole card)", ["jax"], {}, False),
]


def cuda_libdirs():
    """-L for libcuda.so: the driver folder of the device machines, or the toolkit stubs."""
    return [f"-L{d}" for d in ("/usr/local/nvidia/lib64", "/usr/local/cuda/lib64/stubs") if Path(d).is_dir()]


def build():
    global MICRO
    subprocess.run(["make", "-s", "-C", str(ROOT / "libinterpose")], check=True, timeout=120)
    out = Path(tempfile.gettempdir()) / "gpumem-bench-micro"  # kept between runs of one machine
    if out.exists() and out.stat().st_mtime > (HERE / "micro.cu").stat().st_mtime:
        MICRO = str(out)
        return
    subprocess.run(
        ["nvcc", "-O2", "-o", str(out), str(HERE / "micro.cu"), *cuda_libdirs(), "-lcuda"],
        check=True,
        timeout=300,
    )
    MICRO = str(out)


ABHOOK = Path(tempfile.gettempdir()) / "gpumem-bench-abhook"
# (mode, bytes, blocks, iterations per block): each block lasts 10-30 ms on the H100
AB_MODES = (
    ("alloc", MIB, 21, 300),
    ("async", MIB, 21, 20000),
    ("info", 0, 21, 3000),
    ("nvml", 0, 21, 3000),
    ("rmw", MIB, 21, 20000),
)
AB_WHAT = {
    "alloc": "cuMemAlloc+Free 1 MiB pair",
    "async": "cuMemAllocAsync+FreeAsync 1 MiB pair",
    "info": "cuMemGetInfo call",
    "nvml": "nvmlDeviceGetMemoryInfo call",
    "rmw": "async pair + 1 locked RMW per call (native)",
}


def build_abhook():
    cmd = ["cc", "-O2", "-o", str(ABHOOK), str(HERE / "abhook.c"), "-ldl", *cuda_libdirs(), "-lcuda"]
    subprocess.run(cmd, check=True, timeout=120)


def ab_rows(trials):
    """In-process A/B (abhook.c): plain driver calls and the library's hooks, alternating blocks
    in one process, so the spread between processes cancels; trials are separate processes."""
    build_abhook()
    env = environ(False, GPUMEM_LIMIT="0.95", GPUMEM_STATE_DIR=STATE)
    per_mode = {m[0]: [] for m in AB_MODES}
    for _ in range(trials):
        for mode, size, blocks, iters in AB_MODES:
            argv = [str(ABHOOK), str(LIB), mode, *map(str, (size, blocks, iters))]
            per_mode[mode].append(run_kv(argv, env))
    rows = []
    for mode, runs in per_mode.items():
        ratios = [r["ratio"] for r in runs]
        rows.append(
            {
                "case": f"A/B {mode}: {AB_WHAT[mode]}",
                "plain_us_median": statistics.median(r["a_us"] for r in runs),
                "hooked_us_median": statistics.median(r["b_us"] for r in runs),
                "ratio_median": statistics.median(ratios),
                "ratio_min": min(ratios),
                "ratio_max": max(ratios),
                "runs": runs,
            }
        )
    return rows


def print_ab(rows):
    print(
        f"\n{'in-process A/B (one process per trial)':<58} {'plain us':>9} {'hooked us':>9}"
        f" {'ratio med (min-max)':>22}"
    )
    for r in rows:
        print(
            f"{r['case']:<58} {r['plain_us_median']:>9.3f} {r['hooked_us_median']:>9.3f}"
            f" {r['ratio_median']:>8.3f} ({r['ratio_min']:.3f}-{r['ratio_max']:.3f})"
        )


def card_total():
    """The card's memory in bytes, for the native row: nvidia-smi, else PyTorch; None if neither."""
    probes = (
        (["nvidia-smi", "--query-gpu=memory.total", "--format=csv,noheader,nounits"], MIB),
        ([sys.executable, "-c", "import torch; print(torch.cuda.mem_get_info()[1])"], 1),
    )
    for argv, unit in probes:
        try:
            p = subprocess.run(
                argv, env=environ(False), capture_output=True, text=True, timeout=60, check=True
            )
            return int(p.stdout.split()[0]) * unit
        except (OSError, subprocess.SubprocessError, ValueError, IndexError):
            continue
    return None


def fill_row(name, args, extra, preload, card):
    """One usable-memory row; a fill that hangs or dies is a row with its error, not the end of the run."""
    env = environ(preload, limit="8GiB", **extra)
    if preload:
        env["GPUMEM_STATE_DIR"] = tempfile.mkdtemp(prefix="gpumem-fill-")  # a ledger of its own
    base = CAP if preload else card
    row = {"mode": name, "held": 0, "share": 0.0, "base": base, "total": None, "error": None}
    try:
        p = subprocess.run(FILL + args, env=env, capture_output=True, text=True, timeout=180)
    except subprocess.TimeoutExpired:
        return {**row, "error": "timeout"}
    lines = [x for x in p.stdout.splitlines() if x.startswith("{")]
    if not lines:
        last = (p.stderr.strip().splitlines() or [""])[-1][:160]
        return {**row, "error": f"exit {p.returncode}: {last}"}
    r = json.loads(lines[-1])
    held = r.get("held", 0)
    share = held / base if base else None
    return {**row, "held": held, "share": share, "total": r.get("total"), "error": r.get("error")}


def selected(name, only):
    return not only or any(s in name for s in only.split(","))


def measure(fn, trials, stats):
    """{native or preload: {metric: [one value per trial]}}, the two sides interleaved."""
    samples = {False: {}, True: {}}
    for _ in range(trials):
        for preload in (False, True):
            env = environ(preload, **({"GPUMEM_STATS": "1"} if preload and stats else {}))
            for metric, value in fn(env).items():
                samples[preload].setdefault(metric, []).append(value)
    return samples


def summarise(name, unit, higher, samples):
    rows = []
    for metric in samples[False]:
        nat, pre = samples[False][metric], samples[True][metric]
        row = {
            "case": name,
            "metric": metric,
            "unit": unit,
            "higher_is_better": higher,
            "trials": len(nat),
            "native_min": min(nat),
            "native_median": statistics.median(nat),
            "preload_min": min(pre),
            "preload_median": statistics.median(pre),
        }
        row["ratio"] = row["preload_median"] / row["native_median"]
        # trial i of each side ran back to back: the median of their ratios cancels drift
        # between trials that the ratio of medians keeps
        row["paired_ratio"] = statistics.median(b / a for a, b in zip(nat, pre))
        row["diff"] = row["preload_median"] - row["native_median"]  # the start rows' goal is in ms
        row["native"], row["preload"] = nat, pre
        rows.append(row)
    return rows


def stats_per_hook(lines):
    """{hook: calls, and ns per call in the library and in the driver}, over all of a case's processes."""
    sums, clocks = {}, []
    for line in lines:
        if c := CLOCK_RE.match(line):
            clocks.append(float(c[1]))
        m = STATS_RE.match(line)
        if not m:
            continue
        calls, ours_us, driver_us = int(m[2]), float(m[3]), float(m[4])
        s = sums.setdefault(m[1], [0, 0.0, 0.0])
        s[0] += calls
        s[1] += calls * ours_us * 1e3
        s[2] += calls * driver_us * 1e3
    clock = statistics.fmean(clocks) if clocks else None
    return {
        hook: {"calls": n, "ours_ns": ours / n, "driver_ns": driver / n, "clock_read_ns": clock}
        for hook, (n, ours, driver) in sums.items()
        if n
    }


def print_list(cases, modes, trials):
    for name, unit, _higher, factor, _fn in cases:
        print(f"case    {name:<36} {unit:<10} {trials * factor} trials")
    for name, *_ in modes:
        print(f"usable  {name}")


def print_table(results):
    head = f"{'case':<34} {'metric':<24} {'native min/med':>18} {'gpumem min/med':>18}"
    print(f"\n{head} {'ratio':>6} {'paired':>6} {'med diff':>9}")
    for r in results:
        print(
            f"{r['case']:<34} {r['metric']:<24} {r['native_min']:>8.2f}/{r['native_median']:<9.2f}"
            f" {r['preload_min']:>8.2f}/{r['preload_median']:<9.2f} {r['ratio']:>6.3f}"
            f" {r['paired_ratio']:>6.3f} {r['diff']:>+9.2f}"
        )


def print_stats(per_case):
    print("\nlibgpumem's time per call (--stats), mean over each case's processes; all lines in stats.txt:")
    for name, hooks in per_case.items():
        for hook, s in sorted(hooks.items(), key=lambda kv: -kv[1]["calls"]):
            clock = f" (clock read {s['clock_read_ns']:.0f} ns)" if s["clock_read_ns"] else ""
            print(
                f"  {name:<34} {hook:<28} {s['calls']:>10} calls"
                f" {s['ours_ns']:>9.0f} ns in gpumem {s['driver_ns']:>10.0f} ns in the driver{clock}"
            )


def print_usable(usable):
    print()
    for u in usable:
        share = f"{u['share']:6.1%}" if u["share"] is not None else "     ?"
        base = f"{u['base'] / GIB:6.2f}" if u["base"] else "     ?"
        told = f"{u['total'] / GIB:6.2f}" if u["total"] else "     ?"
        print(
            f"usable: {u['mode']:<46} {u['held'] / GIB:6.2f} GiB {share} of {base} GiB,"
            f" framework's total {told} GiB  {u['error'] or ''}"
        )


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=5, help="per case; the C program and /bin/true get 3 times")
    ap.add_argument("--only", help="comma-separated substrings of case names")
    ap.add_argument("--skip-usable", action="store_true")
    ap.add_argument("--usable", help="comma-separated substrings of usable-memory modes")
    ap.add_argument(
        "--stats",
        action="store_true",
        help="run the library side with GPUMEM_STATS=1 and keep its per-hook split of time "
        "(the timing itself costs: take ratios from a run without it)",
    )
    ap.add_argument("--list", action="store_true", help="print the selected cases and usable modes, and exit")
    ap.add_argument(
        "--ab",
        action="store_true",
        help="also run abhook.c: the library's hooks against the plain driver calls in one process",
    )
    ap.add_argument(
        "--cpus",
        default="2,3",
        help="cores the measured processes run on (both sides alike; '' for all): a process that "
        "moves between cores varied by 30%% between trials on the device VMs",
    )
    args = ap.parse_args()
    cases = [c for c in CASES if selected(c[0], args.only)]
    modes = [] if args.skip_usable else [m for m in USABLE if selected(m[0], args.usable)]
    if args.list:
        print_list(cases, modes, args.trials)
        return
    build()
    out = Path(os.environ.get("OUT", STATE)) / ("bench-" + time.strftime("%H%M%S") + ".json")
    results, stats, usable, ab = [], {}, [], []

    def save():
        out.write_text(json.dumps({"cases": results, "stats": stats, "usable": usable, "ab": ab}, indent=1))

    all_cpus = os.sched_getaffinity(0)
    pin = {int(c) for c in args.cpus.split(",") if c.strip()} & all_cpus or all_cpus
    for name, unit, higher, factor, fn in cases:
        os.sched_setaffinity(0, all_cpus if name in UNPINNED else pin)  # children inherit it
        first = len(STATS_LINES)
        rows = summarise(name, unit, higher, measure(fn, args.trials * factor, args.stats))
        for row in rows:
            print(json.dumps(row), flush=True)
        results.extend(rows)
        if hooks := stats_per_hook(STATS_LINES[first:]):
            stats[name] = hooks
        save()
    if args.ab:
        os.sched_setaffinity(0, pin)
        ab.extend(ab_rows(args.trials))
        save()
    if modes:
        card = None if all(preload for *_, preload in modes) else card_total()
        for name, fill_args, extra, preload in modes:
            usable.append(fill_row(name, fill_args, extra, preload, card))
            print(json.dumps(usable[-1]), flush=True)
            save()
    print_table(results)
    if STATS_LINES:
        (out.parent / "stats.txt").write_text("\n".join(STATS_LINES) + "\n")
    if stats:
        print_stats(stats)
    elif STATS_LINES:  # a format this script does not parse: show them as they are
        print("\nlibgpumem per-hook split (the last lines; all of them in stats.txt):")
        for line in STATS_LINES[-12:]:
            print(" ", line)
    print_usable(usable)
    if ab:
        print_ab(ab)


if __name__ == "__main__":
    main()
