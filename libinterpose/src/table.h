/* THE table of hooked entry points.  One line per entry point:
 *   X(library, name, cuGetProcAddress base name, from cudaVersion, per-thread-stream, parameters)
 * cuGetProcAddress(base, cudaVersion, flags) picks the line with that base whose version is the
 * highest not above cudaVersion, preferring the _ptsz line when flags ask for the per-thread
 * default stream: the driver's own rules, since the pointers it hands out are internal ones and
 * cannot be compared with the exported symbols. */
#ifndef GPUMEM_TABLE_H
#define GPUMEM_TABLE_H
#include "gpumem.h"

#define GPUMEM_HOOKS(X) \
  X(LIB_CUDA, cuGetProcAddress,             cuGetProcAddress,        0,     0, (const char *sym, void **pfn, int ver, uint64_t flags)) \
  X(LIB_CUDA, cuGetProcAddress_v2,          cuGetProcAddress,        12000, 0, (const char *sym, void **pfn, int ver, uint64_t flags, int *status)) \
  X(LIB_CUDA, cuMemAlloc,                   cuMemAlloc,              0,     0, (CUdeviceptr_v1 *dptr, unsigned int size)) \
  X(LIB_CUDA, cuMemAlloc_v2,                cuMemAlloc,              3020,  0, (CUdeviceptr *dptr, size_t size)) \
  X(LIB_CUDA, cuMemAllocPitch,              cuMemAllocPitch,         0,     0, (CUdeviceptr_v1 *dptr, unsigned int *pitch, unsigned int width, unsigned int height, unsigned int elem)) \
  X(LIB_CUDA, cuMemAllocPitch_v2,           cuMemAllocPitch,         3020,  0, (CUdeviceptr *dptr, size_t *pitch, size_t width, size_t height, unsigned int elem)) \
  X(LIB_CUDA, cuMemAllocManaged,            cuMemAllocManaged,       0,     0, (CUdeviceptr *dptr, size_t size, unsigned int flags)) \
  X(LIB_CUDA, cuMemFree,                    cuMemFree,               0,     0, (CUdeviceptr_v1 dptr)) \
  X(LIB_CUDA, cuMemFree_v2,                 cuMemFree,               3020,  0, (CUdeviceptr dptr)) \
  X(LIB_CUDA, cuMemAllocAsync,              cuMemAllocAsync,         0,     0, (CUdeviceptr *dptr, size_t size, CUstream stream)) \
  X(LIB_CUDA, cuMemAllocAsync_ptsz,         cuMemAllocAsync,         0,     1, (CUdeviceptr *dptr, size_t size, CUstream stream)) \
  X(LIB_CUDA, cuMemAllocFromPoolAsync,      cuMemAllocFromPoolAsync, 0,     0, (CUdeviceptr *dptr, size_t size, CUmemoryPool pool, CUstream stream)) \
  X(LIB_CUDA, cuMemAllocFromPoolAsync_ptsz, cuMemAllocFromPoolAsync, 0,     1, (CUdeviceptr *dptr, size_t size, CUmemoryPool pool, CUstream stream)) \
  X(LIB_CUDA, cuMemFreeAsync,               cuMemFreeAsync,          0,     0, (CUdeviceptr dptr, CUstream stream)) \
  X(LIB_CUDA, cuMemFreeAsync_ptsz,          cuMemFreeAsync,          0,     1, (CUdeviceptr dptr, CUstream stream)) \
  X(LIB_CUDA, cuMemCreate,                  cuMemCreate,             0,     0, (CUmemGenericAllocationHandle *handle, size_t size, const CUmemAllocationProp *prop, unsigned long long flags)) \
  X(LIB_CUDA, cuMemRelease,                 cuMemRelease,            0,     0, (CUmemGenericAllocationHandle handle)) \
  X(LIB_CUDA, cuArrayCreate,                cuArrayCreate,           0,     0, (CUarray *arr, const CUDA_ARRAY_DESCRIPTOR_v1 *desc)) \
  X(LIB_CUDA, cuArrayCreate_v2,             cuArrayCreate,           3020,  0, (CUarray *arr, const CUDA_ARRAY_DESCRIPTOR *desc)) \
  X(LIB_CUDA, cuArray3DCreate,              cuArray3DCreate,         0,     0, (CUarray *arr, const CUDA_ARRAY3D_DESCRIPTOR_v1 *desc)) \
  X(LIB_CUDA, cuArray3DCreate_v2,           cuArray3DCreate,         3020,  0, (CUarray *arr, const CUDA_ARRAY3D_DESCRIPTOR *desc)) \
  X(LIB_CUDA, cuArrayDestroy,               cuArrayDestroy,          0,     0, (CUarray arr)) \
  X(LIB_CUDA, cuMipmappedArrayCreate,       cuMipmappedArrayCreate,  0,     0, (CUmipmappedArray *arr, const CUDA_ARRAY3D_DESCRIPTOR *desc, unsigned int levels)) \
  X(LIB_CUDA, cuMipmappedArrayDestroy,      cuMipmappedArrayDestroy, 0,     0, (CUmipmappedArray arr)) \
  X(LIB_CUDA, cuMemGetInfo,                 cuMemGetInfo,            0,     0, (unsigned int *free_b, unsigned int *total_b)) \
  X(LIB_CUDA, cuMemGetInfo_v2,              cuMemGetInfo,            3020,  0, (size_t *free_b, size_t *total_b)) \
  X(LIB_CUDA, cuDeviceTotalMem,             cuDeviceTotalMem,        0,     0, (unsigned int *bytes, CUdevice dev)) \
  X(LIB_CUDA, cuDeviceTotalMem_v2,          cuDeviceTotalMem,        3020,  0, (size_t *bytes, CUdevice dev)) \
  X(LIB_CUDA, cuCtxCreate,                  cuCtxCreate,             0,     0, (CUcontext *pctx, unsigned int flags, CUdevice dev)) \
  X(LIB_CUDA, cuCtxCreate_v2,               cuCtxCreate,             3020,  0, (CUcontext *pctx, unsigned int flags, CUdevice dev)) \
  X(LIB_CUDA, cuCtxCreate_v3,               cuCtxCreate,             11040, 0, (CUcontext *pctx, void *params, int nparams, unsigned int flags, CUdevice dev)) \
  X(LIB_CUDA, cuCtxCreate_v4,               cuCtxCreate,             12050, 0, (CUcontext *pctx, void *params, unsigned int flags, CUdevice dev)) \
  X(LIB_CUDA, cuCtxDestroy,                 cuCtxDestroy,            0,     0, (CUcontext ctx)) \
  X(LIB_CUDA, cuCtxDestroy_v2,              cuCtxDestroy,            4000,  0, (CUcontext ctx)) \
  X(LIB_CUDA, cuDevicePrimaryCtxRetain,     cuDevicePrimaryCtxRetain, 0,    0, (CUcontext *pctx, CUdevice dev)) \
  X(LIB_CUDA, cuDevicePrimaryCtxRelease,    cuDevicePrimaryCtxRelease, 0,   0, (CUdevice dev)) \
  X(LIB_CUDA, cuDevicePrimaryCtxRelease_v2, cuDevicePrimaryCtxRelease, 11000, 0, (CUdevice dev)) \
  X(LIB_CUDA, cuDevicePrimaryCtxReset,      cuDevicePrimaryCtxReset, 0,     0, (CUdevice dev)) \
  X(LIB_CUDA, cuDevicePrimaryCtxReset_v2,   cuDevicePrimaryCtxReset, 11000, 0, (CUdevice dev)) \
  X(LIB_CUDA, cuGreenCtxCreate,             cuGreenCtxCreate,        0,     0, (void **green, void *desc, CUdevice dev, unsigned int flags)) \
  X(LIB_CUDA, cuGreenCtxDestroy,            cuGreenCtxDestroy,       0,     0, (void *green)) \
  X(LIB_CUDA, cuStreamDestroy,              cuStreamDestroy,         0,     0, (CUstream s)) \
  X(LIB_CUDA, cuStreamDestroy_v2,           cuStreamDestroy,         4000,  0, (CUstream s)) \
  X(LIB_CUDA, cuCtxSetLimit,                cuCtxSetLimit,           0,     0, (int limit, size_t value)) \
  X(LIB_CUDA, cuModuleLoad,                 cuModuleLoad,            0,     0, (void **mod, const char *path)) \
  X(LIB_CUDA, cuModuleLoadData,             cuModuleLoadData,        0,     0, (void **mod, const void *image)) \
  X(LIB_CUDA, cuModuleLoadDataEx,           cuModuleLoadDataEx,      0,     0, (void **mod, const void *image, unsigned int n, void *opts, void **vals)) \
  X(LIB_CUDA, cuModuleLoadFatBinary,        cuModuleLoadFatBinary,   0,     0, (void **mod, const void *fatbin)) \
  X(LIB_CUDA, cuModuleUnload,               cuModuleUnload,          0,     0, (void *mod)) \
  X(LIB_CUDA, cuLibraryGetModule,           cuLibraryGetModule,      0,     0, (void **mod, void *lib)) \
  X(LIB_CUDA, cuKernelGetFunction,          cuKernelGetFunction,     0,     0, (void **fn, void *kernel)) \
  X(LIB_CUDA, cuLibraryGetGlobal,           cuLibraryGetGlobal,      0,     0, (CUdeviceptr *dptr, size_t *bytes, void *lib, const char *name)) \
  X(LIB_CUDA, cuMemPoolCreate,              cuMemPoolCreate,         0,     0, (CUmemoryPool *pool, const CUmemPoolProps *props)) \
  X(LIB_CUDA, cuMemPoolDestroy,             cuMemPoolDestroy,        0,     0, (CUmemoryPool pool)) \
  X(LIB_CUDA, cuStreamBeginCapture,         cuStreamBeginCapture,    0,     0, (CUstream s, int mode)) \
  X(LIB_CUDA, cuStreamBeginCapture_v2,      cuStreamBeginCapture,    10010, 0, (CUstream s, int mode)) \
  X(LIB_CUDA, cuStreamBeginCapture_ptsz,    cuStreamBeginCapture,    10010, 1, (CUstream s, int mode)) \
  X(LIB_CUDA, cuStreamBeginCaptureToGraph,  cuStreamBeginCaptureToGraph, 0, 0, (CUstream s, CUgraph g, const void *deps, const void *edges, size_t n, int mode)) \
  X(LIB_CUDA, cuStreamBeginCaptureToGraph_ptsz, cuStreamBeginCaptureToGraph, 0, 1, (CUstream s, CUgraph g, const void *deps, const void *edges, size_t n, int mode)) \
  X(LIB_CUDA, cuStreamEndCapture,           cuStreamEndCapture,      0,     0, (CUstream s, CUgraph *g)) \
  X(LIB_CUDA, cuStreamEndCapture_ptsz,      cuStreamEndCapture,      0,     1, (CUstream s, CUgraph *g)) \
  X(LIB_CUDA, cuGraphInstantiate,           cuGraphInstantiate,      0,     0, (CUgraphExec *exec, CUgraph g, CUgraphNode *err_node, char *log, size_t log_size)) \
  X(LIB_CUDA, cuGraphInstantiate_v2,        cuGraphInstantiate,      11000, 0, (CUgraphExec *exec, CUgraph g, CUgraphNode *err_node, char *log, size_t log_size)) \
  X(LIB_CUDA, cuGraphInstantiateWithFlags,  cuGraphInstantiateWithFlags, 0, 0, (CUgraphExec *exec, CUgraph g, unsigned long long flags)) \
  X(LIB_CUDA, cuGraphInstantiateWithParams, cuGraphInstantiateWithParams, 0, 0, (CUgraphExec *exec, CUgraph g, void *params)) \
  X(LIB_CUDA, cuGraphInstantiateWithParams_ptsz, cuGraphInstantiateWithParams, 0, 1, (CUgraphExec *exec, CUgraph g, void *params)) \
  X(LIB_CUDA, cuGraphExecDestroy,           cuGraphExecDestroy,      0,     0, (CUgraphExec exec)) \
  X(LIB_CUDA, cuLaunchKernel,               cuLaunchKernel,          4000,  0, (void *f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz, unsigned shmem, CUstream s, void **params, void **extra)) \
  X(LIB_CUDA, cuLaunchKernel_ptsz,          cuLaunchKernel,          7000,  1, (void *f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz, unsigned shmem, CUstream s, void **params, void **extra)) \
  X(LIB_CUDA, cuLaunchKernelEx,             cuLaunchKernelEx,        11060, 0, (const void *config, void *f, void **params, void **extra)) \
  X(LIB_CUDA, cuLaunchKernelEx_ptsz,        cuLaunchKernelEx,        11060, 1, (const void *config, void *f, void **params, void **extra)) \
  X(LIB_CUDA, cuLaunchCooperativeKernel,    cuLaunchCooperativeKernel, 9000, 0, (void *f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz, unsigned shmem, CUstream s, void **params)) \
  X(LIB_CUDA, cuLaunchCooperativeKernel_ptsz, cuLaunchCooperativeKernel, 9000, 1, (void *f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz, unsigned shmem, CUstream s, void **params)) \
  X(LIB_NVML, nvmlDeviceGetMemoryInfo,      nvmlDeviceGetMemoryInfo, 0,     0, (nvmlDevice_t dev, nvmlMemory_t *mem)) \
  X(LIB_NVML, nvmlDeviceGetMemoryInfo_v2,   nvmlDeviceGetMemoryInfo_v2, 0,  0, (nvmlDevice_t dev, nvmlMemory_v2_t *mem))

/* index of each entry: H_cuMemAlloc_v2, ... */
#define GPUMEM_ENUM(lib, name, base, ver, ptsz, params) H_##name,
enum { GPUMEM_HOOKS(GPUMEM_ENUM) H_COUNT };
#undef GPUMEM_ENUM

/* real-function pointer type of each entry: fn_cuMemAlloc_v2, ... (every entry returns an int code) */
#define GPUMEM_TYPEDEF(lib, name, base, ver, ptsz, params) typedef int (*fn_##name) params;
GPUMEM_HOOKS(GPUMEM_TYPEDEF)
#undef GPUMEM_TYPEDEF

/* our function for each entry, exported under the driver's own name */
#define GPUMEM_PROTO(lib, name, base, ver, ptsz, params) GPUMEM_EXPORT int name params;
GPUMEM_HOOKS(GPUMEM_PROTO)
#undef GPUMEM_PROTO

struct hook {
    const char *name, *base;
    int lib, ver, ptsz;
    void *ours;
    void *real;   /* resolved lazily from the real library */
    void *seed;   /* what cuGetProcAddress handed out first (preferred once known) */
};

GPUMEM_HIDDEN extern struct hook gpumem_table[H_COUNT];
GPUMEM_HIDDEN void *hooks_real(int idx);
GPUMEM_HIDDEN int hooks_find(const char *name);   /* entry of that name, or -1 */
GPUMEM_HIDDEN int hooks_proc_lookup(const char *sym, int ver, uint64_t flags);
GPUMEM_HIDDEN void *hooks_real_slow(int idx);
/* inlined into every hook: one load once the entry is resolved, no call */
static inline void *hooks_real_fast(struct hook *table, int i)
{
    void *p = __atomic_load_n(&table[i].real, __ATOMIC_ACQUIRE);
    return __builtin_expect(p != NULL, 1) ? p : hooks_real_slow(i);
}
/* the real function of an entry, or return `err` from the hook when the driver lacks it */
#define REAL(name, err) \
    uint64_t t_entry_ __attribute__((unused)) = STATS_NOW(); \
    fn_##name real_ = (fn_##name)hooks_real_fast(gpumem_table, H_##name); \
    if (!real_) return (err)
/* the limited device of the current context (or of a stream's), and that context */
#define CURRENT_DEV() void *ctx_; struct gdev *dev_ = dev_current(&ctx_)
#define STREAM_DEV(s, ptsz) void *ctx_; struct gdev *dev_ = dev_of_stream((s), (ptsz), &ctx_)
#endif
