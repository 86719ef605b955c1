/* Kernel launches: the one thing a launch can take is stack, which the driver grows by itself for
 * a kernel whose local memory needs more than the context's stack size (ctxlimits.c charges it).
 * A launch costs the driver 2-4 us, so the hook's budget (1%) is some 20 ns: a memo of the
 * functions already seen answers in one load; a function's first launch asks the driver its local
 * size (CU_FUNC_ATTRIBUTE_LOCAL_SIZE_BYTES) and charges what the stack must grow by.  The memo is
 * process-wide (a thread's own would not fit the static TLS a dlopen'ed library may take) and
 * keyed by function alone: a CUkernel launched in a second context is charged in the first only.
 * Graph kernel nodes are not seen (their launch is the graph's). */
#include "table.h"

#define FUNC_ATTRIBUTE_LOCAL_SIZE_BYTES 3
#define MEMO_SLOTS 4096   /* a missed slot costs driver queries (some 15 us): room for many kernels */

unsigned gpumem_launch_epoch;   /* bumped when a stack limit is set: every memo is void */
/* one word a slot, so no reader sees half an entry: the function's address (48 bits) and the
 * epochs' sum in the top 16 */
static uint64_t memo[MEMO_SLOTS];

static inline uint64_t memo_word(void *fn, unsigned epoch) { return (uint64_t)(uintptr_t)fn ^ ((uint64_t)(epoch & 0xffff) << 48); }

typedef CUresult (*fn_funcattr)(int *, int, void *);

/* A function's first launch from this thread.  libcudart 12/13 launches CUkernel handles of
 * libraries it loaded lazily: the kernel's module loads into the context at its first use (a
 * 1.5 GiB __device__ array, uncounted inside the launch, on an H200).  So the module is loaded
 * here first, by asking its local size (cuFuncGetAttribute; for a CUkernel, cuKernelGetFunction
 * first), with what that took measured and charged as a lazy load (modules.c); refused, so is
 * the launch. */
static CUresult first_launch(void *fn, unsigned slot, unsigned epoch)
{
    static fn_funcattr attr;
    static fn_cuKernelGetFunction getfn;
    if (!attr) attr = (fn_funcattr)resolve_symbol(LIB_CUDA, "cuFuncGetAttribute");
    if (!getfn) getfn = (fn_cuKernelGetFunction)hooks_real(H_cuKernelGetFunction);
    int local = 0;
    CURRENT_DEV();
    if (!dev_ || !attr) return CUDA_SUCCESS;
    uint64_t before = modules_device_free();
    void *func = fn;
    if (attr(&local, FUNC_ATTRIBUTE_LOCAL_SIZE_BYTES, fn) != CUDA_SUCCESS &&   /* a CUkernel */
        (!getfn || getfn(&func, fn) != CUDA_SUCCESS || attr(&local, FUNC_ATTRIBUTE_LOCAL_SIZE_BYTES, func) != CUDA_SUCCESS))
        local = 0;
    CUresult r = modules_charge_lazy(dev_, ctx_, before, "kernel launch (its module's lazy load)");
    if (r != CUDA_SUCCESS) return r;
    if (local > 0) r = limits_stack_need(dev_, ctx_, (uint64_t)local);
    if (r == CUDA_SUCCESS) __atomic_store_n(&memo[slot], memo_word(fn, epoch), __ATOMIC_RELAXED);
    return r;
}

/* CUDA_SUCCESS when the stack f needs is charged (or nothing is limited) */
static inline CUresult stack_covered(void *f)
{
    if (!gpumem_active) return CUDA_SUCCESS;
    unsigned slot = (unsigned)(((uintptr_t)f >> 4) % MEMO_SLOTS);
    unsigned epoch = __atomic_load_n(&gpumem_launch_epoch, __ATOMIC_RELAXED) + __atomic_load_n(&gpumem_memo_epoch, __ATOMIC_RELAXED);
    if (__builtin_expect(__atomic_load_n(&memo[slot], __ATOMIC_RELAXED) == memo_word(f, epoch), 1)) return CUDA_SUCCESS;
    return first_launch(f, slot, epoch);
}

#define LAUNCH(f, call) do {                                                      \
        CUresult e_ = stack_covered(f);                                           \
        if (e_ != CUDA_SUCCESS) { STATS_DONE(0, 0); return e_; }                  \
        uint64_t t0_ = STATS_NOW();                                               \
        CUresult r_ = (call);                                                     \
        STATS_DONE(t0_, STATS_NOW());                                             \
        return r_;                                                                \
    } while (0)

int cuLaunchKernel(void *f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                   unsigned shmem, CUstream s, void **params, void **extra)
{
    REAL(cuLaunchKernel, CUDA_ERROR_NOT_FOUND);
    LAUNCH(f, real_(f, gx, gy, gz, bx, by, bz, shmem, s, params, extra));
}

int cuLaunchKernel_ptsz(void *f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                        unsigned shmem, CUstream s, void **params, void **extra)
{
    REAL(cuLaunchKernel_ptsz, CUDA_ERROR_NOT_FOUND);
    LAUNCH(f, real_(f, gx, gy, gz, bx, by, bz, shmem, s, params, extra));
}

int cuLaunchKernelEx(const void *config, void *f, void **params, void **extra)
{
    REAL(cuLaunchKernelEx, CUDA_ERROR_NOT_FOUND);
    LAUNCH(f, real_(config, f, params, extra));
}

int cuLaunchKernelEx_ptsz(const void *config, void *f, void **params, void **extra)
{
    REAL(cuLaunchKernelEx_ptsz, CUDA_ERROR_NOT_FOUND);
    LAUNCH(f, real_(config, f, params, extra));
}

int cuLaunchCooperativeKernel(void *f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                              unsigned shmem, CUstream s, void **params)
{
    REAL(cuLaunchCooperativeKernel, CUDA_ERROR_NOT_FOUND);
    LAUNCH(f, real_(f, gx, gy, gz, bx, by, bz, shmem, s, params));
}

int cuLaunchCooperativeKernel_ptsz(void *f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by,
                                   unsigned bz, unsigned shmem, CUstream s, void **params)
{
    REAL(cuLaunchCooperativeKernel_ptsz, CUDA_ERROR_NOT_FOUND);
    LAUNCH(f, real_(f, gx, gy, gz, bx, by, bz, shmem, s, params));
}
