/* Contexts: created, retained, destroyed, released, reset, and green contexts (the accounting is
 * devices.c's). */
#include "table.h"

/* ---------------------------------------------------------------- contexts */

#define CTX_CREATE(fname, dev, call, primary) do {                               \
        struct gdev *d_;                                                          \
        uint64_t extra_;                                                          \
        CUresult e_ = ctx_create_begin((dev), (primary), &d_, &extra_, #fname);   \
        if (e_ != CUDA_SUCCESS) return e_;                                        \
        CUresult r_ = (call);                                                     \
        ctx_create_end(d_, r_, r_ == CUDA_SUCCESS ? *pctx : NULL, (primary), extra_); \
        return r_;                                                                \
    } while (0)

int cuCtxCreate(CUcontext *pctx, unsigned int flags, CUdevice dev)
{
    REAL(cuCtxCreate, CUDA_ERROR_NOT_FOUND);
    CTX_CREATE(cuCtxCreate, dev, real_(pctx, flags, dev), 0);
}

int cuCtxCreate_v2(CUcontext *pctx, unsigned int flags, CUdevice dev)
{
    REAL(cuCtxCreate_v2, CUDA_ERROR_NOT_FOUND);
    CTX_CREATE(cuCtxCreate_v2, dev, real_(pctx, flags, dev), 0);
}

int cuCtxCreate_v3(CUcontext *pctx, void *params, int nparams, unsigned int flags, CUdevice dev)
{
    REAL(cuCtxCreate_v3, CUDA_ERROR_NOT_FOUND);
    CTX_CREATE(cuCtxCreate_v3, dev, real_(pctx, params, nparams, flags, dev), 0);
}

int cuCtxCreate_v4(CUcontext *pctx, void *params, unsigned int flags, CUdevice dev)
{
    REAL(cuCtxCreate_v4, CUDA_ERROR_NOT_FOUND);
    CTX_CREATE(cuCtxCreate_v4, dev, real_(pctx, params, flags, dev), 0);
}

int cuDevicePrimaryCtxRetain(CUcontext *pctx, CUdevice dev)
{
    REAL(cuDevicePrimaryCtxRetain, CUDA_ERROR_NOT_FOUND);
    CTX_CREATE(cuDevicePrimaryCtxRetain, dev, real_(pctx, dev), 1);
}

/* one shape for every teardown: call the real function, then tell the device table what went */
#define TEARDOWN(fname, type, on_success)                                            \
    int fname(type arg_)                                                             \
    {                                                                                \
        REAL(fname, CUDA_ERROR_NOT_FOUND);                                           \
        CUresult r_ = real_(arg_);                                                   \
        if (r_ == CUDA_SUCCESS) on_success(arg_);                                    \
        return r_;                                                                   \
    }

/* a stream's handle may come back for another context: forget the stream memo */
static void stream_destroyed(CUstream s)
{
    (void)s;
    dev_memo_forget();
}

TEARDOWN(cuCtxDestroy, CUcontext, ctx_destroyed)
TEARDOWN(cuCtxDestroy_v2, CUcontext, ctx_destroyed)
TEARDOWN(cuDevicePrimaryCtxRelease, CUdevice, ctx_primary_released)
TEARDOWN(cuDevicePrimaryCtxRelease_v2, CUdevice, ctx_primary_released)
TEARDOWN(cuDevicePrimaryCtxReset, CUdevice, ctx_primary_reset)
TEARDOWN(cuDevicePrimaryCtxReset_v2, CUdevice, ctx_primary_reset)
TEARDOWN(cuStreamDestroy, CUstream, stream_destroyed)
TEARDOWN(cuStreamDestroy_v2, CUstream, stream_destroyed)

/* ---------------------------------------------------------------- green contexts */

/* A green context (cuGreenCtxCreate, CUDA 12.4+) retains its device's primary context and takes
 * memory of its own that comes back only when the primary context goes: on an H200 (driver
 * 580.159.04) 4 MiB each made one at a time, 478 MiB for 96 alive at once, none of it back at
 * cuGreenCtxDestroy, all of it once the primary context was released
 * (tests/gpu/results/2026-12-04-h200-explore-green*.txt).  So the primary retain is ours, charged
 * as cuDevicePrimaryCtxRetain is, and released at cuGreenCtxDestroy; GREEN_BOUND is reserved
 * before the driver is asked, then settled to what the call took (the driver's free memory before
 * and after it, the primary context current), which stays charged under the primary context until
 * that goes.  A call that would pass the cap is refused (CUDA_ERROR_OUT_OF_MEMORY) by the bound
 * before the driver is asked; one that took more than the bound and passed the cap with it is
 * refused after (the green context destroyed again), and what it took stays charged, since the
 * driver keeps it. */
#define GREEN_BOUND (8ULL << 20)

typedef CUresult (*fn_push)(CUcontext);
typedef CUresult (*fn_pop)(CUcontext *);
typedef CUresult (*fn_from_green)(CUcontext *, void *);

/* our retain of the primary context, charged as cuDevicePrimaryCtxRetain's (its denial named
 * for the green context); released through our own cuDevicePrimaryCtxRelease_v2 */
static CUresult primary_retain(CUdevice dev, CUcontext *pctx)
{
    REAL(cuDevicePrimaryCtxRetain, CUDA_ERROR_NOT_FOUND);
    CTX_CREATE(cuGreenCtxCreate, dev, real_(pctx, dev), 1);
}

static void primary_release(CUdevice dev) { (void)cuDevicePrimaryCtxRelease_v2(dev); }

/* the driver's free memory with pc current (the caller's current context left as it was); 0: unknown */
static uint64_t free_in(CUcontext pc)
{
    static fn_push push;
    static fn_pop pop;
    if (!push) pop = (fn_pop)resolve_symbol(LIB_CUDA, "cuCtxPopCurrent_v2"), push = (fn_push)resolve_symbol(LIB_CUDA, "cuCtxPushCurrent_v2");
    CUcontext was;
    if (!push || !pop || push(pc) != CUDA_SUCCESS) return 0;
    uint64_t f = modules_device_free();
    pop(&was);
    return f;
}

int cuGreenCtxCreate(void **green, void *desc, CUdevice dev, unsigned int flags)
{
    static uint64_t next_key = 1;
    REAL(cuGreenCtxCreate, CUDA_ERROR_NOT_FOUND);
    struct gdev *d = green ? dev_by_handle(dev) : NULL;
    if (!d) return real_(green, desc, dev, flags);
    CUcontext pc = NULL;
    CUresult r = primary_retain(dev, &pc);
    if (r != CUDA_SUCCESS) return r;
    if (dev_reserve_bytes(d, GREEN_BOUND, "cuGreenCtxCreate") != CUDA_SUCCESS) {
        primary_release(dev);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    uint64_t before = free_in(pc);
    r = real_(green, desc, dev, flags);
    if (r != CUDA_SUCCESS) {
        dev_release_bytes(d, GREEN_BOUND);
        primary_release(dev);
        return r;
    }
    uint64_t after = before ? free_in(pc) : 0, charged = GREEN_BOUND;
    int refused = 0;
    if (before && after) {   /* measured: the charge is what the call took */
        uint64_t took = before > after ? before - after : 0;
        if (took < charged) {
            dev_release_bytes(d, charged - took);
            charged = took;
        } else if (took > charged) {
            /* past the cap: refused, but the driver keeps what it took until the primary
             * context goes, so that stays charged and nothing more fits until then */
            if (dev_reserve_bytes(d, took - charged, "cuGreenCtxCreate") != CUDA_SUCCESS) {
                dev_charge_held(d, took - charged);
                refused = 1;
            }
            charged = took;
        }
    }
    if (charged)
        track_add((1ULL << 62) | __atomic_fetch_add(&next_key, 1, __ATOMIC_RELAXED), TK_GREEN, charged, dev_ord(d), pc);
    if (refused) {
        ((fn_cuGreenCtxDestroy)hooks_real(H_cuGreenCtxDestroy))(*green);
        *green = NULL;
        primary_release(dev);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    static fn_from_green from;
    if (!from) from = (fn_from_green)resolve_symbol(LIB_CUDA, "cuCtxFromGreenCtx");
    CUcontext gctx = NULL;
    if (from && from(&gctx, *green) != CUDA_SUCCESS) gctx = NULL;
    ctx_green_made(d, *green, gctx, pc);
    return CUDA_SUCCESS;
}

/* its memory stays charged (the driver keeps it until the primary context goes); our retain of
 * the primary context is released */
int cuGreenCtxDestroy(void *green)
{
    REAL(cuGreenCtxDestroy, CUDA_ERROR_NOT_FOUND);
    CUresult r = real_(green);
    CUdevice h;
    if (r == CUDA_SUCCESS && gpumem_active && ctx_green_gone(green, &h)) primary_release(h);
    return r;
}
