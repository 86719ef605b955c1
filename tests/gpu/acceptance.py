"""GPU acceptance of libgpumem.so (issues 3 and 12), run on a machine with an NVIDIA GPU.

Issue 12's rows ("class: ...") each run a program that makes the driver take memory outside the
allocation calls, then fills; plain nvidia-smi (no preload) reads its physical use from outside,
which must stay within PHYS_TOLERANCE (2%) of the 8 GiB cap.

    python3 tests/gpu/acceptance.py [--out DIR]

Builds libinterpose, then runs each check below as its own processes under LD_PRELOAD, each
with its own timeout, and prints one table row per check last. Full output goes to
DIR/acceptance.log and DIR/acceptance.json (DIR defaults to $OUT, else /tmp/gpumem-acceptance).
tests/gpu/test_gpu_acceptance.py runs the same checks under pytest (marker `gpu`).
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
LIB = ROOT / "libinterpose" / "build" / "libgpumem.so"
GIB = 1 << 30
MIB = 1 << 20
CAP = 8 * GIB
STEP_TIMEOUT = 180


class Env:
    """Where this run keeps its builds, state directories and log."""

    def __init__(self, out: Path):
        self.out = out
        self.work = Path(tempfile.mkdtemp(prefix="gpumem-acc-"))
        self.log = open(out / "acceptance.log", "w")

    def state_dir(self, name: str) -> str:
        d = self.work / f"state-{name}"
        return str(d)

    def environ(self, limit, state, **extra):
        env = dict(os.environ)
        env["LD_PRELOAD"] = str(LIB)
        env.pop("GPUMEM_LIMIT", None)
        if limit is not None:
            env["GPUMEM_LIMIT"] = limit
        env["GPUMEM_STATE_DIR"] = state
        env.setdefault("GPUMEM_LOG", "warn")
        env.update({k: v for k, v in extra.items() if v is not None})
        return env

    def note(self, text: str):
        self.log.write(text.rstrip() + "\n")
        self.log.flush()


def run(env: Env, argv, environ, timeout=STEP_TIMEOUT):
    env.note(f"$ {' '.join(map(str, argv))}")
    try:
        p = subprocess.run(argv, env=environ, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        env.note(f"TIMEOUT after {timeout}s")
        return 124, exc.stdout or "", exc.stderr or ""
    env.note(p.stdout + p.stderr + f"[rc={p.returncode}]")
    return p.returncode, p.stdout, p.stderr


def start(env: Env, argv, environ):
    env.note(f"$ {' '.join(map(str, argv))} &")
    return subprocess.Popen(
        argv, env=environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )


def finish(env: Env, proc, timeout=STEP_TIMEOUT):
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        env.note("TIMEOUT, killed")
    env.note(out + err + f"[rc={proc.returncode}]")
    return proc.returncode, out, err


def last_json(text: str) -> dict:
    for line in reversed(text.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    return {}


def wait_for(path: Path, proc, timeout=STEP_TIMEOUT) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if path.exists():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.05)
    return False


def fill_cmd(framework, *opts):
    return [sys.executable, str(HERE / "fill.py"), framework, *map(str, opts)]


def nvsmi_mem(environ):
    """(total MiB, used MiB) of GPU 0 as nvidia-smi prints them."""
    p = subprocess.run(
        ["nvidia-smi", "--query-gpu=memory.total,memory.used", "--format=csv,noheader,nounits", "-i", "0"],
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
    )
    total, used = (int(x) for x in p.stdout.strip().splitlines()[0].split(","))
    return total, used


# ---- checks: each returns (passed, figures) --------------------------------------------


def check_nvsmi_passthrough(env: Env):
    total, _used = nvsmi_mem(env.environ(None, env.state_dir("pass")))
    native, _ = nvsmi_mem({k: v for k, v in os.environ.items() if k != "LD_PRELOAD"})
    return total == native, f"no GPUMEM_LIMIT: total {total} MiB, native {native} MiB"


def check_nvsmi_cap_and_used(env: Env):
    state = env.state_dir("nvsmi")
    environ = env.environ("8GiB", state)
    total0, used0 = nvsmi_mem(environ)
    ready, go = env.work / "nvsmi.ready", env.work / "nvsmi.go"
    holder = start(env, fill_cmd("torch", "--max", 3 * GIB, "--ready", ready, "--hold-until", go), environ)
    ok_ready = wait_for(ready, holder)
    total1, used1 = nvsmi_mem(environ)
    go.touch()
    finish(env, holder)
    total2, used2 = nvsmi_mem(environ)
    passed = (
        ok_ready and total0 == total1 == total2 == 8192 and used1 >= used0 + 3072 and used2 < used1 - 3072
    )
    return passed, (
        f"total {total0}/{total1}/{total2} MiB; used idle {used0}, "
        f"holding 3 GiB {used1}, after exit {used2} MiB"
    )


def torch_fill(env: Env, name, conf):
    environ = env.environ("8GiB", env.state_dir(name), PYTORCH_CUDA_ALLOC_CONF=conf)
    rc, out, _err = run(env, fill_cmd("torch"), environ)
    r = last_json(out)
    held, total = r.get("held", 0), r.get("total", 0)
    passed = rc == 0 and total == CAP and r.get("error") == "OutOfMemoryError" and held >= 7 * GIB
    return passed, (
        f"mem_get_info total {total / GIB:.2f} GiB; held {held / GIB:.2f} GiB "
        f"({held / CAP:.1%}); {r.get('error')}: {r.get('message', '')[:70]}"
    )


def check_torch_default(env):
    return torch_fill(env, "torch-default", None)


def check_torch_expandable(env):
    return torch_fill(env, "torch-expandable", "expandable_segments:True")


def check_torch_async(env):
    return torch_fill(env, "torch-async", "backend:cudaMallocAsync")


def other_fill(env: Env, framework, **extra):
    environ = env.environ("8GiB", env.state_dir(framework), **extra)
    rc, out, _err = run(env, fill_cmd(framework), environ)
    r = last_json(out)
    held = r.get("held", 0)
    passed = rc == 0 and r.get("oom") and held > 0
    return passed, (
        f"total {r.get('total', 0) / GIB:.2f} GiB; held {held / GIB:.2f} GiB "
        f"({held / CAP:.1%}); {r.get('error')}: {r.get('message', '')[:60]}"
    )


def check_cupy(env):
    return other_fill(env, "cupy")


def check_jax(env):
    # JAX's defaults: it preallocates 75% of the reported total and raises inside that pool.
    return other_fill(env, "jax")


def check_shared_ledger(env: Env):
    state = env.state_dir("shared")
    environ = env.environ("8GiB", state)
    ready, go = env.work / "shared.ready", env.work / "shared.go"
    a = start(env, fill_cmd("torch", "--max", 5 * GIB, "--ready", ready, "--hold-until", go), environ)
    ok = wait_for(ready, a)
    _rc, out, _err = run(env, fill_cmd("torch"), environ)
    go.touch()
    _, out_a, _ = finish(env, a)
    ra, rb = last_json(out_a), last_json(out)
    together = ra.get("held", 0) + rb.get("held", 0)
    passed = ok and rb.get("error") == "OutOfMemoryError" and together <= CAP
    return passed, (
        f"A held {ra.get('held', 0) / GIB:.2f} GiB, B held {rb.get('held', 0) / GIB:.2f}"
        f" GiB, together {together / GIB:.2f} GiB of cap 8 GiB"
    )


def check_two_ledgers_half_each(env: Env):
    go = env.work / "half.go"
    procs, readies = [], []
    for i in range(2):
        ready = env.work / f"half{i}.ready"
        readies.append(ready)
        environ = env.environ("0.5", env.state_dir(f"half{i}"))
        procs.append(start(env, fill_cmd("torch", "--ready", ready, "--hold-until", go), environ))
    ok = all(wait_for(r, p) for r, p in zip(readies, procs))
    _, used_native = nvsmi_mem({k: v for k, v in os.environ.items() if k != "LD_PRELOAD"})
    go.touch()
    results = [finish(env, p) for p in procs]
    shares, capped = [], []
    for _rc, out, err in results:
        r = last_json(out)
        shares.append(r.get("held", 0) / max(r.get("total", 1), 1))
        # the library logs both kinds of refusal: by the cap, and by a full card
        capped.append(
            "of cap" in err and "the card is full" not in err and r.get("error") == "OutOfMemoryError"
        )
    passed = ok and all(s >= 0.9 for s in shares) and all(capped)
    return passed, (
        f"shares of cap {shares[0]:.1%} and {shares[1]:.1%}; refused by cap: "
        f"{capped}; card used while both held: {used_native} MiB"
    )


def check_sigkill_reclaim(env: Env):
    state = env.state_dir("kill")
    environ = env.environ("8GiB", state)
    ready = env.work / "kill.ready"
    a = start(
        env,
        fill_cmd("torch", "--max", 6 * GIB, "--ready", ready, "--hold-until", env.work / "never"),
        environ,
    )
    ok = wait_for(ready, a)
    os.kill(a.pid, signal.SIGKILL)
    finish(env, a)
    _rc, out, _err = run(env, fill_cmd("torch", "--max", 6 * GIB), environ)
    r = last_json(out)
    passed = ok and r.get("held") == 6 * GIB and not r.get("oom")
    return passed, f"after SIGKILL of a 6 GiB holder, a new process got {r.get('held', 0) / GIB:.2f} GiB"


def cudart_fill(env: Env, variant, mode):
    exe = env.work / f"cudart_fill_{variant}"
    if not exe.exists():
        flags = ["-cudart", "shared"] if variant == "shared" else []
        rc, _, err = run(env, ["nvcc", "-O2", *flags, "-o", exe, HERE / "cudart_fill.cu"], dict(os.environ))
        if rc != 0:
            return False, f"nvcc failed: {err.strip()[:80]}"
    environ = env.environ("8GiB", env.state_dir(f"cudart-{variant}-{mode}"))
    rc, out, err = run(env, [exe, mode], environ)
    kv = dict(x.split("=", 1) for x in out.split() if "=" in x)
    total, held = int(kv.get("total", 0)), int(kv.get("held", 0))
    passed = rc == 0 and total == CAP and held >= 7 * GIB and held <= CAP
    return passed, (f"total {total / GIB:.2f} GiB, held {held / GIB:.2f} GiB, {kv.get('error')}")


def check_cudart_static(env):
    return cudart_fill(env, "static", "sync")


def check_cudart_shared(env):
    return cudart_fill(env, "shared", "sync")


def check_cudart_async(env):
    return cudart_fill(env, "shared", "async")


# ---- issue 12: each class of driver memory, physical use read from outside ------------------

PHYS_TOLERANCE = 0.02  # of the cap: physical use (plain nvidia-smi, no preload) may pass it by this much


def native_env():
    return {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}


def phys_used_mib(pids) -> int:
    """What plain nvidia-smi (no preload) says these processes hold on the card, in MiB."""
    p = subprocess.run(
        ["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
        env=native_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    used = 0
    for line in p.stdout.splitlines():
        fields = [x.strip() for x in line.split(",")]
        if len(fields) == 2 and fields[0].isdigit() and int(fields[0]) in pids:
            used += int(fields[1])
    return used


def classes_exe(env: Env, globals_=False):
    exe = env.work / ("classes_g" if globals_ else "classes")
    if not exe.exists():
        flags = ["-DWITH_GLOBALS"] if globals_ else []
        rc, _, err = run(
            env,
            ["nvcc", "-O2", "-arch=sm_90", *flags, "-o", exe, HERE / "classes.cu", "-lcuda"],
            native_env(),
        )
        if rc != 0:
            raise RuntimeError(f"nvcc failed: {err.strip()[:80]}")
    return exe


def module_cubin(env: Env):
    cubin = env.work / "module_globals.cubin"
    if not cubin.exists():
        rc, _, err = run(
            env, ["nvcc", "-arch=sm_90", "-cubin", "-o", cubin, HERE / "module_globals.cu"], native_env()
        )
        if rc != 0:
            raise RuntimeError(f"nvcc -cubin failed: {err.strip()[:80]}")
    return cubin


def hold_and_measure(env: Env, name, argvs, environ):
    """Start the programs one after the other (each holding once ready), read their physical use
    from outside, then let them go.  Returns (MiB used together, their outputs)."""
    procs = []
    go = env.work / f"{name}.go"
    for i, argv in enumerate(argvs):
        ready = env.work / f"{name}.{i}.ready"
        proc = start(env, [*argv[:1], argv[1], ready, go, *argv[2:]], environ)
        procs.append(proc)
        if not wait_for(ready, proc):
            break
    used = phys_used_mib({p.pid for p in procs})
    go.touch()
    outs = [finish(env, p)[1].strip() for p in procs]
    return used, outs


def within_cap(used):
    """(whether the physical use read from outside is within the tolerance, its figure)"""
    cap_mib = CAP // MIB
    limit = cap_mib * (1 + PHYS_TOLERANCE)
    return 0 < used <= limit, f"physical {used} MiB of cap {cap_mib} (<= {limit:.0f}, 2%)"


def class_row(env: Env, name, argvs, globals_=False):
    environ = env.environ("8GiB", env.state_dir(name))
    exe = classes_exe(env, globals_)
    used, outs = hold_and_measure(env, name, [[exe, *a] for a in argvs], environ)
    held, figure = within_cap(used)
    filled = all("held=" in o for o in outs)
    return filled and held, f"{figure}; " + " | ".join(outs)


def check_class_stack(env):
    return class_row(env, "stack", [["stack"]])


def check_class_stack64(env):
    return class_row(env, "stack64", [["stack64"]])


def check_class_local(env):
    return class_row(env, "local", [["local"]])


def check_class_local64(env):
    return class_row(env, "local64", [["local64"]])


def check_class_heap(env):
    return class_row(env, "heap", [["heap"]])


def check_class_module(env):
    return class_row(env, "module", [["module", module_cubin(env)]])


def check_class_globals(env):
    return class_row(env, "globals", [["globals"]], globals_=True)


def check_class_contexts(env):
    return class_row(env, "contexts", [["contexts"]])


def check_class_graph(env):
    return class_row(env, "graph", [["graph"]])


def check_class_oldgraph(env):
    return class_row(env, "oldgraph", [["oldgraph"]])


def check_class_greens(env):
    return class_row(env, "greens", [["greens"]])


def check_class_pool(env):
    # a pool that keeps 6 GiB after its free, then a second process of the container fills
    return class_row(env, "pool", [["pool"], ["fill"]])


def check_torch_green(env):
    # 96 green contexts of 16 SMs through torch.cuda.green_contexts, a kernel in one, then fill
    environ = env.environ("8GiB", env.state_dir("tgreen"))
    used, outs = hold_and_measure(env, "tgreen", [[sys.executable, str(HERE / "torch_green.py")]], environ)
    held, figure = within_cap(used)
    r = last_json(outs[0]) if outs else {}
    made = r.get("greens") == 96 and r.get("ran_in_green") == 2.0 * (1 << 20)
    return held and made and r.get("oom") is not None, f"{figure}; {json.dumps(r)}"


def torch_graph_row(env: Env, name, conf):
    environ = env.environ("8GiB", env.state_dir(name), PYTORCH_CUDA_ALLOC_CONF=conf)
    rc, out, err = run(env, [sys.executable, str(HERE / "torch_graph.py")], environ)
    r = last_json(out)
    passed = rc == 0 and r.get("ok") is True
    return passed, f"replayed 3x, max error {r.get('max_err')}; rc {rc} {err.strip()[-80:] if rc else ''}"


def check_torch_graph_default(env):
    return torch_graph_row(env, "tgraph-default", None)


def check_torch_graph_async(env):
    return torch_graph_row(env, "tgraph-async", "backend:cudaMallocAsync")


CHECKS = [
    ("nvidia-smi pass-through", check_nvsmi_passthrough),
    ("nvidia-smi cap and used", check_nvsmi_cap_and_used),
    ("torch default allocator", check_torch_default),
    ("torch expandable_segments", check_torch_expandable),
    ("torch cudaMallocAsync", check_torch_async),
    ("cupy", check_cupy),
    ("jax", check_jax),
    ("two processes, one ledger", check_shared_ledger),
    ("two ledgers at 0.5 each", check_two_ledgers_half_each),
    ("SIGKILL reclaim", check_sigkill_reclaim),
    ("cudart static", check_cudart_static),
    ("cudart shared", check_cudart_shared),
    ("cudart cudaMallocAsync", check_cudart_async),
    ("class: stack limit 16 KiB, fill", check_class_stack),
    ("class: stack limit 64 KiB, fill", check_class_stack64),
    ("class: 16 KiB local kernel, fill", check_class_local),
    ("class: 64 KiB local kernel, fill", check_class_local64),
    ("class: malloc heap 6 GiB, fill", check_class_heap),
    ("class: module 6 GiB globals, fill", check_class_module),
    ("class: cudart 1.5 GiB __device__, fill", check_class_globals),
    ("class: 12 contexts, fill", check_class_contexts),
    ("class: graph 6 GiB alloc node, fill", check_class_graph),
    ("class: graph 6 GiB, old cuGraphInstantiate, fill", check_class_oldgraph),
    ("class: 64 green contexts + 64 made/destroyed, fill", check_class_greens),
    ("class: pool keeps 6 GiB + 2nd fills", check_class_pool),
    ("torch green contexts (96), fill", check_torch_green),
    ("torch CUDA graph, default allocator", check_torch_graph_default),
    ("torch CUDA graph, cudaMallocAsync", check_torch_graph_async),
]


def build_library():
    subprocess.run(["make", "-s", "-C", str(ROOT / "libinterpose")], check=True, timeout=120)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.environ.get("OUT", "/tmp/gpumem-acceptance"))
    ap.add_argument("--only", help="comma-separated substrings of check names")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    build_library()
    env = Env(out)
    rows = []
    for name, check in CHECKS:
        if args.only and not any(s in name for s in args.only.split(",")):
            continue
        env.note(f"\n=== {name}")
        t0 = time.time()
        try:
            passed, figures = check(env)
        except Exception as exc:  # a broken check is a failed check, and the run goes on
            passed, figures = False, f"{type(exc).__name__}: {exc}"
        rows.append(
            {"check": name, "pass": bool(passed), "figures": figures, "seconds": round(time.time() - t0, 1)}
        )
        env.note(f"--> {'PASS' if passed else 'FAIL'} {figures}")
    (out / "acceptance.json").write_text(json.dumps(rows, indent=1))
    shutil.rmtree(env.work, ignore_errors=True)
    width = max(len(r["check"]) for r in rows)
    print(f"\n{'check':<{width}}  result  figures")
    for r in rows:
        print(f"{r['check']:<{width}}  {'PASS' if r['pass'] else 'FAIL':<6}  {r['figures']}")
    return 0 if all(r["pass"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
