/* The one place real symbols come from, for all three paths (link, dlsym, cuGetProcAddress):
 * our own dlopen of the real driver libraries, searched with the real dlsym. */
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>
#include "gpumem.h"

static dlsym_fn real_dlsym_p;
static void *lib_handle[2];
static const char *const lib_names[2][2] = { { "libcuda.so.1", "libcuda.so" },
                                             { "libnvidia-ml.so.1", "libnvidia-ml.so" } };
__thread int gpumem_in_resolve;   /* >0 while we dlopen: our dlsym hook then only forwards */

static void *no_dlsym(void *h, const char *n) { (void)h; (void)n; return NULL; }

GPUMEM_NO_SANITIZE dlsym_fn get_real_dlsym(void)
{
    dlsym_fn f = __atomic_load_n(&real_dlsym_p, __ATOMIC_ACQUIRE);
    if (f) return f;
    static const char *const versions[] = { "GLIBC_2.34", "GLIBC_2.2.5", "GLIBC_2.17", "GLIBC_2.0" };
    /* preloaded: the next dlsym after ours; dlopen'ed RTLD_LOCAL (bench/gpu/abhook.c), where
     * RTLD_NEXT finds nothing, the process's first dlsym is libc's */
    void *const scopes[] = { RTLD_NEXT, RTLD_DEFAULT };
    for (size_t k = 0; k < 2 && !f; k++)
        for (size_t i = 0; i < sizeof versions / sizeof *versions && !f; i++) {
            void *p = dlvsym(scopes[k], "dlsym", versions[i]);
            if (p && p != (void *)dlsym) f = (dlsym_fn)p;   /* never ourselves */
        }
    if (!f) {
        gpumem_log(LOG_ERROR, "cannot find the real dlsym; no driver symbol can be resolved");
        f = no_dlsym;
    }
    __atomic_store_n(&real_dlsym_p, f, __ATOMIC_RELEASE);
    return f;
}

void *resolve_real_dlsym(void *handle, const char *name) { return get_real_dlsym()(handle, name); }

static void *open_lib(int lib)
{
    void *h = __atomic_load_n(&lib_handle[lib], __ATOMIC_ACQUIRE);
    if (h) return h;
    gpumem_in_resolve++;
    for (int i = 0; i < 2 && !h; i++) h = dlopen(lib_names[lib][i], RTLD_NOW | RTLD_LOCAL);
    gpumem_in_resolve--;
    if (!h) {
        LOG(LOG_DEBUG, "cannot load %s: %s", lib_names[lib][0], dlerror());
        return NULL;
    }
    void *old = NULL;
    if (!__atomic_compare_exchange_n(&lib_handle[lib], &old, h, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
        dlclose(h);   /* another thread won; drop our extra reference */
        h = old;
    }
    return h;
}

void *resolve_symbol(int lib, const char *name)
{
    void *h = open_lib(lib);
    if (!h) return NULL;
    gpumem_in_resolve++;
    void *p = get_real_dlsym()(h, name);
    gpumem_in_resolve--;
    if (!p) LOG(LOG_DEBUG, "%s not found in %s", name, lib_names[lib][0]);
    return p;
}
