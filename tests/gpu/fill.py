"""Fill GPU memory with one framework until it raises its own out-of-memory error.

Run under libgpumem.so by tests/gpu/acceptance.py and bench/gpu. Prints one JSON line:
  {"framework", "mode", "total", "held", "error", "message", "oom"}
`total` is the device total the framework was told; `held` is the bytes it holds at the first
refusal; `oom` says whether the refusal was the framework's own OOM error type.

Options:
  --hold-until FILE   after filling, keep holding until FILE exists (two fillers at once)
  --ready FILE        touch FILE once full
  --max BYTES         stop before holding more than BYTES (no OOM expected)
  --chunk MIB         allocation size (default 256 MiB; halves down to 1 MiB on refusal)
"""

import argparse
import json
import os
import sys
import time

MIB = 1 << 20


def fill(alloc, is_oom, chunk, limit):
    """Allocate `chunk` bytes at a time, halving on refusal, until 1 MiB is refused."""
    held, blocks, first_error = 0, [], None
    while chunk >= MIB:
        if limit is not None and held + chunk > limit:
            chunk //= 2
            continue
        try:
            blocks.append(alloc(chunk))
            held += chunk
        except Exception as exc:
            if not is_oom(exc):
                raise
            first_error = first_error or exc
            chunk //= 2
    return held, blocks, first_error


def torch_filler():
    import torch

    _free, total = torch.cuda.mem_get_info()

    def alloc(n):
        return torch.empty(n, dtype=torch.uint8, device="cuda")

    return total, alloc, lambda e: isinstance(e, torch.OutOfMemoryError)


def cupy_filler():
    import cupy

    _free, total = cupy.cuda.runtime.memGetInfo()

    def alloc(n):
        return cupy.empty(n, dtype=cupy.uint8)

    return total, alloc, lambda e: isinstance(e, cupy.cuda.memory.OutOfMemoryError)


def jax_filler():
    import jax
    import jax.numpy as jnp

    dev = jax.devices("gpu")[0]
    stats = dev.memory_stats() or {}
    total = stats.get("bytes_limit", 0)

    def alloc(n):
        x = jnp.zeros((n,), dtype=jnp.uint8)
        x.block_until_ready()
        return x

    def is_oom(e):
        return "RESOURCE_EXHAUSTED" in str(e) or "out of memory" in str(e).lower()

    return total, alloc, is_oom


FILLERS = {"torch": torch_filler, "cupy": cupy_filler, "jax": jax_filler}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("framework", choices=sorted(FILLERS))
    ap.add_argument("--chunk", type=int, default=256)
    ap.add_argument("--max", type=int, default=None)
    ap.add_argument("--ready")
    ap.add_argument("--hold-until")
    args = ap.parse_args()
    total, alloc, is_oom = FILLERS[args.framework]()
    error = None
    try:
        held, blocks, error = fill(alloc, is_oom, args.chunk * MIB, args.max)
    except Exception as exc:  # a non-OOM error is a finding: report it, exit non-zero
        print(
            json.dumps(
                {
                    "framework": args.framework,
                    "error": type(exc).__name__,
                    "message": str(exc).splitlines()[0] if str(exc) else "",
                    "oom": False,
                    "held": 0,
                    "total": total,
                }
            ),
            flush=True,
        )
        return 1
    if args.ready:
        open(args.ready, "w").close()
    if args.hold_until:
        deadline = time.time() + 120
        while not os.path.exists(args.hold_until) and time.time() < deadline:
            time.sleep(0.05)
    message = str(error).splitlines()[0][:200] if error else ""
    print(
        json.dumps(
            {
                "framework": args.framework,
                "mode": os.environ.get("PYTORCH_CUDA_ALLOC_CONF", ""),
                "total": int(total),
                "held": held,
                "error": type(error).__name__ if error else None,
                "message": message,
                "oom": error is not None,
            }
        ),
        flush=True,
    )
    del blocks
    return 0


if __name__ == "__main__":
    sys.exit(main())
