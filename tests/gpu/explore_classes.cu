// Measures how much device memory each class of driver memory takes on this driver, outside
// the allocation calls (issue 12): contexts, cuCtxSetLimit limits, module globals, graph and
// stream-ordered pools. Prints one line per step: the device's used bytes (cuMemGetInfo) and
// this process's used MiB as plain nvidia-smi reads it. No library preloaded.
//   nvcc -o explore explore_classes.cu -lcuda && ./explore big.cubin
#include <cuda.h>
#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <time.h>

static size_t base_used;
static long smi_mib(void) {
    char cmd[160], line[256];
    snprintf(cmd, sizeof cmd, "nvidia-smi --query-compute-apps=pid,used_memory --format=csv,noheader,nounits");
    FILE *f = popen(cmd, "r");
    long mib = -1;
    while (f && fgets(line, sizeof line, f)) {
        long pid, m;
        if (sscanf(line, "%ld, %ld", &pid, &m) == 2 && pid == getpid()) mib = m;
    }
    if (f) pclose(f);
    return mib;
}
static void step(const char *what) {
    size_t fr, tot;
    cuMemGetInfo(&fr, &tot);
    printf("%-48s used_delta_mib=%8.1f smi_mib=%ld\n", what, ((double)(tot - fr) - (double)base_used) / 1048576.0, smi_mib());
    fflush(stdout);
}
#define CK(x) do { CUresult r_ = (x); if (r_) { const char *s; cuGetErrorName(r_, &s); printf("FAIL %s: %s\n", #x, s); } } while (0)

__global__ void k_empty() {}
__global__ void k_local(int n, int *out) {
    volatile int a[4096];   // 16 KiB of local memory per thread
    for (int i = 0; i < 4096; i++) a[i] = i * n;
    if (threadIdx.x == 9999) *out = a[n];
}
__global__ void k_malloc() { void *p = malloc(1024); if (p) free(p); }
__global__ void k_printf() { if (threadIdx.x == 0 && blockIdx.x == 9999) printf("x\n"); }
__device__ char rt_big[512u << 20];
__global__ void k_rtbig(int i) { rt_big[i] = 1; }

static double ns_per(void (*f)(void *), void *a, int n) {
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int i = 0; i < n; i++) f(a);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    return ((t1.tv_sec - t0.tv_sec) * 1e9 + (t1.tv_nsec - t0.tv_nsec)) / n;
}
static void f_iscap(void *s) { CUstreamCaptureStatus st; cuStreamIsCapturing((CUstream)s, &st); }
static void f_getlimit(void *u) { size_t v; (void)u; cuCtxGetLimit(&v, CU_LIMIT_STACK_SIZE); }
static void f_ctxcur(void *u) { CUcontext c; (void)u; cuCtxGetCurrent(&c); }

int main(int argc, char **argv) {
    CK(cuInit(0));
    CUdevice dev; CK(cuDeviceGet(&dev, 0));
    size_t fr, tot; cuMemGetInfo(&fr, &tot);  // fails without a context: base 0
    int sms, tpsm, maxlocal;
    cuDeviceGetAttribute(&sms, CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, dev);
    cuDeviceGetAttribute(&tpsm, CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_MULTIPROCESSOR, dev);
    cuDeviceGetAttribute(&maxlocal, CU_DEVICE_ATTRIBUTE_MAX_REGISTERS_PER_BLOCK, dev);
    printf("sms=%d threads_per_sm=%d\n", sms, tpsm);
    cudaFree(0);
    cuMemGetInfo(&fr, &tot);
    printf("after primary ctx: device used %.1f MiB, smi %ld MiB\n", (tot - fr) / 1048576.0, smi_mib());
    base_used = 0;
    step("primary context (cudaFree(0))");
    size_t v;
    const char *lname[] = {"stack", "printf_fifo", "malloc_heap", "dev_runtime_sync_depth", "dev_runtime_pending", "max_l2_fetch", "persisting_l2", "shmem", "cig", "cig_fallback"};
    for (int l = 0; l < 10; l++) { if (cuCtxGetLimit(&v, (CUlimit)l) == CUDA_SUCCESS) printf("limit %d %s default=%zu\n", l, lname[l], v); }
    cudaFuncAttributes fa; cudaFuncGetAttributes(&fa, k_local);
    printf("k_local localSizeBytes=%zu\n", fa.localSizeBytes);
    k_empty<<<1, 1>>>(); cudaDeviceSynchronize(); step("first empty kernel");
    k_rtbig<<<1, 1>>>(0); cudaDeviceSynchronize(); step("first launch of kernel with 512MiB __device__");
    CK(cuCtxSetLimit(CU_LIMIT_STACK_SIZE, 64 << 10)); step("stack limit 64KiB set");
    k_empty<<<1, 1>>>(); cudaDeviceSynchronize(); step("stack 64KiB + launch");
    cuCtxGetLimit(&v, CU_LIMIT_STACK_SIZE); printf("stack now %zu\n", v);
    CK(cuCtxSetLimit(CU_LIMIT_STACK_SIZE, 1024)); step("stack limit back to 1KiB");
    k_empty<<<1, 1>>>(); cudaDeviceSynchronize(); step("stack 1KiB + launch");
    int *out; cudaMalloc(&out, 4); step("cudaMalloc 4 bytes");
    k_local<<<1, 32>>>(1, out); cudaDeviceSynchronize(); step("launch of 16KiB-local kernel");
    cuCtxGetLimit(&v, CU_LIMIT_STACK_SIZE); printf("stack after local kernel %zu\n", v);
    CK(cuCtxSetLimit(CU_LIMIT_STACK_SIZE, 1024)); k_empty<<<1, 1>>>(); cudaDeviceSynchronize(); step("stack back to 1KiB + launch");
    CK(cuCtxSetLimit(CU_LIMIT_MALLOC_HEAP_SIZE, 1ull << 30)); step("heap 1GiB set");
    k_malloc<<<1, 1>>>(); cudaDeviceSynchronize(); step("heap 1GiB + malloc kernel");
    CK(cuCtxSetLimit(CU_LIMIT_MALLOC_HEAP_SIZE, 2ull << 30)); step("heap 2GiB set (after use)");
    k_malloc<<<1, 1>>>(); cudaDeviceSynchronize(); step("heap 2GiB + malloc kernel");
    CK(cuCtxSetLimit(CU_LIMIT_PRINTF_FIFO_SIZE, 256ull << 20)); step("printf 256MiB set");
    k_printf<<<1, 1>>>(); cudaDeviceSynchronize(); step("printf 256MiB + kernel");
    // modules
    if (argc > 1) {
        FILE *f = fopen(argv[1], "rb"); fseek(f, 0, SEEK_END); long n = ftell(f); rewind(f);
        char *img = (char *)malloc(n); fread(img, 1, n, f); fclose(f);
        CUmodule m; CK(cuModuleLoadData(&m, img)); step("cuModuleLoadData (1GiB globals)");
        CUfunction fn; CK(cuModuleGetFunction(&fn, m, "touch")); step("cuModuleGetFunction");
        CUdeviceptr g; size_t gs; CK(cuModuleGetGlobal(&g, &gs, m, "big")); step("cuModuleGetGlobal");
        CK(cuModuleUnload(m)); step("cuModuleUnload");
        CUlibrary lib; CK(cuLibraryLoadData(&lib, img, NULL, NULL, 0, NULL, NULL, 0)); step("cuLibraryLoadData");
        CUkernel kk; CK(cuLibraryGetKernel(&kk, lib, "touch")); step("cuLibraryGetKernel");
        CUfunction kf; CK(cuKernelGetFunction(&kf, kk)); step("cuKernelGetFunction");
        CK(cuLibraryGetGlobal(&g, &gs, lib, "big")); step("cuLibraryGetGlobal");
        CK(cuLibraryUnload(lib)); step("cuLibraryUnload");
        CK(cuLibraryLoadData(&lib, img, NULL, NULL, 0, NULL, NULL, 0)); step("cuLibraryLoadData again");
        CK(cuLibraryGetKernel(&kk, lib, "touch")); 
        void *args[] = { &gs };
        int zero = 0; args[0] = &zero;
        CK(cuLaunchKernel((CUfunction)kk, 1, 1, 1, 1, 1, 1, 0, 0, args, 0)); cudaDeviceSynchronize(); step("launch of library kernel (lazy load)");
        CK(cuLibraryUnload(lib)); step("cuLibraryUnload");
    }
    // stream-ordered pool
    cudaStream_t s; cudaStreamCreate(&s);
    cudaMemPool_t pool; cudaDeviceGetDefaultMemPool(&pool, 0);
    unsigned long long thr = ~0ull; cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &thr);
    void *p; cudaMallocAsync(&p, 1ull << 30, s); cudaStreamSynchronize(s); step("pool 1GiB alloc");
    cudaFreeAsync(p, s); cudaStreamSynchronize(s); step("pool 1GiB freed (threshold max)");
    unsigned long long rc = 0, uc = 0;
    cudaMemPoolGetAttribute(pool, cudaMemPoolAttrReservedMemCurrent, &rc);
    cudaMemPoolGetAttribute(pool, cudaMemPoolAttrUsedMemCurrent, &uc);
    printf("pool reserved=%llu used=%llu\n", rc, uc);
    cudaMallocAsync(&p, 3ull << 20, s); cudaStreamSynchronize(s);
    cudaMemPoolGetAttribute(pool, cudaMemPoolAttrReservedMemCurrent, &rc);
    cudaMemPoolGetAttribute(pool, cudaMemPoolAttrUsedMemCurrent, &uc);
    printf("pool after 3MiB alloc reserved=%llu used=%llu\n", rc, uc);
    cudaFreeAsync(p, s);
    cudaMemPoolTrimTo(pool, 0); step("pool trimmed (free enqueued, not synced)");
    cudaStreamSynchronize(s); cudaMemPoolTrimTo(pool, 0); step("pool trimmed after sync");
    // graph
    cudaGraph_t gph; cudaGraphExec_t ge;
    cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal);
    cudaMallocAsync(&p, 1ull << 30, s); cudaMemsetAsync(p, 1, 1ull << 30, s); cudaFreeAsync(p, s);
    cudaStreamEndCapture(s, &gph); step("graph captured (1GiB alloc node)");
    size_t nn = 0; cudaGraphGetNodes(gph, NULL, &nn); printf("graph nodes %zu\n", nn);
    cudaGraphInstantiate(&ge, gph, 0); step("graph instantiated");
    cuDeviceGetGraphMemAttribute(dev, CU_GRAPH_MEM_ATTR_RESERVED_MEM_CURRENT, &rc);
    printf("graph reserved after instantiate %llu\n", rc);
    cudaGraphLaunch(ge, s); cudaStreamSynchronize(s); step("graph launched");
    cuDeviceGetGraphMemAttribute(dev, CU_GRAPH_MEM_ATTR_RESERVED_MEM_CURRENT, &rc);
    cuDeviceGetGraphMemAttribute(dev, CU_GRAPH_MEM_ATTR_USED_MEM_CURRENT, &uc);
    printf("graph reserved=%llu used=%llu\n", rc, uc);
    cudaGraphExecDestroy(ge); step("graph exec destroyed");
    cuDeviceGetGraphMemAttribute(dev, CU_GRAPH_MEM_ATTR_RESERVED_MEM_CURRENT, &rc);
    printf("graph reserved after destroy %llu\n", rc);
    cudaDeviceGraphMemTrim(0); step("cudaDeviceGraphMemTrim");
    // contexts
    CUcontext c[3];
    for (int i = 0; i < 3; i++) { 
#if CUDA_VERSION >= 13000
        CK(cuCtxCreate(&c[i], NULL, 0, dev));
#else
        CK(cuCtxCreate(&c[i], 0, dev));
#endif
        char b[64]; snprintf(b, 64, "extra context %d", i + 1); step(b); }
    for (int i = 0; i < 3; i++) CK(cuCtxDestroy(c[i]));
    step("extra contexts destroyed");
    CUcontext cur; cuCtxGetCurrent(&cur);
    printf("ns cuStreamIsCapturing=%.1f cuCtxGetLimit=%.1f cuCtxGetCurrent=%.1f\n", ns_per(f_iscap, s, 200000), ns_per(f_getlimit, 0, 200000), ns_per(f_ctxcur, 0, 200000));
    return 0;
}
