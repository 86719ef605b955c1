"""gpumem-ledger prints a state dir's ledger as JSON (per device: cap, total used; per process:
pid, bytes per device, refusals), says whether it is valid, and never waits on a bad one."""

import json
import os
import subprocess

from libgpumem_support import GiB, MiB
from test_ledger import NORES, START, hold, kill


def read(gpu, state=None, timeout=10):
    r = subprocess.run(
        [str(gpu.built["reader"]), str(state or gpu.state)], capture_output=True, text=True, timeout=timeout
    )
    return r.returncode, (json.loads(r.stdout) if r.stdout else None), r.stderr


def test_reader_shows_each_live_process_with_its_bytes_and_refusals(gpu):
    env = dict(GPUMEM_LIMIT="2GiB", **NORES)
    a = hold(gpu, "alloc=1G", "alloc=2G", "alloc=3G", **env)
    b = hold(gpu, "alloc=512M", **env)
    try:
        rc, doc, err = read(gpu)
    finally:
        kill(a)
        kill(b)
    assert rc == 0 and doc["valid"] and doc["problems"] == [], (doc, err)
    [dev] = doc["devices"]
    assert dev["cap"] == 2 * GiB and dev["used"] == 1536 * MiB and dev["uuid"].startswith("GPU-")
    by_pid = {p["pid"]: p for p in doc["processes"]}
    assert by_pid[a.pid]["used"] == [GiB] and by_pid[a.pid]["denials"] == 2 and by_pid[a.pid]["live"]
    assert by_pid[b.pid]["used"] == [512 * MiB] and by_pid[b.pid]["denials"] == 0


def test_reader_marks_a_killed_process_not_live(gpu):
    a = hold(gpu, "alloc=1G", GPUMEM_LIMIT="2GiB", **NORES)
    kill(a)
    rc, doc, _ = read(gpu)
    assert rc == 0
    assert [(p["pid"], p["live"]) for p in doc["processes"]] == [(a.pid, False)]


def test_reader_exits_2_when_there_is_no_ledger(gpu, tmp_path):
    rc, doc, _ = read(gpu, tmp_path / "nothing")
    assert rc == 2 and doc["exists"] is False and doc["valid"] is False


def test_reader_reports_a_damaged_ledger_and_exits_1(gpu):
    gpu.run(*START, "alloc=1G", GPUMEM_LIMIT="2GiB", **NORES)
    ledger = gpu.state / "ledger-v4"
    data = bytearray(ledger.read_bytes())
    data[0] ^= 0xFF  # the magic
    ledger.write_bytes(bytes(data))
    rc, doc, _ = read(gpu)
    assert rc == 1 and not doc["valid"] and any("magic" in p for p in doc["problems"]), doc


def test_reader_never_waits_on_a_fifo_or_follows_a_link(gpu, tmp_path):
    gpu.state.mkdir()
    os.mkfifo(gpu.state / "ledger-v4")
    rc, doc, _ = read(gpu, timeout=5)
    assert rc == 1 and "not a regular file" in doc["problems"][0]
    other = tmp_path / "other"
    other.mkdir()
    (other / "ledger-v4").symlink_to("/dev/zero")
    rc, doc, _ = read(gpu, other, timeout=5)
    assert rc == 1 and "symbolic link" in doc["problems"][0]


def test_reader_reports_a_short_ledger(gpu):
    gpu.state.mkdir()
    (gpu.state / "ledger-v4").write_bytes(b"\0" * 100)
    rc, doc, _ = read(gpu)
    assert rc == 1 and "100 bytes" in doc["problems"][0]
