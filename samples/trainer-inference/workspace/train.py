"""A small training job for the sample: a two-layer network on synthetic data, a checkpoint per
epoch in $CHECKPOINT_DIR, and what the GPU looks like from inside the cap at each epoch."""

import argparse
import os

import torch

MiB = 1 << 20


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch", type=int, default=4096)
    args = parser.parse_args()
    device = torch.device("cuda")
    free, total = torch.cuda.mem_get_info()
    print(f"trainer: the GPU shows {total / MiB:.0f} MiB total, {free / MiB:.0f} MiB free", flush=True)
    torch.manual_seed(0)
    inputs = torch.randn(64 * args.batch, 512, device=device)
    targets = inputs @ torch.randn(512, 1, device=device)
    model = torch.nn.Sequential(torch.nn.Linear(512, 2048), torch.nn.ReLU(), torch.nn.Linear(2048, 1)).to(
        device
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    checkpoints = os.environ.get("CHECKPOINT_DIR", "/checkpoints")
    for epoch in range(args.epochs):
        for start in range(0, len(inputs), args.batch):
            loss = torch.nn.functional.mse_loss(
                model(inputs[start : start + args.batch]), targets[start : start + args.batch]
            )
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        torch.save(model.state_dict(), os.path.join(checkpoints, f"epoch-{epoch}.pt"))
        held = torch.cuda.memory_reserved() / MiB
        print(f"trainer: epoch {epoch} loss {loss.item():.4f}, {held:.0f} MiB held by PyTorch", flush=True)


if __name__ == "__main__":
    main()
