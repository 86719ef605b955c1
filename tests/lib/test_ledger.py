"""One ledger per state dir: shared by processes, atomic under threads and processes, and the
share of a process killed with SIGKILL comes back (inside the critical section too, and while
the killed process stays an unreaped zombie)."""

import os
import random
import resource
import shutil
import signal
import stat
import subprocess
import tempfile
import time

import pytest
from libgpumem_support import GiB, MiB, Result

START = ["init", "dev=0", "primary"]
NORES = dict(GPUMEM_CONTEXT_RESERVE=0)


def hold(gpu, *steps, **env):
    """Start a client that runs steps and then holds what it has; return once it holds."""
    p = gpu.spawn(*START, *steps, "hold", **env)
    out = []
    for line in iter(p.stdout.readline, ""):
        out.append(line)
        if line.startswith("holding"):
            p.lines = out
            return p
    raise AssertionError("".join(out) + p.stderr.read())


def wait_in_lock(p):
    """Wait until p says it sleeps inside the ledger lock (GPUMEM_DEBUG_*_SLEEP_US)."""
    for line in iter(p.stderr.readline, ""):
        if "sleeping" in line and "inside the ledger lock" in line:
            return
    raise AssertionError("never reached the ledger lock")


def read_until(p, done):
    """p's stdout lines up to and including the first for which done(line, lines so far) holds."""
    lines = []
    for line in iter(p.stdout.readline, ""):
        lines.append(line)
        if done(line, lines):
            break
    return lines


def forked_child(lines):
    """The pid of the child a `fork`/`forknowait` made, from its parent's line."""
    return int(next(ln for ln in lines if ln.startswith("parent child=")).split("=")[1])


def kill(p):
    p.kill()
    p.wait()


def test_processes_sharing_a_state_dir_share_the_cap(gpu):
    env = dict(GPUMEM_LIMIT="2GiB", **NORES)
    a = hold(gpu, "alloc=1536M", **env)
    try:
        r = gpu.run(*START, "info", "alloc=1G", "alloc=512M", **env)
    finally:
        kill(a)
    assert a.lines[3] == "alloc ok\n"
    assert r.field("info", "total") == 2 * GiB and r.field("info", "free") == 512 * MiB
    assert r.results("alloc") == ["err=2", "ok"]


def test_processes_with_different_state_dirs_have_separate_caps(gpu, tmp_path):
    env = dict(GPUMEM_LIMIT="2GiB", **NORES)
    a = hold(gpu, "alloc=1536M", **env)
    try:
        r = gpu.run(*START, "alloc=1536M", GPUMEM_STATE_DIR=tmp_path / "other", **env)
    finally:
        kill(a)
    assert r.results("alloc") == ["ok"]


def test_state_dir_is_created_usable_by_other_users(gpu):
    gpu.run(*START, "alloc=1", GPUMEM_LIMIT="1GiB")
    mode = gpu.state.stat().st_mode
    assert mode & stat.S_ISVTX and mode & 0o777 == 0o777
    assert (gpu.state / "ledger-v4").stat().st_mode & 0o666 == 0o666
    assert [p.name for p in gpu.state.iterdir()] == ["ledger-v4"]  # no temp file left behind


def test_state_dir_is_created_with_its_missing_parents(gpu, tmp_path):
    state = tmp_path / "a" / "b" / "state"
    r = gpu.run(*START, "alloc=1", GPUMEM_LIMIT="1GiB", GPUMEM_STATE_DIR=state)
    assert r.results("alloc") == ["ok"] and "unusable" not in r.err
    assert (state / "ledger-v4").exists()


def test_unusable_state_dir_refuses_allocations_with_an_error(gpu, tmp_path):
    # a ledger per process would multiply the cap by the number of processes: refuse instead
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    r = gpu.run(
        *START,
        "alloc=1G",
        "alloc=1G",
        GPUMEM_LIMIT="2GiB",
        GPUMEM_STATE_DIR=blocker / "state",
        GPUMEM_LOG="warn",
        **NORES,
    )
    assert r.rc == 0, r
    assert r.results("alloc") == ["err=2", "err=2"]
    errors = [ln for ln in r.err.splitlines() if "cannot use the ledger" in ln]
    assert len(errors) == 1 and "GPUMEM_PRIVATE_LEDGER=1" in errors[0], r.err


def test_unusable_state_dir_falls_back_to_a_per_process_cap_when_asked(gpu, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    r = gpu.run(
        *START,
        "info",
        "alloc=1536M",
        "alloc=1G",
        GPUMEM_LIMIT="2GiB",
        GPUMEM_STATE_DIR=blocker / "state",
        GPUMEM_LOG="warn",
        GPUMEM_PRIVATE_LEDGER=1,
        **NORES,
    )
    assert r.rc == 0, r
    assert r.results("alloc") == ["ok", "err=2"]
    assert r.field("info", "total") == 2 * GiB
    warnings = [ln for ln in r.err.splitlines() if "unusable" in ln]
    assert len(warnings) == 1 and "per process" in warnings[0], r.err


def test_sixteen_threads_never_exceed_the_cap_and_totals_return_to_zero(gpu):
    r = gpu.run(*START, "threads=16,3000,100M", "peak", "info", GPUMEM_LIMIT="1GiB", **NORES, timeout=60)
    assert r.rc == 0, r
    ok, oom = r.field("threads", "ok"), r.field("threads", "oom")
    assert ok > 0 and oom > 0, r.out  # the cap was contended
    assert int(r.line("peak").split()[1]) <= 1 * GiB
    assert r.field("info", "free") == 1 * GiB


def test_racing_processes_never_exceed_the_shared_cap(gpu, tmp_path):
    env = dict(GPUMEM_LIMIT="1GiB", FAKE_CUDA_PHYS_FILE=tmp_path / "phys", GPUMEM_LOG="error", **NORES)
    procs = [gpu.spawn(*START, "threads=4,1500,300M", **env) for _ in range(4)]
    outs = [p.communicate(timeout=60)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    oks = sum(int(o.split("threads ok=")[1].split()[0]) for o in outs)
    ooms = sum(int(o.split("oom=")[1].split()[0]) for o in outs)
    assert oks > 0 and ooms > 0
    r = gpu.run(*START, "peak", "used", "info", **env)
    assert int(r.line("peak").split()[1]) <= 1 * GiB, r
    assert r.line("used") == "used 0"
    assert r.field("info", "free") == 1 * GiB


def test_racing_small_allocations_never_exceed_the_shared_cap(gpu, tmp_path):
    # what the driver really hands out (the stand-in's peak across processes) stays within the cap
    env = dict(GPUMEM_LIMIT="48MiB", FAKE_CUDA_PHYS_FILE=tmp_path / "phys", GPUMEM_LOG="error", **NORES)
    procs = [gpu.spawn(*START, "threads=4,3000,3M", **env) for _ in range(4)]
    outs = [p.communicate(timeout=60)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert sum(int(o.split("threads ok=")[1].split()[0]) for o in outs) > 0
    r = gpu.run(*START, "peak", "used", "info", **env)
    assert 0 < int(r.line("peak").split()[1]) <= 48 * MiB, r
    assert r.line("used") == "used 0"
    assert r.field("info", "free") == 48 * MiB


def test_one_process_reaches_the_whole_cap_in_small_allocations(gpu):
    env = dict(GPUMEM_LIMIT="20MiB", **NORES)
    r = gpu.run(*START, *["alloc=1M"] * 21, "info", **env)
    assert r.results("alloc") == ["ok"] * 20 + ["err=2"]
    assert r.field("info", "free") == 0
    r = gpu.run(*START, "alloc=1M", "free", "alloc=20M", "info", **env)
    assert r.results("alloc") == ["ok", "ok"]
    assert r.field("info", "free") == 0


def test_small_allocations_of_one_process_are_reported_exactly_to_another(gpu):
    env = dict(GPUMEM_LIMIT="256MiB", **NORES)
    a = hold(gpu, "alloc=1M", "alloc=1M", "info", **env)
    try:
        assert a.lines[-2] == f"info total={256 * MiB} free={254 * MiB}\n"
        r = gpu.run(*START, "info", "alloc=254M", "alloc=1M", **env)
        assert r.field("info", "free") == 254 * MiB
        assert r.results("alloc") == ["ok", "err=2"]
    finally:
        kill(a)
    r = gpu.run(*START, "info", **env)
    assert r.field("info", "free") == 256 * MiB


def test_sigkilled_process_share_comes_back(gpu):
    env = dict(GPUMEM_LIMIT="4GiB", **NORES)
    a = hold(gpu, "alloc=3G", **env)
    r = gpu.run(*START, "alloc=3G", **env)
    assert r.results("alloc") == ["err=2"]
    kill(a)
    r = gpu.run(*START, "info", "alloc=3G", **env)
    assert r.field("info", "free") == 4 * GiB
    assert r.results("alloc") == ["ok"]


def test_killed_process_left_as_unreaped_zombie_gives_its_share_back(gpu):
    env = dict(GPUMEM_LIMIT="4GiB", **NORES)
    parent = gpu.spawn(*START, "forknowait", "alloc=3G", "endfork", "hold", **env)
    lines = read_until(
        parent,
        lambda line, seen: "holding\n" in seen and ("alloc ok\n" in seen or line.startswith("alloc err")),
    )
    child = forked_child(lines)
    try:
        assert "alloc ok\n" in lines, lines
        for _ in range(100):  # wait until the child is a zombie (dead, never reaped)
            with open(f"/proc/{child}/stat") as f:
                if f.read().split(") ")[1][0] == "Z":
                    break
            time.sleep(0.02)
        else:
            pytest.fail("child did not become a zombie")
        r = gpu.run(*START, "info", "alloc=3G", **env)
        assert os.path.exists(f"/proc/{child}")  # still there, unreaped
        assert r.field("info", "free") == 4 * GiB
        assert r.results("alloc") == ["ok"]
    finally:
        kill(parent)


def test_process_killed_inside_the_ledger_lock_never_leaves_others_waiting(gpu):
    env = dict(GPUMEM_LIMIT="4GiB", **NORES)
    a = gpu.spawn(*START, "alloc=1G", GPUMEM_DEBUG_LOCK_SLEEP_US=20_000_000, **env)
    wait_in_lock(a)  # now asleep inside the critical section, its slot already charged
    kill(a)
    t0 = time.monotonic()
    r = gpu.run(*START, "info", "alloc=4G", timeout=10, GPUMEM_LOG="warn", **env)
    assert time.monotonic() - t0 < 5
    assert r.field("info", "free") == 4 * GiB
    assert r.results("alloc") == ["ok"]
    assert "died holding the ledger lock" in r.err


def test_lock_holder_killed_in_its_first_critical_section_and_left_a_zombie_is_detected(gpu):
    # killed there and never reaped: a zombie, which kill(pid, 0) still answers for
    env = dict(GPUMEM_LIMIT="4GiB", **NORES)
    parent = gpu.spawn(
        *START, "forknowait", "alloc=1G", "endfork", "hold", GPUMEM_DEBUG_LOCK_SLEEP_US=20_000_000, **env
    )
    try:
        wait_in_lock(parent)  # the child's line: it sleeps inside its first lock
        child = forked_child(read_until(parent, lambda line, _: line.startswith("holding")))
        os.kill(child, signal.SIGKILL)
        t0 = time.monotonic()
        r = gpu.run(*START, "info", "alloc=4G", timeout=10, GPUMEM_LOG="warn", **env)
        assert time.monotonic() - t0 < 5
        with open(f"/proc/{child}/stat") as f:
            assert f.read().split(") ")[1][0] == "Z"  # still an unreaped zombie
        assert r.field("info", "free") == 4 * GiB
        assert r.results("alloc") == ["ok"]
        assert "died holding the ledger lock" in r.err
    finally:
        kill(parent)


def in_new_pid_namespace(gpu, *steps, **env):
    """A client as pid 1 of a pid namespace of its own (replicas of an `ipc: host` service share
    one ledger but not their pids); skips where unshare is not allowed."""
    if subprocess.run(["unshare", "-pf", "true"], capture_output=True).returncode != 0:
        pytest.skip("unshare -pf is not allowed here")
    return subprocess.Popen(
        ["unshare", "-pf", *gpu.cmd("cuclient", *START, *steps)],
        env=gpu.environ(**env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_lock_holder_in_another_pid_namespace_is_waited_for(gpu):
    env = dict(GPUMEM_LIMIT="4GiB", **NORES)
    a = in_new_pid_namespace(gpu, "alloc=1G", "hold", GPUMEM_DEBUG_LOCK_SLEEP_US=1_500_000, **env)
    try:
        wait_in_lock(a)
        t0 = time.monotonic()
        r = gpu.run(*START, "alloc=3G", "info", timeout=20, **env)
        assert time.monotonic() - t0 > 1.0  # it waited for the live holder
        assert r.results("alloc") == ["ok"]
        assert r.field("info", "free") == 0  # the holder's 1G had been counted: nobody overlapped
        assert "died holding the ledger lock" not in r.err
    finally:
        kill(a)


def test_lock_holder_in_another_pid_namespace_killed_in_the_lock_is_detected(gpu):
    # its pid means another process here (pid 1 is our own init): only its slot's fcntl lock tells
    env = dict(GPUMEM_LIMIT="4GiB", **NORES)
    a = in_new_pid_namespace(gpu, "alloc=1G", GPUMEM_DEBUG_LOCK_SLEEP_US=60_000_000, **env)
    try:
        wait_in_lock(a)
        with open(f"/proc/{a.pid}/task/{a.pid}/children") as f:
            (holder,) = map(int, f.read().split())  # the client, pid 1 inside
        os.kill(holder, signal.SIGKILL)
        t0 = time.monotonic()
        r = gpu.run(*START, "info", "alloc=4G", timeout=20, GPUMEM_LOG="warn", **env)
        assert time.monotonic() - t0 < 5
        assert r.field("info", "free") == 4 * GiB
        assert r.results("alloc") == ["ok"]
        assert "died holding the ledger lock" in r.err
    finally:
        kill(a)


def test_closing_another_descriptor_of_the_ledger_keeps_a_process_alive(gpu):
    # classic fcntl locks vanish when the process closes any descriptor of the file; OFD ones stay
    env = dict(GPUMEM_LIMIT="4GiB", **NORES)
    a = hold(gpu, "alloc=3G", f"openclose={gpu.state / 'ledger-v4'}", **env)
    try:
        assert "openclose ok\n" in a.lines
        r = gpu.run(*START, "info", "alloc=3G", **env)
        assert r.field("info", "free") == 1 * GiB  # a's 3G still counted: not taken for dead
        assert r.results("alloc") == ["err=2"]
        assert "reclaimed" not in r.err
    finally:
        kill(a)


def test_a_descriptor_number_the_application_reuses_is_not_trusted(gpu):
    # a daemon's dup2 over our descriptor: lock queries through it would ask /dev/null, and every
    # live process would look dead
    env = dict(GPUMEM_LIMIT="4GiB", **NORES)
    a = hold(gpu, "alloc=1G", **env)
    try:
        r = gpu.run(*START, "alloc=1M", "free", "clobber=ledger-v4", "info", "alloc=3G", **env)
        assert r.line("clobber") == "clobber 1"
        assert r.field("info", "free") == 3 * GiB  # a's 1G still counted
        assert r.results("alloc") == ["ok", "ok"]
        assert "reclaimed" not in r.err
        assert "closed or replaced by the application; reopened" in r.err
        r = gpu.run(*START, "info", **env)
        assert r.field("info", "free") == 3 * GiB  # and the second process's slot was its own
    finally:
        kill(a)


def test_the_ledgers_descriptor_stays_inside_the_table_a_process_starts_with(gpu):
    # kept off the low numbers, but under 64: a higher one makes the kernel grow the descriptor
    # table, which in a process with threads (any CUDA one) waits for an RCU grace period
    r = gpu.run(
        *START,
        "alloc=1M",
        "fdmax=ledger-v4",
        "clobber=ledger-v4",
        "info",
        "fdmax=ledger-v4",
        GPUMEM_LIMIT="4GiB",
        **NORES,
    )
    assert r.results("fdmax")[0] != "-1", r
    assert 3 < int(r.results("fdmax")[0]) < 64
    assert 3 < int(r.results("fdmax")[1]) < 64  # reopened after the clobber: moved up again


def test_a_forked_child_keeps_the_applications_descriptors(gpu):
    # the application's file now has our old descriptor's number: a child must not close it
    env = dict(GPUMEM_LIMIT="4GiB", **NORES)
    r = gpu.run(
        *START, "alloc=1M", "free", "clobber=ledger-v4", "fds=null", "fork", "fds=null", "endfork", **env
    )
    before, in_child = r.results("fds")
    assert int(before) >= 1 and in_child == before, r


def test_a_child_whose_descriptor_the_application_reuses_keeps_its_share(gpu):
    # its slot's lock must not hang on a descriptor the application can close
    env = dict(GPUMEM_LIMIT="4GiB", **NORES)
    parent = gpu.spawn(
        *START, "forknowait", "clobber=ledger-v4", "alloc=1G", "clobber=ledger-v4", "hold", **env
    )
    lines = read_until(parent, lambda line, _: line.startswith("holding"))
    child = forked_child(lines)
    try:
        assert "alloc ok\n" in lines
        r = gpu.run(*START, "info", "alloc=4G", **env)
        assert r.field("info", "free") == 3 * GiB  # the live child's 1G still counted
        assert r.results("alloc") == ["err=2"]
    finally:
        os.kill(child, signal.SIGKILL)
        kill(parent)


def test_a_forked_child_does_not_keep_its_dead_parents_share_alive(gpu):
    # the child inherits the parent's file description, and with it the parent's OFD lock
    env = dict(GPUMEM_LIMIT="4GiB", **NORES)
    parent = gpu.spawn(*START, "alloc=1G", "forknowait", "sleep=30", "endfork", **env)
    lines = read_until(parent, lambda line, _: line.startswith("parent child="))
    child = forked_child(lines)
    try:
        assert "alloc ok\n" in lines
        assert parent.wait(timeout=10) == 0  # the parent is gone; the child sleeps on
        r = gpu.run(*START, "info", **env)
        assert os.path.exists(f"/proc/{child}")
        assert r.field("info", "free") == 4 * GiB  # the parent's 1G came back
    finally:
        os.kill(child, signal.SIGKILL)


def test_a_full_ledger_refuses_and_a_dead_processs_slot_is_adopted(gpu):
    env = dict(GPUMEM_LIMIT="4GiB", GPUMEM_DEBUG_SLOTS=2, **NORES)
    a = hold(gpu, "alloc=1G", **env)
    b = hold(gpu, "alloc=1G", **env)
    try:
        r = gpu.run(*START, "alloc=1M", **env)
        assert r.results("alloc") == ["err=2"]  # still capped: refused, and said why
        assert "ledger has no free process slot" in r.err
        kill(a)  # its slot is dead but not reclaimed yet: the next process adopts it
        r = gpu.run(*START, "alloc=3G", "info", GPUMEM_LOG="info", **env)
        assert r.results("alloc") == ["ok"]
        assert r.field("info", "free") == 0
        assert "slot adopted" in r.err
    finally:
        kill(b)


def test_a_process_refused_by_a_full_ledger_allocates_once_a_slot_frees(gpu):
    # a full ledger at the process's first use is not for good: its next allocation claims again
    env = dict(GPUMEM_LIMIT="4GiB", GPUMEM_DEBUG_SLOTS=2, GPUMEM_LOG="warn", **NORES)
    a = hold(gpu, "alloc=1G", **env)
    b = hold(gpu, "alloc=1G", **env)
    c = gpu.spawn(*START, "alloc=1M", "sleep=1.5", "alloc=1G", "info", **env)
    try:
        assert read_until(c, lambda line, _: line.startswith("alloc"))[-1] == "alloc err=2\n"
        kill(a)  # during c's sleep: a's slot is dead, and c's next allocation adopts it
        out, err = c.communicate(timeout=30)
        assert out.splitlines()[-2:] == ["alloc ok", f"info total={4 * GiB} free={2 * GiB}"], out + err
        assert err.count("ledger has no free process slot") == 1, err
        assert "claimed a ledger slot at last" in err
    finally:
        kill(b)
        kill(c)


def few_descriptors():
    """preexec_fn: a descriptor limit of 256, so that `fill_fds` runs out of them at once."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(
        resource.RLIMIT_NOFILE, (256 if hard == resource.RLIM_INFINITY else min(256, hard), hard)
    )


def run_with_few_descriptors(gpu, *steps, **env):
    """A client whose descriptor limit is 256 (few_descriptors)."""
    return Result(
        subprocess.run(
            gpu.cmd("cuclient", *steps),
            env=gpu.environ(**env),
            capture_output=True,
            text=True,
            timeout=30,
            preexec_fn=few_descriptors,
        )
    )


def claim_lines(err):
    return [ln for ln in err.splitlines() if "cannot claim a ledger slot" in ln]


def test_a_process_out_of_descriptors_at_its_first_allocation_is_refused_until_it_has_them(gpu):
    # one descriptor left: the ledger file opens on it, and the claim of a slot (a second open of
    # the file) finds none; the device cannot be registered yet
    env = dict(GPUMEM_LIMIT="4GiB", GPUMEM_LOG="warn", **NORES)
    steps = [
        "init",
        "dev=0",
        "fill_fds",
        "free_fds=1",
        "primary",
        "alloc=1M",
        "alloc=1M",
        "free_fds",
        "alloc=1M",
    ]
    r = run_with_few_descriptors(gpu, *steps, "info", **env)
    assert r.line("fill_fds").endswith(" EMFILE"), r
    assert r.results("alloc") == ["err=2", "err=2", "ok"], r  # refused while short, not for good
    assert r.field("info", "free") == 4 * GiB - 1 * MiB
    (line,) = claim_lines(r.err)  # said once, not once an allocation
    assert "Too many open files" in line and "refused until it can" in line, r.err
    assert "no free process slot" not in r.err
    assert "no room" not in r.err
    assert "claimed a ledger slot at last" in r.err
    # the slot is a shared one: its share counts for the others while it lives
    p = hold(gpu, "alloc=1G", **env)
    try:
        r = gpu.run(*START, "info", **env)
        assert r.field("info", "free") == 3 * GiB
    finally:
        kill(p)


def test_a_forked_child_out_of_descriptors_at_its_first_allocation_is_refused_until_it_has_them(gpu):
    # the child has the parent's ledger file but no slot of its own: it claims one at its first lock
    env = dict(GPUMEM_LIMIT="4GiB", GPUMEM_LOG="warn", **NORES)
    steps = [
        "alloc=1G",
        "fork",
        "fill_fds",
        "alloc=1M",
        "alloc=1M",
        "free_fds",
        "alloc=1M",
        "info",
        "endfork",
    ]
    r = run_with_few_descriptors(gpu, *START, *steps, "info", **env)
    assert r.results("alloc") == ["ok", "err=2", "err=2", "ok"], r
    assert r.field("info", "free", 0) == 3 * GiB - 1 * MiB  # in the child: both counted
    assert r.field("info", "free", 1) == 3 * GiB  # the child's share came back at its exit
    (line,) = claim_lines(r.err)
    assert "Too many open files" in line, r.err
    assert "refused because this process holds no slot in the ledger" in r.err
    assert "no free process slot" not in r.err


def open_lines(err):
    return [ln for ln in err.splitlines() if "cannot open the ledger" in ln]


def test_a_process_out_of_descriptors_before_it_opened_the_ledger_shares_it_once_it_has_them(gpu):
    # no descriptor left at the first use of the ledger: its file cannot be opened.  That passes:
    # the process refuses allocations meanwhile and opens the shared ledger at its next one,
    # rather than keeping a ledger of its own (a cap per process, blind to the others)
    env = dict(GPUMEM_LIMIT="4GiB", GPUMEM_LOG="warn", **NORES)
    a = hold(gpu, "alloc=1G", **env)
    b = None
    try:
        steps = [
            "init",
            "dev=0",
            "fill_fds",
            "primary",
            "alloc=1M",
            "alloc=1M",
            "free_fds",
            "alloc=1G",
            "info",
            "hold",
        ]
        b = subprocess.Popen(
            gpu.cmd("cuclient", *steps),
            env=gpu.environ(**env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=few_descriptors,
        )
        out = read_until(b, lambda line, _: line.startswith("holding"))
        r = gpu.run(*START, "info", **env)
        assert r.field("info", "free") == 2 * GiB, (out, r)  # b's share is in the shared ledger
    finally:
        kill(a)
        if b:
            kill(b)
    err = b.stderr.read()
    assert [ln.split()[1] for ln in out if ln.startswith("alloc")] == ["err=2", "err=2", "ok"], (out, err)
    assert next(ln for ln in out if ln.startswith("fill_fds")).strip().endswith(" EMFILE"), out
    info = next(ln for ln in out if ln.startswith("info")).split()
    assert f"free={2 * GiB}" in info, (out, err)  # b saw a's share too
    (line,) = open_lines(err)  # said once, not once an allocation
    assert "Too many open files" in line and "refused until it can" in line, err
    assert "ledger-v4" in line, err
    assert err.count("opened the ledger") == 1, err
    assert "own ledger" not in err and "unusable" not in err, err
    assert "refused because this process holds no slot in the ledger" in err, err


def test_a_child_forked_before_its_parent_could_open_the_ledger_opens_it(gpu):
    # the parent never opened the ledger (out of descriptors); its child tries on its own
    env = dict(GPUMEM_LIMIT="4GiB", GPUMEM_LOG="warn", **NORES)
    a = hold(gpu, "alloc=1G", **env)
    try:
        steps = ["init", "dev=0", "fill_fds", "primary", "alloc=1M"]
        child = ["fork", "alloc=1M", "free_fds", "alloc=1M", "info", "endfork"]
        r = run_with_few_descriptors(gpu, *steps, *child, "free_fds", "alloc=1M", "info", **env)
    finally:
        kill(a)
    assert r.results("alloc") == ["err=2", "err=2", "ok", "ok"], r
    assert r.field("info", "free", 0) == 3 * GiB - 1 * MiB, r  # the child: a's share and its own
    assert r.field("info", "free", 1) == 3 * GiB - 1 * MiB, r  # the parent: the child's came back
    assert len(open_lines(r.err)) == 2, r  # the parent's and the child's own
    assert "own ledger" not in r.err and "unusable" not in r.err, r


def test_process_killed_mid_release_inside_the_lock_leaks_nothing(gpu):
    # the dead process had lowered its slot but not yet the total: the next locker must
    # recompute the totals from the slots, or the freed bytes would stay charged forever
    env = dict(GPUMEM_LIMIT="4GiB", **NORES)
    a = gpu.spawn(*START, "alloc=2G", "free", GPUMEM_DEBUG_RELEASE_SLEEP_US=20_000_000, **env)
    wait_in_lock(a)
    kill(a)
    r = gpu.run(*START, "info", "alloc=4G", timeout=10, **env)
    assert r.field("info", "free") == 4 * GiB
    assert r.results("alloc") == ["ok"]


def test_sigkill_at_random_moments_never_leaks_or_wedges_the_ledger(gpu):
    env = dict(GPUMEM_LIMIT="1GiB", GPUMEM_LOG="error", **NORES)
    rnd = random.Random(1234)
    for _ in range(12):
        procs = [gpu.spawn(*START, "threads=4,100000,200M", **env) for _ in range(3)]
        time.sleep(rnd.uniform(0.01, 0.15))
        for p in procs:
            p.send_signal(signal.SIGKILL)
        for p in procs:
            p.wait()
    r = gpu.run(*START, "info", "alloc=1G", timeout=10, **env)
    assert r.field("info", "free") == 1 * GiB, r
    assert r.results("alloc") == ["ok"]


def test_forked_child_gets_its_own_share_and_never_releases_the_parents(gpu):
    env = dict(GPUMEM_LIMIT="4GiB", **NORES)
    r = gpu.run(*START, "alloc=1G", "fork", "alloc=1G", "info", "free", "free", "endfork", "info", **env)
    assert r.rc == 0, r
    assert r.field("info", "free", 0) == 2 * GiB  # in the child: both counted
    assert r.line("parent") == "parent child_exit=0"
    assert r.field("info", "free", 1) == 3 * GiB  # parent's 1 GiB still charged


def test_forked_child_share_comes_back_when_it_exits_without_freeing(gpu):
    env = dict(GPUMEM_LIMIT="4GiB", **NORES)
    r = gpu.run(*START, "fork", "alloc=2G", "endfork", "info", "alloc=4G", **env)
    assert r.field("info", "free") == 4 * GiB
    assert r.results("alloc") == ["ok", "ok"]


def test_fork_while_other_threads_allocate_does_not_deadlock_the_child(gpu):
    env = dict(GPUMEM_LIMIT="1GiB", GPUMEM_LOG="error", **NORES)
    steps = []
    for _ in range(20):
        steps += ["fork", "alloc=1M", "free", "endfork"]
    p = gpu.spawn(*START, "threads=1,1,1", *steps, **env)
    # a background hammer in the same process: cuclient runs commands in order, so use a second
    # process sharing the ledger to keep the ledger lock busy while this one forks
    q = gpu.spawn(*START, "threads=4,20000,100M", **env)
    out, err = p.communicate(timeout=30)
    q.communicate(timeout=60)
    assert p.returncode == 0, err
    assert out.count("parent child_exit=0") == 20, out


def test_processes_of_another_user_share_the_ledger(gpu):
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("needs root and setpriv to start a process as another user")
    as_nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    if subprocess.run([*as_nobody, "test", "-x", gpu.cmd("cuclient")[0]]).returncode != 0:
        pytest.skip("the other user cannot run the client here")
    parent = tempfile.mkdtemp(prefix="gpumem-uid-")  # tmp_path is private to root
    os.chmod(parent, 0o755)
    env = dict(GPUMEM_LIMIT="2GiB", GPUMEM_STATE_DIR=os.path.join(parent, "state"), **NORES)
    a = hold(gpu, "alloc=1536M", **env)  # root creates the state dir and the ledger
    try:
        r = subprocess.run(
            [*as_nobody, *gpu.cmd("cuclient", *START, "alloc=1G", "alloc=512M")],
            env=gpu.environ(**env),
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert r.stdout.splitlines()[3:] == ["alloc err=2", "alloc ok"], r.stdout + r.stderr
        assert "unusable" not in r.stderr
    finally:
        kill(a)
        shutil.rmtree(parent, ignore_errors=True)
