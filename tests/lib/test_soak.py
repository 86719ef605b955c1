"""Soak (issue 14): 100 processes allocate and free at random under one cap while random ones are
SIGKILLed and replaced (128 times, one every 30 ms); at a stop-the-world sample every 8 kills
(every worker SIGSTOPped and seen stopped) the bytes they hold, counted by the workers themselves,
never pass the cap.  About 5-10 s."""

import json
import mmap
import os
import random
import signal
import subprocess
import time

import pytest
from libgpumem_support import CFLAGS, ROOT, GiB

WORKERS = 100
KILLS = 128
KILL_EVERY_S = 0.03
SAMPLE_EVERY_KILLS = 8
CAP = 1 * GiB


@pytest.fixture(scope="module")
def worker(built):
    out = built["bin"] / "soak_worker"
    src = ROOT / "tests" / "lib" / "soak_worker.c"
    cc = subprocess.run(
        ["cc", *CFLAGS, "-o", str(out), str(src), f"-L{built['stubs']}", "-lcuda"],
        capture_output=True,
        text=True,
    )
    assert cc.returncode == 0, cc.stderr
    return out


def stopped(pid):
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] in ("T", "t")


def test_soak_of_100_processes_with_random_sigkills_never_holds_past_the_cap(gpu, worker, tmp_path):
    rng = random.Random(1414)
    records = tmp_path / "records"
    records.write_bytes(b"\0" * 4096)
    env = gpu.environ(GPUMEM_LIMIT=CAP, GPUMEM_CONTEXT_RESERVE=0, GPUMEM_LOG="error")
    fd = os.open(records, os.O_RDWR)
    held = mmap.mmap(fd, 4096)

    def start(i):
        held[i * 8 : i * 8 + 8] = b"\0" * 8
        return subprocess.Popen(
            [str(worker), str(records), str(i), str(rng.randrange(1 << 30))],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def holding(i):
        return int.from_bytes(held[i * 8 : i * 8 + 8], "little", signed=True)

    procs = [start(i) for i in range(WORKERS)]
    kills, samples, peak = 0, [], 0
    try:
        for k in range(KILLS):
            time.sleep(KILL_EVERY_S)
            i = rng.randrange(WORKERS)
            procs[i].send_signal(signal.SIGKILL)
            procs[i].wait()  # dead and reaped: what it held is gone
            kills += 1
            procs[i] = start(i)
            if k % SAMPLE_EVERY_KILLS == SAMPLE_EVERY_KILLS - 1:
                for p in procs:
                    p.send_signal(signal.SIGSTOP)
                deadline = time.monotonic() + 10
                while not all(stopped(p.pid) for p in procs):
                    assert time.monotonic() < deadline, "workers did not stop"
                    time.sleep(0.001)
                total = sum(holding(i) for i in range(WORKERS))
                samples.append(total)
                peak = max(peak, total)
                assert total <= CAP, f"sample {len(samples)}: workers hold {total} bytes under a cap of {CAP}"
                for p in procs:
                    p.send_signal(signal.SIGCONT)
        assert all(p.poll() is None for p in procs), "a worker died on its own"
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait()
        held.close()
        os.close(fd)
    print(f"soak: {WORKERS} workers, {kills} SIGKILLs, {len(samples)} samples, peak held {peak} of {CAP}")
    assert peak > CAP // 2, f"the workers never came near the cap (peak {peak}): the soak proves nothing"
    # every share came back, and the ledger is whole
    r = gpu.run("init", "dev=0", "primary", "info", GPUMEM_LIMIT=CAP, GPUMEM_CONTEXT_RESERVE=0)
    assert r.field("info", "free") == CAP, r
    doc = json.loads(subprocess.run([str(gpu.built["reader"]), str(gpu.state)], capture_output=True).stdout)
    assert doc["valid"], doc["problems"]
