"""The same under PyTorch: its view of the card, then its own out-of-memory error."""

import torch

MiB = 1 << 20
free, total = torch.cuda.mem_get_info()
print(f"torch: total {total / MiB:.0f} MiB, free {free / MiB:.0f} MiB")
held = []
try:
    while True:
        held.append(torch.empty(256 * MiB, dtype=torch.uint8, device="cuda"))
except torch.cuda.OutOfMemoryError as error:
    print(f"allocated {len(held) * 256} MiB, then torch.cuda.OutOfMemoryError: {str(error).splitlines()[0]}")
