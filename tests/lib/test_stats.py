"""GPUMEM_STATS=1 counts the calls of each hook and splits their time between the library and
the driver, printed at exit; without it nothing is printed."""

import re

import pytest

STEPS = ["init", "dev=0", "primary", "alloc=1G", "alloc=3G", "free", "info"]


@pytest.mark.parametrize("mode", ["link", "gpa2"])
def test_stats_count_each_hooks_calls_and_split_the_time(gpu, mode):
    r = gpu.run(f"mode={mode}", *STEPS, GPUMEM_LIMIT="2GiB", GPUMEM_STATS="1")
    assert r.results("alloc") == ["ok", "err=2"], r
    lines = {
        m[0]: m[1:]
        for m in re.findall(
            r"^gpumem: stats (\w+): (\d+) calls, ([\d.]+) us in gpumem "
            r"and ([\d.]+) us in the driver per call",
            r.err,
            re.M,
        )
    }
    assert lines["cuMemAlloc_v2"][0] == "2"  # the refused one counts, with no driver time
    assert lines["cuMemFree_v2"][0] == "1"
    assert lines["cuMemGetInfo_v2"][0] == "1"
    assert all(float(ours) >= 0 and float(drv) >= 0 for _, ours, drv in lines.values())
    clock = re.search(r"^gpumem: stats clock read: ([\d.]+) ns", r.err, re.M)
    assert clock and 0 < float(clock[1]) < 100_000, r.err


def test_without_stats_nothing_is_printed(gpu):
    r = gpu.run(*STEPS, GPUMEM_LIMIT="2GiB")
    assert "gpumem: stats" not in r.err


def startup_ms(err):
    m = re.search(r"^gpumem: stats start-up: ([\d.]+) ms in gpumem \((.*) ms;", err, re.M)
    assert m, err
    return float(m[1]), {k: float(v) for k, v in (p.rsplit(" ", 1) for p in m[2].split(", "))}


def test_stats_time_the_start_up_work_before_the_first_allocation(gpu):
    quick, parts = startup_ms(gpu.run(*STEPS, GPUMEM_LIMIT="2GiB", GPUMEM_STATS="1").err)
    assert set(parts) == {"constructor", "device table", "driver queries", "ledger file", "slot"}
    assert 0 < quick < 1000 and all(v >= 0 for v in parts.values()), parts
    assert quick >= parts["device table"] >= parts["driver queries"] + parts["ledger file"] + parts["slot"]
    # a driver query the device table makes, slowed by 200 ms, shows in its piece and the total
    slow, slow_parts = startup_ms(
        gpu.run(*STEPS, GPUMEM_LIMIT="2GiB", GPUMEM_STATS="1", FAKE_CUDA_UUID_DELAY_MS="200").err
    )
    assert slow >= 200 > quick
    assert slow_parts["driver queries"] >= 200 > parts["driver queries"]
