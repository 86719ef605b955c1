"""Records taken by two threads at once (track.c, fastpath.h): an application that frees one pointer
from two threads at once has one free refused by the driver, and the ledger must end where the
allocations say.  A record taken twice (by its table's owner and by another thread) and put back by
the refused free would be a record with no charge behind it: dropped with its context, it gives
back bytes still held elsewhere, and the cap is passed."""

import pytest
from libgpumem_support import GiB, MiB

CAP = 2 * GiB
NORES = dict(GPUMEM_LIMIT="2GiB", GPUMEM_CONTEXT_RESERVE=0, GPUMEM_LOG="warn")
ROUNDS = 20000


@pytest.mark.parametrize("how", ["sync", "async"])
def test_a_pointer_freed_by_two_threads_at_once_is_given_back_once(gpu, how):
    # 256 MiB held in the primary context; the double frees run in a second context, which then
    # goes, taking whatever records it still has with it
    r = gpu.run(
        "init",
        "dev=0",
        "primary",
        "alloc=256M",
        "ctx",
        "stream",
        f"racefree={ROUNDS},1M,{how}",
        "destroy",
        "primary",
        "info",
        timeout=120,
        **NORES,
    )
    assert r.field("racefree", "allocerr") == 0, r
    assert r.field("racefree", "ok") == ROUNDS and r.field("racefree", "err") == ROUNDS, r
    # exactly the 256 MiB stay charged: no more (a record left behind), no less (one given back twice)
    assert r.field("info", "free") == CAP - 256 * MiB, r


# Another library's thread-specific data destructor may run after ours (glibc runs them in the order
# the keys were made, and ours are made at the first allocation): what it allocates and frees there
# must be counted as anywhere else.

SAME_SLOT = 3602432  # bytes: the stand-in's addresses B, B+step, B+2*step share one slot


def test_allocations_made_after_the_threads_table_is_handed_on_are_kept_apart(gpu):
    # the exiting thread allocates and frees while a new thread, which took its table over, does too;
    # the stand-in hands freed addresses out again (as a pool does), and at this size its first
    # three addresses share a slot under track_hash (fastpath.h), so the two threads add to one slot
    r = gpu.run(
        "init",
        "dev=0",
        "primary",
        "thread",
        f"alloc={SAME_SLOT}",
        "free",
        "atexit",
        f"threads=1,50000,{SAME_SLOT},self",
        "endatexit",
        "endthread",
        "info",
        timeout=120,
        FAKE_CUDA_REUSE=1,
        **NORES,
    )
    assert r.field("threads", "ok") == 100000 and r.field("threads", "oom") == 0, r
    assert r.field("info", "free") == CAP, r


def test_credit_kept_after_the_threads_credit_is_handed_back_is_handed_back_too(gpu):
    r = gpu.run(
        "init",
        "dev=0",
        "primary",
        "stream",
        "thread",
        "async=4M",
        "freeasync",
        "atexit",
        "async=4M",
        "freeasync",
        "endatexit",
        "endthread",
        "info",
        **NORES,
    )
    assert r.results("freeasync") == ["ok", "ok"], r
    assert r.field("info", "free") == CAP, r
