/* The least an interposer adds: the entry points abhook.c times, each forwarding straight to
 * the real library through a pointer resolved once.  Timed by abhook in place of libgpumem.so, it
 * shows how much of a hook's cost is the extra call and return alone (bench/gpu/ab_variants.sh).
 *   cc -O2 -shared -fPIC -o libnullhook.so nullhook.c -ldl */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stddef.h>

typedef int CUresult;
typedef unsigned long long CUdeviceptr;

/* the real function: resolved at first use (abhook loads NVML after this library) */
static void *real(void **slot, const char *lib, const char *name)
{
    void *p = __atomic_load_n(slot, __ATOMIC_ACQUIRE);
    if (p) return p;
    void *h = dlopen(lib, RTLD_NOW | RTLD_NOLOAD);
    p = h ? dlsym(h, name) : NULL;
    __atomic_store_n(slot, p, __ATOMIC_RELEASE);
    return p;
}

#define FORWARD(ret, lib, name, params, args)                                 \
    ret name params                                                           \
    {                                                                         \
        static void *p_;                                                      \
        ret(*fn_) params = (ret(*) params)real(&p_, lib, #name);              \
        return fn_ args;                                                      \
    }

#define CUDA "libcuda.so.1"
FORWARD(CUresult, CUDA, cuDevicePrimaryCtxRetain, (void **c, int d), (c, d))
FORWARD(CUresult, CUDA, cuMemAlloc_v2, (CUdeviceptr *p, size_t n), (p, n))
FORWARD(CUresult, CUDA, cuMemFree_v2, (CUdeviceptr p), (p))
FORWARD(CUresult, CUDA, cuMemAllocAsync, (CUdeviceptr *p, size_t n, void *s), (p, n, s))
FORWARD(CUresult, CUDA, cuMemFreeAsync, (CUdeviceptr p, void *s), (p, s))
FORWARD(CUresult, CUDA, cuMemGetInfo_v2, (size_t *f, size_t *t), (f, t))
FORWARD(int, "libnvidia-ml.so.1", nvmlDeviceGetMemoryInfo, (void *h, void *m), (h, m))
FORWARD(CUresult, CUDA, cuLaunchKernel,
        (void *f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz, unsigned sh, void *s, void **p, void **e),
        (f, gx, gy, gz, bx, by, bz, sh, s, p, e))
