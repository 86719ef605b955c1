/* Reported memory: a limited device's total is its cap, its free what the cap leaves
 * (cuMemGetInfo, cuDeviceTotalMem, nvmlDeviceGetMemoryInfo). */
#include <limits.h>
#include "table.h"

/* ---------------------------------------------------------------- reported memory */

int cuMemGetInfo_v2(size_t *free_b, size_t *total_b)
{
    REAL(cuMemGetInfo_v2, CUDA_ERROR_NOT_FOUND);
    uint64_t t0 = STATS_NOW();
    CUresult r = real_(free_b, total_b);
    uint64_t t1 = STATS_NOW();
    CURRENT_DEV();
    uint64_t f, t, u;
    if (r == CUDA_SUCCESS && free_b && total_b && dev_report(dev_, *free_b, &f, &t, &u)) {
        *free_b = f;
        *total_b = t;
    }
    STATS_DONE(t0, t1);
    return r;
}

int cuMemGetInfo(unsigned int *free_b, unsigned int *total_b)
{
    REAL(cuMemGetInfo, CUDA_ERROR_NOT_FOUND);
    CUresult r = real_(free_b, total_b);
    CURRENT_DEV();
    uint64_t f, t, u;
    if (r == CUDA_SUCCESS && free_b && total_b && dev_report(dev_, *free_b, &f, &t, &u)) {
        *free_b = f > UINT_MAX ? UINT_MAX : (unsigned int)f;
        *total_b = t > UINT_MAX ? UINT_MAX : (unsigned int)t;
    }
    return r;
}

/* A limited device's total is its cap, known since its devices were loaded: no driver call.
 * Any other device (unlimited, or a malformed limit) gets the driver's own answer. */
int cuDeviceTotalMem_v2(size_t *bytes, CUdevice dev)
{
    uint64_t cap;
    if (bytes && dev_cap_of(dev, &cap)) {
        *bytes = cap;
        return CUDA_SUCCESS;
    }
    REAL(cuDeviceTotalMem_v2, CUDA_ERROR_NOT_FOUND);
    return real_(bytes, dev);
}

int cuDeviceTotalMem(unsigned int *bytes, CUdevice dev)
{
    uint64_t cap;
    if (bytes && dev_cap_of(dev, &cap)) {
        *bytes = cap > UINT_MAX ? UINT_MAX : (unsigned int)cap;
        return CUDA_SUCCESS;
    }
    REAL(cuDeviceTotalMem, CUDA_ERROR_NOT_FOUND);
    return real_(bytes, dev);
}

/* NVML's two layouts share total/used/free: total = cap, used = the container's usage */
static int nvml_report(nvmlDevice_t dev, unsigned long long *total, unsigned long long *used,
                       unsigned long long *free_b)
{
    uint64_t f, t, u;
    if (!dev_report(dev_by_nvml(dev), UINT64_MAX, &f, &t, &u)) return 0;
    *total = t;
    *used = u > t ? t : u;
    *free_b = t - *used;
    return 1;
}

int nvmlDeviceGetMemoryInfo(nvmlDevice_t dev, nvmlMemory_t *mem)
{
    REAL(nvmlDeviceGetMemoryInfo, 13 /* NVML_ERROR_FUNCTION_NOT_FOUND */);
    nvmlReturn_t r = real_(dev, mem);
    if (r == NVML_SUCCESS && mem) nvml_report(dev, &mem->total, &mem->used, &mem->free);
    return r;
}

int nvmlDeviceGetMemoryInfo_v2(nvmlDevice_t dev, nvmlMemory_v2_t *mem)
{
    REAL(nvmlDeviceGetMemoryInfo_v2, 13 /* NVML_ERROR_FUNCTION_NOT_FOUND */);
    nvmlReturn_t r = real_(dev, mem);
    if (r == NVML_SUCCESS && mem && nvml_report(dev, &mem->total, &mem->used, &mem->free)) mem->reserved = 0;
    return r;
}

