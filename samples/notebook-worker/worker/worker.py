"""The sample's batch worker: takes jobs from the Redis list `jobs` (it queues a few itself when
the list is empty, so the sample runs on its own) and runs each as a matrix product on the GPU.

Speaks Redis's wire protocol over a socket, so the image needs no Redis client: `python -m worker
--queue redis://queue:6379/0`.
"""

import argparse
import socket
import time
from urllib.parse import urlparse

import torch

MiB = 1 << 20


class Redis:
    def __init__(self, url: str) -> None:
        parts = urlparse(url)
        for _ in range(30):  # the queue may still be starting
            try:
                self.sock = socket.create_connection((parts.hostname, parts.port or 6379), timeout=30)
                break
            except OSError:
                time.sleep(1)
        else:
            raise SystemExit(f"worker: no Redis at {url}")
        self.file = self.sock.makefile("rb")

    def call(self, *words: str):
        data = b"".join(b"$%d\r\n%s\r\n" % (len(w.encode()), w.encode()) for w in words)
        self.sock.sendall(b"*%d\r\n" % len(words) + data)
        return self.reply()

    def reply(self):
        line = self.file.readline().rstrip(b"\r\n")
        kind, rest = line[:1], line[1:]
        if kind == b"-":
            raise RuntimeError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            return None if int(rest) < 0 else self.file.read(int(rest) + 2)[:-2].decode()
        if kind == b"*":
            return None if int(rest) < 0 else [self.reply() for _ in range(int(rest))]
        return rest.decode()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--queue", default="redis://localhost:6379/0")
    args = parser.parse_args()
    redis = Redis(args.queue)
    free, total = torch.cuda.mem_get_info()
    print(f"worker: the GPU shows {total / MiB:.0f} MiB total, {free / MiB:.0f} MiB free", flush=True)
    if redis.call("LLEN", "jobs") == 0:
        for size in (1024, 2048, 4096):
            redis.call("RPUSH", "jobs", str(size))
    while True:
        job = redis.call("BLPOP", "jobs", "5")
        if job is None:
            print("worker: queue empty, waiting", flush=True)
            continue
        n = int(job[1])
        a = torch.randn(n, n, device="cuda")
        result = (a @ a).sum().item()
        print(f"worker: job {n}x{n} done ({result:.3e})", flush=True)


if __name__ == "__main__":
    main()
