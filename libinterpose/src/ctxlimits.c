/* Context limits (cuCtxSetLimit): memory the driver takes for a context beyond its allocations.
 * The stack size is paid for every thread the device can hold at once: on an H200 (132 SMs of
 * 2048 threads) a 64 KiB stack took (64 KiB - 1 KiB) x 270336 = 16632 MiB when set, a malloc heap
 * its size at the first kernel, a printf FIFO at most its size (tests/gpu/RESULTS.md).  A raise is
 * charged before the driver is asked, the difference from the value the context had when first
 * seen, recorded under (context, limit): lowered, given back; the context's teardown drops it. */
#include <pthread.h>
#include "table.h"

#define LIMIT_STACK_SIZE 0
#define LIMIT_PRINTF_FIFO_SIZE 1
#define LIMIT_MALLOC_HEAP_SIZE 2
#define ATTR_MULTIPROCESSOR_COUNT 16
#define ATTR_MAX_THREADS_PER_MULTIPROCESSOR 39

typedef CUresult (*fn_attr)(int *, int, CUdevice);
typedef CUresult (*fn_getlimit)(size_t *, int);

/* threads the device holds at once: what one byte of stack costs */
static uint64_t resident_threads(CUdevice h)
{
    fn_attr attr = (fn_attr)resolve_symbol(LIB_CUDA, "cuDeviceGetAttribute");
    int sms = 0, per = 0;
    if (!attr || attr(&sms, ATTR_MULTIPROCESSOR_COUNT, h) != CUDA_SUCCESS ||
        attr(&per, ATTR_MAX_THREADS_PER_MULTIPROCESSOR, h) != CUDA_SUCCESS || sms <= 0 || per <= 0)
        return 2048ULL * 1024;   /* unknown: more than any device holds today (an H200: 270336) */
    return (uint64_t)sms * (uint64_t)per;
}

/* the value each (context, limit) had when first seen: charges count from it.  A handle the
 * driver hands out again for a new context finds its predecessor's, the same default. */
#define MAX_BASES 256
static struct { void *ctx; int limit; uint64_t base; } bases[MAX_BASES];
static int nbases;
static pthread_mutex_t bases_mu = PTHREAD_MUTEX_INITIALIZER;

static uint64_t limit_base(void *ctx, int limit)
{
    uint64_t base = 0;
    int found = 0;
    pthread_mutex_lock(&bases_mu);
    for (int i = 0; i < nbases && !found; i++)
        if (bases[i].ctx == ctx && bases[i].limit == limit) { base = bases[i].base; found = 1; }
    pthread_mutex_unlock(&bases_mu);
    if (found) return base;
    size_t now = 0;
    fn_getlimit get = (fn_getlimit)resolve_symbol(LIB_CUDA, "cuCtxGetLimit");
    if (!get || get(&now, limit) != CUDA_SUCCESS) return 0;   /* unknown: the whole value is charged */
    pthread_mutex_lock(&bases_mu);
    if (nbases < MAX_BASES) bases[nbases++] = (typeof(bases[0])){ ctx, limit, now };
    pthread_mutex_unlock(&bases_mu);
    return now;
}

/* the record of (ctx, limit): its size is the charge, its key the pair */
static uint64_t limit_key(void *ctx, int limit) { return ((uint64_t)(uintptr_t)ctx << 2) | (uint64_t)limit; }

int cuCtxSetLimit(int limit, size_t value)
{
    REAL(cuCtxSetLimit, CUDA_ERROR_NOT_FOUND);
    if (limit < LIMIT_STACK_SIZE || limit > LIMIT_MALLOC_HEAP_SIZE) return real_(limit, value);
    CURRENT_DEV();
    if (!dev_) return real_(limit, value);
    uint64_t key = limit_key(ctx_, limit);
    struct track_rec old = { 0 };
    int had = track_remove(key, TK_LIMIT, &old);
    uint64_t base = limit_base(ctx_, limit);
    uint64_t per = limit == LIMIT_STACK_SIZE ? resident_threads(dev_handle(dev_)) : 1;
    uint64_t want = value > base ? (value - base) * per : 0, have = had ? old.size : 0;
    if (want > have) {
        CUresult e = dev_reserve_bytes(dev_, want - have, "cuCtxSetLimit");
        if (e != CUDA_SUCCESS) {
            if (had) track_add(key, TK_LIMIT, have, dev_ord(dev_), ctx_);
            return e;
        }
    }
    CUresult r = real_(limit, value);
    if (limit == LIMIT_STACK_SIZE) __atomic_add_fetch(&gpumem_launch_epoch, 1, __ATOMIC_RELEASE);   /* launch.c's memos */
    uint64_t keep = r == CUDA_SUCCESS ? want : have;
    if (want > have && r != CUDA_SUCCESS) dev_release_bytes(dev_, want - have);
    if (r == CUDA_SUCCESS && want < have) dev_release_bytes(dev_, have - want);
    if (keep) track_add(key, TK_LIMIT, keep, dev_ord(dev_), ctx_);
    return r;
}

/* A launch of a kernel whose local memory needs `need` bytes of stack a thread: the driver grows
 * the context's stack to that by itself (a 16 KiB-local kernel took 3960 MiB on an H200, at its
 * first launch, kept after), so it is charged as a cuCtxSetLimit to `need` would be, before the
 * launch; refused, the launch is. */
CUresult limits_stack_need(struct gdev *d, void *ctx, uint64_t need)
{
    uint64_t key = limit_key(ctx, LIMIT_STACK_SIZE), base = limit_base(ctx, LIMIT_STACK_SIZE);
    uint64_t per = resident_threads(dev_handle(d));
    struct track_rec old = { 0 };
    int had = track_remove(key, TK_LIMIT, &old);
    uint64_t have = had ? old.size : 0;
    if (need <= base + have / per) {
        if (had) track_add(key, TK_LIMIT, have, dev_ord(d), ctx);
        return CUDA_SUCCESS;
    }
    uint64_t want = (need - base) * per;
    if (dev_reserve_bytes(d, want - have, "kernel launch (stack for its local memory)") != CUDA_SUCCESS) {
        if (had) track_add(key, TK_LIMIT, have, dev_ord(d), ctx);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    track_add(key, TK_LIMIT, want, dev_ord(d), ctx);
    return CUDA_SUCCESS;
}
