/* gpumem_probe: a tiny CUDA driver client for checking libgpumem.so by hand or in containers.
 *
 * Build (against the stand-in driver here, or a real libcuda.so):
 *   cc -O2 -o gpumem_probe gpumem_probe.c -L<dir with libcuda.so> -lcuda
 * Usage (device 0, or GPUMEM_PROBE_DEVICE=N):
 *   gpumem_probe info                       prints "total=<bytes> free=<bytes>" (cuMemGetInfo), exit 0
 *   gpumem_probe totalmem                   prints "totalmem=<bytes>" (cuDeviceTotalMem), exit 0
 *   gpumem_probe alloc <bytes> [hold_s]     cuMemAlloc; prints "ok" (exit 0) or "oom" (exit 3),
 *                                           then holds the memory hold_s seconds (-1: forever)
 * Sizes accept a K/M/G suffix (binary).  Any other CUDA error: a message and exit 1.
 * The probe retains the primary context first, like the CUDA runtime does, so under libgpumem.so
 * `info` already shows free = cap - GPUMEM_CONTEXT_RESERVE (512 MiB by default) and `alloc` can
 * take at most that much.  `totalmem` creates no context. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef int CUresult;
typedef int CUdevice;
typedef void *CUcontext;
CUresult cuInit(unsigned int);
CUresult cuDeviceGet(CUdevice *, int);
CUresult cuDevicePrimaryCtxRetain(CUcontext *, CUdevice);
CUresult cuCtxSetCurrent(CUcontext);
CUresult cuMemGetInfo_v2(size_t *, size_t *);
CUresult cuDeviceTotalMem_v2(size_t *, CUdevice);
CUresult cuMemAlloc_v2(unsigned long long *, size_t);

static unsigned long long parse_size(const char *s)
{
    char *end;
    unsigned long long v = strtoull(s, &end, 0);
    switch (*end) {
    case 'k': case 'K': v <<= 10; break;
    case 'm': case 'M': v <<= 20; break;
    case 'g': case 'G': v <<= 30; break;
    default: break;
    }
    return v;
}

static void check(CUresult r, const char *what)
{
    if (r) { fprintf(stderr, "gpumem_probe: %s failed: CUDA error %d\n", what, r); exit(1); }
}

int main(int argc, char **argv)
{
    if (argc < 2) { fprintf(stderr, "usage: gpumem_probe info|totalmem|alloc <bytes> [hold_seconds]\n"); return 2; }
    const char *d = getenv("GPUMEM_PROBE_DEVICE");
    CUdevice dev;
    CUcontext ctx;
    check(cuInit(0), "cuInit");
    check(cuDeviceGet(&dev, d ? atoi(d) : 0), "cuDeviceGet");
    if (!strcmp(argv[1], "totalmem")) {
        size_t t;
        check(cuDeviceTotalMem_v2(&t, dev), "cuDeviceTotalMem");
        printf("totalmem=%zu\n", t);
        return 0;
    }
    CUresult r = cuDevicePrimaryCtxRetain(&ctx, dev);
    if (r == 2) { printf("oom\n"); return 3; }
    check(r, "cuDevicePrimaryCtxRetain");
    check(cuCtxSetCurrent(ctx), "cuCtxSetCurrent");
    if (!strcmp(argv[1], "info")) {
        size_t f, t;
        check(cuMemGetInfo_v2(&f, &t), "cuMemGetInfo");
        printf("total=%zu free=%zu\n", t, f);
        return 0;
    }
    if (!strcmp(argv[1], "alloc") && argc >= 3) {
        unsigned long long p;
        r = cuMemAlloc_v2(&p, parse_size(argv[2]));
        if (r == 2) { printf("oom\n"); fflush(stdout); return 3; }
        check(r, "cuMemAlloc");
        printf("ok\n");
        fflush(stdout);
        long hold = argc >= 4 ? atol(argv[3]) : 0;
        if (hold < 0) for (;;) pause();
        if (hold > 0) sleep((unsigned)hold);
        return 0;
    }
    fprintf(stderr, "usage: gpumem_probe info|totalmem|alloc <bytes> [hold_seconds]\n");
    return 2;
}
