// Measures what green contexts (cuGreenCtxCreate, CUDA 12.4+) take in device memory on this
// driver, and where: with the primary context inactive and active, per extra green context, with
// a part of the SMs, their streams, a first launch in one, and whether memory allocated in a green
// context outlives it.  Also prints which internal function cuGetProcAddress hands out for
// "cuGraphInstantiate" at each cudaVersion.  No library preloaded.  One line per step: the
// device's used MiB (NVML, no context needed) and this process's as plain nvidia-smi reads it.
//   nvcc -arch=sm_90 -o explore_green explore_green.cu -lcuda -ldl && ./explore_green [churn]
#include <cuda.h>
#include <cuda_runtime.h>
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

// NVML, declared here (no nvml.h needed): the device's used bytes without a context
typedef struct { unsigned long long total, free, used; } nvml_mem;
static int (*nvml_mem_info)(void *, nvml_mem *);
static void *nv;
static double base_mib;
static long smi_mib(void) {
    char line[256];
    FILE *f = popen("nvidia-smi --query-compute-apps=pid,used_memory --format=csv,noheader,nounits", "r");
    long mib = -1;
    while (f && fgets(line, sizeof line, f)) {
        long pid, m;
        if (sscanf(line, "%ld, %ld", &pid, &m) == 2 && pid == getpid()) mib = m;
    }
    if (f) pclose(f);
    return mib;
}
static double used_mib(void) {
    nvml_mem m;
    return nvml_mem_info && nvml_mem_info(nv, &m) == 0 ? (double)m.used / 1048576.0 : -1;
}
static void step(const char *what) {
    CUcontext c = NULL;
    size_t fr = 0, tot = 0;
    cuCtxGetCurrent(&c);
    int info = c ? cuMemGetInfo(&fr, &tot) : -1;
    printf("%-58s nvml_delta_mib=%8.1f smi_mib=%6ld memgetinfo_used_mib=%s%.1f\n", what, used_mib() - base_mib,
           smi_mib(), info == 0 ? "" : "n/a:", info == 0 ? (double)(tot - fr) / 1048576.0 : 0.0);
    fflush(stdout);
}
#define CK(x) do { CUresult r_ = (x); if (r_) { const char *s = "?"; cuGetErrorName(r_, &s); printf("FAIL %s: %s\n", #x, s); fflush(stdout); } } while (0)

__global__ void k_empty() {}

static CUgreenCtx green(CUdevResource *sm) {
    CUdevResourceDesc desc;
    CUgreenCtx g = NULL;
    CK(cuDevResourceGenerateDesc(&desc, sm, 1));
    CK(cuGreenCtxCreate(&g, desc, 0, CU_GREEN_CTX_DEFAULT_STREAM));
    return g;
}
static void primary_state(const char *when) {
    unsigned flags = 0;
    int active = -1;
    cuDevicePrimaryCtxGetState(0, &flags, &active);
    printf("  primary active=%d (%s)\n", active, when);
}

// churn: the primary context retained first (no runtime), green contexts made and destroyed in
// a loop, many alive at once, then the primary released: where does their memory go back?
static int churn(CUdevice dev, CUdevResource *all) {
    CUcontext pc;
    CK(cuDevicePrimaryCtxRetain(&pc, dev));
    CK(cuCtxSetCurrent(pc));
    step("churn: primary retained");
    for (int round = 0; round < 4; round++) {
        for (int i = 0; i < 32; i++) CK(cuGreenCtxDestroy(green(all)));
        step("churn: +32 made and destroyed one by one");
    }
    static CUgreenCtx alive[96];
    for (int i = 0; i < 96; i++) alive[i] = green(all);
    step("churn: 96 alive");
    for (int i = 0; i < 96; i++) CK(cuGreenCtxDestroy(alive[i]));
    step("churn: 96 destroyed");
    for (int i = 0; i < 32; i++) alive[i] = green(all);
    step("churn: 32 alive again");
    for (int i = 0; i < 32; i++) CK(cuGreenCtxDestroy(alive[i]));
    CK(cuCtxSetCurrent(NULL));
    CK(cuDevicePrimaryCtxRelease(dev));
    primary_state("churn: all released");
    step("churn: primary released");
    CUgreenCtx g = green(all);
    primary_state("churn: a green context alone");
    step("churn: 1 green ctx, primary was released");
    CK(cuGreenCtxDestroy(g));
    primary_state("churn: it destroyed");
    step("churn: destroyed");
    return 0;
}

int main(int argc, char **argv) {
    void *lib = dlopen("libnvidia-ml.so.1", RTLD_NOW);
    int (*init)(void) = lib ? (int (*)(void))dlsym(lib, "nvmlInit_v2") : NULL;
    int (*byidx)(unsigned, void **) = lib ? (int (*)(unsigned, void **))dlsym(lib, "nvmlDeviceGetHandleByIndex_v2") : NULL;
    nvml_mem_info = lib ? (int (*)(void *, nvml_mem *))dlsym(lib, "nvmlDeviceGetMemoryInfo") : NULL;
    if (!init || !byidx || init() || byidx(0, &nv)) { printf("no NVML\n"); nvml_mem_info = NULL; }
    CK(cuInit(0));
    CUdevice dev;
    CK(cuDeviceGet(&dev, 0));
    base_mib = used_mib();
    step("start (no context)");

    CUdevResource all;
    CK(cuDeviceGetDevResource(dev, &all, CU_DEV_RESOURCE_TYPE_SM));
    printf("  SMs %u\n", all.sm.smCount);
    if (argc > 1 && !strcmp(argv[1], "churn")) return churn(dev, &all);

    // 1. the primary context inactive: the green context starts it
    CUgreenCtx g1 = green(&all);
    primary_state("after the first green context");
    step("1 green ctx (all SMs), primary was inactive");
    CUgreenCtx gs[16];
    for (int i = 0; i < 16; i++) gs[i] = green(&all);
    step("+16 green ctx (all SMs)");
    for (int i = 0; i < 16; i++) CK(cuGreenCtxDestroy(gs[i]));
    step("16 destroyed");

    // 2. a part of the SMs
    CUdevResource parts[8], rest;
    unsigned n = 8;
    CK(cuDevSmResourceSplitByCount(parts, &n, &all, &rest, 0, 16));
    printf("  split: %u groups of %u SMs\n", n, parts[0].sm.smCount);
    CUgreenCtx gp[8];
    for (unsigned i = 0; i < n; i++) gp[i] = green(&parts[i]);
    step("+groups green ctx (16 SMs each)");

    // 3. the green context current: cuMemGetInfo works? a stream, a launch, an allocation
    CUcontext gc;
    CK(cuCtxFromGreenCtx(&gc, g1));
    CK(cuCtxSetCurrent(gc));
    step("g1 current");
    CUstream s;
    CK(cuGreenCtxStreamCreate(&s, g1, CU_STREAM_NON_BLOCKING, 0));
    step("+1 green stream");
    CUstream s8[8];
    for (int i = 0; i < 8; i++) CK(cuGreenCtxStreamCreate(&s8[i], g1, CU_STREAM_NON_BLOCKING, 0));
    step("+8 green streams");
    CUfunction f;
    cudaError_t fe = cudaGetFuncBySymbol(&f, (const void *)k_empty);
    printf("  cudaGetFuncBySymbol=%s\n", cudaGetErrorName(fe));
    CK(cuCtxSetCurrent(gc));
    step("after cudart init");
    if (fe == cudaSuccess) {
        CK(cuLaunchKernel(f, 132, 1, 1, 128, 1, 1, 0, s, NULL, NULL));
        CK(cuStreamSynchronize(s));
        step("first launch in g1");
    }
    CUdeviceptr p;
    CK(cuMemAlloc(&p, 1ull << 30));
    step("+1 GiB cuMemAlloc in g1");
    CUcontext cur;
    CK(cuStreamGetCtx(s, &cur));
    printf("  cuStreamGetCtx(green stream) == gc: %d\n", cur == gc);
    CUcontext pc;
    CK(cuDevicePrimaryCtxRetain(&pc, dev));
    printf("  primary handle == gc: %d\n", pc == gc);
    CK(cuCtxSetCurrent(pc));
    step("primary current (retained)");
    CK(cuStreamDestroy(s));
    for (int i = 0; i < 8; i++) CK(cuStreamDestroy(s8[i]));
    CK(cuGreenCtxDestroy(g1));
    step("g1 destroyed (its 1 GiB?)");
    CUresult fr = cuMemFree(p);
    printf("  cuMemFree(p from g1) after g1 destroyed: %d\n", fr);
    step("after that free");
    for (unsigned i = 0; i < n; i++) CK(cuGreenCtxDestroy(gp[i]));
    step("groups destroyed");
    CUgreenCtx g2 = green(&all);
    step("1 green ctx, primary active");
    CK(cuGreenCtxDestroy(g2));
    step("destroyed");
    CK(cuDevicePrimaryCtxRelease(dev));
    primary_state("after our release, no green left");
    CK(cuCtxSetCurrent(NULL));
    step("no green, primary released");

    // 4. cuGetProcAddress("cuGraphInstantiate", v): which function
    void *wf = NULL, *wp = NULL;
    CK(cuGetProcAddress("cuGraphInstantiateWithFlags", &wf, 12000, 0, NULL));
    int vers[] = { 10000, 10020, 11000, 11040, 12000, 12080, 13000 };
    void *prev = NULL;
    for (int v : vers) {
        void *q = NULL;
        CUdriverProcAddressQueryResult st;
        CUresult r = cuGetProcAddress("cuGraphInstantiate", &q, v, 0, &st);
        printf("  cuGetProcAddress(cuGraphInstantiate, %d) r=%d status=%d ==WithFlags:%d same_as_prev:%d\n", v, r, st,
               q == wf, q == prev);
        prev = q;
    }
    CK(cuGetProcAddress("cuGraphInstantiateWithParams", &wp, 12000, 0, NULL));
    const char *names[] = { "cuGreenCtxCreate", "cuGreenCtxDestroy", "cuCtxFromGreenCtx", "cuGreenCtxStreamCreate" };
    for (const char *nm : names) {
        void *q = NULL;
        CUdriverProcAddressQueryResult st;
        printf("  cuGetProcAddress(%s, 12040) r=%d status=%d; 12000 r=%d\n", nm, cuGetProcAddress(nm, &q, 12040, 0, &st), st,
               cuGetProcAddress(nm, &q, 12000, 0, &st));
    }
    return 0;
}
