"""Per-device caps on a machine with two or more NVIDIA GPUs (issue 6).

    python3 tests/gpu/multi_gpu.py [--out DIR]

Checks, each in fresh processes under LD_PRELOAD, a table last; full log in DIR/multi_gpu.log:
  1. GPUMEM_LIMIT_0=8GiB GPUMEM_LIMIT_1=0.25: each device reports its own cap in cuMemGetInfo
     (torch.cuda.mem_get_info(i)), in cuDeviceTotalMem and in nvidia-smi, and enforces it.
  2. CUDA_VISIBLE_DEVICES=1 GPUMEM_LIMIT_0=8GiB: the process's device 0 is the physical second
     GPU and gets the 8 GiB cap; NVML handles by index, UUID and PCI bus id of that GPU report
     it, the other GPU's handle is untouched.
  3. Two capped processes (one per GPU) run an NCCL all-reduce through PyTorch: the sum is
     right and NCCL's own buffers show in their ledgers (used grows by more than PyTorch holds).
NVLink multicast stays off (NCCL_NVLS_ENABLE=0 and friends), as the device machines require.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LIB = ROOT / "libinterpose" / "build" / "libgpumem.so"
GIB = 1 << 30
NO_MULTICAST = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1"}

PROBE = r"""
import json, sys, ctypes, torch
out = {"count": torch.cuda.device_count(), "devices": []}
cuda = ctypes.CDLL("libcuda.so.1")
for i in range(torch.cuda.device_count()):
    free, total = torch.cuda.mem_get_info(i)
    tm = ctypes.c_size_t()
    cuda.cuDeviceTotalMem_v2(ctypes.byref(tm), i)
    props = torch.cuda.get_device_properties(i)
    ok_under = ok_over = False
    with torch.cuda.device(i):
        try:
            x = torch.empty(int(total * 0.8), dtype=torch.uint8, device=f"cuda:{i}"); del x
            ok_under = True
        except torch.OutOfMemoryError:
            pass
        torch.cuda.empty_cache()
        try:
            x = torch.empty(int(total * 1.05), dtype=torch.uint8, device=f"cuda:{i}"); del x
        except torch.OutOfMemoryError:
            ok_over = True
        torch.cuda.empty_cache()
    out["devices"].append({"index": i, "total": total, "cuDeviceTotalMem": tm.value,
                           "uuid": str(getattr(props, "uuid", "")), "pci_bus_id": props.pci_bus_id,
                           "under_ok": ok_under, "over_refused": ok_over})
print(json.dumps(out))
"""

NVML_PROBE = r"""
import json, pynvml
pynvml.nvmlInit()
res = {}
for i in range(pynvml.nvmlDeviceGetCount()):
    h = pynvml.nvmlDeviceGetHandleByIndex(i)
    uuid = pynvml.nvmlDeviceGetUUID(h)
    bus = pynvml.nvmlDeviceGetPciInfo(h).busId
    bus = bus.decode() if isinstance(bus, bytes) else bus
    uuid = uuid.decode() if isinstance(uuid, bytes) else uuid
    by_uuid = pynvml.nvmlDeviceGetHandleByUUID(uuid)
    by_bus = pynvml.nvmlDeviceGetHandleByPciBusId(bus)
    res[i] = {"uuid": uuid, "bus": bus,
              "by_index": pynvml.nvmlDeviceGetMemoryInfo(h).total,
              "by_uuid": pynvml.nvmlDeviceGetMemoryInfo(by_uuid).total,
              "by_bus": pynvml.nvmlDeviceGetMemoryInfo(by_bus).total}
print(json.dumps(res))
"""

ALLREDUCE = r"""
import json, os, torch, torch.distributed as dist
rank = int(os.environ["RANK"])
torch.cuda.set_device(0)            # each rank sees one GPU through CUDA_VISIBLE_DEVICES
dist.init_process_group("nccl")
x = torch.full((1 << 20,), float(rank + 1), device="cuda")
torch.cuda.synchronize()
free0, total = torch.cuda.mem_get_info()
reserved0 = torch.cuda.memory_reserved()
dist.all_reduce(x)
torch.cuda.synchronize()
free1, _ = torch.cuda.mem_get_info()
reserved1 = torch.cuda.memory_reserved()
ok = bool((x == 3.0).all().item())
print(json.dumps({"rank": rank, "sum_ok": ok, "total": total,
                  "ledger_growth": free0 - free1, "torch_growth": reserved1 - reserved0}))
dist.destroy_process_group()
"""


def env_with(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPUMEM_")}
    env.update(NO_MULTICAST)
    env.update(LD_PRELOAD=str(LIB), GPUMEM_STATE_DIR=tempfile.mkdtemp(prefix="gpumem-mg-"))
    env.update({k: str(v) for k, v in extra.items()})
    return env


def py(code, env, log, timeout=180):
    p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=timeout)
    log.write(f"$ python -c <probe>\n{p.stdout}{p.stderr}[rc={p.returncode}]\n")
    lines = [x for x in p.stdout.splitlines() if x.startswith("{")]
    return json.loads(lines[-1]) if lines else {}


def nvsmi_totals(env):
    p = subprocess.run(
        ["nvidia-smi", "--query-gpu=index,memory.total", "--format=csv,noheader,nounits"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return {int(a): int(b) for a, b in (x.split(",") for x in p.stdout.strip().splitlines())}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.environ.get("OUT", "/tmp/gpumem-multi"))
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    subprocess.run(["make", "-s", "-C", str(ROOT / "libinterpose")], check=True, timeout=120)
    log = open(out / "multi_gpu.log", "w")
    rows = []

    native = py(
        PROBE.replace("int(total * 0.8)", "1").replace("int(total * 1.05)", "1 << 62"),
        {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"},
        log,
    )
    nat_total = [d["cuDeviceTotalMem"] for d in native["devices"]]

    # 1. a cap per device
    env = env_with(GPUMEM_LIMIT_0="8GiB", GPUMEM_LIMIT_1="0.25")
    r = py(PROBE, env, log)
    d0, d1 = r["devices"][0], r["devices"][1]
    want1 = int(nat_total[1] * 0.25)
    smi = nvsmi_totals(env)
    ok = (
        d0["total"] == 8 * GIB
        and d0["cuDeviceTotalMem"] == 8 * GIB
        and abs(d1["total"] - want1) <= 1 << 20
        and d1["cuDeviceTotalMem"] == d1["total"]
        and all(d["under_ok"] and d["over_refused"] for d in (d0, d1))
        and smi.get(0) == 8192
        and abs(smi.get(1, 0) - want1 / (1 << 20)) <= 1
    )
    rows.append(
        (
            "per-device caps",
            ok,
            f"dev0 {d0['total'] / GIB:.2f} GiB, dev1 {d1['total'] / GIB:.2f} GiB "
            f"(0.25 of {nat_total[1] / GIB:.2f}); nvidia-smi {smi}; enforced "
            f"{[d['over_refused'] for d in (d0, d1)]}",
        )
    )

    # 2. CUDA_VISIBLE_DEVICES=1: the process's device 0 is physical GPU 1
    env = env_with(GPUMEM_LIMIT_0="8GiB", CUDA_VISIBLE_DEVICES="1")
    r = py(PROBE, env, log)
    nv = py(NVML_PROBE, env, log)
    # the UUID tells the GPUs apart (on the 2026-11-25 machine both reported PCI bus number 0)
    phys1 = native["devices"][1]["uuid"]
    dev = r["devices"][0]
    g1, g0 = nv.get("1", {}), nv.get("0", {})
    ok = (
        r["count"] == 1
        and dev["total"] == 8 * GIB
        and dev["uuid"] == phys1
        and dev["uuid"] != native["devices"][0]["uuid"]
        and g1.get("by_index") == g1.get("by_uuid") == g1.get("by_bus") == 8 * GIB
        and g0.get("by_index", 0) > 8 * GIB
    )
    rows.append(
        (
            "CUDA_VISIBLE_DEVICES=1",
            ok,
            f"device 0 = {dev['uuid']} (physical 1 is "
            f"{phys1}), total {dev['total'] / GIB:.2f} GiB; NVML gpu1 index/uuid/bus "
            f"{[g1.get(k, 0) / GIB for k in ('by_index', 'by_uuid', 'by_bus')]} GiB, gpu0 "
            f"{g0.get('by_index', 0) / GIB:.2f} GiB",
        )
    )

    # 3. NCCL all-reduce between two capped processes
    procs = []
    for rank in range(2):
        e = env_with(
            GPUMEM_LIMIT="0.25",
            CUDA_VISIBLE_DEVICES=rank,
            RANK=rank,
            WORLD_SIZE=2,
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT="29533",
        )
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", ALLREDUCE],
                env=e,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    res = []
    for p in procs:
        o, e = p.communicate(timeout=240)
        log.write(f"$ allreduce rank\n{o}{e}[rc={p.returncode}]\n")
        lines = [x for x in o.splitlines() if x.startswith("{")]
        res.append(json.loads(lines[-1]) if lines else {})
    ok = all(x.get("sum_ok") and x.get("ledger_growth", 0) > x.get("torch_growth", 0) for x in res)
    rows.append(
        (
            "NCCL all-reduce, capped",
            ok,
            "; ".join(
                f"rank {x.get('rank')}: sum ok {x.get('sum_ok')}, "
                f"ledger +{x.get('ledger_growth', 0) / (1 << 20):.0f} MiB"
                f" vs torch +{x.get('torch_growth', 0) / (1 << 20):.0f} MiB"
                for x in res
            ),
        )
    )

    (out / "multi_gpu.json").write_text(
        json.dumps([{"check": a, "pass": b, "figures": c} for a, b, c in rows])
    )
    print()
    for name, ok, figures in rows:
        print(f"{name:<26} {'PASS' if ok else 'FAIL':<5} {figures}")
    return 0 if all(ok for _, ok, _ in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
