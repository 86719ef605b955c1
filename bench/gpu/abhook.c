/* In-process A/B of libgpumem.so's hooks against the driver calls they wrap.
 *
 * Between fresh processes the device VMs spread wider than the goal: the native async pair ran
 * 0.73-1.73 us from one process to the next (bench/RESULTS.md, runs 5-7).  This program holds one
 * context and one stream, dlopens libgpumem.so RTLD_LOCAL (so nothing else in the process is
 * interposed) and times alternating blocks of the same calls, made straight to libcuda and
 * through the library's exported hooks, on the same context, stream and memory.
 *
 *   abhook LIB MODE BYTES BLOCKS ITERS
 *     MODE alloc   cuMemAlloc_v2 + cuMemFree_v2 pairs
 *          async   cuMemAllocAsync + cuMemFreeAsync pairs on one stream
 *          info    cuMemGetInfo_v2 calls
 *          launch  cuLaunchKernel of an empty kernel (1 block of 1 thread) on one stream
 *          nvml    nvmlDeviceGetMemoryInfo calls on device 0 (libnvidia-ml.so.1 dlopen'ed)
 *          rmw     the driver's async pair alone, against the same with one locked
 *                  read-modify-write after each call (what a hook's atomics add; LIB unused)
 *   Prints one line: a_us=<median per pair or call, plain driver> b_us=<median, hooked> ratio=<b/a>
 *
 * Builds with a C compiler alone: cc -O2 -o abhook abhook.c -ldl -L<dir of libcuda.so> -lcuda
 * (the stand-in driver of tests/stubs on a machine without a GPU). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef int CUresult;
typedef int CUdevice;
typedef void *CUcontext;
typedef void *CUstream;
typedef unsigned long long CUdeviceptr;

CUresult cuInit(unsigned int);
CUresult cuDeviceGet(CUdevice *, int);
CUresult cuDevicePrimaryCtxRetain(CUcontext *, CUdevice);
CUresult cuCtxSetCurrent(CUcontext);
CUresult cuStreamCreate(CUstream *, unsigned int);
CUresult cuStreamSynchronize(CUstream);
CUresult cuMemAlloc_v2(CUdeviceptr *, size_t);
CUresult cuMemFree_v2(CUdeviceptr);
CUresult cuMemAllocAsync(CUdeviceptr *, size_t, CUstream);
CUresult cuMemFreeAsync(CUdeviceptr, CUstream);
CUresult cuMemGetInfo_v2(size_t *, size_t *);
CUresult cuModuleLoadData(void **, const void *);
CUresult cuModuleGetFunction(void **, void *, const char *);
CUresult cuLaunchKernel(void *, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, CUstream, void **, void **);
typedef CUresult (*launch_fn)(void *, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, CUstream, void **, void **);

/* an empty kernel, as PTX the driver compiles for whatever GPU it finds */
static const char empty_ptx[] = ".version 8.0\n.target sm_50\n.address_size 64\n.visible .entry empty()\n{\n\tret;\n}\n";
static void *empty_fn;

typedef int nvmlReturn_t;
typedef void *nvmlDevice_t;
typedef struct { unsigned long long total, free, used; } nvmlMemory_t;

struct calls {   /* one side of the comparison */
    CUresult (*alloc)(CUdeviceptr *, size_t);
    CUresult (*free_)(CUdeviceptr);
    CUresult (*alloc_async)(CUdeviceptr *, size_t, CUstream);
    CUresult (*free_async)(CUdeviceptr, CUstream);
    CUresult (*info)(size_t *, size_t *);
    nvmlReturn_t (*nvml_info)(nvmlDevice_t, nvmlMemory_t *);
    launch_fn launch;
    int rmw;   /* one locked read-modify-write after each call */
};

static CUstream stream;
static nvmlDevice_t nvml_dev;
static unsigned long rmw_counter;

static double now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static void check(CUresult r, const char *what)
{
    if (r != 0) {
        fprintf(stderr, "abhook: %s failed: %d\n", what, r);
        exit(1);
    }
}

/* one block of iters pairs (or calls): microseconds per pair */
static double block(const struct calls *c, const char *mode, size_t bytes, int iters)
{
    CUdeviceptr p;
    size_t fr, tot;
    double t0 = now_us();
    for (int i = 0; i < iters; i++) {
        if (!strcmp(mode, "alloc")) {
            check(c->alloc(&p, bytes), "alloc");
            check(c->free_(p), "free");
        } else if (!strcmp(mode, "info")) {
            check(c->info(&fr, &tot), "info");
        } else if (!strcmp(mode, "launch")) {
            check(c->launch(empty_fn, 1, 1, 1, 1, 1, 1, 0, stream, NULL, NULL), "launch");
        } else if (!strcmp(mode, "nvml")) {
            nvmlMemory_t m;
            check(c->nvml_info(nvml_dev, &m), "nvml info");
        } else {
            check(c->alloc_async(&p, bytes, stream), "alloc async");
            if (c->rmw) __atomic_fetch_add(&rmw_counter, 1, __ATOMIC_SEQ_CST);
            check(c->free_async(p, stream), "free async");
            if (c->rmw) __atomic_fetch_add(&rmw_counter, 1, __ATOMIC_SEQ_CST);
        }
    }
    if (strcmp(mode, "alloc") && strcmp(mode, "info") && strcmp(mode, "nvml")) check(cuStreamSynchronize(stream), "sync");
    return (now_us() - t0) / iters;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static void *hook(void *lib, const char *name)
{
    void *p = dlsym(lib, name);
    if (!p) {
        fprintf(stderr, "abhook: %s not in the library\n", name);
        exit(1);
    }
    return p;
}

int main(int argc, char **argv)
{
    if (argc != 6) {
        fprintf(stderr, "usage: abhook LIB alloc|async|info|launch|nvml|rmw BYTES BLOCKS ITERS\n");
        return 2;
    }
    const char *mode = argv[2];
    size_t bytes = strtoull(argv[3], NULL, 0);
    int blocks = atoi(argv[4]), iters = atoi(argv[5]);
    if (blocks < 1 || blocks > 1000 || iters < 1) return 2;
    /* the library first, and the context made through it, as under LD_PRELOAD: it learns a
     * context's device when the context is made (it needs no hook on stream creation) */
    void *lib = NULL;
    if (strcmp(mode, "rmw")) {
        lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
        if (!lib) {
            fprintf(stderr, "abhook: %s\n", dlerror());
            return 1;
        }
    }
    CUresult (*retain)(CUcontext *, CUdevice) = cuDevicePrimaryCtxRetain;
    if (lib) retain = (CUresult(*)(CUcontext *, CUdevice))hook(lib, "cuDevicePrimaryCtxRetain");
    CUdevice dev;
    CUcontext ctx;
    check(cuInit(0), "cuInit");
    check(cuDeviceGet(&dev, 0), "cuDeviceGet");
    check(retain(&ctx, dev), "cuDevicePrimaryCtxRetain");
    check(cuCtxSetCurrent(ctx), "cuCtxSetCurrent");
    check(cuStreamCreate(&stream, 0), "cuStreamCreate");

    struct calls a = { cuMemAlloc_v2, cuMemFree_v2, cuMemAllocAsync, cuMemFreeAsync, cuMemGetInfo_v2, NULL, cuLaunchKernel, 0 };
    if (!strcmp(mode, "launch")) {
        void *mod;
        check(cuModuleLoadData(&mod, empty_ptx), "cuModuleLoadData");
        check(cuModuleGetFunction(&empty_fn, mod, "empty"), "cuModuleGetFunction");
    }
    if (!strcmp(mode, "nvml")) {   /* NVML as nvidia-smi or pynvml reach it: dlopen'ed */
        void *nv = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
        nvmlReturn_t (*init)(void) = nv ? (nvmlReturn_t(*)(void))dlsym(nv, "nvmlInit_v2") : NULL;
        nvmlReturn_t (*by_index)(unsigned, nvmlDevice_t *) =
            nv ? (nvmlReturn_t(*)(unsigned, nvmlDevice_t *))dlsym(nv, "nvmlDeviceGetHandleByIndex_v2") : NULL;
        a.nvml_info = nv ? (nvmlReturn_t(*)(nvmlDevice_t, nvmlMemory_t *))dlsym(nv, "nvmlDeviceGetMemoryInfo") : NULL;
        if (!init || !by_index || !a.nvml_info || init() != 0 || by_index(0, &nvml_dev) != 0) {
            fprintf(stderr, "abhook: no NVML device 0\n");
            return 1;
        }
    }
    struct calls b = a;
    if (!lib) {
        b.rmw = 1;
    } else {
        b.alloc = (CUresult(*)(CUdeviceptr *, size_t))hook(lib, "cuMemAlloc_v2");
        b.free_ = (CUresult(*)(CUdeviceptr))hook(lib, "cuMemFree_v2");
        b.alloc_async = (CUresult(*)(CUdeviceptr *, size_t, CUstream))hook(lib, "cuMemAllocAsync");
        b.free_async = (CUresult(*)(CUdeviceptr, CUstream))hook(lib, "cuMemFreeAsync");
        b.info = (CUresult(*)(size_t *, size_t *))hook(lib, "cuMemGetInfo_v2");
        if (!strcmp(mode, "launch")) b.launch = (launch_fn)hook(lib, "cuLaunchKernel");
        if (a.nvml_info) b.nvml_info = (nvmlReturn_t(*)(nvmlDevice_t, nvmlMemory_t *))hook(lib, "nvmlDeviceGetMemoryInfo");
    }
    block(&a, mode, bytes, iters);   /* warm-up: pools, the library's first-call work */
    block(&b, mode, bytes, iters);
    double *ta = calloc((size_t)blocks, sizeof *ta), *tb = calloc((size_t)blocks, sizeof *tb);
    if (!ta || !tb) return 1;
    for (int i = 0; i < blocks; i++) {   /* alternate, and swap the order every other block */
        if (i % 2) {
            tb[i] = block(&b, mode, bytes, iters);
            ta[i] = block(&a, mode, bytes, iters);
        } else {
            ta[i] = block(&a, mode, bytes, iters);
            tb[i] = block(&b, mode, bytes, iters);
        }
    }
    double ma = median(ta, blocks), mb = median(tb, blocks);
    printf("a_us=%.4f b_us=%.4f ratio=%.4f\n", ma, mb, mb / ma);
    return 0;
}
