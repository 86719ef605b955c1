/* Devices and their caps, the one allocation shape, and the context reserve.
 * A device is "limited" when GPUMEM_LIMIT or GPUMEM_LIMIT_<ordinal> applies to it; only
 * limited devices are accounted and reported differently. */
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include "fastpath.h"
#include "table.h"

struct gdev {
    CUdevice handle;
    int ord;
    char uuid[96];
    uint64_t real_total;
    int limited, bad;
    char why[128];   /* bad: what made it so, for the refusal lines */
    uint64_t cap;
    int ldev;        /* its ledger index; -1 while unregistered (bad, or no ledger slot yet) */
    /* contexts of this process on the device (under dev_mu) */
    int nctx, nprimary, ctx_charged;
    CUcontext primary_ctx;
    /* out-of-memory log rate limit (under oom_mu) */
    time_t oom_sec;
    unsigned oom_in_sec, oom_suppressed;
};

int gpumem_active;
/* 768 MiB: a PyTorch process on an H100 (driver 580) held 612 MiB outside its allocations after
 * torch.zeros and 692 MiB after cuBLAS and cuDNN ran (tests/gpu/RESULTS.md); less let two
 * containers at 0.5 each meet the card's end. */
static uint64_t ctx_reserve = 768ULL << 20;
static struct gdev devs[GPUMEM_MAX_DEV];
static int ndevs, devs_ready, devs_overflow;
static struct gdev overflow_dev = { .ord = -1, .limited = 1, .bad = 1, .ldev = -1,
                                    .why = "the device is past the ones this library follows" };
static pthread_mutex_t dev_mu = PTHREAD_MUTEX_INITIALIZER;   /* devices, contexts */
static pthread_mutex_t oom_mu = PTHREAD_MUTEX_INITIALIZER;   /* out-of-memory log rate (a leaf lock) */
static pthread_once_t init_once = PTHREAD_ONCE_INIT;

#define MAX_CTX 256
static struct { CUcontext ctx; int dev; } ctxs[MAX_CTX];   /* contexts made with cuCtxCreate* */
/* Green contexts (cuGreenCtxCreate, contexts.c): the CUcontext that stands for each
 * (cuCtxFromGreenCtx), its device, and the primary context that owns what is made in it: 1 GiB
 * allocated in a green context outlived it on an H200 and was freed by cuMemFree afterwards, so
 * such records are kept under the primary context and go with it (under green_mu, a leaf lock) */
#define MAX_GREEN 1024
static struct { void *green; CUcontext ctx, owner; int dev; } greens[MAX_GREEN];
static int ngreens;
static pthread_mutex_t green_mu = PTHREAD_MUTEX_INITIALIZER;
#define MAX_NVML 64
static struct { nvmlDevice_t h; struct gdev *dev; } nvml_map[MAX_NVML];
static int n_nvml;
static struct gdev nvml_devs[MAX_NVML];   /* devices an NVML-only process learned from the ledger */
static int n_nvml_devs;

/* driver entry points we call but do not hook */
typedef CUresult (*fn_int)(unsigned int);
typedef CUresult (*fn_count)(int *);
typedef CUresult (*fn_get)(CUdevice *, int);
typedef CUresult (*fn_uuid)(CUuuid *, CUdevice);
typedef CUresult (*fn_ctxdev)(CUdevice *);
typedef CUresult (*fn_ctxcur)(CUcontext *);
typedef CUresult (*fn_streamctx)(CUstream, CUcontext *);
typedef nvmlReturn_t (*fn_nvuuid)(nvmlDevice_t, char *, unsigned int);
static fn_ctxdev p_cuCtxGetDevice;
static fn_ctxcur p_cuCtxGetCurrent;
static fn_streamctx p_cuStreamGetCtx, p_cuStreamGetCtx_ptsz;

/* Per-thread memo of the last context's and the last stream's device.  cuCtxGetDevice,
 * cuStreamGetCtx and a search of our context tables cost more than the rest of a hook (on an
 * H100, before this memo: cuMemGetInfo +0.47 us, a cudaMallocAsync+cudaFreeAsync pair +0.4 us;
 * bench/RESULTS.md).  Any context or stream coming or going bumps memo_epoch, so a handle that
 * the driver reuses for another device is never answered from a stale memo. */
unsigned gpumem_memo_epoch;
#define memo_epoch gpumem_memo_epoch
static __thread struct { CUcontext ctx, owner; unsigned epoch; struct gdev *dev; } ctx_memo;
static __thread struct { CUstream s; int ptsz; unsigned epoch; CUcontext ctx; struct gdev *dev; } stream_memo;

void dev_memo_forget(void) { __atomic_add_fetch(&memo_epoch, 1, __ATOMIC_RELEASE); }

/* Per-thread credit of the stream-ordered hooks (cuMemAllocAsync and its kin, cuMemFreeAsync).
 * Bytes a thread frees into a pool stay charged to it, up to credit_max, and pay for its next
 * stream-ordered allocation on that device: a pool's alloc+free pair then takes no ledger lock
 * (two locked instructions a pair, about 20 ns of an H100's 0.6 us pair; bench/RESULTS.md).
 * The ledger never counts less than is allocated; it counts up to credit_max more per thread
 * that freed into a pool, handed back when the thread exits, frees on another device, or is
 * refused, and voided (handed back at its next use) when a device's contexts all go. */
__thread struct credit gpumem_credit;
unsigned gpumem_credit_epoch;
#define credit gpumem_credit
static pthread_key_t credit_key;
static pthread_once_t credit_key_once = PTHREAD_ONCE_INIT;
#define CREDIT_MAX_BYTES (64ULL << 20)

static uint64_t credit_max(const struct gdev *d)
{
    uint64_t m = d->cap / 256;   /* 32 MiB of an 8 GiB cap */
    return m < CREDIT_MAX_BYTES ? m : CREDIT_MAX_BYTES;
}

static void credit_return(void)
{
    if (credit.bytes) ledger_release(credit.d->ldev, credit.bytes);
    credit.bytes = 0;
}

/* Forgets the device and the destructor too: a destructor of another library that runs after this
 * one and frees into a pool would otherwise keep credit (credit_keep) that nothing hands back. */
static void credit_at_exit(void *unused)
{
    (void)unused;
    credit_return();
    credit.d = NULL;
    credit.keyed = 0;
}
static int credit_key_ok;
static void credit_key_make(void) { credit_key_ok = pthread_key_create(&credit_key, credit_at_exit) == 0; }

/* the thread's exit must hand its credit back: with no destructor to do it, keep none */
static int credit_armed(void)
{
    if (credit.keyed) return 1;
    pthread_once(&credit_key_once, credit_key_make);
    if (!credit_key_ok || pthread_setspecific(credit_key, &credit) != 0) return 0;
    credit.keyed = 1;
    return 1;
}

/* the contexts of a device all went: every thread's credit is handed back at its next use */
static void credit_void_all(void) { __atomic_add_fetch(&gpumem_credit_epoch, 1, __ATOMIC_RELEASE); }

/* bytes of d this thread no longer uses: a pool's small ones kept as credit, the rest given back */
static void give_back(struct gdev *d, uint64_t size, int pooled)
{
    uint64_t max = credit_max(d);
    if (pooled && size <= max && !d->bad && credit_armed()) {
        if (credit.d != d || !credit_valid(&credit)) {
            credit_return();
            /* the epoch first, then the context's charge: credit pays without charging the
             * context reserve, so none is set up for a device whose contexts went (a reset
             * clears ctx_charged before it bumps the epoch) */
            unsigned epoch = __atomic_load_n(&gpumem_credit_epoch, __ATOMIC_ACQUIRE);
            if (!__atomic_load_n(&d->ctx_charged, __ATOMIC_ACQUIRE)) {
                ledger_release(d->ldev, size);
                return;
            }
            credit.d = d;
            credit.ord = d->ord;
            credit.max = max;
            credit.epoch = epoch;
        }
        credit.bytes += size;
        if (credit.bytes <= max) return;
        size = credit.bytes - max;
        credit.bytes = max;
    }
    /* the pool keeps what its free handed back (up to its release threshold): still charged,
     * until a refusal trims the pool (pools.c) */
    if (pooled && d->ord >= 0 && !d->bad && __atomic_load_n(&d->ctx_charged, __ATOMIC_ACQUIRE)) pools_keep(d->ord, size);
    else ledger_release(d->ldev, size);
}

/* ---------------------------------------------------------------- init and fork */

static void fork_prepare(void) { pthread_mutex_lock(&dev_mu); pthread_mutex_lock(&oom_mu); track_fork_prepare(); ledger_fork_prepare(); }
static void fork_parent(void) { ledger_fork_parent(); track_fork_parent(); pthread_mutex_unlock(&oom_mu); pthread_mutex_unlock(&dev_mu); }
static void fork_child(void)
{
    track_after_fork_child();
    ledger_after_fork_child();
    pools_after_fork_child();
    credit.bytes = 0;   /* the parent's */
    dev_memo_forget();
    pthread_mutex_init(&dev_mu, NULL);
    pthread_mutex_init(&oom_mu, NULL);
    for (int i = 0; i < ndevs; i++) {
        devs[i].nctx = devs[i].nprimary = devs[i].ctx_charged = 0;
        devs[i].primary_ctx = NULL;
    }
    memset(ctxs, 0, sizeof ctxs);
    memset(greens, 0, sizeof greens);
    ngreens = 0;
    pthread_mutex_init(&green_mu, NULL);
}

static void init_once_fn(void)
{
    uint64_t t0 = gpumem_startup_begin();
    gpumem_log_init();
    gpumem_stats_init();
    gpumem_active = gpumem_limits_present();
    ctx_reserve = gpumem_parse_size_env("GPUMEM_CONTEXT_RESERVE", ctx_reserve);
    pthread_atfork(fork_prepare, fork_parent, fork_child);
    if (gpumem_active) LOG(LOG_DEBUG, "active; context reserve %llu bytes", (unsigned long long)ctx_reserve);
    gpumem_startup_end(SP_CTOR, t0);
}

static int init_done;

/* after the first call, a load and a branch: no call into libc on every hook */
void gpumem_init(void)
{
    if (__builtin_expect(__atomic_load_n(&init_done, __ATOMIC_ACQUIRE), 1)) return;
    pthread_once(&init_once, init_once_fn);
    __atomic_store_n(&init_done, 1, __ATOMIC_RELEASE);
}

__attribute__((constructor)) static void gpumem_ctor(void) { gpumem_init(); }

/* ---------------------------------------------------------------- devices */

static void format_uuid(const CUuuid *u, char *out, size_t len)
{
    const unsigned char *b = (const unsigned char *)u->bytes;
    snprintf(out, len, "GPU-%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
             b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]);
}

static void set_limit(struct gdev *d)
{
    const char *var, *val;
    struct limit l = gpumem_limit_for(d->ord, &var, &val);
    char h1[64], h2[64];
    switch (l.kind) {
    case LIMIT_NONE: d->limited = 0; return;
    case LIMIT_BAD:
        d->limited = d->bad = 1;
        d->cap = 0;
        snprintf(d->why, sizeof d->why, "%s=%s is malformed", var, val);
        gpumem_log(LOG_ERROR, "%s=%s is not a fraction (0.3), percent (30%%) or size (12GiB): every "
                   "allocation on device %d is refused", var, val, d->ord);
        return;
    case LIMIT_FRACTION:
        d->limited = 1;
        d->cap = (uint64_t)(l.fraction * (double)d->real_total);
        break;
    case LIMIT_BYTES:
        d->limited = 1;
        d->cap = l.bytes;
        if (d->cap > d->real_total) {
            LOG(LOG_INFO, "%s=%s is more than device %d holds; capping at its %s", var, val, d->ord,
                gpumem_human(d->real_total, h1, sizeof h1));
            d->cap = d->real_total;
        }
        break;
    }
    LOG(LOG_INFO, "device %d (%s): cap %s of %s (%s=%s)", d->ord, d->uuid, gpumem_human(d->cap, h1, sizeof h1),
        gpumem_human(d->real_total, h2, sizeof h2), var, val);
}

/* under dev_mu: d's entry in the ledger.  A ledger with no room for another device is so for
 * good (devices never leave it): d turns bad.  Registering without a ledger slot of this process
 * (a claim that failed for want of a descriptor, or a full ledger; the ledger said which) is
 * not: d stays unregistered, its allocations are refused, and the next one tries again. */
static void register_locked(struct gdev *d)
{
    if (d->bad || d->ldev >= 0) return;
    int ldev = ledger_device(d->uuid, d->real_total);
    if (ldev >= 0) {
        __atomic_store_n(&d->ldev, ldev, __ATOMIC_RELEASE);
        return;
    }
    if (ldev == -1) return;
    gpumem_log(LOG_ERROR, "no ledger entry for device %d: every allocation on it is refused", d->ord);
    snprintf(d->why, sizeof d->why, "the ledger has no room for it");
    __atomic_store_n(&d->bad, 1, __ATOMIC_RELEASE);
}

/* d unregistered (its first try found no ledger slot): one more try, a claim at most */
static void register_again(struct gdev *d)
{
    pthread_mutex_lock(&dev_mu);
    register_locked(d);
    pthread_mutex_unlock(&dev_mu);
}

static int registered(const struct gdev *d) { return __atomic_load_n(&d->ldev, __ATOMIC_ACQUIRE) >= 0; }

/* under dev_mu: learn the devices once the driver is initialised */
static int load_devices_locked(void)
{
    if (devs_ready) return 1;
    fn_count count = (fn_count)resolve_symbol(LIB_CUDA, "cuDeviceGetCount");
    fn_get get = (fn_get)resolve_symbol(LIB_CUDA, "cuDeviceGet");
    fn_uuid uuid = (fn_uuid)resolve_symbol(LIB_CUDA, "cuDeviceGetUuid");
    fn_cuDeviceTotalMem_v2 total = (fn_cuDeviceTotalMem_v2)hooks_real(H_cuDeviceTotalMem_v2);
    p_cuCtxGetDevice = (fn_ctxdev)resolve_symbol(LIB_CUDA, "cuCtxGetDevice");
    p_cuCtxGetCurrent = (fn_ctxcur)resolve_symbol(LIB_CUDA, "cuCtxGetCurrent");
    p_cuStreamGetCtx = (fn_streamctx)resolve_symbol(LIB_CUDA, "cuStreamGetCtx");
    p_cuStreamGetCtx_ptsz = (fn_streamctx)resolve_symbol(LIB_CUDA, "cuStreamGetCtx_ptsz");
    int n = 0;
    uint64_t tq = gpumem_startup_begin();
    int counted = count && count(&n) == CUDA_SUCCESS;
    gpumem_startup_end(SP_QUERIES, tq);
    if (!counted) return 0;   /* driver not initialised yet: later */
    if (n > GPUMEM_MAX_DEV) {
        gpumem_log(LOG_ERROR, "%d devices, this library follows %d: allocations on the others are refused", n, GPUMEM_MAX_DEV);
        n = GPUMEM_MAX_DEV;
        devs_overflow = 1;
    }
    for (int i = 0; i < n; i++) {
        struct gdev *d = &devs[i];
        CUuuid u;
        size_t t = 0;
        memset(d, 0, sizeof *d);
        d->ord = i;
        d->ldev = -1;
        d->handle = i;
        uint64_t tq = gpumem_startup_begin();
        int queried = get && uuid && total && get(&d->handle, i) == CUDA_SUCCESS && uuid(&u, d->handle) == CUDA_SUCCESS &&
                      total(&t, d->handle) == CUDA_SUCCESS;
        gpumem_startup_end(SP_QUERIES, tq);
        if (!queried) {
            const char *var, *val;
            if (gpumem_limit_for(i, &var, &val).kind == LIMIT_NONE) continue;   /* not limited: unaltered */
            gpumem_log(LOG_ERROR, "cannot query device %d (UUID, total memory): every allocation on it is refused", i);
            snprintf(d->why, sizeof d->why, "the device could not be queried");
            d->limited = d->bad = 1;
            continue;
        }
        format_uuid(&u, d->uuid, sizeof d->uuid);
        d->real_total = t;
        set_limit(d);
        if (d->limited) register_locked(d);
    }
    ndevs = n;
    __atomic_store_n(&devs_ready, 1, __ATOMIC_RELEASE);
    return 1;
}

static int load_devices(void)
{
    if (__atomic_load_n(&devs_ready, __ATOMIC_ACQUIRE)) return 1;
    pthread_mutex_lock(&dev_mu);
    uint64_t t0 = gpumem_startup_begin();
    int ok = load_devices_locked();
    gpumem_startup_end(SP_DEVICES, t0);
    pthread_mutex_unlock(&dev_mu);
    return ok;
}

static struct gdev *find_handle(CUdevice h)
{
    for (int i = 0; i < ndevs; i++) if (devs[i].handle == h) return &devs[i];
    return devs_overflow ? &overflow_dev : NULL;   /* past GPUMEM_MAX_DEV: fail closed */
}

struct gdev *dev_by_handle(CUdevice h)
{
    gpumem_init();
    if (!gpumem_active || !load_devices()) return NULL;
    struct gdev *d = find_handle(h);
    return d && d->limited ? d : NULL;
}

int dev_cap_of(CUdevice h, uint64_t *cap)
{
    struct gdev *d = dev_by_handle(h);
    if (!d || d->bad) return 0;
    *cap = d->cap;
    return 1;
}

/* the context that owns what is made in c: a green context's primary, else c itself; *d (when
 * asked) its device, for a green context */
static CUcontext green_owner(CUcontext c, struct gdev **d)
{
    CUcontext owner = c;
    if (!__atomic_load_n(&ngreens, __ATOMIC_ACQUIRE)) return c;
    pthread_mutex_lock(&green_mu);
    for (int i = 0; i < MAX_GREEN; i++)
        if (greens[i].green && greens[i].ctx == c) {
            if (greens[i].owner) owner = greens[i].owner;
            if (d) *d = &devs[greens[i].dev];
            break;
        }
    pthread_mutex_unlock(&green_mu);
    return owner;
}

void ctx_green_made(struct gdev *d, void *green, CUcontext gctx, CUcontext owner)
{
    int i;
    pthread_mutex_lock(&green_mu);
    for (i = 0; i < MAX_GREEN && greens[i].green; i++) {}
    if (i < MAX_GREEN) {
        greens[i].green = green;
        greens[i].ctx = gctx;
        greens[i].owner = owner;
        greens[i].dev = d->ord;
        __atomic_add_fetch(&ngreens, 1, __ATOMIC_ACQ_REL);
    }
    pthread_mutex_unlock(&green_mu);
    if (i == MAX_GREEN)
        LOG(LOG_WARN, "too many green contexts to follow; what is made in this one stays charged until freed");
    dev_memo_forget();
}

int ctx_green_gone(void *green, CUdevice *h)
{
    int found = 0;
    pthread_mutex_lock(&green_mu);
    for (int i = 0; i < MAX_GREEN && !found; i++)
        if (greens[i].green == green && green) {
            *h = devs[greens[i].dev].handle;
            greens[i].green = NULL;
            __atomic_sub_fetch(&ngreens, 1, __ATOMIC_ACQ_REL);
            found = 1;
        }
    pthread_mutex_unlock(&green_mu);
    dev_memo_forget();
    return found;
}

struct gdev *dev_current(void **ctx_out)
{
    *ctx_out = NULL;
    gpumem_init();
    if (!gpumem_active || !load_devices() || !p_cuCtxGetDevice || !p_cuCtxGetCurrent) return NULL;
    CUcontext c = NULL;
    if (p_cuCtxGetCurrent(&c) != CUDA_SUCCESS || !c) return NULL;   /* no context: nothing to charge */
    unsigned e = __atomic_load_n(&memo_epoch, __ATOMIC_ACQUIRE);
    struct gdev *d;
    if (ctx_memo.ctx == c && ctx_memo.epoch == e) {
        d = ctx_memo.dev;
    } else {
        CUdevice h;
        if (p_cuCtxGetDevice(&h) != CUDA_SUCCESS) return NULL;
        d = find_handle(h);
        ctx_memo.ctx = c;
        ctx_memo.owner = green_owner(c, NULL);
        ctx_memo.epoch = e;
        ctx_memo.dev = d;
    }
    if (!d || !d->limited) return NULL;
    *ctx_out = ctx_memo.owner;
    return d;
}

/* NVML-only process, GPUMEM_LIMIT alone: a CUDA process of the container registered the device's
 * total in the ledger, so the cap is known without initialising the driver here (under dev_mu) */
static struct gdev *nvml_dev_from_ledger_locked(const char *uuid)
{
    uint64_t total = 0;
    if (gpumem_device_limits_present() || n_nvml_devs >= MAX_NVML) return NULL;
    int ldev = ledger_lookup(uuid, &total);
    if (ldev < 0) return NULL;
    struct gdev *d = &nvml_devs[n_nvml_devs++];
    memset(d, 0, sizeof *d);
    d->ord = -1;
    snprintf(d->uuid, sizeof d->uuid, "%s", uuid);
    d->real_total = total;
    set_limit(d);
    d->ldev = ldev;
    return d->limited ? d : NULL;
}

/* the device of a context this process made or retained (a green context's too), or NULL;
 * *owner: the context that owns what is made in c */
static struct gdev *dev_of_ctx(CUcontext c, CUcontext *owner)
{
    struct gdev *d = NULL;
    pthread_mutex_lock(&dev_mu);
    for (int i = 0; i < ndevs && !d; i++) if (devs[i].primary_ctx == c) d = &devs[i];
    for (int i = 0; i < MAX_CTX && !d; i++) if (ctxs[i].ctx == c) d = &devs[ctxs[i].dev];
    pthread_mutex_unlock(&dev_mu);
    *owner = d ? c : green_owner(c, &d);
    return d;
}

struct gdev *dev_of_stream(CUstream s, int ptsz, void **ctx_out)
{
    /* NULL, CU_STREAM_LEGACY (1) and CU_STREAM_PER_THREAD (2) belong to the current context */
    if ((uintptr_t)s <= 2) return dev_current(ctx_out);
    unsigned e = __atomic_load_n(&memo_epoch, __ATOMIC_ACQUIRE);
    if (stream_memo.s == s && stream_memo.ptsz == ptsz && stream_memo.epoch == e) {   /* set only when active */
        *ctx_out = stream_memo.ctx;
        return stream_memo.dev->limited ? stream_memo.dev : NULL;
    }
    *ctx_out = NULL;
    gpumem_init();
    if (!gpumem_active || !load_devices()) return NULL;
    CUcontext c = NULL;
    fn_streamctx get = ptsz && p_cuStreamGetCtx_ptsz ? p_cuStreamGetCtx_ptsz : p_cuStreamGetCtx;
    CUcontext owner = NULL;
    struct gdev *d = get && get(s, &c) == CUDA_SUCCESS && c ? dev_of_ctx(c, &owner) : NULL;
    if (!d) return dev_current(ctx_out);   /* a context we never saw: the current one's device */
    stream_memo.s = s;
    stream_memo.ptsz = ptsz;
    stream_memo.epoch = e;
    stream_memo.ctx = owner;
    stream_memo.dev = d;
    *ctx_out = owner;
    return d->limited ? d : NULL;
}

struct gdev *dev_by_nvml(nvmlDevice_t h)
{
    gpumem_init();
    if (!gpumem_active) return NULL;
    for (int i = 0; i < __atomic_load_n(&n_nvml, __ATOMIC_ACQUIRE); i++)
        if (nvml_map[i].h == h) return nvml_map[i].dev;
    fn_nvuuid uuidf = (fn_nvuuid)resolve_symbol(LIB_NVML, "nvmlDeviceGetUUID");
    char u[96];
    if (!uuidf || uuidf(h, u, sizeof u) != NVML_SUCCESS) return NULL;
    struct gdev *found = NULL;
    if (!__atomic_load_n(&devs_ready, __ATOMIC_ACQUIRE)) {
        pthread_mutex_lock(&dev_mu);
        found = nvml_dev_from_ledger_locked(u);
        pthread_mutex_unlock(&dev_mu);
        if (!found) {
            /* otherwise initialise the driver to learn the caps; cuInit creates no context */
            fn_int init = (fn_int)resolve_symbol(LIB_CUDA, "cuInit");
            if (!init || init(0) != CUDA_SUCCESS || !load_devices()) {
                static int warned;
                if (!__atomic_exchange_n(&warned, 1, __ATOMIC_ACQ_REL))
                    LOG(LOG_WARN, "cannot initialise the CUDA driver to learn the caps; NVML memory is reported unaltered");
                return NULL;
            }
        }
    }
    if (!found)
        for (int i = 0; i < ndevs; i++) if (devs[i].limited && !strcmp(devs[i].uuid, u)) { found = &devs[i]; break; }
    pthread_mutex_lock(&dev_mu);
    if (n_nvml < MAX_NVML) {
        nvml_map[n_nvml].h = h;
        nvml_map[n_nvml].dev = found;
        __atomic_store_n(&n_nvml, n_nvml + 1, __ATOMIC_RELEASE);
    }
    pthread_mutex_unlock(&dev_mu);
    return found;
}

/* ---------------------------------------------------------------- the allocation shape */

/* Rate limit shared by the out-of-memory lines: the first ones always, then at most 5 a second
 * per device.  Fills `note` with the count of lines held back since the last one written. */
static int oom_log_allowed(struct gdev *d, char *note, size_t n)
{
    if (gpumem_log_level < LOG_WARN) return 0;
    time_t now = time(NULL);
    unsigned suppressed = 0;
    int emit;
    pthread_mutex_lock(&oom_mu);
    if (now != d->oom_sec) { d->oom_sec = now; d->oom_in_sec = 0; }
    emit = d->oom_in_sec++ < 5;
    if (emit) { suppressed = d->oom_suppressed; d->oom_suppressed = 0; }
    else d->oom_suppressed++;
    pthread_mutex_unlock(&oom_mu);
    note[0] = 0;
    if (emit && suppressed) snprintf(note, n, " (%u similar lines suppressed)", suppressed);
    return emit;
}

/* why: what refused it before the cap was asked, or NULL (the cap did, at usage used) */
static void log_oom(struct gdev *d, uint64_t req, uint64_t used, const char *why, const char *fn)
{
    char a[64], b[64], c[64], s[48];
    if (!oom_log_allowed(d, s, sizeof s)) return;
    if (why)
        gpumem_log(LOG_WARN, "out of memory on device %d: requested %s, refused because %s (%s)%s", d->ord,
                   gpumem_human(req, a, sizeof a), why, fn, s);
    else
        gpumem_log(LOG_WARN, "out of memory on device %d: requested %s, used %s of cap %s (%s)%s", d->ord,
                   gpumem_human(req, a, sizeof a), gpumem_human(used, b, sizeof b), gpumem_human(d->cap, c, sizeof c), fn, s);
}

/* The cap allowed it but the driver had no memory: the card itself is full (other containers,
 * or contexts larger than GPUMEM_CONTEXT_RESERVE).  Said, because it is not our cap. */
static void log_driver_oom(struct gdev *d, uint64_t req, const char *fn)
{
    char a[64], b[64], c[64], s[48];
    if (!oom_log_allowed(d, s, sizeof s)) return;
    gpumem_log(LOG_WARN, "out of memory on device %d: the driver refused %s within the cap (used %s of cap %s; %s): "
               "the card is full%s", d->ord, gpumem_human(req, a, sizeof a),
               gpumem_human(ledger_usage(d->ldev), b, sizeof b), gpumem_human(d->cap, c, sizeof c), fn, s);
}

#define NO_SLOT "this process holds no slot in the ledger yet"

/* fails closed: a device that is bad or unregistered, or a process without a ledger slot, is
 * refused as a full cap is */
static int reserve(struct gdev *d, uint64_t size, const char *fn)
{
    uint64_t used = 0;
    if (d->bad || !registered(d)) {
        log_oom(d, size, 0, d->bad ? d->why : NO_SLOT, fn);
        return -1;
    }
    int r = ledger_reserve(d->ldev, size, d->cap, &used);
    if (r == 0) return 0;
    if (r == -1 && credit.d == d && credit.bytes) {   /* our own credit first, then ask again */
        credit_return();
        r = ledger_reserve(d->ldev, size, d->cap, &used);
        if (r == 0) return 0;
    }
    if (r == -1 && d->ord >= 0) {   /* then what our pools keep unused: trimmed, and ask again */
        uint64_t back = pools_trim(d->ord, d->handle);
        if (back) {
            char h[64];
            LOG(LOG_INFO, "trimmed the pools of device %d: %s given back", d->ord, gpumem_human(back, h, sizeof h));
            ledger_release(d->ldev, back);
            r = ledger_reserve(d->ldev, size, d->cap, &used);
            if (r == 0) return 0;
        }
    }
    if (r == -1) ledger_denied();
    log_oom(d, size, used, r == -2 ? NO_SLOT : NULL, fn);
    return -1;
}

/* under dev_mu */
static int ctx_charge_locked(struct gdev *d, const char *fn)
{
    if (d->ctx_charged) return 0;
    if (ctx_reserve && reserve(d, ctx_reserve, fn) != 0) return -1;
    d->ctx_charged = 1;
    return 0;
}

static void ctx_uncharge_if_idle_locked(struct gdev *d)
{
    if (d->ctx_charged && d->nctx == 0 && d->nprimary == 0) {
        if (ctx_reserve) ledger_release(d->ldev, ctx_reserve);
        uint64_t kept = pools_drop(d->ord);   /* the pools went with the contexts */
        if (kept) ledger_release(d->ldev, kept);
        d->ctx_charged = 0;
        credit_void_all();
    }
}

CUresult charge_begin(struct charge *c, struct gdev *d, void *ctx, uint64_t size, int kind, const char *fn)
{
    int pooled = (kind & TK_POOLED) != 0;
    *c = (struct charge){ NULL, size, kind & ~TK_POOLED, pooled, ctx, fn };
    if (!d) return CUDA_SUCCESS;   /* a pooled one reaches here only when credit could not pay (allocs.c) */
    if (__builtin_expect(!registered(d), 0) && !d->bad) register_again(d);
    if (!__atomic_load_n(&d->ctx_charged, __ATOMIC_ACQUIRE) && !d->bad) {   /* first allocation */
        pthread_mutex_lock(&dev_mu);
        int e = ctx_charge_locked(d, fn);
        pthread_mutex_unlock(&dev_mu);
        if (e) return CUDA_ERROR_OUT_OF_MEMORY;
    }
    if (!(pooled && pools_take(d->ord, size)) && reserve(d, size, fn) != 0) return CUDA_ERROR_OUT_OF_MEMORY;
    c->d = d;
    return CUDA_SUCCESS;
}

/* charges that are no allocation (limits, modules, graphs): the shape above without a record */
CUresult dev_reserve_bytes(struct gdev *d, uint64_t size, const char *fn)
{
    struct charge c;
    return charge_begin(&c, d, NULL, size, TK_MEM, fn);
}

void dev_release_bytes(struct gdev *d, uint64_t size)
{
    if (d && size && registered(d)) ledger_release(d->ldev, size);
}

/* bytes the driver took past the cap and keeps whatever the caller is answered: charged anyway */
void dev_charge_held(struct gdev *d, uint64_t size)
{
    if (d && size && registered(d)) ledger_charge_held(d->ldev, size);
}

/* bytes of a record (its device's index) no longer held */
void dev_release_ord(int ord, uint64_t size)
{
    if (ord >= 0 && ord < ndevs) dev_release_bytes(&devs[ord], size);
}

int dev_ord(const struct gdev *d) { return d->ord; }
CUdevice dev_handle(const struct gdev *d) { return d->handle; }

void charge_settle(struct charge *c, uint64_t actual)
{
    if (c->d && actual < c->size) {
        ledger_release(c->d->ldev, c->size - actual);
        c->size = actual;
    }
}

void charge_end(struct charge *c, CUresult r, uint64_t key)
{
    if (!c->d) return;
    if (r == CUDA_SUCCESS) {
        track_add(key, c->kind, c->size, c->d->ord, c->ctx);
        return;
    }
    give_back(c->d, c->size, c->pooled);
    if (r == CUDA_ERROR_OUT_OF_MEMORY) log_driver_oom(c->d, c->size, c->fn);
}

int uncharge_begin(uint64_t key, int kind, struct track_rec *rec)
{
    if (!gpumem_active || !track_remove(key, kind & ~TK_POOLED, rec)) return 0;
    return kind & TK_POOLED ? 2 : 1;
}

void uncharge_end(int took, struct track_rec *rec, CUresult r)
{
    if (!took) return;
    if (r == CUDA_SUCCESS) give_back(&devs[rec->dev], rec->size, took == 2);
    else track_add(rec->key, rec->kind, rec->size, rec->dev, rec->ctx);   /* still allocated */
}

/* ---------------------------------------------------------------- contexts */

/* A context: the first of the process on a device is the context reserve (charged once, also
 * by a first allocation); every other one alive beside it costs one more reserve (a context took
 * 518-524 MiB on an H200, tests/gpu/RESULTS.md), recorded under the context itself so that its
 * teardown gives it back. */
CUresult ctx_create_begin(CUdevice h, int primary, struct gdev **dout, uint64_t *extra, const char *fn)
{
    *extra = 0;
    struct gdev *d = *dout = dev_by_handle(h);
    if (!d || d->bad) return CUDA_SUCCESS;
    pthread_mutex_lock(&dev_mu);
    register_locked(d);   /* unregistered: try again; without it, a reserve to charge is refused */
    int another = primary ? d->nprimary == 0 && d->nctx > 0 : d->nctx + (d->nprimary > 0) > 0;
    int e = ctx_charge_locked(d, fn);
    if (!e && another && ctx_reserve) {
        e = reserve(d, ctx_reserve, fn);
        if (!e) *extra = ctx_reserve;
    }
    pthread_mutex_unlock(&dev_mu);
    return e ? CUDA_ERROR_OUT_OF_MEMORY : CUDA_SUCCESS;
}

void ctx_create_end(struct gdev *d, CUresult r, CUcontext ctx, int primary, uint64_t extra)
{
    if (r == CUDA_SUCCESS) dev_memo_forget();
    if (!d) return;
    if (extra) {
        if (r == CUDA_SUCCESS) track_add((uintptr_t)ctx, TK_CTX, extra, d->ord, ctx);
        else ledger_release(d->ldev, extra);
    }
    pthread_mutex_lock(&dev_mu);
    if (r == CUDA_SUCCESS) {
        if (primary) {
            d->nprimary++;
            d->primary_ctx = ctx;
        } else {
            d->nctx++;
            int i;
            for (i = 0; i < MAX_CTX && ctxs[i].ctx; i++) {}
            if (i < MAX_CTX) { ctxs[i].ctx = ctx; ctxs[i].dev = d->ord; }
            else LOG(LOG_WARN, "too many contexts to follow; the reserve of this one stays charged");
        }
    } else {
        ctx_uncharge_if_idle_locked(d);
    }
    pthread_mutex_unlock(&dev_mu);
}

/* drop every allocation made in ctx (the driver freed them with it) */
static void drop_ctx_allocations(CUcontext ctx)
{
    if (!ctx) return;
    credit_return();   /* this thread's; a context going is rare, and credit outlives none */
    uint64_t bytes[GPUMEM_MAX_DEV] = { 0 };
    track_drop_ctx(ctx, bytes);
    for (int i = 0; i < ndevs; i++)
        if (bytes[i]) {
            char h[64];
            LOG(LOG_INFO, "context teardown returned %s on device %d", gpumem_human(bytes[i], h, sizeof h), i);
            ledger_release(devs[i].ldev, bytes[i]);
        }
}

void ctx_destroyed(CUcontext ctx)
{
    dev_memo_forget();
    if (!gpumem_active) return;
    drop_ctx_allocations(ctx);
    pthread_mutex_lock(&dev_mu);
    for (int i = 0; i < MAX_CTX; i++)
        if (ctxs[i].ctx == ctx && ctx) {
            struct gdev *d = &devs[ctxs[i].dev];
            ctxs[i].ctx = NULL;
            if (d->nctx > 0) d->nctx--;
            ctx_uncharge_if_idle_locked(d);
            break;
        }
    pthread_mutex_unlock(&dev_mu);
}

void ctx_primary_released(CUdevice h)
{
    dev_memo_forget();
    struct gdev *d = dev_by_handle(h);
    if (!d) return;
    pthread_mutex_lock(&dev_mu);
    if (d->nprimary > 0) d->nprimary--;
    CUcontext pc = d->nprimary == 0 ? d->primary_ctx : NULL;
    pthread_mutex_unlock(&dev_mu);
    if (!pc) return;
    drop_ctx_allocations(pc);
    pthread_mutex_lock(&dev_mu);
    ctx_uncharge_if_idle_locked(d);
    pthread_mutex_unlock(&dev_mu);
}

void ctx_primary_reset(CUdevice h)
{
    dev_memo_forget();
    struct gdev *d = dev_by_handle(h);
    if (!d) return;
    drop_ctx_allocations(d->primary_ctx);
    pthread_mutex_lock(&dev_mu);
    if (d->ctx_charged && d->nctx == 0) {   /* the context's own memory is gone until next use */
        if (ctx_reserve) ledger_release(d->ldev, ctx_reserve);
        uint64_t kept = pools_drop(d->ord);
        if (kept) ledger_release(d->ldev, kept);
        d->ctx_charged = 0;
        credit_void_all();
    }
    pthread_mutex_unlock(&dev_mu);
}

/* ---------------------------------------------------------------- reporting */

int dev_report(struct gdev *d, uint64_t real_free, uint64_t *free_out, uint64_t *total_out, uint64_t *used_out)
{
    if (!d) return 0;
    if (!d->bad && !registered(d)) register_again(d);
    if (d->bad || !registered(d)) {   /* malformed limit, or nothing counted yet: nothing is free */
        *total_out = d->bad ? d->real_total : d->cap;
        *free_out = 0;
        *used_out = *total_out;
        return 1;
    }
    /* not an allocation path: report without the share of dead processes (at most every 50 ms,
     * so a program polling cuMemGetInfo does not pay one fcntl per process each time) */
    static uint64_t last_reclaim_ns;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);   /* no clock read: a 50 ms rate needs none */
    uint64_t now = (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
    uint64_t last = __atomic_load_n(&last_reclaim_ns, __ATOMIC_RELAXED);
    if (!last || now - last > 50000000ULL) {
        __atomic_store_n(&last_reclaim_ns, now, __ATOMIC_RELAXED);
        ledger_reclaim();
    }
    if (d->ord >= 0 && pools_kept(d->ord)) {   /* what the pools gave back since */
        uint64_t back = pools_settle(d->ord, d->handle);
        if (back) ledger_release(d->ldev, back);
    }
    uint64_t used = ledger_usage(d->ldev);
    uint64_t f = d->cap > used ? d->cap - used : 0;
    *total_out = d->cap;
    *free_out = f < real_free ? f : real_free;
    /* a ledger that cannot be used answers UINT64_MAX (nothing free): no report says more is
     * used than the card the caller is shown holds */
    *used_out = used < d->cap ? used : d->cap;
    return 1;
}
