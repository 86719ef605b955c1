/* Modules and libraries: the memory of their globals (__device__ variables) and code.  The
 * module API loads at once (cuModuleLoad*: a module with 1 GiB of globals took 1024 MiB in
 * cuModuleLoadData on an H200); the library API (cuLibraryLoad*, what libcudart 12/13 uses)
 * loads into a context lazily, at the first cuKernelGetFunction, cuLibraryGetModule,
 * cuLibraryGetGlobal or launch.  No call says how much a load takes, so it is measured: the
 * driver's free memory before and after the call (cuMemGetInfo, device-wide).  A load that
 * would pass the cap is undone (module API) or refused. */
#include "table.h"

static uint64_t device_free(void)
{
    fn_cuMemGetInfo_v2 info = (fn_cuMemGetInfo_v2)hooks_real(H_cuMemGetInfo_v2);
    size_t fr = 0, total = 0;
    return info && info(&fr, &total) == CUDA_SUCCESS ? fr : 0;
}

static uint64_t taken_since(uint64_t before)
{
    uint64_t after = device_free();
    return before && after && before > after ? before - after : 0;
}

/* the module API: measured, charged under the module, undone when the cap refuses it */
#define MODULE_LOAD(fname, call) do {                                             \
        REAL(fname, CUDA_ERROR_NOT_FOUND);                                        \
        CURRENT_DEV();                                                            \
        if (!dev_) return (call);                                                 \
        uint64_t before_ = device_free();                                         \
        CUresult r_ = (call);                                                     \
        if (r_ != CUDA_SUCCESS) return r_;                                        \
        uint64_t took_ = taken_since(before_);                                    \
        if (!took_) return r_;                                                    \
        if (dev_reserve_bytes(dev_, took_, #fname) != CUDA_SUCCESS) {             \
            ((fn_cuModuleUnload)hooks_real(H_cuModuleUnload))(*mod);              \
            return CUDA_ERROR_OUT_OF_MEMORY;                                      \
        }                                                                         \
        track_add((uint64_t)(uintptr_t)*mod, TK_MODULE, took_, dev_ord(dev_), ctx_); \
        return r_;                                                                \
    } while (0)

int cuModuleLoad(void **mod, const char *path) { MODULE_LOAD(cuModuleLoad, real_(mod, path)); }
int cuModuleLoadData(void **mod, const void *image) { MODULE_LOAD(cuModuleLoadData, real_(mod, image)); }
int cuModuleLoadDataEx(void **mod, const void *image, unsigned int n, void *opts, void **vals)
{
    MODULE_LOAD(cuModuleLoadDataEx, real_(mod, image, n, opts, vals));
}
int cuModuleLoadFatBinary(void **mod, const void *fatbin) { MODULE_LOAD(cuModuleLoadFatBinary, real_(mod, fatbin)); }

int cuModuleUnload(void *mod)
{
    REAL(cuModuleUnload, CUDA_ERROR_NOT_FOUND);
    struct track_rec rec;
    int took = uncharge_begin((uint64_t)(uintptr_t)mod, TK_MODULE, &rec);
    CUresult r = real_(mod);
    uncharge_end(took, &rec, r);
    return r;
}

/* The library API's lazy loads.  Only the first call per (handle, context) is measured: a memo
 * of those seen keeps the two cuMemGetInfo calls (7 us each on an H100) off any later call. */
#define SEEN_SLOTS 4096
static uint64_t seen[SEEN_SLOTS];

static int seen_before(void *handle, void *ctx)
{
    uint64_t k = ((uint64_t)(uintptr_t)handle * 0x9e3779b97f4a7c15ULL) ^ (uint64_t)(uintptr_t)ctx;
    if (!k) k = 1;
    uint64_t *slot = &seen[(k >> 40) % SEEN_SLOTS];
    if (__atomic_load_n(slot, __ATOMIC_RELAXED) == k) return 1;
    __atomic_store_n(slot, k, __ATOMIC_RELAXED);
    return 0;
}

/* What a lazy load took is charged under a key of its own; it stays until its context goes.
 * Past the cap, the call that loaded it is answered CUDA_ERROR_OUT_OF_MEMORY (the driver keeps
 * the module: a library is not unloaded behind its owner's back). */
static CUresult lazy_charge(struct gdev *d, void *ctx, uint64_t took, const char *fn)
{
    static uint64_t next_key = 1;
    if (!took) return CUDA_SUCCESS;
    if (dev_reserve_bytes(d, took, fn) != CUDA_SUCCESS) return CUDA_ERROR_OUT_OF_MEMORY;
    track_add((1ULL << 63) | __atomic_fetch_add(&next_key, 1, __ATOMIC_RELAXED), TK_MODULE, took, dev_ord(d), ctx);
    return CUDA_SUCCESS;
}

/* a launch loaded its function's module (launch.c): what it took since `before` */
uint64_t modules_device_free(void) { return device_free(); }
CUresult modules_charge_lazy(struct gdev *d, void *ctx, uint64_t before, const char *fn)
{
    return lazy_charge(d, ctx, taken_since(before), fn);
}

#define LAZY_LOAD(fname, handle, call) do {                                       \
        REAL(fname, CUDA_ERROR_NOT_FOUND);                                        \
        CURRENT_DEV();                                                            \
        if (!dev_ || seen_before((handle), ctx_)) return (call);                  \
        uint64_t before_ = device_free();                                         \
        CUresult r_ = (call);                                                     \
        if (r_ == CUDA_SUCCESS) r_ = lazy_charge(dev_, ctx_, taken_since(before_), #fname); \
        STATS_DONE(0, 0);                                                         \
        return r_;                                                                \
    } while (0)

int cuLibraryGetModule(void **mod, void *lib) { LAZY_LOAD(cuLibraryGetModule, lib, real_(mod, lib)); }
int cuKernelGetFunction(void **fn, void *kernel) { LAZY_LOAD(cuKernelGetFunction, kernel, real_(fn, kernel)); }
int cuLibraryGetGlobal(CUdeviceptr *dptr, size_t *bytes, void *lib, const char *name)
{
    LAZY_LOAD(cuLibraryGetGlobal, lib, real_(dptr, bytes, lib, name));
}
