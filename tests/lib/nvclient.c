/* nvclient: reads memory through NVML the way nvidia-smi and pynvml do (dlopen + dlsym, no link
 * to libcuda).  Prints one line per device:
 *   nvml index=I uuid=U total=T used=U free=F v2total=T v2reserved=R v2used=U v2free=F */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>

typedef struct { unsigned long long total, free, used; } M1;
typedef struct { unsigned int version; unsigned long long total, reserved, free, used; } M2;

int main(void)
{
    void *h = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!h) { printf("nvml err=dlopen\n"); return 1; }
    int (*init)(void) = (int (*)(void))dlsym(h, "nvmlInit_v2");
    int (*count)(unsigned *) = (int (*)(unsigned *))dlsym(h, "nvmlDeviceGetCount_v2");
    int (*byidx)(unsigned, void **) = (int (*)(unsigned, void **))dlsym(h, "nvmlDeviceGetHandleByIndex_v2");
    int (*uuid)(void *, char *, unsigned) = (int (*)(void *, char *, unsigned))dlsym(h, "nvmlDeviceGetUUID");
    int (*mem1)(void *, M1 *) = (int (*)(void *, M1 *))dlsym(h, "nvmlDeviceGetMemoryInfo");
    int (*mem2)(void *, M2 *) = (int (*)(void *, M2 *))dlsym(h, "nvmlDeviceGetMemoryInfo_v2");
    unsigned n = 0;
    if (!init || init() || count(&n)) { printf("nvml err=init\n"); return 1; }
    for (unsigned i = 0; i < n; i++) {
        void *d;
        char u[96] = "";
        M1 a = { 0, 0, 0 };
        M2 b = { (unsigned)(sizeof(M2) | (2u << 24)), 0, 0, 0, 0 };
        if (byidx(i, &d) || uuid(d, u, sizeof u) || mem1(d, &a) || mem2(d, &b)) { printf("nvml err=query\n"); return 1; }
        printf("nvml index=%u uuid=%s total=%llu used=%llu free=%llu v2total=%llu v2reserved=%llu v2used=%llu v2free=%llu\n",
               i, u, a.total, a.used, a.free, b.total, b.reserved, b.used, b.free);
    }
    return 0;
}
