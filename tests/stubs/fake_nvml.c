/* Stand-in libnvidia-ml.so.1 for CPU tests.  Self-contained: build with
 *   cc -shared -fPIC -O2 -Wl,-soname,libnvidia-ml.so.1 -o libnvidia-ml.so.1 fake_nvml.c
 * Same devices and UUIDs as fake_cuda.c (FAKE_CUDA_TOTAL, FAKE_CUDA_DEVICES); NVML's total is the
 * CUDA total plus 480 MiB the driver reserves, as on an H100.  used comes from
 * FAKE_CUDA_PHYS_FILE when set.  FAKE_NVML_REVERSE=1 enumerates devices in reverse CUDA order
 * (NVML numbers devices its own way: processes must match them by UUID).
 * The driver a host would report, for the prerequisite checks of compose_gpumem/hostfacts.py:
 * FAKE_NVML_DRIVER (default "580.159.04"), FAKE_NVML_CUDA (nvmlSystemGetCudaDriverVersion_v2,
 * default 13000; r615 reports 13040 = CUDA 13.4), FAKE_NVML_MIG ("0" or "1" for every device, or
 * one digit per device in CUDA order, e.g. "01"; default off), FAKE_NVML_FAIL_INIT=1 makes
 * nvmlInit fail as on a host whose driver is not loaded. */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define EXPORT __attribute__((visibility("default")))
#define MAXDEV 64
#define RESERVED (480ULL << 20)
typedef int nvmlReturn_t;
typedef struct fdev { int cuda_index; } *nvmlDevice_t;
typedef struct { unsigned long long total, free, used; } nvmlMemory_t;
typedef struct { unsigned int version; unsigned long long total, reserved, free, used; } nvmlMemory_v2_t;

static struct fdev devs[MAXDEV];
static int ndev = 1, reverse, inited;
static uint64_t total = 8ULL << 30;
static uint64_t *phys;

static void setup(void)
{
    const char *s;
    if ((s = getenv("FAKE_CUDA_TOTAL"))) total = strtoull(s, NULL, 0);
    if ((s = getenv("FAKE_CUDA_DEVICES"))) ndev = atoi(s);
    if (ndev < 0) ndev = 0;
    if (ndev > MAXDEV) ndev = MAXDEV;
    reverse = (s = getenv("FAKE_NVML_REVERSE")) && *s == '1';
    for (int i = 0; i < MAXDEV; i++) devs[i].cuda_index = i;
    if ((s = getenv("FAKE_CUDA_PHYS_FILE")) && *s) {
        int fd = open(s, O_RDWR | O_CREAT, 0666);
        if (fd >= 0) {
            if (lseek(fd, 0, SEEK_END) < (off_t)(MAXDEV * 8) && ftruncate(fd, MAXDEV * 8)) {}
            void *p = mmap(NULL, MAXDEV * 8, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
            if (p != MAP_FAILED) phys = p;
            close(fd);
        }
    }
}

EXPORT nvmlReturn_t nvmlInit_v2(void)
{
    const char *s = getenv("FAKE_NVML_FAIL_INIT");
    if (s && *s == '1') return 9; /* NVML_ERROR_DRIVER_NOT_LOADED */
    if (!inited) setup();
    inited = 1;
    return 0;
}
EXPORT nvmlReturn_t nvmlInit(void) { return nvmlInit_v2(); }
EXPORT nvmlReturn_t nvmlInitWithFlags(unsigned int f) { (void)f; return nvmlInit_v2(); }
EXPORT nvmlReturn_t nvmlShutdown(void) { return 0; }
EXPORT const char *nvmlErrorString(nvmlReturn_t r)
{
    return r == 9 ? "Driver Not Loaded" : r ? "fake nvml error" : "Success";
}
EXPORT nvmlReturn_t nvmlSystemGetDriverVersion(char *buf, unsigned int len)
{
    const char *s = getenv("FAKE_NVML_DRIVER");
    if (!inited) return 1;
    snprintf(buf, len, "%s", s && *s ? s : "580.159.04");
    return 0;
}
EXPORT nvmlReturn_t nvmlSystemGetCudaDriverVersion_v2(int *v)
{
    const char *s = getenv("FAKE_NVML_CUDA");
    if (!inited) return 1;
    *v = s && *s ? atoi(s) : 13000;
    return 0;
}
EXPORT nvmlReturn_t nvmlSystemGetCudaDriverVersion(int *v) { return nvmlSystemGetCudaDriverVersion_v2(v); }
EXPORT nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *n) { if (!inited) return 1; *n = (unsigned)ndev; return 0; }
EXPORT nvmlReturn_t nvmlDeviceGetCount(unsigned int *n) { return nvmlDeviceGetCount_v2(n); }
EXPORT nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int i, nvmlDevice_t *h)
{
    if (!inited) return 1;
    if (i >= (unsigned)ndev) return 2;
    *h = &devs[reverse ? ndev - 1 - (int)i : (int)i];
    return 0;
}
EXPORT nvmlReturn_t nvmlDeviceGetHandleByIndex(unsigned int i, nvmlDevice_t *h) { return nvmlDeviceGetHandleByIndex_v2(i, h); }
EXPORT nvmlReturn_t nvmlDeviceGetUUID(nvmlDevice_t h, char *buf, unsigned int len)
{
    if (!h || !buf) return 2;
    snprintf(buf, len, "GPU-8a5f0c31-7e2d-4b10-9c55-21436587a9%02x", h->cuda_index);
    return 0;
}
EXPORT nvmlReturn_t nvmlDeviceGetName(nvmlDevice_t h, char *buf, unsigned int len) { snprintf(buf, len, "Fake GPU %d", h->cuda_index); return 0; }
static uint64_t used_of(nvmlDevice_t h) { return phys ? phys[h->cuda_index] : 0; }
EXPORT nvmlReturn_t nvmlDeviceGetMemoryInfo(nvmlDevice_t h, nvmlMemory_t *m)
{
    if (!h || !m) return 2;
    m->total = total + RESERVED;
    m->used = used_of(h) + RESERVED;
    m->free = m->total - m->used;
    return 0;
}
EXPORT nvmlReturn_t nvmlDeviceGetMemoryInfo_v2(nvmlDevice_t h, nvmlMemory_v2_t *m)
{
    if (!h || !m) return 2;
    m->total = total + RESERVED;
    m->reserved = RESERVED;
    m->used = used_of(h);
    m->free = m->total - m->reserved - m->used;
    return 0;
}
EXPORT nvmlReturn_t nvmlDeviceGetMigMode(nvmlDevice_t h, unsigned int *current, unsigned int *pending)
{
    const char *s = getenv("FAKE_NVML_MIG");
    unsigned int on = 0;
    if (!h || !current || !pending) return 2;
    if (s && *s) {
        size_t n = strlen(s);
        on = (unsigned)(s[n == 1 ? 0 : ((size_t)h->cuda_index < n ? (size_t)h->cuda_index : n - 1)] == '1');
    }
    *current = *pending = on;
    return 0;
}
