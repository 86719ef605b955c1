// Micro-benchmarks of the driver paths libgpumem.so sits on (bench/gpu/run.py runs them native
// and under LD_PRELOAD, interleaved). Each mode prints one line of key=value, times in µs.
//   micro alloc BYTES ITERS           cuMemAlloc+cuMemFree pairs, one thread
//   micro threads N BYTES ITERS       the same from N threads at once: pairs per second
//   micro async BYTES ITERS           cudaMallocAsync+cudaFreeAsync pairs (libcudart, pool)
//   micro info ITERS                  cuMemGetInfo, cudaMemGetInfo, cuDeviceTotalMem, nvmlDeviceGetMemoryInfo
//   micro launch ITERS                empty kernel launches, synchronised at the end
//   micro start                       first usable context, then exit (timed from outside)
#include <cuda.h>
#include <cuda_runtime.h>
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CHECK(call)                                                                 \
    do {                                                                            \
        CUresult r_ = (call);                                                       \
        if (r_ != CUDA_SUCCESS) {                                                   \
            fprintf(stderr, "%s failed: %d (line %d)\n", #call, (int)r_, __LINE__); \
            exit(1);                                                                \
        }                                                                           \
    } while (0)

static double now_us() {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static CUcontext g_ctx;
static CUdevice g_dev;

static void init_ctx() {
    CHECK(cuInit(0));
    CHECK(cuDeviceGet(&g_dev, 0));
    CHECK(cuDevicePrimaryCtxRetain(&g_ctx, g_dev));
    CHECK(cuCtxSetCurrent(g_ctx));
}

static double alloc_pairs(size_t bytes, int iters) {
    CUdeviceptr p;
    CHECK(cuMemAlloc(&p, bytes));  // warm-up
    CHECK(cuMemFree(p));
    double t0 = now_us();
    for (int i = 0; i < iters; i++) {
        CHECK(cuMemAlloc(&p, bytes));
        CHECK(cuMemFree(p));
    }
    return (now_us() - t0) / iters;
}

struct thread_arg { size_t bytes; int iters; };

static void *thread_pairs(void *v) {
    struct thread_arg *a = (struct thread_arg *)v;
    CHECK(cuCtxSetCurrent(g_ctx));
    for (int i = 0; i < a->iters; i++) {
        CUdeviceptr p;
        CHECK(cuMemAlloc(&p, a->bytes));
        CHECK(cuMemFree(p));
    }
    return NULL;
}

__global__ void empty_kernel() {}

typedef int (*nvml_fn)(void);
typedef int (*nvml_handle_fn)(unsigned, void **);
typedef int (*nvml_mem_fn)(void *, void *);

int main(int argc, char **argv) {
    if (argc < 2) { fprintf(stderr, "usage: see the top of micro.cu\n"); return 2; }
    const char *mode = argv[1];
    init_ctx();
    if (!strcmp(mode, "alloc")) {
        size_t bytes = strtoull(argv[2], NULL, 0);
        printf("us_per_pair=%.3f\n", alloc_pairs(bytes, atoi(argv[3])));
    } else if (!strcmp(mode, "threads")) {
        int n = atoi(argv[2]);
        struct thread_arg a = {strtoull(argv[3], NULL, 0), atoi(argv[4])};
        pthread_t t[64];
        alloc_pairs(a.bytes, 10);
        double t0 = now_us();
        for (int i = 0; i < n; i++) pthread_create(&t[i], NULL, thread_pairs, &a);
        for (int i = 0; i < n; i++) pthread_join(t[i], NULL);
        double secs = (now_us() - t0) / 1e6;
        printf("pairs_per_s=%.1f\n", n * (double)a.iters / secs);
    } else if (!strcmp(mode, "async")) {
        size_t bytes = strtoull(argv[2], NULL, 0);
        int iters = atoi(argv[3]);
        cudaStream_t s;
        cudaStreamCreate(&s);
        void *p;
        cudaMallocAsync(&p, bytes, s);
        cudaFreeAsync(p, s);
        cudaStreamSynchronize(s);
        double t0 = now_us();
        for (int i = 0; i < iters; i++) {
            if (cudaMallocAsync(&p, bytes, s) != cudaSuccess) { fprintf(stderr, "async failed\n"); return 1; }
            cudaFreeAsync(p, s);
        }
        cudaStreamSynchronize(s);
        printf("us_per_pair=%.3f\n", (now_us() - t0) / iters);
    } else if (!strcmp(mode, "info")) {
        int iters = atoi(argv[2]);
        size_t fr, tot;
        cudaMemGetInfo(&fr, &tot);
        double t0 = now_us();
        for (int i = 0; i < iters; i++) CHECK(cuMemGetInfo(&fr, &tot));
        double cu = (now_us() - t0) / iters;
        t0 = now_us();
        for (int i = 0; i < iters; i++) cudaMemGetInfo(&fr, &tot);
        double rt = (now_us() - t0) / iters;
        t0 = now_us();
        for (int i = 0; i < iters; i++) CHECK(cuDeviceTotalMem(&tot, g_dev));
        double dt = (now_us() - t0) / iters;
        void *h = dlopen("libnvidia-ml.so.1", RTLD_NOW);
        nvml_fn init = (nvml_fn)dlsym(h, "nvmlInit_v2");
        nvml_handle_fn get = (nvml_handle_fn)dlsym(h, "nvmlDeviceGetHandleByIndex_v2");
        nvml_mem_fn mem = (nvml_mem_fn)dlsym(h, "nvmlDeviceGetMemoryInfo");
        void *dev;
        unsigned long long m[3];
        init();
        get(0, &dev);
        mem(dev, m);
        t0 = now_us();
        for (int i = 0; i < iters; i++) mem(dev, m);
        double nv = (now_us() - t0) / iters;
        printf("cuMemGetInfo=%.3f cudaMemGetInfo=%.3f cuDeviceTotalMem=%.3f nvmlDeviceGetMemoryInfo=%.3f\n",
               cu, rt, dt, nv);
    } else if (!strcmp(mode, "launch")) {
        int iters = atoi(argv[2]);
        empty_kernel<<<1, 1>>>();
        cudaDeviceSynchronize();
        double t0 = now_us();
        for (int i = 0; i < iters; i++) empty_kernel<<<1, 1>>>();
        cudaDeviceSynchronize();
        printf("us_per_launch=%.3f\n", (now_us() - t0) / iters);
    } else if (!strcmp(mode, "start")) {
        CUdeviceptr p;
        CHECK(cuMemAlloc(&p, 1 << 20));
        printf("ok=1\n");
    } else {
        fprintf(stderr, "unknown mode %s\n", mode);
        return 2;
    }
    return 0;
}
