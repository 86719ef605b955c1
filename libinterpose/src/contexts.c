/* Contexts: created, retained, destroyed, released, reset (the accounting is devices.c's). */
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
