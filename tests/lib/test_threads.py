"""Records and credit across threads: each thread keeps its own allocation records (track.c) and a
thread's stream-ordered frees stay charged to it as credit for its next one (devices.c).  Whatever
thread frees, the ledger ends where the allocations say; credit never lets the cap be passed and
never outlives its thread."""

from libgpumem_support import GiB, MiB

CAP = 2 * GiB
CREDIT_MAX = CAP // 256  # 8 MiB of a 2 GiB cap
NORES = dict(GPUMEM_LIMIT="2GiB", GPUMEM_CONTEXT_RESERVE=0)
START = ["init", "dev=0", "primary", "stream"]


def test_another_thread_frees_what_this_one_allocated(gpu):
    r = gpu.run(
        *START,
        "alloc=256M",
        "async=256M",
        "thread",
        "freeasync",
        "free",
        "info",
        "endthread",
        "info",
        **NORES,
    )
    assert r.results("free") == ["ok"] and r.results("freeasync") == ["ok"], r
    assert r.field("info", "free", 0) == CAP and r.field("info", "free", 1) == CAP


def test_a_small_pooled_free_pays_for_the_next_pooled_allocation(gpu):
    r = gpu.run(*START, "async=4M", "freeasync", "info", "async=4M", "info", "alloc=4M", "info", **NORES)
    assert r.results("async") == ["ok", "ok"], r
    # the freed 4 MiB stay charged as credit, and the next 4 MiB take them instead of more
    assert r.field("info", "free", 0) == CAP - 4 * MiB
    assert r.field("info", "free", 1) == CAP - 4 * MiB
    assert r.field("info", "free", 2) == CAP - 8 * MiB  # cuMemAlloc is charged as ever


def test_credit_is_handed_back_before_a_refusal(gpu):
    # with the 8 MiB of credit still charged, the full cap would not fit
    r = gpu.run(*START, "async=8M", "freeasync", "async=2G", "info", **NORES)
    assert r.results("async") == ["ok", "ok"], r
    assert r.field("info", "free") == 0
    assert "out of memory" not in r.err


def test_credit_never_passes_the_cap(gpu):
    r = gpu.run(*START, "async=8M", "freeasync", "async=2040M", "async=8M", "async=1", "info", **NORES)
    assert r.results("async") == ["ok", "ok", "ok", "err=2"], r
    assert r.field("info", "free") == 0


def test_large_pooled_frees_are_given_back_at_once(gpu):
    r = gpu.run(*START, "async=16M", "freeasync", "info", **NORES)
    assert r.results("freeasync") == ["ok"], r
    assert r.field("info", "free") == CAP  # more than the credit holds: not kept


def test_a_thread_hands_its_credit_back_when_it_exits(gpu):
    r = gpu.run(*START, "thread", "async=4M", "freeasync", "info", "endthread", "info", **NORES)
    assert r.field("info", "free", 0) == CAP - 4 * MiB, r
    assert r.field("info", "free", 1) == CAP


def test_credit_is_handed_back_when_the_context_goes(gpu):
    r = gpu.run(*START, "async=4M", "freeasync", "release", "init", "dev=0", "primary", "info", **NORES)
    assert r.field("info", "free") == CAP, r


def test_records_past_a_threads_table_are_kept_and_found_from_any_thread(gpu):
    n = 3000  # 512 KiB each, more than a thread's table holds: the rest go to the shared shards
    r = gpu.run(*START, *["alloc=512K"] * n, "info", "thread", *["free"] * n, "endthread", "info", **NORES)
    assert r.results("alloc").count("ok") == n, r.err
    assert r.results("free") == ["ok"] * n
    assert r.field("info", "free", 0) == CAP - n * MiB // 2
    assert r.field("info", "free", 1) == CAP


def test_the_tables_of_exited_threads_are_taken_over(gpu):
    # each block is a new thread with a new or adopted table; their records stay findable
    blocks = [x for _ in range(40) for x in ("thread", "alloc=1M", "endthread")]
    r = gpu.run(*START, *blocks, "info", *["free"] * 40, "info", **NORES)
    assert r.results("alloc") == ["ok"] * 40, r
    assert r.results("free") == ["ok"] * 40
    assert r.field("info", "free", 0) == CAP - 40 * MiB
    assert r.field("info", "free", 1) == CAP


def test_a_forked_child_neither_holds_nor_frees_its_parents_credit_or_records(gpu):
    r = gpu.run(
        *START,
        "alloc=64M",
        "async=4M",
        "freeasync",
        "fork",
        "init",
        "dev=0",
        "primary",
        "info",
        "free",
        "endfork",
        "info",
        **NORES,
    )
    # the child sees the parent's 64 MiB and credit in the ledger, and has no record to free
    assert r.field("info", "free", 0) == CAP - 68 * MiB, r
    assert "parent child_exit=0" in r.out
    assert r.field("info", "free", 1) == CAP - 68 * MiB


def test_with_no_pthread_key_left_no_credit_is_kept_and_records_still_work(gpu):
    # the library needs a key for the destructor that hands a thread's credit and table on at its
    # exit; with none to be had it keeps no credit, and its records are found as ever
    r = gpu.run(
        "fill_keys",
        *START,
        "thread",
        "async=4M",
        "freeasync",
        "info",
        "alloc=1M",
        "endthread",
        "free",
        "info",
        **NORES,
    )
    assert int(r.line("fill_keys").split()[1]) > 0, r
    assert r.results("async") == ["ok"] and r.results("free") == ["ok"], r
    assert r.field("info", "free", 0) == CAP  # the 4 MiB went straight back: no credit without a destructor
    assert r.field("info", "free", 1) == CAP
