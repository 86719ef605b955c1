/* The one ledger: a file under GPUMEM_STATE_DIR, mmap'd MAP_SHARED by every process of the
 * container.  Per-device totals plus one slot per process with its per-device bytes.
 *
 * - a process holds a write lock on its slot's first byte for its whole life, an open file
 *   description (OFD) lock where the kernel has them, taken on a description that only a mapped
 *   page keeps open: the kernel drops it at death (zombies included), no descriptor the
 *   application closes can end it, and it is seen from every pid namespace that shares the file
 *   (replicas of an `ipc: host` service);
 * - a process takes its slot without the ledger lock: the byte's lock first (one live process at a
 *   time can hold it), then in_use 0 -> 1; with every slot taken, it adopts a dead process's;
 * - check-and-reserve runs under the ledger lock: one word naming its holder's slot and that
 *   slot's generation, taken with a CAS and given back with a store (a robust pthread mutex cost
 *   about 20 ns more per alloc+free pair, bench/RESULTS.md).  A waiter that finds the holder dead
 *   takes the lock over and recomputes the totals from the slots (a slot is always updated before
 *   the total).  The generation, bumped whenever a slot changes hands, keeps a waiter that saw a
 *   dead holder from taking the lock from the slot's next owner;
 * - dead slots are reclaimed lazily: when a reservation would be refused, when memory is reported,
 *   when a slot is adopted;
 * - a file that cannot be opened (a passing want, a damaged ledger live processes hold, an unusable
 *   directory) is tried again at the next use, allocations on limited devices refused meanwhile
 *   (a ledger per process only with GPUMEM_PRIVATE_LEDGER=1); ledger_file.c judges, makes and
 *   rebuilds the file, ledger_guard.c catches SIGBUS from a file cut short under us;
 * - every shared field is checked under the lock before it is trusted (repair_locked), the totals
 *   restored as the sums of the in-use slots; a wait on the lock is bounded. */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stddef.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/vfs.h>
#include <time.h>
#include <unistd.h>
#include "gpumem.h"

#include "ledger_file.h"
#include "ledger_guard.h"
#include "ledger_layout.h"

_Static_assert(LEDGER_DEVS == GPUMEM_MAX_DEV, "one device table size");

static struct ledger *L;          /* the mapping (shared file, or private fallback); NULL: none yet */
static int L_fd = -1;             /* ledger file; never closed while we hold our slot lock */
static int L_slot = -1;           /* our slot, -1 until first use (and again in a forked child) */
static uint32_t L_me;             /* our owner word: our slot and its generation */
static int L_adopted;             /* our slot was a dead process's: clear its bytes at first lock */
static int L_ofd;                 /* open file description locks (else classic per-process ones) */
static int L_pin_ok;              /* a mapping keeps the locked description open (not on overlayfs) */
static char L_path[4096];         /* the ledger file, reopened by a forked child */
static uint64_t L_dev_id, L_ino;  /* its identity: tells whether L_fd still names it */
/* GPUMEM_DEBUG_LOCK_SLEEP_US / GPUMEM_DEBUG_RELEASE_SLEEP_US: sleep inside the critical section
 * between the slot's update and the total's, so tests can kill us mid-update */
static unsigned debug_sleep_us, debug_release_sleep_us;
/* GPUMEM_DEBUG_SLOTS=N: claim only among the first N slots, so tests can fill the ledger */
static int debug_slots = LEDGER_SLOTS;

static void debug_sleep(const char *what, unsigned us)
{
    gpumem_log(LOG_WARN, "debug: sleeping %u us inside the ledger lock (%s)", us, what);
    usleep(us);
}

static void use_private(const char *why, const char *dir)
{
    if (why) LOG(LOG_WARN, "state dir %s unusable (%s): this process keeps its own ledger, so the cap "
                 "is per process, not shared (GPUMEM_PRIVATE_LEDGER=1)", dir, why);
    void *p = mmap(NULL, sizeof(struct ledger), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {   /* last resort: a static ledger */
        static struct ledger fallback;
        p = &fallback;
    }
    ledger_layout_init(p);
    if (L_fd >= 0) close(L_fd);
    L_fd = -1;
    __atomic_store_n(&L, (struct ledger *)p, __ATOMIC_RELEASE);
}

/* the file's identity, by the raw system call (glibc's fstat is fstat@GLIBC_2.33) */
static int file_id(int fd, uint64_t *dev, uint64_t *ino)
{
    struct stat st;
    if (syscall(SYS_fstat, fd, &st) != 0) return -1;
    *dev = (uint64_t)st.st_dev;
    *ino = (uint64_t)st.st_ino;
    return 0;
}

static int is_ledger_file(int fd)
{
    uint64_t dev, ino;
    return fd >= 0 && file_id(fd, &dev, &ino) == 0 && dev == L_dev_id && ino == L_ino;
}

/* Out of the way of the application's low descriptor numbers (dup2 onto 0-2, the next few it
 * opens), but inside the 64-entry table every process starts with: a number past it makes the
 * kernel grow the table, which in a process with threads waits for an RCU grace period (9-13 ms
 * on the Debian 12 host and most of the library's start-up on the H100 machines, 2026-11-26,
 * bench/RESULTS.md), where it once was 1000. */
#define FD_FLOOR 48
static int move_high(int fd)
{
    struct rlimit rl;
    if (fd >= FD_FLOOR || getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur < 2 * FD_FLOOR) return fd;
    int low = FD_FLOOR;
    int high = fcntl(fd, F_DUPFD_CLOEXEC, low);
    if (high < 0) return fd;
    close(fd);
    return high;
}

static int byte_lock(int fd, int i, short type, int cmd_ofd, int cmd_posix, struct flock *out);

/* Open and map the ledger file (ledger_file.c finds, makes or rebuilds it).  0, else the errno that
 * failed it (-1: none, *why says what), for ledger_init to tell a passing want from the rest. */
#define FAIL(e) do { int e_ = (e); *why = strerror(e_); return e_ > 0 ? e_ : -1; } while (0)
static int open_shared(const char *dir, const char **why)
{
    char path[4096];
    if (snprintf(path, sizeof path, "%s/%s", dir, LEDGER_NAME) >= (int)sizeof path) { *why = "path too long"; return -1; }
    int fd, e = ledger_file_open(dir, path, &fd, why);
    if (e) return e;
    void *p = mmap(NULL, sizeof(struct ledger), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) { e = errno; close(fd); FAIL(e); }
    struct ledger *l = p;
    /* liveness needs record locks: OFD ones (Linux 3.15+), else classic */
    L_ofd = 1;
    if (byte_lock(fd, 0, F_WRLCK, F_OFD_GETLK, F_GETLK, NULL) != 0) {
        L_ofd = 0;
        if (byte_lock(fd, 0, F_WRLCK, F_OFD_GETLK, F_GETLK, NULL) != 0) {
            munmap(p, sizeof *l); close(fd); *why = "no file locks on it"; return -1;
        }
    }
    snprintf(L_path, sizeof L_path, "%s", path);
    /* overlayfs maps the underlying file, not the one locked: a pinned page would not hold the
     * lock there, so the claim's descriptor stays open instead */
    struct statfs sfs;
    L_pin_ok = !(fstatfs(fd, &sfs) == 0 && (unsigned long)sfs.f_type == 0x794c7630UL);
    if (file_id(fd, &L_dev_id, &L_ino) != 0) { int e = errno; munmap(p, sizeof *l); close(fd); FAIL(e); }
    L_fd = move_high(fd);
    ledger_guard_watch(l, sizeof *l);   /* before anyone touches it: a truncation faults SIGBUS */
    __atomic_store_n(&L, l, __ATOMIC_RELEASE);
    return 0;
}
#undef FAIL

/* GPUMEM_PRIVATE_LEDGER=1: where the shared ledger cannot be used, each process keeps a ledger of
 * its own (the cap becomes per process), instead of refusing allocations until it can be */
static int private_ok;

/* the state dir and the debug variables, read at the first try */
static const char *L_dir;
static void ledger_config(void)
{
    const char *dir = getenv("GPUMEM_STATE_DIR");
    if (!dir || !*dir) dir = "/dev/shm/gpumem";
    static char absolute[4096];   /* the ledger is reopened by path later, maybe after a chdir */
    char cwd[2048];
    if (dir[0] != '/' && getcwd(cwd, sizeof cwd) &&
        snprintf(absolute, sizeof absolute, "%s/%s", cwd, dir) < (int)sizeof absolute)
        dir = absolute;
    L_dir = dir;
    const char *s = getenv("GPUMEM_DEBUG_LOCK_SLEEP_US");
    if (s) debug_sleep_us = (unsigned)strtoul(s, NULL, 10);
    s = getenv("GPUMEM_DEBUG_RELEASE_SLEEP_US");
    if (s) debug_release_sleep_us = (unsigned)strtoul(s, NULL, 10);
    s = getenv("GPUMEM_PRIVATE_LEDGER");
    private_ok = s && !strcmp(s, "1");
    s = getenv("GPUMEM_DEBUG_SLOTS");
    if (s && atoi(s) > 0 && atoi(s) < LEDGER_SLOTS) debug_slots = atoi(s);
}

/* Wants that pass: out of descriptors or memory, interrupted.  Splitting the cap for those would
 * be for the process's whole life; refusing lasts until the next allocation that finds them. */
static const int passing[] = { EMFILE, ENFILE, ENOMEM, EAGAIN, EINTR };
#define NPASSING (int)(sizeof passing / sizeof passing[0])
static int open_said[NPASSING + 1];   /* each cause once a process, as the claim's; last: the others */
static int open_refused;          /* a try failed for one of them: say when one succeeds */

static int passing_cause(int err)
{
    for (int i = 0; i < NPASSING; i++) if (passing[i] == err) return i;
    return -1;
}

/* under init_mu: one try at the shared ledger.  A passing want, or a ledger or directory that
 * cannot be used (a damaged ledger live processes still hold, a full file system, a path that is
 * no directory): allocations refused and the next one tries again, since a private ledger per
 * process would multiply the cap silently; GPUMEM_PRIVATE_LEDGER=1 asks for that instead. */
static void ledger_init(void)
{
    uint64_t t0 = gpumem_startup_begin();
    const char *why = NULL;
    int e = open_shared(L_dir, &why), cause = e > 0 ? passing_cause(e) : -1;
    gpumem_startup_end(SP_LEDGER, t0);
    if (e == 0) {
        if (open_refused) {
            open_refused = 0;
            LOG(LOG_WARN, "opened the ledger %s at last: allocations on limited devices are no longer refused for want of it", L_path);
        } else {
            LOG(LOG_DEBUG, "ledger %s", L_path);
        }
    } else if (cause >= 0) {   /* no ledger yet: lock() fails, and so every reservation */
        open_refused = 1;
        if (!open_said[cause]++)
            gpumem_log(LOG_ERROR, "cannot open the ledger %s/%s: %s; allocations on limited devices are refused until it can",
                       L_dir, LEDGER_NAME, why);
    } else if (private_ok) {
        open_refused = 0;
        use_private(why, L_dir);
    } else {
        open_refused = 1;
        if (!open_said[NPASSING]++)
            gpumem_log(LOG_ERROR, "cannot use the ledger %s/%s: %s; allocations on limited devices are refused until it "
                       "can be (GPUMEM_PRIVATE_LEDGER=1 gives each process a cap of its own instead)", L_dir, LEDGER_NAME, why);
    }
}

/* The ledger, opened (or made private) once; until then every caller tries again.  Concurrent
 * callers share one try: a thread that waited for another's takes its outcome.  Taken before
 * claim_mu in a fork, never while holding it. */
static int init_mu;
static unsigned init_tries;

static int ledger_open(void)
{
    unsigned seen = __atomic_load_n(&init_tries, __ATOMIC_ACQUIRE);
    while (__atomic_exchange_n(&init_mu, 1, __ATOMIC_ACQUIRE)) sched_yield();
    if (!L && init_tries == seen) {
        if (!seen) ledger_config();
        ledger_init();
        __atomic_store_n(&init_tries, seen + 1, __ATOMIC_RELEASE);
    }
    __atomic_store_n(&init_mu, 0, __ATOMIC_RELEASE);
    return __atomic_load_n(&L, __ATOMIC_ACQUIRE) != NULL;
}

/* ---- the slots' byte locks: OFD locks, or classic ones on kernels before 3.15 */

/* fcntl on slot i's first byte through fd, with the OFD command or the classic one */
static int byte_lock(int fd, int i, short type, int cmd_ofd, int cmd_posix, struct flock *out)
{
    struct flock fl = { .l_type = type, .l_whence = SEEK_SET,
                        .l_start = (off_t)offsetof(struct ledger, slot) + (off_t)i * (off_t)sizeof(struct lslot),
                        .l_len = 1 };   /* l_pid 0: OFD locks require it */
    int r = fcntl(fd, L_ofd ? cmd_ofd : cmd_posix, &fl);
    if (out) *out = fl;
    return r;
}

/* Lock queries go through L_fd, and the application may have closed it and had its number
 * reused (our own lock stays: the mapping holds the file open).  Before trusting a query, check
 * that L_fd still names the ledger; if not, reopen it.  0: cannot tell, trust nothing. */
static int ledger_fd_ok(void)
{
    int fd = __atomic_load_n(&L_fd, __ATOMIC_ACQUIRE);
    if (fd < 0 || is_ledger_file(fd)) return 1;
    int fresh = open(L_path, O_RDWR | O_CLOEXEC);
    if (!is_ledger_file(fresh)) {
        int e = fresh < 0 ? errno : 0;   /* 0: the path names another file now */
        if (fresh >= 0) close(fresh);
        static int said;   /* safe for the cap (nobody is taken for dead), but say it */
        if (!__atomic_exchange_n(&said, 1, __ATOMIC_ACQ_REL))
            gpumem_log(LOG_ERROR, "the ledger's descriptor was closed or replaced by the application and %s cannot be "
                       "reopened: dead processes' shares are no longer given back", L_path);
        errno = e;   /* for a claim's message */
        return 0;
    }
    fresh = move_high(fresh);
    if (__atomic_compare_exchange_n(&L_fd, &fd, fresh, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
        static int said;   /* the old number is the application's now: leave it alone */
        if (!__atomic_exchange_n(&said, 1, __ATOMIC_ACQ_REL))
            gpumem_log(LOG_WARN, "the ledger's descriptor %d was closed or replaced by the application; reopened", fd);
    } else {
        close(fresh);   /* another thread reopened it first */
    }
    return 1;
}

/* Is slot i's owner alive?  Its byte is locked.  (Neither lock kind reports the caller's own
 * lock as a conflict: callers treat our own slot apart.) */
static int slot_alive(int i)
{
    if (L_fd < 0) return 1;
    struct flock fl;
    if (byte_lock(__atomic_load_n(&L_fd, __ATOMIC_ACQUIRE), i, F_WRLCK, F_OFD_GETLK, F_GETLK, &fl) != 0)
        return 1;   /* cannot tell: keep it */
    return fl.l_type != F_UNLCK;
}

/* our own slot's byte lock, through fd (the claim's description); fd < 0: a private ledger */
static int slot_take_byte(int fd, int i) { return fd < 0 || byte_lock(fd, i, F_WRLCK, F_OFD_SETLK, F_SETLK, NULL) == 0; }
static void slot_drop_byte(int fd, int i) { if (fd >= 0) byte_lock(fd, i, F_UNLCK, F_OFD_SETLK, F_SETLK, NULL); }

/* ---- messages from inside the critical section wait until it ends: a write to a full stderr
 * pipe must not hold every process of the container */

static char notes[1024];   /* "<level><text>\n"..., written by our lock's holder only */
static size_t notes_len;

static void note(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void note(int level, const char *fmt, ...)
{
    if (level > gpumem_log_level || notes_len + 3 >= sizeof notes) return;
    notes[notes_len++] = (char)('0' + level);
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(notes + notes_len, sizeof notes - notes_len - 1, fmt, ap);
    va_end(ap);
    if (n < 0) n = 0;
    if ((size_t)n > sizeof notes - notes_len - 2) n = (int)(sizeof notes - notes_len - 2);
    notes_len += (size_t)n;
    notes[notes_len++] = '\n';
}

/* ---- recovery by the ledger's invariants: each slot's in_use is 0 or 1, hiwater covers every
 * slot in use, a device's total is the sum of its in-use slots' bytes (a writer updates the slot
 * before the total, both under the lock, so under the lock they always agree) */

static uint64_t add_sat(uint64_t a, uint64_t b) { return a + b < a ? UINT64_MAX : a + b; }

/* A device entry: its name, a copy, and the name's hash; any one of the three damaged is outvoted by
 * the two others.  DEV_LOST: two or more damaged, the entry names no device for sure */
enum dev_state { DEV_OK, DEV_EMPTY, DEV_FIXED, DEV_LOST };
static int L_lost;   /* an entry was lost at the last repair: refuse every reservation (fail closed) */

static enum dev_state repair_dev(struct ldev *v)
{
    char *a = v->uuid, *b = v->uuid_copy;
    const size_t n = sizeof v->uuid;
    static const char zero[sizeof v->uuid];
    if (!memcmp(a, zero, n) && !memcmp(b, zero, n) && !v->check) return DEV_EMPTY;   /* bytes on it: see the sums */
    int a_ok = memchr(a, 0, n) && ledger_uuid_hash(a, n) == v->check;
    int b_ok = memchr(b, 0, n) && ledger_uuid_hash(b, n) == v->check;
    int same = !memcmp(a, b, n) && memchr(a, 0, n);
    if (a_ok && same) return DEV_OK;
    if (same) v->check = ledger_uuid_hash(a, n);   /* the two copies agree: the hash was hit */
    else if (a_ok) memcpy(b, a, n);
    else if (b_ok) memcpy(a, b, n);
    else return DEV_LOST;
    return DEV_FIXED;
}

/* under the lock: make the shared fields true again from what can be trusted (the slots' bytes,
 * their locks); says once a process what it repaired.  A slot's garbage bytes stay counted while
 * its owner lives (too much counted is refused, never granted) and go when it dies. */
static void repair_locked(void)
{
    const char *what = NULL;
    int lost = 0;
    uint32_t ndev = 0;
    for (uint32_t d = 0; d < GPUMEM_MAX_DEV; d++) {
        switch (repair_dev(&L->dev[d])) {
        case DEV_OK: break;
        case DEV_EMPTY: continue;
        case DEV_FIXED: what = "device name"; break;
        case DEV_LOST: lost = 1; break;
        }
        ndev = d + 1;
    }
    if (L->ndev != ndev && (L->ndev > GPUMEM_MAX_DEV || L->ndev < ndev)) { L->ndev = ndev; what = "device count"; }
    uint32_t top = 0;
    for (uint32_t i = 0; i < LEDGER_SLOTS; i++) {
        uint32_t u = __atomic_load_n(&L->slot[i].in_use, __ATOMIC_ACQUIRE);
        if (u > 1) {   /* in use: reclaim decides by its lock */
            __atomic_store_n(&L->slot[i].in_use, 1, __ATOMIC_RELEASE);
            what = "slot state";
        }
        if (u) top = i + 1;
    }
    uint32_t hw = __atomic_load_n(&L->hiwater, __ATOMIC_ACQUIRE), want = hw > LEDGER_SLOTS ? LEDGER_SLOTS : hw;
    if (want < top) want = top;
    if (want != hw) {
        __atomic_store_n(&L->hiwater, want, __ATOMIC_RELEASE);
        what = "slot range";
    }
    for (int d = 0; d < GPUMEM_MAX_DEV; d++) {
        uint64_t sum = 0;
        for (uint32_t i = 0; i < top; i++) if (L->slot[i].in_use) sum = add_sat(sum, L->slot[i].used[d]);
        if (L->dev[d].used != sum) {
            __atomic_store_n(&L->dev[d].used, sum, __ATOMIC_RELEASE);   /* ledger_usage reads without the lock */
            what = "device totals";
        }
        if (sum && !L->dev[d].uuid[0] && !L->dev[d].check) lost = 1;   /* bytes on a device nobody can name */
    }
    static int said;
    if (what && !said++) note(LOG_WARN, "ledger %s was inconsistent (%s); repaired from its slots", L_path, what);
    if (lost != L_lost) {
        L_lost = lost;
        if (lost) note(LOG_ERROR, "ledger %s holds a device entry it cannot repair while live processes use it: "
                       "allocations on limited devices are refused until they exit and it is rebuilt", L_path);
    }
}

/* the file shrank under us (truncated): stop using it, fail closed (said once) */
static int check_size_locked(void)
{
    struct stat st;
    int fd = __atomic_load_n(&L_fd, __ATOMIC_ACQUIRE);
    if (fd < 0 || !is_ledger_file(fd) || ledger_fstat(fd, &st) != 0 || st.st_size >= (off_t)sizeof(struct ledger)) return 0;
    ledger_guard_trip();
    return 1;
}

/* under the lock: slot s's bytes out of the ledger (garbage bytes may take more than the total
 * holds: repair_locked, after, sets the totals to the live slots' sums) */
static void uncharge_slot_locked(struct lslot *s, const char *whose)
{
    for (int d = 0; d < GPUMEM_MAX_DEV; d++) {
        uint64_t u = s->used[d];
        if (!u) continue;
        char h[64];
        note(LOG_INFO, "reclaimed %s on ledger device %d from %s process %d", gpumem_human(u, h, sizeof h), d, whose, (int)s->pid);
        s->used[d] = 0;
        uint64_t t = L->dev[d].used;
        __atomic_store_n(&L->dev[d].used, t >= u ? t - u : 0, __ATOMIC_RELEASE);
    }
}

/* under the lock: give back the share of every slot whose owner died, and restore the invariants;
 * returns slots freed */
static int reclaim_locked(void)
{
    int n = 0;
    if (check_size_locked()) return 0;
    if (ledger_fd_ok()) {   /* else we cannot tell the dead: keep everyone */
        uint32_t hw = __atomic_load_n(&L->hiwater, __ATOMIC_ACQUIRE);
        for (int i = 0; i < (int)hw && i < LEDGER_SLOTS; i++) {
            struct lslot *s = &L->slot[i];
            if (!__atomic_load_n(&s->in_use, __ATOMIC_ACQUIRE) || i == L_slot || slot_alive(i)) continue;
            uncharge_slot_locked(s, "dead");
            s->pid = 0;
            __atomic_store_n(&s->in_use, 0, __ATOMIC_RELEASE);   /* last: a claimer may take it now */
            n++;
        }
    }
    repair_locked();
    return n;
}

/* ---- our slot */


/* a slot that changes hands gets a new generation, and with it a new owner word */
static void take_slot(int i, int adopted)
{
    struct lslot *s = &L->slot[i];
    uint32_t gen = __atomic_add_fetch(&s->gen, 1, __ATOMIC_ACQ_REL);
    L_me = OWNER(gen, i);
    L_adopted = adopted;
    if (!adopted) {
        memset(s->used, 0, sizeof s->used);
        s->denials = 0;
        s->pid = (int32_t)getpid();
    }
    __atomic_store_n(&L_slot, i, __ATOMIC_RELEASE);
}

static void raise_hiwater(uint32_t n)
{
    uint32_t hw = __atomic_load_n(&L->hiwater, __ATOMIC_RELAXED);
    while (hw < n && !__atomic_compare_exchange_n(&L->hiwater, &hw, n, 1, __ATOMIC_RELEASE, __ATOMIC_RELAXED))
        ;
}

/* The description our slot's OFD lock is taken on: a fresh open of the ledger, of which we map one
 * page and close the descriptor, so that the lock lasts exactly as long as the mapping (our life)
 * and no descriptor of the application's can end it.  A forked child unmaps its copy.  Classic
 * locks belong to the process and end with any close of the file: those go through L_fd. */
static void *L_pin;
static int L_lock_fd = -1;   /* overlayfs only: the descriptor our slot lock is on, kept open */

static int claim_fd(void)
{
    int fd = __atomic_load_n(&L_fd, __ATOMIC_ACQUIRE);
    if (fd < 0 || !L_ofd) return fd;
    char self[64];
    snprintf(self, sizeof self, "/proc/self/fd/%d", fd);
    int fresh = open(self, O_RDWR | O_CLOEXEC);
    if (!is_ledger_file(fresh)) {
        if (fresh >= 0) close(fresh);
        fresh = open(L_path, O_RDWR | O_CLOEXEC);
    }
    if (is_ledger_file(fresh)) return fresh;
    int e = fresh < 0 ? errno : 0;   /* 0: the path names another file now */
    if (fresh >= 0) close(fresh);
    errno = e;
    return -2;
}

/* the claim holds slot i's byte through cfd: keep it for life (0, errno set: cannot) */
static int pin_claim(int cfd)
{
    if (cfd < 0 || !L_ofd || !L_pin_ok) return 1;
    void *pin = mmap(NULL, 4096, PROT_READ, MAP_SHARED, cfd, 0);
    if (pin == MAP_FAILED) return 0;
    madvise(pin, 4096, MADV_DONTFORK);   /* children made without fork handlers get no copy */
    L_pin = pin;
    return 1;
}

/* Why a claim failed.  Only CLAIM_FULL means every slot is a live process's.  Each may pass (a
 * process exits, one out of descriptors closes some, memory comes back): every lock() while we
 * hold no slot claims again, and each cause is said once. */
enum claim { CLAIM_OK = 0, CLAIM_FULL, CLAIM_NO_FD, CLAIM_NO_MAP, CLAIM_NO_FILE, CLAIM_CAUSES };

/* errno of a failed open: 0 means the ledger's path names another file */
static enum claim no_fd(int *err)
{
    *err = errno;
    return *err ? CLAIM_NO_FD : CLAIM_NO_FILE;
}

/* Does the ledger's path still name the file we mapped?  A damaged ledger nobody held may have
 * been rebuilt (ledger_file.c) between our open and our slot's lock: a slot in the old file would
 * be a cap of its own.  Once our lock is taken, no rebuild can replace the file.  A path we cannot
 * open now (out of descriptors) is trusted: its identity was checked at the open. */
static int path_still_ours(void)
{
    if (__atomic_load_n(&L_fd, __ATOMIC_ACQUIRE) < 0) return 1;   /* a private ledger: no path */
    int fd = open(L_path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
    if (fd < 0) return errno != ENOENT && errno != ELOOP;
    int ours = is_ledger_file(fd);
    close(fd);
    return ours;
}

/* A free slot: its byte first, then in_use 0 -> 1 (a slot whose byte is free but in_use still set
 * is a dead process's that reclaim has not cleared).  With none free: adopt a dead process's slot,
 * whose bytes our first lock takes out of the totals. */
static enum claim claim_slot_now(int *err)
{
    if (!ledger_fd_ok()) return no_fd(err);
    int cfd = claim_fd();
    if (cfd == -2) return no_fd(err);
    int got = -1, adopted = 0;
    enum claim why = CLAIM_FULL;
    for (int i = 0; i < debug_slots && got < 0; i++) {
        struct lslot *s = &L->slot[i];
        if (__atomic_load_n(&s->in_use, __ATOMIC_ACQUIRE) || !slot_take_byte(cfd, i)) continue;
        raise_hiwater((uint32_t)i + 1);   /* before in_use: scans see it */
        uint32_t zero = 0;
        if (__atomic_compare_exchange_n(&s->in_use, &zero, 1, 0, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED)) got = i;
        else slot_drop_byte(cfd, i);
    }
    for (int i = 0; i < debug_slots && got < 0 && cfd >= 0; i++)
        if (__atomic_load_n(&L->slot[i].in_use, __ATOMIC_ACQUIRE) && slot_take_byte(cfd, i)) {
            got = i;
            adopted = 1;
        }
    if (got >= 0 && !path_still_ours()) {   /* rebuilt between our open and our lock: not the ledger */
        *err = 0;
        why = CLAIM_NO_FILE;
        if (!adopted) __atomic_store_n(&L->slot[got].in_use, 0, __ATOMIC_RELEASE);
        slot_drop_byte(cfd, got);
        got = -1;
    }
    if (got >= 0 && !pin_claim(cfd)) {   /* cannot keep the lock: give the slot back */
        *err = errno;
        why = CLAIM_NO_MAP;
        if (!adopted) __atomic_store_n(&L->slot[got].in_use, 0, __ATOMIC_RELEASE);
        slot_drop_byte(cfd, got);
        got = -1;
    }
    if (got >= 0 && cfd >= 0 && L_ofd && !L_pin_ok) {
        L_lock_fd = move_high(cfd);   /* overlayfs: the open descriptor holds the lock */
    } else if (cfd >= 0 && cfd != __atomic_load_n(&L_fd, __ATOMIC_ACQUIRE)) {
        close(cfd);
    }
    if (got < 0) return why;
    take_slot(got, adopted);
    return CLAIM_OK;
}

/* fcntl-style locks belong to the process (or to our one file description): our threads take
 * turns claiming; reset in a forked child */
static int claim_mu;
static int claim_said[CLAIM_CAUSES];   /* each cause once a process, not once an allocation */
static int claim_refused;              /* a claim failed since the last that did not: say when it is over */

void ledger_fork_prepare(void)
{
    while (__atomic_exchange_n(&init_mu, 1, __ATOMIC_ACQUIRE)) sched_yield();
    while (__atomic_exchange_n(&claim_mu, 1, __ATOMIC_ACQUIRE)) sched_yield();
}

void ledger_fork_parent(void)
{
    __atomic_store_n(&claim_mu, 0, __ATOMIC_RELEASE);
    __atomic_store_n(&init_mu, 0, __ATOMIC_RELEASE);
}

/* One line for a failed claim, naming its cause.  No other process's pid: the slots' owners are
 * none of the reader's business, and a pid seen from another namespace would mislead. */
static void say_claim_failed(enum claim why, int err)
{
    if (__atomic_exchange_n(&claim_said[why], 1, __ATOMIC_ACQ_REL)) return;
    if (why == CLAIM_FULL)
        gpumem_log(LOG_ERROR, "ledger has no free process slot (%d live processes share it): allocations on "
                   "limited devices are refused until one is free", debug_slots);
    else if (why == CLAIM_NO_FILE)
        gpumem_log(LOG_ERROR, "cannot claim a ledger slot: %s is no longer the ledger file; allocations on limited "
                   "devices are refused until it can", L_path);
    else
        gpumem_log(LOG_ERROR, "cannot claim a ledger slot: %s (%s); allocations on limited devices are refused "
                   "until it can", strerror(err), why == CLAIM_NO_FD ? "opening the ledger file" : "mapping its lock page");
}

/* 0 once we hold a slot, else why not (said once per cause) */
static enum claim claim_slot(void)
{
    enum claim why = CLAIM_OK;
    int err = 0;
    uint64_t t0 = gpumem_startup_begin();
    while (__atomic_exchange_n(&claim_mu, 1, __ATOMIC_ACQUIRE)) sched_yield();
    if (__atomic_load_n(&L_slot, __ATOMIC_ACQUIRE) < 0) why = claim_slot_now(&err);
    __atomic_store_n(&claim_mu, 0, __ATOMIC_RELEASE);
    gpumem_startup_end(SP_SLOT, t0);
    if (why != CLAIM_OK) {
        say_claim_failed(why, err);
        __atomic_store_n(&claim_refused, 1, __ATOMIC_RELEASE);
    } else if (__atomic_exchange_n(&claim_refused, 0, __ATOMIC_ACQ_REL)) {
        LOG(LOG_WARN, "claimed a ledger slot at last: allocations on limited devices are no longer refused for want of one");
    }
    return why;
}

/* under the lock, once a process: check the ledger it opened (and once a slot: a slot adopted
 * from a dead process still holds its bytes) */
static int L_checked;
static void first_lock_locked(void)
{
    if (L_adopted) {
        struct lslot *s = &L->slot[L_slot];
        uncharge_slot_locked(s, "dead (slot adopted)");
        s->pid = (int32_t)getpid();
        s->denials = 0;
        __atomic_store_n(&s->in_use, 1, __ATOMIC_RELEASE);   /* a reclaim may have cleared it meanwhile */
        L_adopted = 0;
    }
    if (!L_checked) {
        L_checked = 1;
        reclaim_locked();   /* dead slots, field ranges, totals = sums */
    } else {
        repair_locked();   /* the adopted slot's bytes out of the totals */
    }
}

/* ---- the lock */

/* how many of our threads hold the lock (0 or 1): a word naming our own slot that none of our
 * threads holds is garbage, not another thread's */
static int L_held;

/* Is the holder named by owner word w still running?  Ours is when one of our threads holds it; a
 * word that names no slot in use is garbage; a slot that has changed hands since (another
 * generation, ours included) is not; else its byte lock tells. */
static int owner_alive(uint32_t w)
{
    if (w == L_me) return __atomic_load_n(&L_held, __ATOMIC_ACQUIRE) != 0;
    int slot = OWNER_SLOT(w);
    if (slot < 0 || slot >= LEDGER_SLOTS || !__atomic_load_n(&L->slot[slot].in_use, __ATOMIC_ACQUIRE)) return 0;
    if ((__atomic_load_n(&L->slot[slot].gen, __ATOMIC_ACQUIRE) & OWNER_GEN_MASK) != w >> OWNER_SLOT_BITS) return 0;
    return !ledger_fd_ok() || slot_alive(slot);
}

/* A live holder keeps the lock for microseconds.  Past this, it is stopped (a debugger, SIGSTOP),
 * or the word is garbage that happens to name a live process: the call is refused rather than
 * waiting on (the named process takes the word over at its own next lock, ending it). */
#define LOCK_WAIT_NS (5ull * 1000000000ull)

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Contended: spin briefly, then yield, then poll; every so often ask whether the holder died,
 * and if so take the lock over and repair what it may have left half-done.  0: ours; -1: waited
 * LOCK_WAIT_NS (plus any debug sleep) on a live holder. */
static uint32_t L_stuck;   /* the word of the last wait that ran out: refused at once while it stays */
static int lock_slow(uint32_t me)
{
    uint64_t deadline = 0;
    for (unsigned spins = 1; ; spins++) {
        uint32_t cur = __atomic_load_n(&L->owner, __ATOMIC_RELAXED);
        if (cur == 0) {
            if (__atomic_compare_exchange_n(&L->owner, &cur, me, 0, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED)) return 0;
            continue;
        }
        if (spins % 64 == 0) {
            if (!owner_alive(cur)) {
                if (!__atomic_compare_exchange_n(&L->owner, &cur, me, 0, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED)) continue;
                note(LOG_WARN, "a process died holding the ledger lock, or its word was damaged; recovering");
                reclaim_locked();
                return 0;
            }
            if (cur == __atomic_load_n(&L_stuck, __ATOMIC_RELAXED)) return -1;
            uint64_t now = mono_ns();
            if (!deadline) deadline = now + LOCK_WAIT_NS + 1000ull * (debug_sleep_us + debug_release_sleep_us);
            else if (now > deadline) {
                static int said;
                if (!__atomic_exchange_n(&said, 1, __ATOMIC_ACQ_REL))
                    gpumem_log(LOG_ERROR, "the ledger lock has been held for over %llu s by a live process (slot %d): "
                               "this allocation is refused, not waited for", LOCK_WAIT_NS / 1000000000ull, OWNER_SLOT(cur));
                __atomic_store_n(&L_stuck, cur, __ATOMIC_RELAXED);
                return -1;
            }
        }
        if (spins < 2048) sched_yield();
        else usleep(50);
    }
}

static void unlock(void);

static void say_broken(void)
{
    static int said;
    if (!__atomic_exchange_n(&said, 1, __ATOMIC_ACQ_REL))
        gpumem_log(LOG_ERROR, "the ledger %s shrank under this process (truncated by another program): allocations on "
                   "limited devices are refused for the rest of its life", L_path);
}

static int lock(void)
{
    if (__builtin_expect(__atomic_load_n(&ledger_broken, __ATOMIC_ACQUIRE), 0)) { say_broken(); return -1; }
    /* no ledger yet: open it, again at every call until it opens (a failure may have passed) */
    if (__builtin_expect(!__atomic_load_n(&L, __ATOMIC_ACQUIRE), 0) && !ledger_open()) return -1;
    /* without a slot, claim one again at every call: a failure may have passed */
    if (__builtin_expect(__atomic_load_n(&L_slot, __ATOMIC_ACQUIRE) < 0, 0) && claim_slot() != CLAIM_OK) return -1;
    uint32_t me = L_me, free_ = 0;
    if (!__atomic_compare_exchange_n(&L->owner, &free_, me, 0, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED) && lock_slow(me) != 0)
        return -1;
    __atomic_store_n(&L_held, 1, __ATOMIC_RELAXED);
    /* the file's last word: zero or a fault (SIGBUS, caught) once the file was cut short */
    if (__builtin_expect(__atomic_load_n(&L->tail, __ATOMIC_RELAXED) != LEDGER_TAIL, 0)) ledger_guard_trip();
    if (__builtin_expect(L_adopted | !L_checked, 0)) first_lock_locked();
    if (__builtin_expect(__atomic_load_n(&ledger_broken, __ATOMIC_ACQUIRE), 0)) {   /* it tripped in there */
        unlock();
        say_broken();
        return -1;
    }
    return 0;
}

static void unlock(void)
{
    __atomic_store_n(&L_held, 0, __ATOMIC_RELAXED);
    if (__builtin_expect(!notes_len, 1)) {
        __atomic_store_n(&L->owner, 0, __ATOMIC_RELEASE);
        return;
    }
    char out[sizeof notes];
    size_t n = notes_len;
    memcpy(out, notes, n);
    notes_len = 0;
    __atomic_store_n(&L->owner, 0, __ATOMIC_RELEASE);
    for (size_t i = 0; i < n;) {
        char *nl = memchr(out + i, '\n', n - i);
        size_t end = nl ? (size_t)(nl - out) : n;
        out[end] = 0;
        gpumem_log(out[i] - '0', "%s", out + i + 1);
        i = end + 1;
    }
}

int ledger_device(const char *uuid, uint64_t total)
{
    if (lock() != 0) return -1;   /* no slot (said): the caller tries again later */
    int found = -1;
    for (uint32_t d = 0; d < L->ndev && d < GPUMEM_MAX_DEV; d++)
        if (!strncmp(L->dev[d].uuid, uuid, sizeof L->dev[d].uuid - 1)) { found = (int)d; break; }
    for (uint32_t d = L->ndev; found < 0 && d < GPUMEM_MAX_DEV; d++) {
        struct ldev *v = &L->dev[d];
        if (v->uuid[0] || v->uuid_copy[0] || v->check || v->used) continue;   /* not empty: damage, kept for repair */
        found = (int)d;
        snprintf(v->uuid, sizeof v->uuid, "%s", uuid);
        memcpy(v->uuid_copy, v->uuid, sizeof v->uuid);
        v->check = ledger_uuid_hash(v->uuid, sizeof v->uuid);
        __atomic_store_n(&L->ndev, d + 1, __ATOMIC_RELEASE);
    }
    if (found >= 0 && total) L->dev[found].total = total;
    unlock();
    if (found < 0) LOG(LOG_ERROR, "ledger is full of devices; %s cannot be shared", uuid);
    return found < 0 ? -2 : found;   /* devices never leave the ledger: that is for good */
}

int ledger_lookup(const char *uuid, uint64_t *total)
{
    if (lock() != 0) return -1;
    int found = -1;
    for (uint32_t d = 0; d < L->ndev && d < GPUMEM_MAX_DEV; d++)
        if (!strncmp(L->dev[d].uuid, uuid, sizeof L->dev[d].uuid - 1) && L->dev[d].total) {
            found = (int)d;
            *total = L->dev[d].total;
            break;
        }
    unlock();
    return found;
}

int ledger_reserve(int ldev, uint64_t bytes, uint64_t cap, uint64_t *used_out)
{
    *used_out = 0;
    if (ldev < 0 || ldev >= GPUMEM_MAX_DEV) return -1;
    if (lock() != 0) return -2;
    int s = L_slot;
    uint64_t used = L->dev[ldev].used;
    for (int attempt = 0; ; attempt++) {
        used = L->dev[ldev].used;
        if (used <= cap && bytes <= cap - used && !L_lost) break;
        if (attempt > 0 || !reclaim_locked()) { unlock(); *used_out = used; return -1; }
    }
    if (L->dev[ldev].cap != cap) L->dev[ldev].cap = cap;   /* for readers (gpumem-ledger) */
    if (s >= 0) L->slot[s].used[ldev] += bytes;       /* slot first, then the total */
    if (debug_sleep_us) debug_sleep("reserve", debug_sleep_us);
    __atomic_store_n(&L->dev[ldev].used, used + bytes, __ATOMIC_RELEASE);
    unlock();
    *used_out = used;
    return 0;
}

/* bytes the driver already took and keeps whatever the caller is answered (a green context that
 * passed the cap): added without the cap's check, so that nothing more fits until they go */
void ledger_charge_held(int ldev, uint64_t bytes)
{
    if (ldev < 0 || ldev >= GPUMEM_MAX_DEV || !bytes || lock() != 0) return;
    if (!L_lost) {
        if (L_slot >= 0) L->slot[L_slot].used[ldev] += bytes;   /* slot first, then the total */
        __atomic_store_n(&L->dev[ldev].used, L->dev[ldev].used + bytes, __ATOMIC_RELEASE);
    }
    unlock();
}

/* one refusal for the cap, counted on our slot for readers (`gpumem-compose top`): our own slot
 * only, so an atomic add without the lock */
void ledger_denied(void)
{
    struct ledger *l = __atomic_load_n(&L, __ATOMIC_ACQUIRE);
    int s = __atomic_load_n(&L_slot, __ATOMIC_ACQUIRE);
    if (l && s >= 0) __atomic_add_fetch(&l->slot[s].denials, 1, __ATOMIC_RELAXED);
}

void ledger_release(int ldev, uint64_t bytes)
{
    if (ldev < 0 || ldev >= GPUMEM_MAX_DEV || !bytes || lock() != 0) return;
    if (L_slot >= 0) {
        uint64_t *u = &L->slot[L_slot].used[ldev];
        if (bytes > *u) bytes = *u;   /* never give back more than we hold */
        *u -= bytes;
    }
    if (debug_release_sleep_us) debug_sleep("release", debug_release_sleep_us);
    uint64_t t = L->dev[ldev].used;
    __atomic_store_n(&L->dev[ldev].used, t >= bytes ? t - bytes : 0, __ATOMIC_RELEASE);
    unlock();
}

uint64_t ledger_usage(int ldev)
{
    if (ldev < 0 || ldev >= GPUMEM_MAX_DEV) return 0;
    struct ledger *l = __atomic_load_n(&L, __ATOMIC_ACQUIRE);
    /* an index comes from an open ledger, so this cannot be; were it, nothing is free */
    if (!l || __atomic_load_n(&ledger_broken, __ATOMIC_ACQUIRE)) return UINT64_MAX;
    return __atomic_load_n(&l->dev[ldev].used, __ATOMIC_ACQUIRE);
}

void ledger_reclaim(void)
{
    if (lock() != 0) return;
    reclaim_locked();
    unlock();
}

/* A forked child owns none of the parent's memory: it takes a new slot on first use.  Its copy of
 * the pinned page would keep the parent's slot lock alive after the parent: unmap it (the shared
 * descriptor and main mapping hold no lock).  A private (fallback) ledger is the parent's copy:
 * start it over.  No ledger yet (the parent's tries failed): the child tries on its own. */
void ledger_after_fork_child(void)
{
    L_slot = -1;
    L_me = 0;
    L_held = 0;
    L_adopted = 0;
    claim_mu = 0;
    init_mu = 0;
    memset(claim_said, 0, sizeof claim_said);   /* a new process: it says its own */
    claim_refused = 0;
    memset(open_said, 0, sizeof open_said);
    open_refused = 0;
    notes_len = 0;
    if (L_pin) {
        munmap(L_pin, 4096);
        L_pin = NULL;
    }
    if (L_lock_fd >= 0) {   /* the parent's lock: not ours to keep alive */
        close(L_lock_fd);
        L_lock_fd = -1;
    }
    if (L && L_fd < 0) ledger_layout_init(L);
}
