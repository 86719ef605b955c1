/* The table of hooked entry points, the dlsym and cuGetProcAddress paths, and the hooks.
 * Every allocation hook has one shape: charge_begin (reserve in the ledger), call the real
 * function, charge_end (record, or roll back on failure).  Every free: uncharge_begin, call the
 * real function, uncharge_end (release on success). */
#include <dlfcn.h>
#include <limits.h>
#include <string.h>
#include "fastpath.h"
#include "table.h"

#define GPUMEM_ROW(lib, name, base, ver, ptsz, params) { #name, #base, lib, ver, ptsz, (void *)name, NULL, NULL },
static struct hook table[H_COUNT] = { GPUMEM_HOOKS(GPUMEM_ROW) };
#undef GPUMEM_ROW

void *hooks_real(int i) { return hooks_real_fast(table, i); }

/* the first call of an entry: look its real function up (hooks_real is the inlined fast path) */
void *hooks_real_slow(int i)
{
    void *p = __atomic_load_n(&table[i].real, __ATOMIC_ACQUIRE);
    if (p) return p;
    p = resolve_symbol(table[i].lib, table[i].name);
    if (!p) p = __atomic_load_n(&table[i].seed, __ATOMIC_ACQUIRE);
    if (p) __atomic_store_n(&table[i].real, p, __ATOMIC_RELEASE);
    return p;
}

static int find_name(const char *name)
{
    for (int i = 0; i < H_COUNT; i++) if (!strcmp(table[i].name, name)) return i;
    return -1;
}

void *hooks_find_ours(const char *name)
{
    int i = find_name(name);
    return i >= 0 ? table[i].ours : NULL;
}

int hooks_is_ours(void *fn)
{
    for (int i = 0; i < H_COUNT; i++) if (table[i].ours == fn) return 1;
    return (void *)fn == (void *)dlsym;
}

/* ---------------------------------------------------------------- path 2: dlsym */

static __attribute__((noinline)) void *dlsym_driver(void *handle, const char *name)
{
    void *r = get_real_dlsym()(handle, name);
    if (!r) return NULL;
    gpumem_init();
    if (!gpumem_active) return r;
    void *ours = hooks_find_ours(name);
    return ours ? ours : r;
}

/* not instrumented: a sanitizer runtime calls dlsym before its shadow memory exists */
GPUMEM_NO_SANITIZE GPUMEM_EXPORT void *dlsym(void *handle, const char *name)
{
    /* the name first: no TLS access for other names, since another preloaded library (ASan's
     * runtime, say) may call dlsym before its own __tls_get_addr interceptor works */
    if (handle != RTLD_NEXT && ((name[0] == 'c' && name[1] == 'u') || !strncmp(name, "nvml", 4)) &&
        !gpumem_in_resolve)
        return dlsym_driver(handle, name);
    dlsym_fn real = get_real_dlsym();
    return real(handle, name);   /* a tail call, so RTLD_NEXT still sees our caller */
}

/* ---------------------------------------------------------------- path 3: cuGetProcAddress */

static int proc_lookup(const char *sym, int ver, uint64_t flags)
{
    int want_ptsz = (flags & CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM) != 0, best = -1, best_score = -1;
    for (int i = 0; i < H_COUNT; i++) {
        const struct hook *h = &table[i];
        if (h->lib != LIB_CUDA || strcmp(h->base, sym) || h->ver > ver || (h->ptsz && !want_ptsz)) continue;
        int score = h->ptsz * 1000000 + h->ver;
        if (score > best_score) { best = i; best_score = score; }
    }
    return best >= 0 ? best : find_name(sym);
}

static void proc_wrap(const char *sym, void **pfn, int ver, uint64_t flags)
{
    gpumem_init();
    if (!gpumem_active || !sym || !pfn || !*pfn) return;
    int i = proc_lookup(sym, ver, flags);
    if (i < 0 || table[i].lib != LIB_CUDA) return;
    void *none = NULL;
    __atomic_compare_exchange_n(&table[i].seed, &none, *pfn, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
    /* from now on call what the driver hands its own runtime, not the exported symbol: the same
     * variant, so the path under our hook is the native one */
    __atomic_store_n(&table[i].real, __atomic_load_n(&table[i].seed, __ATOMIC_ACQUIRE), __ATOMIC_RELEASE);
    LOG(LOG_DEBUG, "cuGetProcAddress(%s, %d, %llu) -> %s", sym, ver, (unsigned long long)flags, table[i].name);
    *pfn = table[i].ours;
}

int cuGetProcAddress(const char *sym, void **pfn, int ver, uint64_t flags)
{
    REAL(cuGetProcAddress, CUDA_ERROR_NOT_FOUND);
    CUresult r = real_(sym, pfn, ver, flags);
    if (r == CUDA_SUCCESS) proc_wrap(sym, pfn, ver, flags);
    return r;
}

int cuGetProcAddress_v2(const char *sym, void **pfn, int ver, uint64_t flags, int *status)
{
    REAL(cuGetProcAddress_v2, CUDA_ERROR_NOT_FOUND);
    CUresult r = real_(sym, pfn, ver, flags, status);
    if (r == CUDA_SUCCESS) proc_wrap(sym, pfn, ver, flags);
    return r;
}

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
#define POOLED_ALLOC(fname, dev, ctx, size, call, key) do {                     \
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

#define CURRENT_DEV() void *ctx_; struct gdev *dev_ = dev_current(&ctx_)
#define STREAM_DEV(s, ptsz) void *ctx_; struct gdev *dev_ = dev_of_stream((s), (ptsz), &ctx_)

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

int cuMemAllocPitch(CUdeviceptr_v1 *dptr, unsigned int *pitch, unsigned int w, unsigned int h, unsigned int elem)
{
    REAL(cuMemAllocPitch, CUDA_ERROR_NOT_FOUND);
    CURRENT_DEV();
    struct charge c;
    CUresult e = charge_begin(&c, dev_, ctx_, PITCH_BOUND(w, h), TK_MEM, "cuMemAllocPitch");
    if (e != CUDA_SUCCESS) return e;
    CUresult r = real_(dptr, pitch, w, h, elem);
    if (r == CUDA_SUCCESS) charge_settle(&c, (uint64_t)*pitch * h);
    charge_end(&c, r, r == CUDA_SUCCESS ? *dptr : 0);
    return r;
}

int cuMemAllocPitch_v2(CUdeviceptr *dptr, size_t *pitch, size_t w, size_t h, unsigned int elem)
{
    REAL(cuMemAllocPitch_v2, CUDA_ERROR_NOT_FOUND);
    CURRENT_DEV();
    struct charge c;
    CUresult e = charge_begin(&c, dev_, ctx_, PITCH_BOUND(w, h), TK_MEM, "cuMemAllocPitch_v2");
    if (e != CUDA_SUCCESS) return e;
    CUresult r = real_(dptr, pitch, w, h, elem);
    if (r == CUDA_SUCCESS) charge_settle(&c, (uint64_t)*pitch * h);
    charge_end(&c, r, r == CUDA_SUCCESS ? *dptr : 0);
    return r;
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
    POOLED_ALLOC(cuMemAllocAsync, dev_, ctx_, size, real_(dptr, size, s), *dptr);
}

int cuMemAllocAsync_ptsz(CUdeviceptr *dptr, size_t size, CUstream s)
{
    REAL(cuMemAllocAsync_ptsz, CUDA_ERROR_NOT_FOUND);
    STREAM_DEV(s, 1);
    POOLED_ALLOC(cuMemAllocAsync_ptsz, dev_, ctx_, size, real_(dptr, size, s), *dptr);
}

int cuMemAllocFromPoolAsync(CUdeviceptr *dptr, size_t size, CUmemoryPool pool, CUstream s)
{
    REAL(cuMemAllocFromPoolAsync, CUDA_ERROR_NOT_FOUND);
    STREAM_DEV(s, 0);
    POOLED_ALLOC(cuMemAllocFromPoolAsync, dev_, ctx_, size, real_(dptr, size, pool, s), *dptr);
}

int cuMemAllocFromPoolAsync_ptsz(CUdeviceptr *dptr, size_t size, CUmemoryPool pool, CUstream s)
{
    REAL(cuMemAllocFromPoolAsync_ptsz, CUDA_ERROR_NOT_FOUND);
    STREAM_DEV(s, 1);
    POOLED_ALLOC(cuMemAllocFromPoolAsync_ptsz, dev_, ctx_, size, real_(dptr, size, pool, s), *dptr);
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

/* ---------------------------------------------------------------- reported memory */

int cuMemGetInfo_v2(size_t *free_b, size_t *total_b)
{
    REAL(cuMemGetInfo_v2, CUDA_ERROR_NOT_FOUND);
    uint64_t t0 = STATS_NOW();
    CUresult r = real_(free_b, total_b);
    uint64_t t1 = STATS_NOW();
    CURRENT_DEV();
    uint64_t f, t, u;
    if (r == CUDA_SUCCESS && free_b && total_b && dev_report(dev_, *free_b, &f, &t, &u)) {
        *free_b = f;
        *total_b = t;
    }
    STATS_DONE(t0, t1);
    return r;
}

int cuMemGetInfo(unsigned int *free_b, unsigned int *total_b)
{
    REAL(cuMemGetInfo, CUDA_ERROR_NOT_FOUND);
    CUresult r = real_(free_b, total_b);
    CURRENT_DEV();
    uint64_t f, t, u;
    if (r == CUDA_SUCCESS && free_b && total_b && dev_report(dev_, *free_b, &f, &t, &u)) {
        *free_b = f > UINT_MAX ? UINT_MAX : (unsigned int)f;
        *total_b = t > UINT_MAX ? UINT_MAX : (unsigned int)t;
    }
    return r;
}

/* A limited device's total is its cap, known since its devices were loaded: no driver call.
 * Any other device (unlimited, or a malformed limit) gets the driver's own answer. */
int cuDeviceTotalMem_v2(size_t *bytes, CUdevice dev)
{
    uint64_t cap;
    if (bytes && dev_cap_of(dev, &cap)) {
        *bytes = cap;
        return CUDA_SUCCESS;
    }
    REAL(cuDeviceTotalMem_v2, CUDA_ERROR_NOT_FOUND);
    return real_(bytes, dev);
}

int cuDeviceTotalMem(unsigned int *bytes, CUdevice dev)
{
    uint64_t cap;
    if (bytes && dev_cap_of(dev, &cap)) {
        *bytes = cap > UINT_MAX ? UINT_MAX : (unsigned int)cap;
        return CUDA_SUCCESS;
    }
    REAL(cuDeviceTotalMem, CUDA_ERROR_NOT_FOUND);
    return real_(bytes, dev);
}

/* NVML's two layouts share total/used/free: total = cap, used = the container's usage */
static int nvml_report(nvmlDevice_t dev, unsigned long long *total, unsigned long long *used,
                       unsigned long long *free_b)
{
    uint64_t f, t, u;
    if (!dev_report(dev_by_nvml(dev), UINT64_MAX, &f, &t, &u)) return 0;
    *total = t;
    *used = u > t ? t : u;
    *free_b = t - *used;
    return 1;
}

int nvmlDeviceGetMemoryInfo(nvmlDevice_t dev, nvmlMemory_t *mem)
{
    REAL(nvmlDeviceGetMemoryInfo, 13 /* NVML_ERROR_FUNCTION_NOT_FOUND */);
    nvmlReturn_t r = real_(dev, mem);
    if (r == NVML_SUCCESS && mem) nvml_report(dev, &mem->total, &mem->used, &mem->free);
    return r;
}

int nvmlDeviceGetMemoryInfo_v2(nvmlDevice_t dev, nvmlMemory_v2_t *mem)
{
    REAL(nvmlDeviceGetMemoryInfo_v2, 13 /* NVML_ERROR_FUNCTION_NOT_FOUND */);
    nvmlReturn_t r = real_(dev, mem);
    if (r == NVML_SUCCESS && mem && nvml_report(dev, &mem->total, &mem->used, &mem->free)) mem->reserved = 0;
    return r;
}

/* ---------------------------------------------------------------- contexts */

#define CTX_CREATE(fname, dev, call, primary) do {                               \
        struct gdev *d_;                                                          \
        CUresult e_ = ctx_create_begin((dev), &d_, #fname);                       \
        if (e_ != CUDA_SUCCESS) return e_;                                        \
        CUresult r_ = (call);                                                     \
        ctx_create_end(d_, r_, r_ == CUDA_SUCCESS ? *pctx : NULL, (primary));      \
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
