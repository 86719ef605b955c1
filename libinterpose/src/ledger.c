/* The one ledger: a file under GPUMEM_STATE_DIR, mmap'd MAP_SHARED by every process of the
 * container.  Per-device totals plus one slot per process with its per-device bytes.
 *
 * - check-and-reserve runs under the ledger lock: one word in the file naming its holder by its
 *   slot (taken before the lock, without it), taken with a CAS and given back with a store.  A waiter
 *   that finds the holder dead takes the lock over and recomputes the totals from the slots (a
 *   slot is always updated before the total).  A robust pthread mutex did the same at about
 *   20 ns more per alloc+free pair (bench/RESULTS.md);
 * - a process holds an fcntl write lock on its slot's first byte for its whole life; the kernel
 *   drops it at death (before any reaping), so F_GETLK tells a dead slot from a live one, zombies
 *   included;
 * - dead slots are reclaimed lazily: on slot allocation, and when a reservation would be refused. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include "gpumem.h"

#define LEDGER_MAGIC 0x6770756d656d4c31ULL /* "gpumemL1" */
#define LEDGER_VERSION 2
#define LEDGER_SLOTS 1024
#define LEDGER_NAME "ledger-v2"

struct ldev { char uuid[64]; uint64_t used; uint64_t total; /* cuDeviceTotalMem, for NVML-only processes */ };
struct lslot { int32_t pid; uint32_t in_use; uint64_t used[GPUMEM_MAX_DEV]; };
struct ledger {
    uint64_t magic;
    uint32_t version, size;
    uint32_t ndev, nslots;
    uint32_t hiwater;        /* slots at or past this index were never used: scans stop here */
    uint32_t owner;          /* the lock: 0 free, slot + 1, or OWNER_PID | pid (no slot yet) */
    char pad[64];
    struct ldev dev[GPUMEM_MAX_DEV];
    struct lslot slot[LEDGER_SLOTS];
};

static struct ledger *L;          /* the mapping (shared file, or private fallback) */
static int L_fd = -1;             /* ledger file; never closed while we hold our slot lock */
static int L_slot = -1;           /* our slot, -1 until first use (and again in a forked child) */
static pthread_once_t L_once = PTHREAD_ONCE_INIT;
/* GPUMEM_DEBUG_LOCK_SLEEP_US / GPUMEM_DEBUG_RELEASE_SLEEP_US: sleep inside the critical section
 * between the slot's update and the total's, so tests can kill us mid-update */
static unsigned debug_sleep_us, debug_release_sleep_us;

static void debug_sleep(const char *what, unsigned us)
{
    gpumem_log(LOG_WARN, "debug: sleeping %u us inside the ledger lock (%s)", us, what);
    usleep(us);
}

static void init_ledger(struct ledger *l)
{
    memset(l, 0, sizeof *l);
    l->magic = LEDGER_MAGIC;
    l->version = LEDGER_VERSION;
    l->size = sizeof *l;
    l->nslots = LEDGER_SLOTS;
}

static void use_private(const char *why, const char *dir)
{
    if (why) LOG(LOG_WARN, "state dir %s unusable (%s): this process keeps its own ledger, so the cap "
                 "is per process, not shared", dir, why);
    void *p = mmap(NULL, sizeof(struct ledger), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {   /* last resort: a static ledger */
        static struct ledger fallback;
        p = &fallback;
    }
    init_ledger(p);
    if (L_fd >= 0) close(L_fd);
    L_fd = -1;
    __atomic_store_n(&L, (struct ledger *)p, __ATOMIC_RELEASE);
}

/* mkdir -p: missing parents 0755, the state dir itself 1777 so every uid of the container can
 * use it */
static int make_dirs(const char *dir)
{
    char p[4096];
    if (snprintf(p, sizeof p, "%s", dir) >= (int)sizeof p) { errno = ENAMETOOLONG; return -1; }
    for (char *c = p + 1; *c; c++) {
        if (*c != '/') continue;
        *c = 0;
        if (mkdir(p, 0755) != 0 && errno != EEXIST) return -1;
        *c = '/';
    }
    if (mkdir(p, 0777) == 0) chmod(p, 01777);
    else if (errno != EEXIST) return -1;
    return 0;
}

/* Open the ledger file, creating it atomically (initialised temp file, then link()). */
static int open_shared(const char *dir, const char **why)
{
    char path[4096], tmp[4200];
    if (snprintf(path, sizeof path, "%s/%s", dir, LEDGER_NAME) >= (int)sizeof path) { *why = "path too long"; return -1; }
    if (make_dirs(dir) != 0) { *why = strerror(errno); return -1; }
    int fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0 && errno == ENOENT) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        snprintf(tmp, sizeof tmp, "%s/.%s.%d.%ld", dir, LEDGER_NAME, (int)getpid(), (long)ts.tv_nsec);
        int t = open(tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
        if (t < 0) { *why = strerror(errno); return -1; }
        fchmod(t, 0666);
        int ok = ftruncate(t, sizeof(struct ledger)) == 0;
        void *p = ok ? mmap(NULL, sizeof(struct ledger), PROT_READ | PROT_WRITE, MAP_SHARED, t, 0) : MAP_FAILED;
        if (p != MAP_FAILED) {
            init_ledger(p);
            msync(p, sizeof(struct ledger), MS_SYNC);
            munmap(p, sizeof(struct ledger));
            if (link(tmp, path) != 0 && errno != EEXIST) ok = 0;
        } else {
            ok = 0;
        }
        int e = errno;
        unlink(tmp);
        close(t);
        if (!ok) { *why = strerror(e); return -1; }
        fd = open(path, O_RDWR | O_CLOEXEC);
    }
    if (fd < 0) { *why = strerror(errno); return -1; }
    off_t end = lseek(fd, 0, SEEK_END);   /* not fstat: that is fstat@GLIBC_2.33 */
    if (end < (off_t)sizeof(struct ledger)) { close(fd); *why = "ledger file has the wrong size"; return -1; }
    void *p = mmap(NULL, sizeof(struct ledger), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) { *why = strerror(errno); close(fd); return -1; }
    struct ledger *l = p;
    if (l->magic != LEDGER_MAGIC || l->version != LEDGER_VERSION || l->size != sizeof *l || l->nslots != LEDGER_SLOTS) {
        munmap(p, sizeof *l); close(fd); *why = "ledger file of another version"; return -1;
    }
    struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = (off_t)((char *)&l->slot[0] - (char *)l), .l_len = 1 };
    if (fcntl(fd, F_GETLK, &fl) != 0) {   /* liveness needs record locks */
        munmap(p, sizeof *l); close(fd); *why = "no file locks on it"; return -1;
    }
    L_fd = fd;
    __atomic_store_n(&L, l, __ATOMIC_RELEASE);
    return 0;
}

static void ledger_init(void)
{
    const char *dir = getenv("GPUMEM_STATE_DIR");
    if (!dir || !*dir) dir = "/dev/shm/gpumem";
    const char *s = getenv("GPUMEM_DEBUG_LOCK_SLEEP_US");
    if (s) debug_sleep_us = (unsigned)strtoul(s, NULL, 10);
    s = getenv("GPUMEM_DEBUG_RELEASE_SLEEP_US");
    if (s) debug_release_sleep_us = (unsigned)strtoul(s, NULL, 10);
    const char *why = NULL;
    if (open_shared(dir, &why) != 0) use_private(why, dir);
    else LOG(LOG_DEBUG, "ledger %s/%s", dir, LEDGER_NAME);
}

static int slot_alive(int i)
{
    if (L_fd < 0) return 1;
    struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET,
                        .l_start = (off_t)((char *)&L->slot[i] - (char *)L), .l_len = 1 };
    if (fcntl(L_fd, F_GETLK, &fl) != 0) return 1;   /* cannot tell: keep it */
    return fl.l_type != F_UNLCK;
}

static void recompute_totals(void)
{
    for (int d = 0; d < GPUMEM_MAX_DEV; d++) {
        uint64_t sum = 0;
        for (uint32_t i = 0; i < L->hiwater && i < LEDGER_SLOTS; i++) if (L->slot[i].in_use) sum += L->slot[i].used[d];
        L->dev[d].used = sum;
    }
}

/* under the lock: give back the share of every slot whose owner died; returns slots freed */
static int reclaim_locked(void)
{
    int n = 0;
    for (int i = 0; i < (int)L->hiwater && i < LEDGER_SLOTS; i++) {
        struct lslot *s = &L->slot[i];
        if (!s->in_use || i == L_slot || slot_alive(i)) continue;
        for (int d = 0; d < GPUMEM_MAX_DEV; d++) {
            uint64_t u = s->used[d];
            if (!u) continue;
            char h[64];
            LOG(LOG_INFO, "reclaimed %s on ledger device %d from dead process %d", gpumem_human(u, h, sizeof h), d, (int)s->pid);
            L->dev[d].used = L->dev[d].used >= u ? L->dev[d].used - u : 0;
        }
        memset(s->used, 0, sizeof s->used);
        s->pid = 0;
        __atomic_store_n(&s->in_use, 0, __ATOMIC_RELEASE);   /* last: a claimer may take it now */
        n++;
    }
    return n;
}

/* ---- slots, taken without the ledger lock, so that every holder of the lock is named by a slot
 * whose liveness the kernel keeps (fcntl), in every pid namespace that shares the file: replicas
 * of an `ipc: host` service share one ledger but not their pids. */

static int byte_lock(int i, short type)
{
    struct flock fl = { .l_type = type, .l_whence = SEEK_SET,
                        .l_start = (off_t)((char *)&L->slot[i] - (char *)L), .l_len = 1 };
    return fcntl(L_fd, F_SETLK, &fl) == 0;
}

/* A free slot: its byte's fcntl lock first (one live process at a time can hold it), then
 * in_use 0 -> 1.  A slot whose byte is free but whose in_use is still set is a dead process's
 * that reclaim (under the ledger lock) has not cleared yet: not ours to take. */
static int claim_free_slot(void)
{
    for (int i = 0; i < LEDGER_SLOTS; i++) {
        struct lslot *s = &L->slot[i];
        if (__atomic_load_n(&s->in_use, __ATOMIC_ACQUIRE)) continue;
        if (L_fd >= 0 && !byte_lock(i, F_WRLCK)) continue;
        uint32_t hw = __atomic_load_n(&L->hiwater, __ATOMIC_RELAXED);   /* before in_use: scans see it */
        while (hw < (uint32_t)i + 1 &&
               !__atomic_compare_exchange_n(&L->hiwater, &hw, (uint32_t)i + 1, 1, __ATOMIC_RELEASE, __ATOMIC_RELAXED))
            ;
        uint32_t zero = 0;
        if (!__atomic_compare_exchange_n(&s->in_use, &zero, 1, 0, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED)) {
            if (L_fd >= 0) byte_lock(i, F_UNLCK);
            continue;
        }
        memset(s->used, 0, sizeof s->used);
        s->pid = (int32_t)getpid();
        return i;
    }
    return -1;
}

/* fcntl locks belong to the process, so our threads take turns claiming (reset in a forked child) */
static int claim_mu;

static void claim_slot(void)
{
    while (__atomic_exchange_n(&claim_mu, 1, __ATOMIC_ACQUIRE)) sched_yield();
    if (__atomic_load_n(&L_slot, __ATOMIC_ACQUIRE) < 0) {
        int i = claim_free_slot();
        if (i >= 0) __atomic_store_n(&L_slot, i, __ATOMIC_RELEASE);
    }
    __atomic_store_n(&claim_mu, 0, __ATOMIC_RELEASE);
}

#define OWNER_PID 0x80000000u

static uint32_t my_owner_id(void)
{
    int slot = __atomic_load_n(&L_slot, __ATOMIC_ACQUIRE);
    return slot >= 0 ? (uint32_t)slot + 1 : OWNER_PID | (uint32_t)getpid();
}

/* Is the lock's holder still running?  A slot holder is alive while its fcntl lock is held (the
 * kernel drops it at death, zombies included).  A holder without a slot (all 1024 taken) is named
 * by pid: gone, or a zombie, is dead; that test is only right within one pid namespace.  We
 * ourselves (another of our threads) are alive: F_GETLK does not report our own locks. */
static int owner_alive(uint32_t owner)
{
    if (!(owner & OWNER_PID)) {
        int slot = (int)owner - 1;
        return slot == __atomic_load_n(&L_slot, __ATOMIC_ACQUIRE) || slot < 0 || slot >= LEDGER_SLOTS || slot_alive(slot);
    }
    pid_t pid = (pid_t)(owner & ~OWNER_PID);
    if (pid == getpid()) return 1;
    if (kill(pid, 0) != 0 && errno == ESRCH) return 0;
    char path[64], buf[256];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 1;   /* cannot tell: keep waiting */
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return 1;
    buf[n] = 0;
    const char *paren = strrchr(buf, ')');   /* "pid (comm) S ...": comm may hold spaces */
    return !(paren && (paren[2] == 'Z' || paren[2] == 'X'));
}

/* Contended: spin briefly, then yield, then poll; every so often ask whether the holder died,
 * and if so take the lock over and repair what it may have left half-done. */
static int lock_slow(uint32_t me)
{
    for (unsigned spins = 1; ; spins++) {
        uint32_t cur = __atomic_load_n(&L->owner, __ATOMIC_RELAXED);
        if (cur == 0) {
            if (__atomic_compare_exchange_n(&L->owner, &cur, me, 0, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED)) return 0;
            continue;
        }
        if (spins % 64 == 0 && !owner_alive(cur)) {
            if (!__atomic_compare_exchange_n(&L->owner, &cur, me, 0, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED)) continue;
            LOG(LOG_WARN, "a process died holding the ledger lock; recovering");
            recompute_totals();
            reclaim_locked();
            return 0;
        }
        if (spins < 2048) sched_yield();
        else usleep(50);
    }
}

static int lock(void)
{
    if (__builtin_expect(!__atomic_load_n(&L, __ATOMIC_ACQUIRE), 0)) pthread_once(&L_once, ledger_init);
    if (__builtin_expect(__atomic_load_n(&L_slot, __ATOMIC_ACQUIRE) < 0, 0)) claim_slot();
    uint32_t me = my_owner_id(), free_ = 0;
    if (__atomic_compare_exchange_n(&L->owner, &free_, me, 0, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED)) return 0;
    return lock_slow(me);
}

static void unlock(void) { __atomic_store_n(&L->owner, 0, __ATOMIC_RELEASE); }

/* under the lock: our slot, claimed before the lock was taken; when none was free, clear out the
 * dead and try once more */
static int ensure_slot_locked(void)
{
    if (L_slot >= 0) return L_slot;
    if (reclaim_locked()) claim_slot();
    if (L_slot >= 0) return L_slot;
    LOG(LOG_ERROR, "ledger has no free process slot; this process's usage is charged without one");
    return -1;
}

int ledger_device(const char *uuid, uint64_t total)
{
    if (lock() != 0) return -1;
    int found = -1;
    for (uint32_t d = 0; d < L->ndev && d < GPUMEM_MAX_DEV; d++)
        if (!strncmp(L->dev[d].uuid, uuid, sizeof L->dev[d].uuid - 1)) { found = (int)d; break; }
    if (found < 0 && L->ndev < GPUMEM_MAX_DEV) {
        found = (int)L->ndev;
        snprintf(L->dev[found].uuid, sizeof L->dev[found].uuid, "%s", uuid);
        L->dev[found].used = 0;
        __atomic_store_n(&L->ndev, L->ndev + 1, __ATOMIC_RELEASE);
    }
    if (found >= 0 && total) L->dev[found].total = total;
    unlock();
    if (found < 0) LOG(LOG_ERROR, "ledger is full of devices; %s cannot be shared", uuid);
    return found;
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
    if (ldev < 0 || ldev >= GPUMEM_MAX_DEV || lock() != 0) { *used_out = 0; return -1; }
    int s = ensure_slot_locked();
    uint64_t used = L->dev[ldev].used;
    for (int attempt = 0; ; attempt++) {
        used = L->dev[ldev].used;
        if (used <= cap && bytes <= cap - used) break;
        if (attempt > 0 || !reclaim_locked()) { unlock(); *used_out = used; return -1; }
    }
    if (s >= 0) L->slot[s].used[ldev] += bytes;       /* slot first, then the total */
    if (debug_sleep_us) debug_sleep("reserve", debug_sleep_us);
    __atomic_store_n(&L->dev[ldev].used, used + bytes, __ATOMIC_RELEASE);
    unlock();
    *used_out = used;
    return 0;
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
    pthread_once(&L_once, ledger_init);
    return __atomic_load_n(&L->dev[ldev].used, __ATOMIC_ACQUIRE);
}

void ledger_reclaim(void)
{
    if (lock() != 0) return;
    reclaim_locked();
    unlock();
}

/* A forked child holds no fcntl lock and owns none of the parent's memory: it takes a new slot
 * on first use.  A private (fallback) ledger is the parent's copy: start it over. */
void ledger_after_fork_child(void)
{
    L_slot = -1;
    claim_mu = 0;   /* a parent thread may have held it at fork */
    if (L && L_fd < 0) init_ledger(L);
}
