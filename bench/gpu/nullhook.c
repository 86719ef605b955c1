/* The least an interposer adds: the six entry points abhook.c times, each forwarding straight to
 * libcuda through a pointer resolved once.  Timed by abhook in place of libgpumem.so, it shows how
 * much of a hook's cost is the extra call and return alone (bench/gpu/ab_variants.sh).
 *   cc -O2 -shared -fPIC -o libnullhook.so nullhook.c -ldl */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stddef.h>

typedef int CUresult;
typedef unsigned long long CUdeviceptr;

static void *driver(const char *name)
{
    void *lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_NOLOAD);
    return lib ? dlsym(lib, name) : NULL;
}

static CUresult (*p_retain)(void **, int);
static CUresult (*p_alloc)(CUdeviceptr *, size_t);
static CUresult (*p_free)(CUdeviceptr);
static CUresult (*p_alloc_async)(CUdeviceptr *, size_t, void *);
static CUresult (*p_free_async)(CUdeviceptr, void *);
static CUresult (*p_info)(size_t *, size_t *);

__attribute__((constructor)) static void resolve(void)
{
    p_retain = (CUresult(*)(void **, int))driver("cuDevicePrimaryCtxRetain");
    p_alloc = (CUresult(*)(CUdeviceptr *, size_t))driver("cuMemAlloc_v2");
    p_free = (CUresult(*)(CUdeviceptr))driver("cuMemFree_v2");
    p_alloc_async = (CUresult(*)(CUdeviceptr *, size_t, void *))driver("cuMemAllocAsync");
    p_free_async = (CUresult(*)(CUdeviceptr, void *))driver("cuMemFreeAsync");
    p_info = (CUresult(*)(size_t *, size_t *))driver("cuMemGetInfo_v2");
}

CUresult cuDevicePrimaryCtxRetain(void **c, int d) { return p_retain(c, d); }
CUresult cuMemAlloc_v2(CUdeviceptr *p, size_t n) { return p_alloc(p, n); }
CUresult cuMemFree_v2(CUdeviceptr p) { return p_free(p); }
CUresult cuMemAllocAsync(CUdeviceptr *p, size_t n, void *s) { return p_alloc_async(p, n, s); }
CUresult cuMemFreeAsync(CUdeviceptr p, void *s) { return p_free_async(p, s); }
CUresult cuMemGetInfo_v2(size_t *f, size_t *t) { return p_info(f, t); }
