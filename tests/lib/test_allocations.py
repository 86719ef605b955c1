"""Every kind of device allocation is charged, capped and given back; contexts are charged
GPUMEM_CONTEXT_RESERVE and their teardown returns what they held."""

import re

import pytest
from libgpumem_support import DEFAULT_RESERVE, GiB, MiB

CAP = 2 * GiB
NORES = dict(GPUMEM_LIMIT="2GiB", GPUMEM_CONTEXT_RESERVE=0)
START = ["init", "dev=0", "primary"]


def test_pitch_reserves_an_upper_bound_and_settles_to_pitch_times_height(gpu):
    r = gpu.run(*START, "pitch=1000,1000", "info", "free", "info", **NORES)
    assert r.line("pitch") == "pitch ok pitch=1024"
    assert r.field("info", "free", 0) == CAP - 1024 * 1000
    assert r.field("info", "free", 1) == CAP


def test_pitch_past_the_cap_is_refused(gpu):
    r = gpu.run(*START, "pitch=65536,32769", **NORES)
    assert r.line("pitch") == "pitch err=2"


def test_managed_memory_is_capped_and_returned(gpu):
    r = gpu.run(*START, "managed=1536M", "managed=1G", "free", "managed=1G", "info", **NORES)
    assert r.results("managed") == ["ok", "err=2", "ok"]
    assert r.field("info", "free") == 1 * GiB


def test_arrays_are_estimated_from_the_descriptor_capped_and_returned(gpu):
    r = gpu.run(
        *START,
        "array=1024,1024",
        "info",
        "arrayfree",
        "array3d=256,256,16",
        "info",
        "arrayfree",
        "info",
        "array=32768,32768",
        **NORES,
    )
    assert r.results("array") == ["ok", "err=2"]
    assert r.field("info", "free", 0) == CAP - 4 * MiB
    assert r.field("info", "free", 1) == CAP - 4 * MiB
    assert r.field("info", "free", 2) == CAP


def test_mipmapped_arrays_count_every_level(gpu):
    r = gpu.run(*START, "mipmap=1024,1024,3", "info", "mipmapfree", "info", **NORES)
    assert r.results("mipmap") == ["ok"]
    assert r.field("info", "free", 0) == CAP - (4 * MiB + 1 * MiB + 256 * 1024)
    assert r.field("info", "free", 1) == CAP


def test_vmm_handles_are_capped_and_released(gpu):
    r = gpu.run(*START, "vmm=1536M", "vmm=1G", "vmmfree", "vmm=1G", "vmm=1G", "info", **NORES)
    assert r.results("vmm") == ["ok", "err=2", "ok", "ok"]
    assert r.field("info", "free") == 0


def test_async_allocations_are_capped_and_freed(gpu):
    r = gpu.run(*START, "async=1G", "pool=1G", "async=1", "freeasync", "async=512M", "info", **NORES)
    assert r.results("async") == ["ok", "err=2", "ok"]
    assert r.field("info", "free") == 512 * MiB


@pytest.mark.parametrize("mode,flags", [("link", 0), ("gpa2", 0), ("gpa2", 2)])
def test_async_allocations_are_charged_to_the_streams_device_not_the_current_one(gpu, mode, flags):
    r = gpu.run(
        f"mode={mode}",
        f"flags={flags}",
        "init",
        "dev=1",
        "ctx",
        "stream",
        "dev=0",
        "ctx",
        "async=2G",
        "pool=512M",
        "info",
        "current=0",
        "info",
        FAKE_CUDA_DEVICES=2,
        GPUMEM_LIMIT_1="1GiB",
        GPUMEM_CONTEXT_RESERVE=0,
    )
    assert r.results("stream") == ["ok"]
    assert r.results("async") == ["err=2"] and r.results("pool") == ["ok"], r
    assert r.field("info", "total", 0) == 8 * GiB  # current: device 0, unlimited
    assert r.field("info", "free", 1) == 512 * MiB  # device 1 was charged


def test_failed_driver_allocation_rolls_back_the_reservation(gpu):
    # the stand-in device holds 1 GiB; the cap (clamped) is 1 GiB; a physical OOM must not leak
    r = gpu.run(*START, "alloc=2G", "info", FAKE_CUDA_TOTAL=GiB, **NORES)
    assert r.results("alloc") == ["err=2"]
    assert r.field("info", "free") == GiB


def test_free_of_an_unknown_pointer_passes_through(gpu):
    r = gpu.run("init", "dev=0", "primary", "alloc=1G", "info", GPUMEM_LIMIT="0", GPUMEM_CONTEXT_RESERVE=0)
    assert r.results("alloc") == ["err=2"]
    r = gpu.run(*START, "alloc=1G", "free", "free", "info", **NORES)
    assert r.results("free") == ["ok", "err=1"]  # the driver's answer for the second free
    assert r.field("info", "free") == CAP


def test_context_reserve_is_charged_for_every_context(gpu):
    # issue 12: each context takes its own memory (518-524 MiB on an H200), not one per process
    r = gpu.run("init", "dev=0", "ctx", "info", "ctx", "info", "primary", "info", GPUMEM_LIMIT="4GiB")
    assert [r.field("info", "free", i) for i in range(3)] == [
        4 * GiB - n * DEFAULT_RESERVE for n in (1, 2, 3)
    ]


def test_allocations_charge_no_second_reserve(gpu):
    r = gpu.run("init", "dev=0", "primary", "alloc=1M", "info", "alloc=1M", "info", GPUMEM_LIMIT="4GiB")
    assert [r.field("info", "free", i) for i in range(2)] == [
        4 * GiB - DEFAULT_RESERVE - n * MiB for n in (1, 2)
    ]


def test_context_reserve_is_configurable(gpu):
    r = gpu.run(*START, "info", GPUMEM_LIMIT="4GiB", GPUMEM_CONTEXT_RESERVE="300MiB")
    assert r.field("info", "free") == 4 * GiB - 300 * MiB


def test_context_creation_past_the_cap_is_refused(gpu):
    r = gpu.run("init", "dev=0", "primary", "ctx", GPUMEM_LIMIT="256MiB")
    assert r.results("primary") == ["err=2"] and r.results("ctx") == ["err=2"]


def test_context_destroy_returns_its_allocations_and_reserve(gpu):
    r = gpu.run("init", "dev=0", "ctx", "alloc=1G", "info", "destroy", "ctx", "info", GPUMEM_LIMIT="4GiB")
    assert r.field("info", "free", 0) == 4 * GiB - DEFAULT_RESERVE - 1 * GiB
    assert r.field("info", "free", 1) == 4 * GiB - DEFAULT_RESERVE


def test_destroying_one_context_keeps_the_other_contexts_allocations(gpu):
    r = gpu.run(
        "init",
        "dev=0",
        "ctx",
        "alloc=1G",
        "ctx",
        "alloc=512M",
        "destroy",
        "current=0",
        "info",
        GPUMEM_LIMIT="4GiB",
    )
    assert r.field("info", "free") == 4 * GiB - DEFAULT_RESERVE - 1 * GiB


def test_primary_context_last_release_returns_its_allocations_and_reserve(gpu):
    r = gpu.run(
        *START, "primary", "alloc=1G", "release", "info", "release", "ctx", "info", GPUMEM_LIMIT="4GiB"
    )
    assert r.results("release") == ["ok", "ok"]
    assert r.field("info", "free", 0) == 4 * GiB - DEFAULT_RESERVE - 1 * GiB  # one retain is still held
    assert r.field("info", "free", 1) == 4 * GiB - DEFAULT_RESERVE


def test_primary_context_reset_returns_its_allocations_and_reserve(gpu):
    r = gpu.run(*START, "alloc=1G", "reset", "info", "alloc=1M", "info", GPUMEM_LIMIT="4GiB")
    assert r.field("info", "free", 0) == 4 * GiB
    assert r.field("info", "free", 1) == 4 * GiB - DEFAULT_RESERVE - 1 * MiB


def test_out_of_memory_line_names_device_request_usage_cap_and_entry_point(gpu):
    r = gpu.run(
        *START,
        "alloc=1G",
        "alloc=1536M",
        GPUMEM_LIMIT="2GiB",
        GPUMEM_LOG="warn",
        GPUMEM_CONTEXT_RESERVE="512MiB",
    )
    assert r.results("alloc") == ["ok", "err=2"]
    assert re.search(
        r"^gpumem: out of memory on device 0: requested 1\.50 GiB \(1610612736 bytes\), "
        r"used 1\.50 GiB \(1610612736 bytes\) of cap 2\.00 GiB \(2147483648 bytes\) "
        r"\(cuMemAlloc_v2\)",
        r.err,
        re.M,
    ), r.err


def test_a_driver_refusal_within_the_cap_is_logged_as_the_card_being_full(gpu):
    # the stand-in's contexts take 1 GiB of a 4 GiB card that the reserve does not cover
    r = gpu.run(
        *START,
        "alloc=3584M",
        "info",
        GPUMEM_LIMIT="4GiB",
        GPUMEM_CONTEXT_RESERVE=0,
        FAKE_CUDA_TOTAL=4 * GiB,
        FAKE_CUDA_CTX_BYTES=GiB,
        GPUMEM_LOG="warn",
    )
    assert r.results("alloc") == ["err=2"]
    assert "the driver refused 3.50 GiB (3758096384 bytes) within the cap" in r.err, r.err
    assert "the card is full" in r.err
    assert r.field("info", "free") <= GiB * 3  # the refused request was rolled back


def test_out_of_memory_floods_are_rate_limited_but_the_first_is_kept(gpu):
    r = gpu.run(*START, "alloc=3G", *["alloc=3G"] * 200, GPUMEM_LIMIT="2GiB", GPUMEM_LOG="warn")
    lines = [ln for ln in r.err.splitlines() if "out of memory on device 0" in ln]
    assert 1 <= len(lines) <= 12, r.err
    assert "requested 3.00 GiB" in lines[0]


def test_log_level_error_silences_out_of_memory_warnings(gpu):
    r = gpu.run(*START, "alloc=3G", GPUMEM_LIMIT="2GiB", GPUMEM_LOG="error")
    assert r.results("alloc") == ["err=2"]
    assert r.err == ""


def test_context_reserve_malformed_falls_back_to_the_default_with_an_error(gpu):
    r = gpu.run(*START, "info", GPUMEM_LIMIT="4GiB", GPUMEM_CONTEXT_RESERVE="lots")
    assert r.field("info", "free") == 4 * GiB - DEFAULT_RESERVE
    assert "GPUMEM_CONTEXT_RESERVE=lots" in r.err


# The hooks remember the last context's and stream's device per thread; a handle the driver
# reuses for another device (the stand-in reuses freed addresses) must not be charged to the old
# one.  Device 0 has the smaller cap, so a charge that lands there by mistake is refused.
TWO_CAPS = dict(FAKE_CUDA_DEVICES=2, GPUMEM_LIMIT_0="2GiB", GPUMEM_LIMIT_1="4GiB", GPUMEM_CONTEXT_RESERVE=0)


@pytest.mark.parametrize("mode", ["link", "gpa2"])
def test_a_new_context_after_a_destroy_is_charged_to_its_own_device(gpu, mode):
    r = gpu.run(
        f"mode={mode}",
        "init",
        "dev=0",
        "ctx",
        "alloc=1G",
        "destroy",
        "dev=1",
        "ctx",
        "alloc=3G",
        "info",
        **TWO_CAPS,
    )
    assert r.results("alloc") == ["ok", "ok"], r
    assert r.field("info", "total") == 4 * GiB and r.field("info", "free") == 1 * GiB


def test_a_new_stream_after_a_destroy_is_charged_to_its_own_device(gpu):
    r = gpu.run(
        "init",
        "dev=0",
        "ctx",
        "dev=1",
        "ctx",
        "current=0",
        "stream",
        "async=1G",
        "streamdestroy",
        "current=1",
        "stream",
        "async=3G",
        "info",
        **TWO_CAPS,
    )
    assert r.results("async") == ["ok", "ok"], r
    assert r.field("info", "total") == 4 * GiB and r.field("info", "free") == 1 * GiB
