"""GPUMEM_LIMIT / GPUMEM_LIMIT_<N>: fraction, percent, binary sizes; clamped to the device; a
malformed value refuses every allocation; no limit is a pure pass-through."""

import pytest
from libgpumem_support import GiB, MiB

TOTAL = 8 * GiB


@pytest.mark.parametrize(
    "value,cap",
    [
        ("0.25", 2 * GiB),
        ("0.5", 4 * GiB),
        ("1.0", TOTAL),
        ("25%", 2 * GiB),
        ("12.5%", 1 * GiB),
        ("2GiB", 2 * GiB),
        ("2gib", 2 * GiB),
        ("2G", 2 * GiB),
        ("2g", 2 * GiB),
        ("2GB", 2 * GiB),
        ("1536MiB", 1536 * MiB),
        ("1536m", 1536 * MiB),
        ("1.5GiB", 1536 * MiB),
        ("1048576k", 1 * GiB),
        ("1073741824", 1 * GiB),
        ("1073741824b", 1 * GiB),
        (" 3GiB ", 3 * GiB),
        ("0", 0),
    ],
)
def test_limit_forms_set_the_reported_total(gpu, value, cap):
    r = gpu.run("init", "dev=0", "totalmem", GPUMEM_LIMIT=value)
    assert r.rc == 0, r
    assert r.line("totalmem") == f"totalmem {cap}", r


@pytest.mark.parametrize("value", ["100GiB", "1TiB", "8589934593"])
def test_limit_larger_than_the_device_is_clamped_to_it(gpu, value):
    r = gpu.run(
        "init",
        "dev=0",
        "primary",
        "totalmem",
        "info",
        "alloc=7G",
        "alloc=1G",
        GPUMEM_LIMIT=value,
        GPUMEM_CONTEXT_RESERVE=0,
    )
    assert r.line("totalmem") == f"totalmem {TOTAL}"
    assert r.field("info", "total") == TOTAL
    assert r.results("alloc") == ["ok", "ok"]


@pytest.mark.parametrize(
    "value", ["lots", "", "1.5", "0%", "150%", "12XB", "-1G", "2 GiBs", "0.", ".5", "1e9"]
)
def test_malformed_limit_refuses_every_allocation_and_says_why(gpu, value):
    r = gpu.run("init", "dev=0", "primary", "alloc=1", "managed=1", "vmm=1", "info", GPUMEM_LIMIT=value)
    assert r.rc == 0, r
    assert (
        r.results("alloc") == ["err=2"]
        and r.results("managed") == ["err=2"]
        and r.results("vmm") == ["err=2"]
    )
    assert f"GPUMEM_LIMIT={value} is not a fraction" in r.err, r.err
    assert f"refused because GPUMEM_LIMIT={value} is malformed (cuMemAlloc_v2)" in r.err, r.err
    assert r.field("info", "free") == 0


def test_no_limit_is_a_pure_pass_through(gpu):
    r = gpu.run(
        "init",
        "dev=0",
        "primary",
        "totalmem",
        "info",
        "alloc=8G",
        "alloc=1",
        "free",
        "info",
        GPUMEM_LOG="debug",
    )
    assert r.line("totalmem") == f"totalmem {TOTAL}"
    assert r.field("info", "total") == TOTAL and r.field("info", "free") == TOTAL
    assert r.results("alloc") == ["ok", "err=2"]  # the stand-in driver's own out-of-memory
    assert "gpumem" not in r.err
    assert not (gpu.state / "ledger-v4").exists()


def test_per_device_limit_overrides_the_global_one(gpu):
    env = dict(FAKE_CUDA_DEVICES=3, GPUMEM_LIMIT="2GiB", GPUMEM_LIMIT_1="1GiB", GPUMEM_LIMIT_2="50%")
    r = gpu.run("init", "dev=0", "totalmem", "dev=1", "totalmem", "dev=2", "totalmem", **env)
    assert r.results("totalmem") == [str(2 * GiB), str(1 * GiB), str(4 * GiB)]


def test_per_device_limit_alone_leaves_other_devices_unaltered(gpu):
    r = gpu.run(
        "init",
        "dev=0",
        "primary",
        "totalmem",
        "alloc=7G",
        "dev=1",
        "primary",
        "totalmem",
        "alloc=2G",
        "alloc=512M",
        FAKE_CUDA_DEVICES=2,
        GPUMEM_LIMIT_1="2GiB",
        GPUMEM_CONTEXT_RESERVE=0,
    )
    assert r.results("totalmem") == [str(TOTAL), str(2 * GiB)]
    assert r.results("alloc") == ["ok", "ok", "err=2"]


def test_malformed_per_device_limit_refuses_only_that_device(gpu):
    r = gpu.run(
        "init",
        "dev=0",
        "primary",
        "alloc=1G",
        "dev=1",
        "primary",
        "alloc=1",
        FAKE_CUDA_DEVICES=2,
        GPUMEM_LIMIT="4GiB",
        GPUMEM_LIMIT_1="four",
    )
    assert r.results("alloc") == ["ok", "err=2"]
    assert "GPUMEM_LIMIT_1=four" in r.err


def test_fraction_is_of_the_driver_total(gpu):
    r = gpu.run("init", "dev=0", "totalmem", GPUMEM_LIMIT="0.3", FAKE_CUDA_TOTAL=85017493504)
    assert r.line("totalmem") == f"totalmem {int(0.3 * 85017493504)}"


def test_devices_past_the_followed_number_are_refused_not_left_uncapped(gpu):
    r = gpu.run(
        "init",
        "dev=33",
        "primary",
        "alloc=1",
        "dev=0",
        "primary",
        "alloc=1G",
        FAKE_CUDA_DEVICES=34,
        GPUMEM_LIMIT="2GiB",
    )
    assert r.results("alloc") == ["err=2", "ok"], r
    assert "34 devices, this library follows 32" in r.err
