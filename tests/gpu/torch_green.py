"""PyTorch green contexts under a cap (issue 12): make N green contexts of 16 SMs each
(torch.cuda.green_contexts, which calls the driver's cuGreenCtxCreate), run a kernel in one, then
fill with the caching allocator until torch.OutOfMemoryError, say ready (a file) and hold until
told to go (another file), so that plain nvidia-smi can read the physical use from outside.
One JSON line: how many were made, what mem_get_info's free said before and after them, the
bytes held at the refusal.
  python torch_green.py READY_FILE GO_FILE [N]"""

import json
import os
import sys
import time

import torch
from torch.cuda.green_contexts import GreenContext

MIB = 1 << 20


def main() -> None:
    ready, go = sys.argv[1], sys.argv[2]
    count = int(sys.argv[3]) if len(sys.argv) > 3 else 96
    torch.zeros(1, device="cuda")
    free_before = torch.cuda.mem_get_info()[0]
    greens, error = [], None
    for _ in range(count):
        try:
            greens.append(GreenContext.create(num_sms=16, device_id=0))
        except Exception as exc:  # a refusal is a result here, reported
            error = f"{type(exc).__name__}: {str(exc)[:80]}"
            break
    free_after = torch.cuda.mem_get_info()[0]
    ran = None
    if greens:
        greens[0].set_context()
        ran = (torch.ones(1 << 20, device="cuda") * 2).sum().item()
        torch.cuda.synchronize()
        greens[0].pop_context()
    held, blocks, chunk, oom = 0, [], 256 * MIB, None
    while chunk >= 2 * MIB:
        try:
            blocks.append(torch.empty(chunk, dtype=torch.uint8, device="cuda"))
            held += chunk
        except torch.OutOfMemoryError as exc:
            oom = oom or str(exc)[:60]
            chunk //= 2
    print(
        json.dumps(
            {
                "greens": len(greens),
                "error": error,
                "free_drop_mib": (free_before - free_after) / MIB,
                "ran_in_green": ran,
                "held": held,
                "oom": oom,
            }
        ),
        flush=True,
    )
    open(ready, "w").close()
    for _ in range(6000):
        if os.path.exists(go):
            break
        time.sleep(0.05)


if __name__ == "__main__":
    main()
