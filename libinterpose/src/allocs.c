/* Allocations: every allocation hook has one shape: charge_begin (reserve in the ledger), call
 * the real function, charge_end (record, or roll back on failure).  Every free: uncharge_begin,
 * call the real function, uncharge_end (release on success).  Stream-ordered ones pass through
 * uncounted while their stream is being captured: the graph's instantiation counts them (graphs.c). */
#include <limits.h>
#include "fastpath.h"
#include "table.h"

/* ---------------------------------------------------------------- allocations */

/* one shape for every allocation: reserve, call, record or roll back */
#define ALLOC(fname, dev, ctx, size, kind, call, key) do {                       \
        struct charge c_;                                                         \
        CUresult e_ = charge_begin(&c_, (dev), (ctx), (size), (kind), #fname);   \
        if (e_ != CUDA_SUCCESS) { STATS_DONE(0, 0); return e_; }                  \
        uint64_t t0_ = STATS_NOW();                                               \
        CUresult r_ = (call);                                                     \
        uint64_t t1_ = STATS_NOW();                                               \
        charge_end(&c_, r_, r_ == CUDA_SUCCESS ? (uint64_t)(key) : 0);            \
        STATS_DONE(t0_, t1_);                                                     \
        return r_;                                                                \
    } while (0)

/* one shape for every free: take the record, call, release on success */
#define FREE(key, kind, call) do {                                                \
        struct track_rec rec_;                                                    \
        int took_ = uncharge_begin((uint64_t)(key), (kind), &rec_);              \
        uint64_t t0_ = STATS_NOW();                                               \
        CUresult r_ = (call);                                                     \
        uint64_t t1_ = STATS_NOW();                                               \
        uncharge_end(took_, &rec_, r_);                                           \
        STATS_DONE(t0_, t1_);                                                     \
        return r_;                                                                \
    } while (0)

/* stream-ordered: this thread's credit pays and its table records, in a few loads and stores
 * (fastpath.h); what that declines takes the shapes above */
#define POOLED_ALLOC(fname, dev, ctx, size, call, key, s, ptsz) do {            \
        if (__builtin_expect(__atomic_load_n(&gpumem_captures, __ATOMIC_RELAXED) != 0, 0) && \
            graphs_capturing((s), (ptsz)))                                        \
            return (call);   /* the graph's instantiation charges it */           \
        if ((dev) && credit_take((dev), (size))) {                                \
            uint64_t t0_ = STATS_NOW();                                           \
            CUresult r_ = (call);                                                 \
            uint64_t t1_ = STATS_NOW();                                           \
            if (r_ != CUDA_SUCCESS || !track_add_fast((key), TK_MEM, (size), gpumem_credit.ord, (ctx))) { \
                struct charge c_ = { (dev), (size), TK_MEM, 1, (ctx), #fname };   \
                charge_end(&c_, r_, r_ == CUDA_SUCCESS ? (uint64_t)(key) : 0);    \
            }                                                                     \
            STATS_DONE(t0_, t1_);                                                 \
            return r_;                                                            \
        }                                                                         \
        ALLOC(fname, dev, ctx, size, TK_MEM | TK_POOLED, call, key);              \
    } while (0)

#define POOLED_FREE(key, call) do {                                               \
        struct track_rec rec_;                                                    \
        if (gpumem_active && track_take_fast((key), TK_MEM, &rec_)) {             \
            uint64_t t0_ = STATS_NOW();                                           \
            CUresult r_ = (call);                                                 \
            uint64_t t1_ = STATS_NOW();                                           \
            if (r_ != CUDA_SUCCESS || !credit_keep(rec_.dev, rec_.size)) uncharge_end(2, &rec_, r_); \
            STATS_DONE(t0_, t1_);                                                 \
            return r_;                                                            \
        }                                                                         \
        FREE(key, TK_MEM | TK_POOLED, call);                                      \
    } while (0)


int cuMemAlloc(CUdeviceptr_v1 *dptr, unsigned int size)
{
    REAL(cuMemAlloc, CUDA_ERROR_NOT_FOUND);
    CURRENT_DEV();
    ALLOC(cuMemAlloc, dev_, ctx_, size, TK_MEM, real_(dptr, size), *dptr);
}

int cuMemAlloc_v2(CUdeviceptr *dptr, size_t size)
{
    REAL(cuMemAlloc_v2, CUDA_ERROR_NOT_FOUND);
    CURRENT_DEV();
    ALLOC(cuMemAlloc_v2, dev_, ctx_, size, TK_MEM, real_(dptr, size), *dptr);
}

int cuMemAllocManaged(CUdeviceptr *dptr, size_t size, unsigned int flags)
{
    REAL(cuMemAllocManaged, CUDA_ERROR_NOT_FOUND);
    CURRENT_DEV();
    ALLOC(cuMemAllocManaged, dev_, ctx_, size, TK_MEM, real_(dptr, size, flags), *dptr);
}

/* pitch: reserve an upper bound (rows padded to 2 KiB), then settle to pitch * height */
#define PITCH_BOUND(w, h) ((((uint64_t)(w) + 2047) & ~(uint64_t)2047) * (uint64_t)(h))

/* the pitch calls' one body: dptr, pitch, w and h are the hook's own arguments */
#define PITCH_ALLOC(fname, call) do {                                            \
        struct charge c_;                                                         \
        CUresult e_ = charge_begin(&c_, dev_, ctx_, PITCH_BOUND(w, h), TK_MEM, #fname); \
        if (e_ != CUDA_SUCCESS) return e_;                                        \
        CUresult r_ = (call);                                                     \
        if (r_ == CUDA_SUCCESS) charge_settle(&c_, (uint64_t)*pitch * h);         \
        charge_end(&c_, r_, r_ == CUDA_SUCCESS ? *dptr : 0);                      \
        return r_;                                                                \
    } while (0)

int cuMemAllocPitch(CUdeviceptr_v1 *dptr, unsigned int *pitch, unsigned int w, unsigned int h, unsigned int elem)
{
    REAL(cuMemAllocPitch, CUDA_ERROR_NOT_FOUND);
    CURRENT_DEV();
    PITCH_ALLOC(cuMemAllocPitch, real_(dptr, pitch, w, h, elem));
}

int cuMemAllocPitch_v2(CUdeviceptr *dptr, size_t *pitch, size_t w, size_t h, unsigned int elem)
{
    REAL(cuMemAllocPitch_v2, CUDA_ERROR_NOT_FOUND);
    CURRENT_DEV();
    PITCH_ALLOC(cuMemAllocPitch_v2, real_(dptr, pitch, w, h, elem));
}

int cuMemFree(CUdeviceptr_v1 dptr)
{
    REAL(cuMemFree, CUDA_ERROR_NOT_FOUND);
    FREE(dptr, TK_MEM, real_(dptr));
}

int cuMemFree_v2(CUdeviceptr dptr)
{
    REAL(cuMemFree_v2, CUDA_ERROR_NOT_FOUND);
    FREE(dptr, TK_MEM, real_(dptr));
}

/* stream-ordered: charged to the stream's device when requested, given back when the free is
 * enqueued (a small one kept as the thread's credit for its next, devices.c) */
int cuMemAllocAsync(CUdeviceptr *dptr, size_t size, CUstream s)
{
    REAL(cuMemAllocAsync, CUDA_ERROR_NOT_FOUND);
    STREAM_DEV(s, 0);
    POOLED_ALLOC(cuMemAllocAsync, dev_, ctx_, size, real_(dptr, size, s), *dptr, s, 0);
}

int cuMemAllocAsync_ptsz(CUdeviceptr *dptr, size_t size, CUstream s)
{
    REAL(cuMemAllocAsync_ptsz, CUDA_ERROR_NOT_FOUND);
    STREAM_DEV(s, 1);
    POOLED_ALLOC(cuMemAllocAsync_ptsz, dev_, ctx_, size, real_(dptr, size, s), *dptr, s, 1);
}

int cuMemAllocFromPoolAsync(CUdeviceptr *dptr, size_t size, CUmemoryPool pool, CUstream s)
{
    REAL(cuMemAllocFromPoolAsync, CUDA_ERROR_NOT_FOUND);
    STREAM_DEV(s, 0);
    POOLED_ALLOC(cuMemAllocFromPoolAsync, dev_, ctx_, size, real_(dptr, size, pool, s), *dptr, s, 0);
}

int cuMemAllocFromPoolAsync_ptsz(CUdeviceptr *dptr, size_t size, CUmemoryPool pool, CUstream s)
{
    REAL(cuMemAllocFromPoolAsync_ptsz, CUDA_ERROR_NOT_FOUND);
    STREAM_DEV(s, 1);
    POOLED_ALLOC(cuMemAllocFromPoolAsync_ptsz, dev_, ctx_, size, real_(dptr, size, pool, s), *dptr, s, 1);
}

int cuMemFreeAsync(CUdeviceptr dptr, CUstream s)
{
    REAL(cuMemFreeAsync, CUDA_ERROR_NOT_FOUND);
    POOLED_FREE(dptr, real_(dptr, s));
}

int cuMemFreeAsync_ptsz(CUdeviceptr dptr, CUstream s)
{
    REAL(cuMemFreeAsync_ptsz, CUDA_ERROR_NOT_FOUND);
    POOLED_FREE(dptr, real_(dptr, s));
}

/* VMM: keyed by handle, on the device the properties name; not bound to a context */
int cuMemCreate(CUmemGenericAllocationHandle *handle, size_t size, const CUmemAllocationProp *prop, unsigned long long flags)
{
    REAL(cuMemCreate, CUDA_ERROR_NOT_FOUND);
    struct gdev *d = prop && prop->location.type == CU_MEM_LOCATION_TYPE_DEVICE ? dev_by_handle(prop->location.id) : NULL;
    ALLOC(cuMemCreate, d, NULL, size, TK_VMM, real_(handle, size, prop, flags), *handle);
}

int cuMemRelease(CUmemGenericAllocationHandle handle)
{
    REAL(cuMemRelease, CUDA_ERROR_NOT_FOUND);
    FREE(handle, TK_VMM, real_(handle));
}

/* arrays: size estimated from the descriptor (rows padded to 512 bytes) */
static uint64_t array_bytes(size_t w, size_t h, size_t d, int format, unsigned int channels)
{
    uint64_t elem;
    switch (format) {
    case 0x01: case 0x08: elem = 1; break;              /* (un)signed int8 */
    case 0x02: case 0x09: case 0x10: elem = 2; break;   /* (un)signed int16, half */
    case 0x03: case 0x0a: case 0x20: elem = 4; break;   /* (un)signed int32, float */
    default: elem = 16; channels = 1; break;            /* packed and block formats: an upper bound */
    }
    if (!channels) channels = 1;
    uint64_t row = ((uint64_t)(w ? w : 1) * elem * channels + 511) & ~(uint64_t)511;
    return row * (h ? h : 1) * (d ? d : 1);
}

static uint64_t mipmap_bytes(const CUDA_ARRAY3D_DESCRIPTOR *a, unsigned int levels)
{
    uint64_t sum = 0;
    size_t w = a->Width, h = a->Height, d = a->Depth;
    for (unsigned int l = 0; l < (levels ? levels : 1); l++) {
        sum += array_bytes(w, h, d, a->Format, a->NumChannels);
        w = w > 1 ? w / 2 : 1; h = h > 1 ? h / 2 : h; d = d > 1 ? d / 2 : d;
    }
    return sum;
}

int cuArrayCreate(CUarray *arr, const CUDA_ARRAY_DESCRIPTOR_v1 *a)
{
    REAL(cuArrayCreate, CUDA_ERROR_NOT_FOUND);
    CURRENT_DEV();
    uint64_t n = a ? array_bytes(a->Width, a->Height, 1, a->Format, a->NumChannels) : 0;
    ALLOC(cuArrayCreate, dev_, ctx_, n, TK_ARRAY, real_(arr, a), (uintptr_t)*arr);
}

int cuArrayCreate_v2(CUarray *arr, const CUDA_ARRAY_DESCRIPTOR *a)
{
    REAL(cuArrayCreate_v2, CUDA_ERROR_NOT_FOUND);
    CURRENT_DEV();
    uint64_t n = a ? array_bytes(a->Width, a->Height, 1, a->Format, a->NumChannels) : 0;
    ALLOC(cuArrayCreate_v2, dev_, ctx_, n, TK_ARRAY, real_(arr, a), (uintptr_t)*arr);
}

int cuArray3DCreate(CUarray *arr, const CUDA_ARRAY3D_DESCRIPTOR_v1 *a)
{
    REAL(cuArray3DCreate, CUDA_ERROR_NOT_FOUND);
    CURRENT_DEV();
    uint64_t n = a ? array_bytes(a->Width, a->Height, a->Depth, a->Format, a->NumChannels) : 0;
    ALLOC(cuArray3DCreate, dev_, ctx_, n, TK_ARRAY, real_(arr, a), (uintptr_t)*arr);
}

int cuArray3DCreate_v2(CUarray *arr, const CUDA_ARRAY3D_DESCRIPTOR *a)
{
    REAL(cuArray3DCreate_v2, CUDA_ERROR_NOT_FOUND);
    CURRENT_DEV();
    uint64_t n = a ? array_bytes(a->Width, a->Height, a->Depth, a->Format, a->NumChannels) : 0;
    ALLOC(cuArray3DCreate_v2, dev_, ctx_, n, TK_ARRAY, real_(arr, a), (uintptr_t)*arr);
}

int cuArrayDestroy(CUarray arr)
{
    REAL(cuArrayDestroy, CUDA_ERROR_NOT_FOUND);
    FREE((uintptr_t)arr, TK_ARRAY, real_(arr));
}

int cuMipmappedArrayCreate(CUmipmappedArray *arr, const CUDA_ARRAY3D_DESCRIPTOR *a, unsigned int levels)
{
    REAL(cuMipmappedArrayCreate, CUDA_ERROR_NOT_FOUND);
    CURRENT_DEV();
    uint64_t n = a ? mipmap_bytes(a, levels) : 0;
    ALLOC(cuMipmappedArrayCreate, dev_, ctx_, n, TK_MIPMAP, real_(arr, a, levels), (uintptr_t)*arr);
}

int cuMipmappedArrayDestroy(CUmipmappedArray arr)
{
    REAL(cuMipmappedArrayDestroy, CUDA_ERROR_NOT_FOUND);
    FREE((uintptr_t)arr, TK_MIPMAP, real_(arr));
}

