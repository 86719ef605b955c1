/* A library that asks dlsym(RTLD_NEXT, "marker"): it must get the marker of the library after
 * it (next_marker2.c), not what follows libgpumem.so. */
#define _GNU_SOURCE
#include <dlfcn.h>
int marker(void) { return 1; }
int next_marker(void)
{
    int (*f)(void) = (int (*)(void))dlsym(RTLD_NEXT, "marker");
    return f ? f() : -1;
}
