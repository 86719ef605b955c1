/* Kernel launches: the one thing a launch can take is stack, which the driver grows by itself for
 * a kernel whose local memory needs more than the context's stack size (ctxlimits.c charges it).
 * A launch costs the driver 2-4 us, so the hook's budget (1%) is some 20 ns: a per-thread memo of
 * the functions already seen answers in a few loads; a function's first launch asks the driver
 * its local size (CU_FUNC_ATTRIBUTE_LOCAL_SIZE_BYTES) and charges what the stack must grow by.
 * The memo is keyed by function alone: a CUkernel launched from one thread in a second context is
 * charged in the first only.  Graph kernel nodes are not seen (their launch is the graph's). */
#include "table.h"

#define FUNC_ATTRIBUTE_LOCAL_SIZE_BYTES 3
#define MEMO_SLOTS 64

unsigned gpumem_launch_epoch;   /* bumped when a stack limit is set: every memo is void */
static __thread struct { void *fn; unsigned epoch; } memo[MEMO_SLOTS];

typedef CUresult (*fn_funcattr)(int *, int, void *);

static CUresult first_launch(void *fn, unsigned slot, unsigned epoch)
{
    static fn_funcattr attr;
    if (!attr) attr = (fn_funcattr)resolve_symbol(LIB_CUDA, "cuFuncGetAttribute");
    int local = 0;
    CUresult r = CUDA_SUCCESS;
    if (attr && attr(&local, FUNC_ATTRIBUTE_LOCAL_SIZE_BYTES, fn) == CUDA_SUCCESS && local > 0) {
        CURRENT_DEV();
        if (dev_) r = limits_stack_need(dev_, ctx_, (uint64_t)local);
    }
    if (r == CUDA_SUCCESS) {
        memo[slot].fn = fn;
        memo[slot].epoch = epoch;
    }
    return r;
}

/* CUDA_SUCCESS when the stack f needs is charged (or nothing is limited) */
static inline CUresult stack_covered(void *f)
{
    if (!gpumem_active) return CUDA_SUCCESS;
    unsigned slot = (unsigned)(((uintptr_t)f >> 4) % MEMO_SLOTS);
    unsigned epoch = __atomic_load_n(&gpumem_launch_epoch, __ATOMIC_RELAXED) + __atomic_load_n(&gpumem_memo_epoch, __ATOMIC_RELAXED);
    if (__builtin_expect(memo[slot].fn == f && memo[slot].epoch == epoch, 1)) return CUDA_SUCCESS;
    return first_launch(f, slot, epoch);
}

#define LAUNCH(f, call) do {                                                      \
        CUresult e_ = stack_covered(f);                                           \
        if (e_ != CUDA_SUCCESS) return e_;                                        \
        return (call);                                                            \
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
