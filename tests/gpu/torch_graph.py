"""A PyTorch CUDA graph under a cap (issue 12): capture a small model's forward pass with
torch.cuda.graph, replay it, and check the output against eager mode.  One JSON line."""

import json

import torch


def main() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(1024, 4096), torch.nn.ReLU(), torch.nn.Linear(4096, 1024)
    ).cuda()
    static_in = torch.randn(256, 1024, device="cuda")
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            model(static_in)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_out = model(static_in)
    errs = []
    for _ in range(3):
        x = torch.randn(256, 1024, device="cuda")
        static_in.copy_(x)
        graph.replay()
        torch.cuda.synchronize()
        errs.append((static_out - model(x)).abs().max().item())
    print(
        json.dumps({"ok": max(errs) < 1e-3, "max_err": max(errs), "allocated": torch.cuda.memory_allocated()})
    )


if __name__ == "__main__":
    main()
