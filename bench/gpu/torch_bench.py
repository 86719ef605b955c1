"""PyTorch workloads for bench/gpu/run.py; prints one line of key=value.

torch_bench.py train STEPS    small conv net on random data: steps per second
torch_bench.py churn STEPS    caching-allocator churn, varied sizes, empty_cache() every 8 steps
"""

import sys
import time

import torch


def train(steps: int) -> float:
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 64, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(64, 64, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(8),
        torch.nn.Flatten(),
        torch.nn.Linear(64 * 64, 512),
        torch.nn.ReLU(),
        torch.nn.Linear(512, 10),
    ).cuda()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x = torch.randn(128, 3, 64, 64, device="cuda")
    y = torch.randint(0, 10, (128,), device="cuda")
    for _ in range(20):  # warm-up: cuDNN choice, allocator pools
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    torch.cuda.synchronize()
    return steps / (time.perf_counter() - t0)


def churn_step(i: int, sizes: list) -> None:
    held = [torch.empty(s, dtype=torch.uint8, device="cuda") for s in sizes[i % 3 :]]
    held[-1].fill_(1)
    del held
    if i % 8 == 7:
        torch.cuda.empty_cache()


def churn(steps: int) -> float:
    sizes = [(1 << 20) * k for k in (1, 3, 7, 16, 33, 64, 129, 256)]
    # warm-up: the context (hundreds of ms, varying) and the first kernel are not the allocator's
    # cost; the timed loop starts, as every 8th step does, with the cache emptied
    torch.zeros(1, device="cuda")
    for i in range(16):
        churn_step(i, sizes)
    torch.cuda.empty_cache()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for i in range(steps):
        churn_step(i, sizes)
    torch.cuda.synchronize()
    return steps / (time.perf_counter() - t0)


if __name__ == "__main__":
    mode, steps = sys.argv[1], int(sys.argv[2])
    rate = {"train": train, "churn": churn}[mode](steps)
    print(f"steps_per_s={rate:.2f}")
