"""Write a compose file of N services, half of them limited with x-gpu-memory.

    python3 bench/cpu/gen_stack.py N OUT.yaml

The services look like what people run: an image, environment, volumes, ports, a GPU request
(alternating `runtime: nvidia`, `gpus: all` and a device reservation) and, on every other one,
`x-gpu-memory` in each accepted form. Deterministic: the same N gives the same file.
"""

import sys

FORMS = ["0.001", '"0.1%"', '"64MiB"', '{"0": 0.001}']
GPU_REQUESTS = [
    ["    runtime: nvidia"],
    ["    gpus: all"],
    [
        "    deploy:",
        "      resources:",
        "        reservations:",
        "          devices:",
        "            - driver: nvidia",
        "              count: 1",
        "              capabilities: [gpu]",
    ],
]


def service(i: int) -> list:
    lines = [
        f"  svc{i:04d}:",
        f"    image: example/worker:{i % 7}",
        '    command: ["python", "-m", "worker", "--shard", "' + str(i) + '"]',
        "    environment:",
        f'      SHARD: "{i}"',
        "      LOG_LEVEL: info",
        "    volumes:",
        f"      - ./data/{i % 10}:/data:ro",
        "    ports:",
        f'      - "{20000 + i}:8000"',
    ]
    lines += GPU_REQUESTS[i % len(GPU_REQUESTS)]
    if i % 2 == 0:
        lines.append(f"    x-gpu-memory: {FORMS[(i // 2) % len(FORMS)]}")
    return lines


def stack(n: int) -> str:
    lines = ["name: bench", "services:"]
    for i in range(n):
        lines += service(i)
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    n, out = int(sys.argv[1]), sys.argv[2]
    with open(out, "w") as fh:
        fh.write(stack(n))
