/* Paths 2 and 3 to the driver: dlsym (dlopen + dlsym, as nvidia-smi and ctypes reach it) and
 * cuGetProcAddress(_v2) (as libcudart 12/13 reaches every entry point): both hand out our
 * function of the table's entry. */
#include <dlfcn.h>
#include <string.h>
#include "table.h"

#define table gpumem_table

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

static void proc_wrap(const char *sym, void **pfn, int ver, uint64_t flags)
{
    gpumem_init();
    if (!gpumem_active || !sym || !pfn || !*pfn) return;
    int i = hooks_proc_lookup(sym, ver, flags);
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

