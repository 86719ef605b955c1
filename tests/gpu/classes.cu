// One program per class of driver memory (issue 12): it makes the driver take memory outside
// the allocation calls, then fills with cudaMalloc until refused, then says "ready" (a file)
// and holds until told to go (another file), so that plain nvidia-smi can read its physical
// use from outside.  One line of key=value on stdout.  Built by tests/gpu/acceptance.py:
//   nvcc -o classes classes.cu -lcuda            modes: fill stack stack64 local local64 heap module contexts
//                                                       graph oldgraph pool greens
//   nvcc -DWITH_GLOBALS -o classes_g classes.cu -lcuda   mode: globals (1.5 GiB __device__, cudart)
//   classes MODE READY_FILE GO_FILE [CUBIN]
#include <cuda.h>
#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <vector>

#ifdef WITH_GLOBALS
__device__ char big_globals[1536ull << 20];   // 1.5 GiB: a host shadow past 2 GiB does not link (small code model)
__global__ void k_touch(int i) { big_globals[i] = 1; }
#endif
__global__ void k_empty() {}
template <int N> __global__ void k_local(int n, int *out) {   // N ints of local memory a thread
    volatile int a[N];
    for (int i = 0; i < N; i++) a[i] = i * n;
    if (threadIdx.x == 9999) *out = a[n];
}
__global__ void k_malloc() { void *p = malloc(1024); if (p) free(p); }

static std::vector<void *> blocks;
static size_t fill() {
    size_t chunk = 64u << 20, held = 0;
    while (chunk >= (1u << 20)) {
        void *p = nullptr;
        if (cudaMalloc(&p, chunk) == cudaSuccess) { blocks.push_back(p); held += chunk; continue; }
        cudaGetLastError();
        chunk /= 2;
    }
    return held;
}

int main(int argc, char **argv) {
    if (argc < 4) { fprintf(stderr, "usage: classes MODE READY GO [CUBIN]\n"); return 2; }
    const char *mode = argv[1];
    cudaFree(0);
    char what[256] = "";
    cudaError_t e = cudaSuccess;
    if (!strcmp(mode, "fill")) {   // nothing first: another process of the container fills
    } else if (!strcmp(mode, "stack")) {   // 16 KiB a thread: 3960 MiB on an H200
        e = cudaDeviceSetLimit(cudaLimitStackSize, 16 << 10);
        k_empty<<<1, 1>>>();
        snprintf(what, sizeof what, "setlimit=%s", cudaGetErrorName(e));
    } else if (!strcmp(mode, "stack64")) {   // 64 KiB a thread: 16632 MiB, past an 8 GiB cap
        e = cudaDeviceSetLimit(cudaLimitStackSize, 64 << 10);
        k_empty<<<1, 1>>>();
        snprintf(what, sizeof what, "setlimit=%s", cudaGetErrorName(e));
    } else if (!strcmp(mode, "local") || !strcmp(mode, "local64")) {   // the driver grows the stack at launch
        int *out = nullptr;
        cudaMalloc(&out, 4);
        if (!strcmp(mode, "local")) k_local<4096><<<1, 32>>>(1, out);   // 16 KiB: 3960 MiB on an H200
        else k_local<16384><<<1, 32>>>(1, out);                         // 64 KiB: 16632 MiB, past the cap
        e = cudaGetLastError();
        cudaError_t e2 = cudaDeviceSynchronize();
        size_t stack = 0;
        cudaDeviceGetLimit(&stack, cudaLimitStackSize);
        snprintf(what, sizeof what, "launch=%s sync=%s stack=%zu", cudaGetErrorName(e), cudaGetErrorName(e2), stack);
    } else if (!strcmp(mode, "heap")) {
        e = cudaDeviceSetLimit(cudaLimitMallocHeapSize, 6ull << 30);
        k_malloc<<<1, 1>>>();
        snprintf(what, sizeof what, "setlimit=%s", cudaGetErrorName(e));
    } else if (!strcmp(mode, "module")) {
        CUmodule m;
        CUresult r = cuModuleLoad(&m, argv[4]);
        const char *s = "?";
        cuGetErrorName(r, &s);
        snprintf(what, sizeof what, "moduleload=%s", s);
    } else if (!strcmp(mode, "contexts")) {
        CUdevice dev;
        cuDeviceGet(&dev, 0);
        CUcontext primary, c;
        cuCtxGetCurrent(&primary);
        int made = 0;
        CUresult r = CUDA_SUCCESS;
        for (int i = 0; i < 12; i++) {
#if CUDA_VERSION >= 13000
            r = cuCtxCreate(&c, NULL, 0, dev);
#else
            r = cuCtxCreate(&c, 0, dev);
#endif
            if (r != CUDA_SUCCESS) break;
            made++;
        }
        cuCtxSetCurrent(primary);
        const char *s = "?";
        cuGetErrorName(r, &s);
        snprintf(what, sizeof what, "contexts=%d last=%s", made, s);
    } else if (!strcmp(mode, "graph")) {
        cudaStream_t st;
        cudaStreamCreate(&st);
        cudaGraph_t g;
        cudaGraphExec_t ge;
        void *p = nullptr;
        cudaStreamBeginCapture(st, cudaStreamCaptureModeGlobal);
        cudaMallocAsync(&p, 6ull << 30, st);
        cudaMemsetAsync(p, 1, 6ull << 30, st);
        cudaFreeAsync(p, st);
        cudaStreamEndCapture(st, &g);
        e = cudaGraphInstantiate(&ge, g, 0);
        cudaError_t e2 = e == cudaSuccess ? cudaGraphLaunch(ge, st) : e;
        cudaStreamSynchronize(st);
        snprintf(what, sizeof what, "instantiate=%s launch=%s", cudaGetErrorName(e), cudaGetErrorName(e2));
    } else if (!strcmp(mode, "oldgraph")) {   // the same graph, instantiated by the old signature
        // (error node, log), which cuGetProcAddress hands out for "cuGraphInstantiate" (11000+)
        typedef CUresult (*old_instantiate)(CUgraphExec *, CUgraph, CUgraphNode *, char *, size_t);
        old_instantiate inst = nullptr;
        CUdriverProcAddressQueryResult found;
        cuGetProcAddress("cuGraphInstantiate", (void **)&inst, 11000, 0, &found);
        cudaStream_t st;
        cudaStreamCreate(&st);
        cudaGraph_t g;
        void *p = nullptr;
        cudaStreamBeginCapture(st, cudaStreamCaptureModeGlobal);
        cudaMallocAsync(&p, 6ull << 30, st);
        cudaMemsetAsync(p, 1, 6ull << 30, st);
        cudaFreeAsync(p, st);
        cudaStreamEndCapture(st, &g);
        CUgraphExec ge;
        CUgraphNode err_node;
        char log[256] = "";
        CUresult r = inst ? inst(&ge, (CUgraph)g, &err_node, log, sizeof log) : CUDA_ERROR_NOT_FOUND;
        CUresult r2 = r == CUDA_SUCCESS ? cuGraphLaunch(ge, (CUstream)st) : r;
        cudaStreamSynchronize(st);
        const char *s1 = "?", *s2 = "?";
        cuGetErrorName(r, &s1);
        cuGetErrorName(r2, &s2);
        snprintf(what, sizeof what, "instantiate_v2=%s launch=%s", s1, s2);
    } else if (!strcmp(mode, "greens")) {   // 64 green contexts alive, 64 more made and destroyed
        // (4-5 MiB each on an H200, none of it back before the primary context goes)
        CUdevice dev;
        cuDeviceGet(&dev, 0);
        CUdevResource sms;
        CUdevResourceDesc desc;
        CUresult r = cuDeviceGetDevResource(dev, &sms, CU_DEV_RESOURCE_TYPE_SM);
        if (r == CUDA_SUCCESS) r = cuDevResourceGenerateDesc(&desc, &sms, 1);
        static CUgreenCtx alive[64];
        int made = 0, churned = 0;
        for (int i = 0; r == CUDA_SUCCESS && i < 64; i++)
            if ((r = cuGreenCtxCreate(&alive[i], desc, dev, CU_GREEN_CTX_DEFAULT_STREAM)) == CUDA_SUCCESS) made++;
        for (int i = 0; r == CUDA_SUCCESS && i < 64; i++) {
            CUgreenCtx g;
            if ((r = cuGreenCtxCreate(&g, desc, dev, CU_GREEN_CTX_DEFAULT_STREAM)) == CUDA_SUCCESS) {
                cuGreenCtxDestroy(g);
                churned++;
            }
        }
        const char *s1 = "?";
        cuGetErrorName(r, &s1);
        snprintf(what, sizeof what, "greens_alive=%d made_and_destroyed=%d last=%s", made, churned, s1);
    } else if (!strcmp(mode, "pool")) {   // keeps 6 GiB in the default pool, fills nothing
        cudaStream_t st;
        cudaStreamCreate(&st);
        cudaMemPool_t pool;
        cudaDeviceGetDefaultMemPool(&pool, 0);
        unsigned long long thr = ~0ull;
        cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &thr);
        void *p = nullptr;
        e = cudaMallocAsync(&p, 6ull << 30, st);
        if (e == cudaSuccess) cudaFreeAsync(p, st);
        cudaStreamSynchronize(st);
        unsigned long long reserved = 0;
        cudaMemPoolGetAttribute(pool, cudaMemPoolAttrReservedMemCurrent, &reserved);
        snprintf(what, sizeof what, "poolalloc=%s pool_reserved=%llu", cudaGetErrorName(e), reserved);
#ifdef WITH_GLOBALS
    } else if (!strcmp(mode, "globals")) {
        k_touch<<<1, 1>>>(0);
        e = cudaDeviceSynchronize();
        snprintf(what, sizeof what, "launch=%s", cudaGetErrorName(e));
#endif
    } else {
        fprintf(stderr, "unknown mode %s\n", mode);
        return 2;
    }
    cudaDeviceSynchronize();
    cudaGetLastError();
    size_t held = strcmp(mode, "pool") ? fill() : 0;
    printf("mode=%s %s held=%zu\n", mode, what, held);
    fflush(stdout);
    FILE *f = fopen(argv[2], "w");
    if (f) fclose(f);
    for (int i = 0; i < 6000 && access(argv[3], F_OK) != 0; i++) usleep(50000);
    return 0;
}
