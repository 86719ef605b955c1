/* Stand-in libcuda.so.1 for CPU tests (no GPU).  Self-contained: build with
 *   cc -shared -fPIC -O2 -Wl,-soname,libcuda.so.1 -o libcuda.so.1 fake_cuda.c -lpthread
 *
 * Counter-backed: device pointers are fake addresses, memory is a per-device byte counter.
 * Environment:
 *   FAKE_CUDA_TOTAL      bytes per device (default 8 GiB)
 *   FAKE_CUDA_DEVICES    number of devices (default 1)
 *   FAKE_CUDA_PHYS_FILE  file holding the physical usage counters, shared by every process that
 *                        names it (default: per process); allocations past FAKE_CUDA_TOTAL fail
 *                        with CUDA_ERROR_OUT_OF_MEMORY, and cuMemGetInfo's free honours it
 *   FAKE_CUDA_CTX_BYTES  physical bytes a context takes (default 0)
 *   FAKE_CUDA_INIT_FAIL  1: cuInit fails with CUDA_ERROR_NO_DEVICE (100)
 *   FAKE_CUDA_UUID_DELAY_MS  cuDeviceGetUuid sleeps this long (a slow driver call at start-up)
 * Classes of driver memory outside allocations (issue 12), each taking physical bytes:
 *   cuCtxSetLimit: the stack costs every byte once per resident thread (4 SMs x 256 threads,
 *     cuDeviceGetAttribute), the printf FIFO and malloc heap their size, taken when set;
 *   cuModuleLoadData(image "globals=SIZE"), cuModuleLoad(file holding that): SIZE at load;
 *     cuLibraryLoadData: lazily, at its first cuLibraryGetModule, or a first cuKernelGetFunction
 *     or launch of one of its kernels (cuLibraryGetKernel);
 *   stream-ordered pools (cuDeviceGetDefaultMemPool): a release threshold above 0
 *     (cuMemPoolSetAttribute) keeps freed bytes until cuMemPoolTrimTo;
 *   kernels: cuModuleGetFunction(name "local=N"): its launch grows the stack to N (as set above);
 *   graphs: cuMemAllocAsync on a capturing stream adds an allocation node; cuGraphLaunch takes
 *     the graph pool's bytes, kept until cuDeviceGraphMemTrim; instantiated by every form
 *     (WithFlags, WithParams, the old cuGraphInstantiate/_v2, which cuGetProcAddress hands out
 *     for "cuGraphInstantiate": _v2 from cudaVersion 11000, as the real driver 580 does);
 *   green contexts (cuGreenCtxCreate): each retains the primary context and takes
 *     FAKE_CUDA_GREEN_BYTES (default 4 MiB), given back only when the primary context goes (not
 *     at cuGreenCtxDestroy), as on an H200; what is allocated in one belongs to the primary.
 *   FAKE_CUDA_REUSE      1: a freed address is handed out again to the next allocation of its size,
 *                        from any thread, as a real pool does (by default addresses only grow)
 * Like the real driver, cuGetProcAddress(_v2) hands out INTERNAL functions (not the exported
 * symbols), picking _v2/_v3/_ptsz variants from cudaVersion and flags.
 * Extra (test-only) export: fake_cuda_peak(dev) = highest physical usage seen (by every process
 * sharing FAKE_CUDA_PHYS_FILE), fake_cuda_used(dev) = current physical usage. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

typedef int CUresult;
typedef int CUdevice;
typedef unsigned long long CUdeviceptr;
typedef unsigned int CUdeviceptr_v1;
typedef void *CUstream;
typedef void *CUmemoryPool;
typedef unsigned long long CUmemGenericAllocationHandle;
typedef struct { char bytes[16]; } CUuuid;
typedef struct { size_t Width, Height; int Format; unsigned int NumChannels; } AD2;
typedef struct { unsigned int Width, Height; int Format; unsigned int NumChannels; } AD2_v1;
typedef struct { size_t Width, Height, Depth; int Format; unsigned int NumChannels, Flags; } AD3;
typedef struct { unsigned int Width, Height, Depth; int Format; unsigned int NumChannels, Flags; } AD3_v1;
typedef struct { int type, requestedHandleTypes; struct { int type, id; } location; void *win32; unsigned char flags[8]; } MemProp;

#define OK 0
#define E_INVALID_VALUE 1
#define E_OOM 2
#define E_NOT_INIT 3
#define E_INVALID_DEVICE 101
#define E_INVALID_CONTEXT 201
#define E_NOT_FOUND 500
#define MAXDEV 64
#define EXPORT __attribute__((visibility("default")))

struct fctx { int magic, dev, primary, alive; size_t limits[3]; };   /* primary: 1, a green context's: 2 */
typedef struct fctx *CUcontext;

static int g_init, g_ndev = 1, g_init_fails;
static uint64_t g_total = 8ULL << 30, g_ctx_bytes, g_green_bytes = 4ULL << 20, g_green_kept[MAXDEV];
static uint64_t *g_phys, *g_peak;        /* [MAXDEV] physical usage and peak, maybe shared */
static uint64_t g_local_phys[2 * MAXDEV];
static struct fctx g_primary[MAXDEV];
static int g_primary_refs[MAXDEV];
static __thread struct fctx *t_cur;
static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static uint64_t g_next_ptr = 0x100000000000ULL, g_next_ptr32 = 0x10000000ULL, g_next_handle = 1;

/* ---- allocation records: key -> (size, dev, ctx) ---- */
struct rec { uint64_t key; uint64_t size; int dev, kind; struct fctx *ctx; struct rec *next; };
#define NB 4096
static struct rec *g_recs[NB];

static void setup(void)
{
    const char *s;
    if ((s = getenv("FAKE_CUDA_TOTAL"))) g_total = strtoull(s, NULL, 0);
    if ((s = getenv("FAKE_CUDA_DEVICES"))) g_ndev = atoi(s);
    if (g_ndev < 0) g_ndev = 0;
    if (g_ndev > MAXDEV) g_ndev = MAXDEV;
    if ((s = getenv("FAKE_CUDA_CTX_BYTES"))) g_ctx_bytes = strtoull(s, NULL, 0);
    if ((s = getenv("FAKE_CUDA_GREEN_BYTES"))) g_green_bytes = strtoull(s, NULL, 0);
    g_init_fails = (s = getenv("FAKE_CUDA_INIT_FAIL")) && *s == '1';
    g_phys = g_local_phys;
    g_peak = g_local_phys + MAXDEV;
    if ((s = getenv("FAKE_CUDA_PHYS_FILE")) && *s) {
        int fd = open(s, O_RDWR | O_CREAT, 0666);
        if (fd >= 0) {
            if (lseek(fd, 0, SEEK_END) < (off_t)sizeof g_local_phys && ftruncate(fd, sizeof g_local_phys)) {}
            void *p = mmap(NULL, sizeof g_local_phys, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
            if (p != MAP_FAILED) { g_phys = p; g_peak = g_phys + MAXDEV; }
            close(fd);
        }
    }
    for (int i = 0; i < MAXDEV; i++) g_primary[i] = (struct fctx){ 0xC7C7, i, 1, 0, { 0 } };
}

static int phys_take(int dev, uint64_t n)
{
    uint64_t cur = __atomic_load_n(&g_phys[dev], __ATOMIC_RELAXED);
    do {
        if (cur > g_total || n > g_total - cur) return -1;
    } while (!__atomic_compare_exchange_n(&g_phys[dev], &cur, cur + n, 0, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED));
    uint64_t now = cur + n, pk = __atomic_load_n(&g_peak[dev], __ATOMIC_RELAXED);
    while (now > pk && !__atomic_compare_exchange_n(&g_peak[dev], &pk, now, 0, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED)) {}
    return 0;
}
static void phys_give(int dev, uint64_t n) { __atomic_fetch_sub(&g_phys[dev], n, __ATOMIC_ACQ_REL); }

EXPORT uint64_t fake_cuda_peak(int dev) { return dev >= 0 && dev < MAXDEV && g_peak ? g_peak[dev] : 0; }
EXPORT uint64_t fake_cuda_used(int dev) { return dev >= 0 && dev < MAXDEV && g_phys ? g_phys[dev] : 0; }

static void rec_add(uint64_t key, int kind, uint64_t size, int dev, struct fctx *ctx)
{
    struct rec *r = malloc(sizeof *r);
    *r = (struct rec){ key, size, dev, kind, ctx, NULL };
    pthread_mutex_lock(&g_mu);
    r->next = g_recs[key % NB];
    g_recs[key % NB] = r;
    pthread_mutex_unlock(&g_mu);
}

static void reuse_put(uint64_t key, uint64_t size, int kind);
static void pool_put(int dev, uint64_t n);

static int rec_del(uint64_t key, int kind)
{
    pthread_mutex_lock(&g_mu);
    for (struct rec **p = &g_recs[key % NB]; *p; p = &(*p)->next)
        if ((*p)->key == key && (*p)->kind == kind) {
            struct rec *r = *p;
            *p = r->next;
            pthread_mutex_unlock(&g_mu);
            if (r->kind == 5) pool_put(r->dev, r->size);
            else phys_give(r->dev, r->size);
            reuse_put(r->key, r->size, r->kind == 5 ? 1 : r->kind);
            free(r);
            return OK;
        }
    pthread_mutex_unlock(&g_mu);
    return E_INVALID_VALUE;
}

static void rec_drop_ctx(struct fctx *c)
{
    pthread_mutex_lock(&g_mu);
    for (int i = 0; i < NB; i++)
        for (struct rec **p = &g_recs[i]; *p;) {
            if ((*p)->ctx == c) { struct rec *r = *p; *p = r->next; phys_give(r->dev, r->size); free(r); }
            else p = &(*p)->next;
        }
    pthread_mutex_unlock(&g_mu);
}

/* FAKE_CUDA_REUSE: freed addresses by size, most recent first (under g_mu) */
#define NREUSE 64
static struct { uint64_t key, size; } g_reuse[NREUSE];
static int g_nreuse;

static void reuse_put(uint64_t key, uint64_t size, int kind)
{
    static int on = -1;
    if (on < 0) on = getenv("FAKE_CUDA_REUSE") && atoi(getenv("FAKE_CUDA_REUSE")) == 1;
    if (!on || kind != 1) return;
    pthread_mutex_lock(&g_mu);
    if (g_nreuse < NREUSE) { g_reuse[g_nreuse].key = key; g_reuse[g_nreuse].size = size; g_nreuse++; }
    pthread_mutex_unlock(&g_mu);
}

static uint64_t reuse_take(uint64_t size)
{
    uint64_t key = 0;
    pthread_mutex_lock(&g_mu);
    for (int i = g_nreuse - 1; i >= 0 && !key; i--)
        if (g_reuse[i].size == size) { key = g_reuse[i].key; g_reuse[i] = g_reuse[--g_nreuse]; }
    pthread_mutex_unlock(&g_mu);
    return key;
}

static uint64_t next_key(uint64_t size, int small)
{
    uint64_t again = small ? 0 : reuse_take(size);
    if (again) return again;
    uint64_t step = ((size + 511) & ~511ULL) + 512;
    return __atomic_fetch_add(small ? &g_next_ptr32 : &g_next_ptr, small ? 512 : step, __ATOMIC_RELAXED);
}

/* streams belong to the context current at their creation; NULL, 1 (legacy) and 2 (per-thread)
 * stand for the current context's default stream */
struct fgraph;
struct fstream { int magic; struct fctx *ctx; struct fgraph *capture; };
static struct fctx *stream_ctx(CUstream s)
{
    if ((uintptr_t)s <= 2) return t_cur;
    struct fstream *st = s;
    return st->magic == 0x5757 ? st->ctx : NULL;
}

/* stream-ordered pools: one per device, kind 5 records; freed bytes kept under a threshold */
static uint64_t g_pool_used[MAXDEV], g_pool_free[MAXDEV], g_pool_thresh[MAXDEV];
static void pool_put(int dev, uint64_t n)
{
    __atomic_sub_fetch(&g_pool_used[dev], n, __ATOMIC_ACQ_REL);
    if (g_pool_thresh[dev]) __atomic_add_fetch(&g_pool_free[dev], n, __ATOMIC_ACQ_REL);
    else phys_give(dev, n);
}
static int pool_get(int dev, uint64_t n)
{
    uint64_t f = __atomic_load_n(&g_pool_free[dev], __ATOMIC_ACQUIRE);
    while (f >= n)
        if (__atomic_compare_exchange_n(&g_pool_free[dev], &f, f - n, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) goto got;
    if (phys_take(dev, n)) return -1;
got:
    __atomic_add_fetch(&g_pool_used[dev], n, __ATOMIC_ACQ_REL);
    return 0;
}

/* the one allocation path of the stub */
static CUresult do_alloc_in(struct fctx *c, uint64_t *out, uint64_t size, int kind, int small, int dev_override)
{
    if (!g_init) return E_NOT_INIT;
    int dev = dev_override >= 0 ? dev_override : (c ? c->dev : -1);
    if (dev < 0) return E_INVALID_CONTEXT;
    if (!out || !size) return E_INVALID_VALUE;
    if (kind == 5 ? pool_get(dev, size) : phys_take(dev, size)) return E_OOM;
    uint64_t key = kind == 4 ? __atomic_fetch_add(&g_next_handle, 1, __ATOMIC_RELAXED) : next_key(size, small);
    if (c && c->primary == 2) c = &g_primary[c->dev];   /* a green context's: the primary's */
    rec_add(key, kind, size, dev, dev_override >= 0 ? NULL : c);
    *out = key;
    return OK;
}
static CUresult do_alloc(uint64_t *out, uint64_t size, int kind, int small, int dev_override)
{
    return do_alloc_in(t_cur, out, size, kind, small, dev_override);
}

static uint64_t arr_bytes(size_t w, size_t h, size_t d, int fmt, unsigned ch)
{
    uint64_t e = (fmt & 0x0f) == 1 || fmt == 8 ? 1 : (fmt == 2 || fmt == 9 || fmt == 0x10) ? 2 : 4;
    return (uint64_t)(w ? w : 1) * (h ? h : 1) * (d ? d : 1) * e * (ch ? ch : 1);
}

/* ---- implementations (static: what cuGetProcAddress hands out) ---- */
static CUresult i_cuInit(unsigned f) { (void)f; if (g_init_fails) return 100; g_init = 1; return OK; }
static CUresult i_cuDriverGetVersion(int *v) { *v = 13000; return OK; }
static CUresult i_cuDeviceGetCount(int *n) { if (!g_init) return E_NOT_INIT; *n = g_ndev; return OK; }
static CUresult i_cuDeviceGet(CUdevice *d, int o) { if (!g_init) return E_NOT_INIT; if (o < 0 || o >= g_ndev) return E_INVALID_DEVICE; *d = o; return OK; }
static CUresult i_cuDeviceGetUuid(CUuuid *u, CUdevice d)
{
    if (!g_init) return E_NOT_INIT;
    if (d < 0 || d >= g_ndev) return E_INVALID_DEVICE;
    const char *delay = getenv("FAKE_CUDA_UUID_DELAY_MS");
    if (delay) usleep((useconds_t)atoi(delay) * 1000);
    static const unsigned char base[16] = { 0x8a, 0x5f, 0x0c, 0x31, 0x7e, 0x2d, 0x4b, 0x10, 0x9c, 0x55, 0x21, 0x43, 0x65, 0x87, 0xa9, 0x00 };
    memcpy(u->bytes, base, 16);
    u->bytes[15] = (char)d;
    return OK;
}
static CUresult i_cuDeviceGetName(char *n, int len, CUdevice d) { snprintf(n, (size_t)len, "Fake GPU %d", d); return OK; }
static CUresult i_cuDeviceTotalMem_v2(size_t *b, CUdevice d) { if (!g_init) return E_NOT_INIT; if (d < 0 || d >= g_ndev) return E_INVALID_DEVICE; *b = g_total; return OK; }
static CUresult i_cuDeviceTotalMem(unsigned *b, CUdevice d) { size_t t; CUresult r = i_cuDeviceTotalMem_v2(&t, d); if (!r) *b = t > 0xffffffffu ? 0xffffffffu : (unsigned)t; return r; }
static CUresult i_cuMemGetInfo_v2(size_t *f, size_t *t)
{
    if (!g_init) return E_NOT_INIT;
    if (!t_cur) return E_INVALID_CONTEXT;
    uint64_t u = g_phys[t_cur->dev];
    *t = g_total; *f = u < g_total ? g_total - u : 0;
    return OK;
}
static CUresult i_cuMemGetInfo(unsigned *f, unsigned *t) { size_t a, b; CUresult r = i_cuMemGetInfo_v2(&a, &b); if (!r) { *f = a > 0xffffffffu ? 0xffffffffu : (unsigned)a; *t = b > 0xffffffffu ? 0xffffffffu : (unsigned)b; } return r; }

static struct fctx *g_freed_ctx;   /* the last destroyed context, reused by the next one */
static CUresult ctx_new(CUcontext *pc, CUdevice d)
{
    if (!g_init) return E_NOT_INIT;
    if (d < 0 || d >= g_ndev || !pc) return E_INVALID_DEVICE;
    if (g_ctx_bytes && phys_take(d, g_ctx_bytes)) return E_OOM;
    /* like the real driver, hand out a destroyed context's address again (the library's memo of
     * context -> device must notice) */
    struct fctx *c = __atomic_exchange_n(&g_freed_ctx, NULL, __ATOMIC_ACQ_REL);
    if (!c) c = calloc(1, sizeof *c);
    *c = (struct fctx){ 0xC7C7, d, 0, 1, { 0 } };
    *pc = c;
    t_cur = c;
    return OK;
}
static CUresult i_cuCtxCreate_v2(CUcontext *pc, unsigned f, CUdevice d) { (void)f; return ctx_new(pc, d); }
static CUresult i_cuCtxCreate_v3(CUcontext *pc, void *p, int n, unsigned f, CUdevice d) { (void)p; (void)n; (void)f; return ctx_new(pc, d); }
static CUresult i_cuCtxCreate_v4(CUcontext *pc, void *p, unsigned f, CUdevice d) { (void)p; (void)f; return ctx_new(pc, d); }
static CUresult i_cuCtxDestroy_v2(CUcontext c)
{
    if (!c || c->magic != 0xC7C7 || c->primary) return E_INVALID_CONTEXT;
    rec_drop_ctx(c);
    if (g_ctx_bytes) phys_give(c->dev, g_ctx_bytes);
    if (t_cur == c) t_cur = NULL;
    c->magic = 0;
    c = __atomic_exchange_n(&g_freed_ctx, c, __ATOMIC_ACQ_REL);
    free(c);
    return OK;
}
static CUresult i_cuCtxGetCurrent(CUcontext *pc) { if (!g_init) return E_NOT_INIT; *pc = t_cur; return OK; }
static CUresult i_cuCtxSetCurrent(CUcontext c) { if (!g_init) return E_NOT_INIT; t_cur = c; return OK; }
static CUresult i_cuCtxGetDevice(CUdevice *d) { if (!g_init) return E_NOT_INIT; if (!t_cur) return E_INVALID_CONTEXT; *d = t_cur->dev; return OK; }
static CUresult i_cuCtxSynchronize(void) { return OK; }
static __thread struct fctx *t_stack[16];
static __thread int t_depth;
static CUresult i_cuCtxPushCurrent_v2(CUcontext c)
{
    if (!g_init) return E_NOT_INIT;
    if (!c || t_depth >= 16) return E_INVALID_VALUE;
    t_stack[t_depth++] = t_cur;
    t_cur = c;
    return OK;
}
static CUresult i_cuCtxPopCurrent_v2(CUcontext *pc)
{
    if (!g_init) return E_NOT_INIT;
    if (!t_cur) return E_INVALID_CONTEXT;
    if (pc) *pc = t_cur;
    t_cur = t_depth ? t_stack[--t_depth] : NULL;
    return OK;
}
static CUresult i_cuDevicePrimaryCtxRetain(CUcontext *pc, CUdevice d)
{
    if (!g_init) return E_NOT_INIT;
    if (d < 0 || d >= g_ndev) return E_INVALID_DEVICE;
    pthread_mutex_lock(&g_mu);
    int first = g_primary_refs[d]++ == 0 && !g_primary[d].alive;
    if (first) g_primary[d].alive = 1;
    pthread_mutex_unlock(&g_mu);
    if (first && g_ctx_bytes && phys_take(d, g_ctx_bytes)) {
        pthread_mutex_lock(&g_mu); g_primary_refs[d]--; g_primary[d].alive = 0; pthread_mutex_unlock(&g_mu);
        return E_OOM;
    }
    *pc = &g_primary[d];
    return OK;
}
static void primary_down(CUdevice d)
{
    rec_drop_ctx(&g_primary[d]);
    phys_give(d, __atomic_exchange_n(&g_green_kept[d], 0, __ATOMIC_ACQ_REL));   /* its green contexts' */
    if (g_primary[d].alive && g_ctx_bytes) phys_give(d, g_ctx_bytes);
    g_primary[d].alive = 0;
}
static CUresult i_cuDevicePrimaryCtxRelease_v2(CUdevice d)
{
    if (!g_init) return E_NOT_INIT;
    if (d < 0 || d >= g_ndev) return E_INVALID_DEVICE;
    pthread_mutex_lock(&g_mu);
    if (g_primary_refs[d] <= 0) { pthread_mutex_unlock(&g_mu); return E_INVALID_CONTEXT; }
    int last = --g_primary_refs[d] == 0;
    pthread_mutex_unlock(&g_mu);
    if (last) primary_down(d);
    return OK;
}
static CUresult i_cuDevicePrimaryCtxReset_v2(CUdevice d)
{
    if (!g_init) return E_NOT_INIT;
    if (d < 0 || d >= g_ndev) return E_INVALID_DEVICE;
    primary_down(d);
    return OK;
}

/* green contexts: a resource is the device's SMs, a description names it */
struct fgreen { int magic; struct fctx ctx; };
static CUresult i_cuDeviceGetDevResource(CUdevice d, int *res, int type)
{
    if (!g_init) return E_NOT_INIT;
    if (d < 0 || d >= g_ndev || !res) return E_INVALID_DEVICE;
    *res = type;
    return OK;
}
static CUresult i_cuDevResourceGenerateDesc(void **desc, int *res, unsigned n) { if (!desc || !res || !n) return E_INVALID_VALUE; *desc = (void *)0xDE5C; return OK; }
static CUresult i_cuGreenCtxCreate(struct fgreen **g, void *desc, CUdevice d, unsigned flags)
{
    CUcontext pc;
    if (!g || !desc || !(flags & 1)) return E_INVALID_VALUE;   /* CU_GREEN_CTX_DEFAULT_STREAM is required */
    CUresult r = i_cuDevicePrimaryCtxRetain(&pc, d);
    if (r) return r;
    if (g_green_bytes && phys_take(d, g_green_bytes)) { i_cuDevicePrimaryCtxRelease_v2(d); return E_OOM; }
    __atomic_add_fetch(&g_green_kept[d], g_green_bytes, __ATOMIC_ACQ_REL);
    *g = malloc(sizeof **g);
    **g = (struct fgreen){ 0x6C6C, { 0xC7C7, d, 2, 1, { 0 } } };
    return OK;
}
static CUresult i_cuGreenCtxDestroy(struct fgreen *g)
{
    if (!g || g->magic != 0x6C6C) return E_INVALID_VALUE;
    if (t_cur == &g->ctx) t_cur = NULL;
    g->magic = 0;
    int d = g->ctx.dev;
    free(g);
    return i_cuDevicePrimaryCtxRelease_v2(d);   /* what it took stays until the primary goes */
}
static CUresult i_cuCtxFromGreenCtx(CUcontext *pc, struct fgreen *g)
{
    if (!g || g->magic != 0x6C6C || !pc) return E_INVALID_VALUE;
    *pc = &g->ctx;
    return OK;
}
static CUresult i_cuMemAlloc_v2(CUdeviceptr *p, size_t n) { return do_alloc((uint64_t *)p, n, 1, 0, -1); }
static CUresult i_cuMemAlloc(CUdeviceptr_v1 *p, unsigned n) { uint64_t k; CUresult r = do_alloc(&k, n, 1, 1, -1); if (!r) *p = (CUdeviceptr_v1)k; return r; }
static CUresult i_cuMemAllocManaged(CUdeviceptr *p, size_t n, unsigned f) { (void)f; return do_alloc((uint64_t *)p, n, 1, 0, -1); }
static CUresult i_cuMemAllocPitch_v2(CUdeviceptr *p, size_t *pitch, size_t w, size_t h, unsigned e)
{
    (void)e;
    size_t pt = (w + 511) & ~(size_t)511;
    CUresult r = do_alloc((uint64_t *)p, pt * h, 1, 0, -1);
    if (!r) *pitch = pt;
    return r;
}
static CUresult i_cuMemAllocPitch(CUdeviceptr_v1 *p, unsigned *pitch, unsigned w, unsigned h, unsigned e)
{
    (void)e;
    unsigned pt = (w + 511) & ~511u;
    uint64_t k;
    CUresult r = do_alloc(&k, (uint64_t)pt * h, 1, 1, -1);
    if (!r) { *p = (CUdeviceptr_v1)k; *pitch = pt; }
    return r;
}
static CUresult i_cuMemFree_v2(CUdeviceptr p) { if (!g_init) return E_NOT_INIT; return !p || rec_del(p, 1) == OK ? OK : rec_del(p, 5); }
static CUresult i_cuMemFree(CUdeviceptr_v1 p) { return i_cuMemFree_v2(p); }
static CUresult graph_node_add(struct fgraph *g, uint64_t *out, uint64_t n, int dev);
static CUresult async_alloc(CUstream s, uint64_t *out, uint64_t n)
{
    struct fstream *st = (uintptr_t)s > 2 ? s : NULL;
    struct fctx *c = stream_ctx(s);
    if (st && st->capture) return graph_node_add(st->capture, out, n, c ? c->dev : 0);
    return do_alloc_in(c, out, n, 5, 0, -1);
}
static CUresult i_cuMemAllocAsync(CUdeviceptr *p, size_t n, CUstream s) { return async_alloc(s, (uint64_t *)p, n); }
static CUresult i_cuMemAllocAsync_ptsz(CUdeviceptr *p, size_t n, CUstream s) { return async_alloc(s, (uint64_t *)p, n); }
static CUresult i_cuMemAllocFromPoolAsync(CUdeviceptr *p, size_t n, CUmemoryPool m, CUstream s) { (void)m; return async_alloc(s, (uint64_t *)p, n); }
static CUresult i_cuMemAllocFromPoolAsync_ptsz(CUdeviceptr *p, size_t n, CUmemoryPool m, CUstream s) { (void)m; return async_alloc(s, (uint64_t *)p, n); }
static CUresult i_cuStreamCreate(CUstream *ps, unsigned f)
{
    (void)f;
    if (!g_init) return E_NOT_INIT;
    if (!t_cur) return E_INVALID_CONTEXT;
    struct fstream *st = malloc(sizeof *st);
    *st = (struct fstream){ 0x5757, t_cur, NULL };
    *ps = st;
    return OK;
}
static CUresult i_cuGreenCtxStreamCreate(CUstream *ps, struct fgreen *g, unsigned f, int prio)
{
    (void)f; (void)prio;
    if (!g || g->magic != 0x6C6C || !ps) return E_INVALID_VALUE;
    struct fstream *st = malloc(sizeof *st);
    *st = (struct fstream){ 0x5757, &g->ctx, NULL };
    *ps = st;
    return OK;
}
static CUresult i_cuStreamDestroy_v2(CUstream s) { struct fstream *st = s; if ((uintptr_t)s <= 2 || st->magic != 0x5757) return E_INVALID_VALUE; st->magic = 0; free(st); return OK; }
static CUresult i_cuStreamGetCtx(CUstream s, CUcontext *pc) { struct fctx *c = stream_ctx(s); if (!c) return E_INVALID_CONTEXT; *pc = c; return OK; }
static CUresult i_cuStreamGetCtx_ptsz(CUstream s, CUcontext *pc) { return i_cuStreamGetCtx(s, pc); }
/* nothing is ever queued here: a stream is always done */
static CUresult i_cuStreamSynchronize(CUstream s) { return (uintptr_t)s <= 2 || stream_ctx(s) ? OK : E_INVALID_VALUE; }
static CUresult free_async(CUdeviceptr p, CUstream s)
{
    struct fstream *st = (uintptr_t)s > 2 ? s : NULL;
    if (st && st->capture) return OK;   /* a free node: the graph's own memory */
    return i_cuMemFree_v2(p);
}
static CUresult i_cuMemFreeAsync(CUdeviceptr p, CUstream s) { return free_async(p, s); }
static CUresult i_cuMemFreeAsync_ptsz(CUdeviceptr p, CUstream s) { return free_async(p, s); }
static CUresult i_cuMemCreate(CUmemGenericAllocationHandle *h, size_t n, const MemProp *prop, unsigned long long f)
{
    (void)f;
    if (!prop || prop->location.type != 1 || prop->location.id < 0 || prop->location.id >= g_ndev) return E_INVALID_VALUE;
    return do_alloc((uint64_t *)h, n, 4, 0, prop->location.id);
}
static CUresult i_cuMemRelease(CUmemGenericAllocationHandle h) { if (!g_init) return E_NOT_INIT; return rec_del(h, 4); }
static CUresult arr_new(void **a, uint64_t n, int kind) { uint64_t k; CUresult r = do_alloc(&k, n, kind, 0, -1); if (!r) *a = (void *)(uintptr_t)k; return r; }
static CUresult i_cuArrayCreate_v2(void **a, const AD2 *d) { return d ? arr_new(a, arr_bytes(d->Width, d->Height, 1, d->Format, d->NumChannels), 2) : E_INVALID_VALUE; }
static CUresult i_cuArrayCreate(void **a, const AD2_v1 *d) { return d ? arr_new(a, arr_bytes(d->Width, d->Height, 1, d->Format, d->NumChannels), 2) : E_INVALID_VALUE; }
static CUresult i_cuArray3DCreate_v2(void **a, const AD3 *d) { return d ? arr_new(a, arr_bytes(d->Width, d->Height, d->Depth, d->Format, d->NumChannels), 2) : E_INVALID_VALUE; }
static CUresult i_cuArray3DCreate(void **a, const AD3_v1 *d) { return d ? arr_new(a, arr_bytes(d->Width, d->Height, d->Depth, d->Format, d->NumChannels), 2) : E_INVALID_VALUE; }
static CUresult i_cuArrayDestroy(void *a) { return rec_del((uintptr_t)a, 2); }
static CUresult i_cuMipmappedArrayCreate(void **a, const AD3 *d, unsigned lv)
{
    if (!d) return E_INVALID_VALUE;
    uint64_t n = 0; size_t w = d->Width, h = d->Height, z = d->Depth;
    for (unsigned i = 0; i < (lv ? lv : 1); i++) { n += arr_bytes(w, h, z, d->Format, d->NumChannels); w = w > 1 ? w / 2 : 1; h = h > 1 ? h / 2 : h; z = z > 1 ? z / 2 : z; }
    return arr_new(a, n, 3);
}
static CUresult i_cuMipmappedArrayDestroy(void *a) { return rec_del((uintptr_t)a, 3); }
static CUresult i_cuGetErrorString(CUresult e, const char **s) { (void)e; *s = "fake cuda error"; return OK; }

/* ---- issue 12: limits, modules, pools, graphs ---- */
static CUresult i_cuDeviceGetAttribute(int *v, int a, CUdevice d)
{
    (void)d;
    *v = a == 16 ? 4 : a == 39 ? 256 : 0;   /* multiprocessors, threads per multiprocessor */
    return OK;
}
static const size_t limit_default[3] = { 1024, 1 << 20, 8 << 20 };
static CUresult i_cuCtxGetLimit(size_t *v, int l)
{
    if (!t_cur) return E_INVALID_CONTEXT;
    if (l < 0 || l > 2) { *v = 0; return OK; }
    *v = t_cur->limits[l] ? t_cur->limits[l] : limit_default[l];
    return OK;
}
static CUresult i_cuCtxSetLimit(int l, size_t v)
{
    size_t cur;
    if (!t_cur) return E_INVALID_CONTEXT;
    if (l < 0 || l > 2) return OK;
    i_cuCtxGetLimit(&cur, l);
    uint64_t per = l == 0 ? 4 * 256 : 1;
    if (v > cur && phys_take(t_cur->dev, (v - cur) * per)) return E_OOM;
    if (v < cur) phys_give(t_cur->dev, (cur - v) * per);
    t_cur->limits[l] = v;
    return OK;
}

struct fmod { int magic, dev, loaded; uint64_t size; };
static uint64_t image_globals(const void *image) { const char *g = image ? strstr(image, "globals=") : NULL; return g ? strtoull(g + 8, NULL, 0) : 0; }
static CUresult i_cuModuleLoadData(struct fmod **m, const void *image)
{
    if (!t_cur) return E_INVALID_CONTEXT;
    uint64_t n = image_globals(image);
    if (n && phys_take(t_cur->dev, n)) return E_OOM;
    *m = malloc(sizeof **m);
    **m = (struct fmod){ 0x30D, t_cur->dev, 1, n };
    return OK;
}
static CUresult i_cuModuleLoadDataEx(struct fmod **m, const void *image, unsigned n, void *o, void **v) { (void)n; (void)o; (void)v; return i_cuModuleLoadData(m, image); }
static CUresult i_cuModuleLoad(struct fmod **m, const char *path)
{
    char buf[256] = "";
    FILE *f = path ? fopen(path, "r") : NULL;
    if (!f) return 301;   /* CUDA_ERROR_FILE_NOT_FOUND */
    size_t got = fread(buf, 1, sizeof buf - 1, f);
    buf[got] = 0;
    fclose(f);
    return i_cuModuleLoadData(m, buf);
}
static CUresult i_cuModuleUnload(struct fmod *m)
{
    if (!m || m->magic != 0x30D) return E_INVALID_VALUE;
    if (m->loaded && m->size) phys_give(m->dev, m->size);
    m->magic = 0;
    free(m);
    return OK;
}
static CUresult i_cuLibraryLoadData(struct fmod **l, const void *code, void *a, void *b, unsigned n, void *c, void *d, unsigned k)
{
    (void)a; (void)b; (void)n; (void)c; (void)d; (void)k;
    *l = malloc(sizeof **l);
    **l = (struct fmod){ 0x31B, 0, 0, image_globals(code) };
    return OK;
}
static CUresult i_cuLibraryGetModule(struct fmod **m, struct fmod *l)
{
    if (!l || l->magic != 0x31B || !t_cur) return E_INVALID_VALUE;
    if (!l->loaded) {   /* the lazy load into the current context */
        if (l->size && phys_take(t_cur->dev, l->size)) return E_OOM;
        l->loaded = 1;
        l->dev = t_cur->dev;
    }
    *m = l;
    return OK;
}
static CUresult i_cuLibraryUnload(struct fmod *l)
{
    if (!l || l->magic != 0x31B) return E_INVALID_VALUE;
    if (l->loaded && l->size) phys_give(l->dev, l->size);
    l->magic = 0;
    free(l);
    return OK;
}

static CUresult i_cuDeviceGetDefaultMemPool(CUmemoryPool *p, CUdevice d) { *p = (void *)(uintptr_t)(0x7000 + d); return OK; }
static int pool_dev(CUmemoryPool p) { uintptr_t v = (uintptr_t)p; return v >= 0x7000 && v < 0x7000 + MAXDEV ? (int)(v - 0x7000) : -1; }
static CUresult i_cuMemPoolTrimTo(CUmemoryPool p, size_t keep)
{
    int d = pool_dev(p);
    if (d < 0) return E_INVALID_VALUE;
    uint64_t f = __atomic_load_n(&g_pool_free[d], __ATOMIC_ACQUIRE);
    while (f > keep && !__atomic_compare_exchange_n(&g_pool_free[d], &f, keep, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {}
    if (f > keep) phys_give(d, f - keep);
    return OK;
}
static CUresult i_cuMemPoolGetAttribute(CUmemoryPool p, int a, void *v)
{
    int d = pool_dev(p);
    if (d < 0) return E_INVALID_VALUE;
    uint64_t *out = v;
    *out = a == 4 ? g_pool_thresh[d] : a == 5 ? g_pool_used[d] + g_pool_free[d] : a == 7 ? g_pool_used[d] : 0;
    return OK;
}
static CUresult i_cuMemPoolSetAttribute(CUmemoryPool p, int a, void *v)
{
    int d = pool_dev(p);
    if (d < 0) return E_INVALID_VALUE;
    if (a == 4) g_pool_thresh[d] = *(uint64_t *)v;
    return OK;
}

/* graphs: allocation nodes made by capture; launch takes the graph pool's bytes */
#define MAXNODES 16
typedef struct { struct { int allocType, handleTypes; struct { int type, id; } location; void *w; size_t maxSize; unsigned short usage; unsigned char r[54]; } pool;
                 const void *acc; size_t naccess; size_t bytesize; CUdeviceptr dptr; } AllocParams;
struct fnode { struct fgraph *g; int i; };
struct fgraph { int magic, dev, n; uint64_t sizes[MAXNODES]; struct fnode nodes[MAXNODES]; };
struct fexec { int magic; struct fgraph *g; };
static uint64_t g_graph_reserved[MAXDEV];
static CUresult graph_node_add(struct fgraph *g, uint64_t *out, uint64_t n, int dev)
{
    if (g->n >= MAXNODES) return E_INVALID_VALUE;
    g->dev = dev;
    g->sizes[g->n] = n;
    g->nodes[g->n] = (struct fnode){ g, g->n };
    g->n++;
    *out = next_key(n, 0);
    return OK;
}
static CUresult i_cuStreamBeginCapture_v2(CUstream s, int mode)
{
    (void)mode;
    struct fstream *st = s;
    if ((uintptr_t)s <= 2 || st->magic != 0x5757 || st->capture) return E_INVALID_VALUE;
    st->capture = calloc(1, sizeof *st->capture);
    st->capture->magic = 0x6A6A;
    return OK;
}
static CUresult i_cuStreamIsCapturing(CUstream s, int *status)
{
    struct fstream *st = s;
    *status = (uintptr_t)s > 2 && st->magic == 0x5757 && st->capture ? 1 : 0;
    return OK;
}
static CUresult i_cuStreamEndCapture(CUstream s, struct fgraph **g)
{
    struct fstream *st = s;
    if ((uintptr_t)s <= 2 || st->magic != 0x5757 || !st->capture) return 900;   /* CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED */
    *g = st->capture;
    st->capture = NULL;
    return OK;
}
static CUresult i_cuGraphGetNodes(struct fgraph *g, struct fnode **nodes, size_t *n)
{
    if (!g || g->magic != 0x6A6A) return E_INVALID_VALUE;
    if (nodes) for (int i = 0; i < g->n && (size_t)i < *n; i++) nodes[i] = &g->nodes[i];
    *n = (size_t)g->n;
    return OK;
}
static CUresult i_cuGraphNodeGetType(struct fnode *node, int *type) { (void)node; *type = 10; return OK; }
static CUresult i_cuGraphMemAllocNodeGetParams(struct fnode *node, AllocParams *p)
{
    memset(p, 0, sizeof *p);
    p->pool.location.type = 1;
    p->pool.location.id = node->g->dev;
    p->bytesize = node->g->sizes[node->i];
    return OK;
}
static CUresult i_cuGraphInstantiateWithFlags(struct fexec **e, struct fgraph *g, unsigned long long f)
{
    (void)f;
    if (!g || g->magic != 0x6A6A) return E_INVALID_VALUE;
    *e = malloc(sizeof **e);
    **e = (struct fexec){ 0x6E6E, g };
    return OK;
}
static CUresult i_cuGraphLaunch(struct fexec *e, CUstream s)
{
    (void)s;
    if (!e || e->magic != 0x6E6E) return E_INVALID_VALUE;
    uint64_t need = 0;
    for (int i = 0; i < e->g->n; i++) need += e->g->sizes[i];
    int d = e->g->dev;
    if (need > g_graph_reserved[d]) {
        if (phys_take(d, need - g_graph_reserved[d])) return E_OOM;
        g_graph_reserved[d] = need;
    }
    return OK;
}
static CUresult i_cuGraphExecDestroy(struct fexec *e) { if (!e || e->magic != 0x6E6E) return E_INVALID_VALUE; e->magic = 0; free(e); return OK; }
static CUresult i_cuDeviceGraphMemTrim(CUdevice d) { phys_give(d, g_graph_reserved[d]); g_graph_reserved[d] = 0; return OK; }
static CUresult i_cuDeviceGetGraphMemAttribute(CUdevice d, int a, void *v) { *(uint64_t *)v = a == 2 || a == 3 ? g_graph_reserved[d] : 0; return OK; }

/* the rest of the hooked entry points, simply */
static CUresult i_cuModuleLoadFatBinary(struct fmod **m, const void *fatbin) { return i_cuModuleLoadData(m, fatbin); }
struct fkern;
struct ffunc;
static CUresult kernel_function(struct fkern *k, struct ffunc **f);
static CUresult i_cuKernelGetFunction(void **f, void *k)
{
    if (k && *(int *)k == 0xCE11) return kernel_function(k, (struct ffunc **)f);
    *f = k;
    return OK;
}
static CUresult i_cuLibraryGetGlobal(CUdeviceptr *p, size_t *n, struct fmod *l, const char *name)
{
    struct fmod *m;
    (void)name;
    CUresult r = i_cuLibraryGetModule(&m, l);   /* loads it, as the real one does */
    if (r) return r;
    if (p) *p = 0;
    if (n) *n = l->size;
    return OK;
}
static CUresult i_cuMemPoolCreate(CUmemoryPool *p, const void *props) { (void)props; return i_cuDeviceGetDefaultMemPool(p, 0); }
static CUresult i_cuMemPoolDestroy(CUmemoryPool p) { return pool_dev(p) < 0 ? E_INVALID_VALUE : OK; }
static CUresult i_cuStreamBeginCaptureToGraph(CUstream s, void *g, const void *d, const void *e, size_t n, int mode)
{
    (void)g; (void)d; (void)e; (void)n;
    return i_cuStreamBeginCapture_v2(s, mode);
}
static CUresult i_cuGraphInstantiateWithParams(struct fexec **e, struct fgraph *g, void *params) { (void)params; return i_cuGraphInstantiateWithFlags(e, g, 0); }
/* the old signature: an error node and a log buffer */
static CUresult i_cuGraphInstantiate(struct fexec **e, struct fgraph *g, void *err, char *log, size_t n)
{
    if (err) *(void **)err = NULL;
    if (log && n) log[0] = 0;
    return i_cuGraphInstantiateWithFlags(e, g, 0);
}
static CUresult i_cuGraphInstantiate_v2(struct fexec **e, struct fgraph *g, void *err, char *log, size_t n) { return i_cuGraphInstantiate(e, g, err, log, n); }

/* kernels: cuModuleGetFunction(name "local=N") gives one of N bytes of local memory a thread; its
 * launch grows the context's stack to N as the real driver does, taking (N - stack) per thread */
struct ffunc { int magic; size_t local; };
static CUresult i_cuModuleGetFunction(struct ffunc **f, void *m, const char *name)
{
    (void)m;
    const char *l = name ? strstr(name, "local=") : NULL;
    *f = malloc(sizeof **f);
    **f = (struct ffunc){ 0xF00F, l ? (size_t)strtoull(l + 6, NULL, 0) : 0 };
    return OK;
}
static CUresult i_cuFuncGetAttribute(int *v, int a, struct ffunc *f)
{
    if (!f || f->magic != 0xF00F) return E_INVALID_VALUE;
    *v = a == 3 ? (int)f->local : 0;
    return OK;
}
/* a library's kernel (cuLibraryGetKernel): its module loads lazily, at its first
 * cuKernelGetFunction or launch, as libcudart 12/13's do */
struct fkern { int magic; struct fmod *lib; struct ffunc fn; };
static CUresult i_cuLibraryGetKernel(struct fkern **k, struct fmod *l, const char *name)
{
    if (!l || l->magic != 0x31B) return E_INVALID_VALUE;
    const char *loc = name ? strstr(name, "local=") : NULL;
    *k = malloc(sizeof **k);
    **k = (struct fkern){ 0xCE11, l, { 0xF00F, loc ? (size_t)strtoull(loc + 6, NULL, 0) : 0 } };
    return OK;
}
static CUresult kernel_function(struct fkern *k, struct ffunc **f)
{
    struct fmod *m;
    CUresult r = i_cuLibraryGetModule(&m, k->lib);
    if (!r) *f = &k->fn;
    return r;
}
static CUresult launch(struct ffunc *f)
{
    size_t cur;
    if (f && ((struct fkern *)f)->magic == 0xCE11) {
        CUresult r = kernel_function((struct fkern *)f, &f);
        if (r) return r;
    }
    if (!f || f->magic != 0xF00F) return E_INVALID_VALUE;
    if (!t_cur) return E_INVALID_CONTEXT;
    i_cuCtxGetLimit(&cur, 0);
    return f->local > cur ? i_cuCtxSetLimit(0, f->local) : OK;
}
static CUresult i_cuLaunchKernel(struct ffunc *f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz, unsigned sh, CUstream s, void **p, void **e)
{
    (void)gx; (void)gy; (void)gz; (void)bx; (void)by; (void)bz; (void)sh; (void)s; (void)p; (void)e;
    return launch(f);
}
static CUresult i_cuLaunchKernelEx(const void *cfg, struct ffunc *f, void **p, void **e) { (void)cfg; (void)p; (void)e; return launch(f); }
static CUresult i_cuLaunchCooperativeKernel(struct ffunc *f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz, unsigned sh, CUstream s, void **p)
{
    return i_cuLaunchKernel(f, gx, gy, gz, bx, by, bz, sh, s, p, NULL);
}

static CUresult i_cuGetProcAddress(const char *sym, void **pfn, int ver, uint64_t flags);
static CUresult i_cuGetProcAddress_v2(const char *sym, void **pfn, int ver, uint64_t flags, int *status);

/* ---- cuGetProcAddress: base name, from cudaVersion, ptsz, internal function ---- */
static const struct { const char *base; int ver, ptsz; void *fn; } procs[] = {
#define P(base, ver, ptsz, fn) { #base, ver, ptsz, (void *)fn },
    P(cuInit, 2000, 0, i_cuInit) P(cuDriverGetVersion, 2020, 0, i_cuDriverGetVersion)
    P(cuGetProcAddress, 11030, 0, i_cuGetProcAddress) P(cuGetProcAddress, 12000, 0, i_cuGetProcAddress_v2)
    P(cuDeviceGetCount, 2000, 0, i_cuDeviceGetCount) P(cuDeviceGet, 2000, 0, i_cuDeviceGet)
    P(cuDeviceGetUuid, 9020, 0, i_cuDeviceGetUuid) P(cuDeviceGetName, 2000, 0, i_cuDeviceGetName)
    P(cuDeviceTotalMem, 2000, 0, i_cuDeviceTotalMem) P(cuDeviceTotalMem, 3020, 0, i_cuDeviceTotalMem_v2)
    P(cuMemGetInfo, 2000, 0, i_cuMemGetInfo) P(cuMemGetInfo, 3020, 0, i_cuMemGetInfo_v2)
    P(cuCtxCreate, 2000, 0, i_cuCtxCreate_v2) P(cuCtxCreate, 3020, 0, i_cuCtxCreate_v2)
    P(cuCtxCreate, 11040, 0, i_cuCtxCreate_v3) P(cuCtxCreate, 12050, 0, i_cuCtxCreate_v4)
    P(cuCtxDestroy, 2000, 0, i_cuCtxDestroy_v2) P(cuCtxDestroy, 4000, 0, i_cuCtxDestroy_v2)
    P(cuCtxGetCurrent, 4000, 0, i_cuCtxGetCurrent) P(cuCtxSetCurrent, 4000, 0, i_cuCtxSetCurrent)
    P(cuCtxGetDevice, 2000, 0, i_cuCtxGetDevice) P(cuCtxSynchronize, 2000, 0, i_cuCtxSynchronize)
    P(cuDevicePrimaryCtxRetain, 7000, 0, i_cuDevicePrimaryCtxRetain)
    P(cuDevicePrimaryCtxRelease, 7000, 0, i_cuDevicePrimaryCtxRelease_v2) P(cuDevicePrimaryCtxRelease, 11000, 0, i_cuDevicePrimaryCtxRelease_v2)
    P(cuDevicePrimaryCtxReset, 7000, 0, i_cuDevicePrimaryCtxReset_v2) P(cuDevicePrimaryCtxReset, 11000, 0, i_cuDevicePrimaryCtxReset_v2)
    P(cuMemAlloc, 2000, 0, i_cuMemAlloc) P(cuMemAlloc, 3020, 0, i_cuMemAlloc_v2)
    P(cuMemAllocPitch, 2000, 0, i_cuMemAllocPitch) P(cuMemAllocPitch, 3020, 0, i_cuMemAllocPitch_v2)
    P(cuMemAllocManaged, 6000, 0, i_cuMemAllocManaged)
    P(cuMemFree, 2000, 0, i_cuMemFree) P(cuMemFree, 3020, 0, i_cuMemFree_v2)
    P(cuMemAllocAsync, 11020, 0, i_cuMemAllocAsync) P(cuMemAllocAsync, 11020, 1, i_cuMemAllocAsync_ptsz)
    P(cuMemAllocFromPoolAsync, 11020, 0, i_cuMemAllocFromPoolAsync) P(cuMemAllocFromPoolAsync, 11020, 1, i_cuMemAllocFromPoolAsync_ptsz)
    P(cuMemFreeAsync, 11020, 0, i_cuMemFreeAsync) P(cuMemFreeAsync, 11020, 1, i_cuMemFreeAsync_ptsz)
    P(cuMemCreate, 10020, 0, i_cuMemCreate) P(cuMemRelease, 10020, 0, i_cuMemRelease)
    P(cuArrayCreate, 2000, 0, i_cuArrayCreate) P(cuArrayCreate, 3020, 0, i_cuArrayCreate_v2)
    P(cuArray3DCreate, 2000, 0, i_cuArray3DCreate) P(cuArray3DCreate, 3020, 0, i_cuArray3DCreate_v2)
    P(cuArrayDestroy, 2000, 0, i_cuArrayDestroy)
    P(cuMipmappedArrayCreate, 5000, 0, i_cuMipmappedArrayCreate) P(cuMipmappedArrayDestroy, 5000, 0, i_cuMipmappedArrayDestroy)
    P(cuGetErrorString, 6000, 0, i_cuGetErrorString)
    P(cuStreamCreate, 2000, 0, i_cuStreamCreate) P(cuStreamDestroy, 0, 0, i_cuStreamDestroy_v2) P(cuStreamDestroy, 4000, 0, i_cuStreamDestroy_v2)
    P(cuStreamGetCtx, 9020, 0, i_cuStreamGetCtx) P(cuStreamGetCtx, 9020, 1, i_cuStreamGetCtx_ptsz)
    P(cuStreamSynchronize, 2000, 0, i_cuStreamSynchronize)
    P(cuDeviceGetAttribute, 2000, 0, i_cuDeviceGetAttribute)
    P(cuCtxGetLimit, 3010, 0, i_cuCtxGetLimit) P(cuCtxSetLimit, 3010, 0, i_cuCtxSetLimit)
    P(cuModuleLoad, 2000, 0, i_cuModuleLoad) P(cuModuleLoadData, 2000, 0, i_cuModuleLoadData)
    P(cuModuleLoadDataEx, 2010, 0, i_cuModuleLoadDataEx) P(cuModuleUnload, 2000, 0, i_cuModuleUnload)
    P(cuLibraryLoadData, 12000, 0, i_cuLibraryLoadData) P(cuLibraryGetModule, 12000, 0, i_cuLibraryGetModule)
    P(cuLibraryUnload, 12000, 0, i_cuLibraryUnload)
    P(cuDeviceGetDefaultMemPool, 11020, 0, i_cuDeviceGetDefaultMemPool) P(cuDeviceGetMemPool, 11020, 0, i_cuDeviceGetDefaultMemPool)
    P(cuMemPoolTrimTo, 11020, 0, i_cuMemPoolTrimTo)
    P(cuMemPoolGetAttribute, 11020, 0, i_cuMemPoolGetAttribute) P(cuMemPoolSetAttribute, 11020, 0, i_cuMemPoolSetAttribute)
    P(cuStreamBeginCapture, 10010, 0, i_cuStreamBeginCapture_v2) P(cuStreamIsCapturing, 10000, 0, i_cuStreamIsCapturing)
    P(cuStreamEndCapture, 10000, 0, i_cuStreamEndCapture)
    P(cuGraphGetNodes, 10000, 0, i_cuGraphGetNodes) P(cuGraphNodeGetType, 10000, 0, i_cuGraphNodeGetType)
    P(cuGraphMemAllocNodeGetParams, 11040, 0, i_cuGraphMemAllocNodeGetParams)
    P(cuGraphInstantiateWithFlags, 11040, 0, i_cuGraphInstantiateWithFlags) P(cuGraphLaunch, 10000, 0, i_cuGraphLaunch)
    P(cuGraphExecDestroy, 10000, 0, i_cuGraphExecDestroy)
    P(cuModuleLoadFatBinary, 2000, 0, i_cuModuleLoadFatBinary) P(cuKernelGetFunction, 12000, 0, i_cuKernelGetFunction)
    P(cuLibraryGetGlobal, 12000, 0, i_cuLibraryGetGlobal)
    P(cuMemPoolCreate, 11020, 0, i_cuMemPoolCreate) P(cuMemPoolDestroy, 11020, 0, i_cuMemPoolDestroy)
    P(cuStreamBeginCapture, 10010, 1, i_cuStreamBeginCapture_v2) P(cuStreamEndCapture, 10000, 1, i_cuStreamEndCapture)
    P(cuStreamIsCapturing, 10000, 1, i_cuStreamIsCapturing)
    P(cuStreamBeginCaptureToGraph, 12030, 0, i_cuStreamBeginCaptureToGraph) P(cuStreamBeginCaptureToGraph, 12030, 1, i_cuStreamBeginCaptureToGraph)
    P(cuGraphInstantiateWithParams, 12000, 0, i_cuGraphInstantiateWithParams) P(cuGraphInstantiateWithParams, 12000, 1, i_cuGraphInstantiateWithParams)
    P(cuLibraryGetKernel, 12000, 0, i_cuLibraryGetKernel)
    P(cuModuleGetFunction, 2000, 0, i_cuModuleGetFunction) P(cuFuncGetAttribute, 2020, 0, i_cuFuncGetAttribute)
    P(cuLaunchKernel, 4000, 0, i_cuLaunchKernel) P(cuLaunchKernel, 7000, 1, i_cuLaunchKernel)
    P(cuLaunchKernelEx, 11060, 0, i_cuLaunchKernelEx) P(cuLaunchKernelEx, 11060, 1, i_cuLaunchKernelEx)
    P(cuLaunchCooperativeKernel, 9000, 0, i_cuLaunchCooperativeKernel) P(cuLaunchCooperativeKernel, 9000, 1, i_cuLaunchCooperativeKernel)
    P(cuDeviceGraphMemTrim, 11040, 0, i_cuDeviceGraphMemTrim) P(cuDeviceGetGraphMemAttribute, 11040, 0, i_cuDeviceGetGraphMemAttribute)
    P(cuGraphInstantiate, 10000, 0, i_cuGraphInstantiate) P(cuGraphInstantiate, 11000, 0, i_cuGraphInstantiate_v2)
    P(cuCtxPushCurrent, 4000, 0, i_cuCtxPushCurrent_v2) P(cuCtxPopCurrent, 4000, 0, i_cuCtxPopCurrent_v2)
    P(cuDeviceGetDevResource, 12040, 0, i_cuDeviceGetDevResource) P(cuDevResourceGenerateDesc, 12040, 0, i_cuDevResourceGenerateDesc)
    P(cuGreenCtxCreate, 12040, 0, i_cuGreenCtxCreate) P(cuGreenCtxDestroy, 12040, 0, i_cuGreenCtxDestroy)
    P(cuCtxFromGreenCtx, 12040, 0, i_cuCtxFromGreenCtx) P(cuGreenCtxStreamCreate, 12050, 0, i_cuGreenCtxStreamCreate)
#undef P
};

static CUresult i_cuGetProcAddress_v2(const char *sym, void **pfn, int ver, uint64_t flags, int *status)
{
    int best = -1, found_name = 0, score = -1;
    if (!sym || !pfn) return E_INVALID_VALUE;
    for (size_t i = 0; i < sizeof procs / sizeof *procs; i++) {
        if (strcmp(procs[i].base, sym)) continue;
        found_name = 1;
        if (procs[i].ver > ver || (procs[i].ptsz && !(flags & 2))) continue;
        int s = procs[i].ptsz * 1000000 + procs[i].ver;
        if (s > score) { score = s; best = (int)i; }
    }
    if (best < 0) {
        *pfn = NULL;
        if (status) *status = found_name ? 2 : 1;   /* VERSION_NOT_SUFFICIENT : SYMBOL_NOT_FOUND */
        return E_NOT_FOUND;
    }
    *pfn = procs[best].fn;
    if (status) *status = 0;
    return OK;
}
static CUresult i_cuGetProcAddress(const char *sym, void **pfn, int ver, uint64_t flags) { return i_cuGetProcAddress_v2(sym, pfn, ver, flags, NULL); }

/* ---- exported symbols: thin forwards, so they differ from what cuGetProcAddress returns ---- */
#define FWD(ret, name, params, args) EXPORT ret name params; ret name params { return i_##name args; }
FWD(CUresult, cuInit, (unsigned f), (f))
FWD(CUresult, cuDriverGetVersion, (int *v), (v))
FWD(CUresult, cuGetProcAddress, (const char *s, void **p, int v, uint64_t f), (s, p, v, f))
FWD(CUresult, cuGetProcAddress_v2, (const char *s, void **p, int v, uint64_t f, int *st), (s, p, v, f, st))
FWD(CUresult, cuDeviceGetCount, (int *n), (n))
FWD(CUresult, cuDeviceGet, (CUdevice *d, int o), (d, o))
FWD(CUresult, cuDeviceGetUuid, (CUuuid *u, CUdevice d), (u, d))
EXPORT CUresult cuDeviceGetUuid_v2(CUuuid *u, CUdevice d) { return i_cuDeviceGetUuid(u, d); }
FWD(CUresult, cuDeviceGetName, (char *n, int l, CUdevice d), (n, l, d))
FWD(CUresult, cuDeviceTotalMem, (unsigned *b, CUdevice d), (b, d))
FWD(CUresult, cuDeviceTotalMem_v2, (size_t *b, CUdevice d), (b, d))
FWD(CUresult, cuMemGetInfo, (unsigned *f, unsigned *t), (f, t))
FWD(CUresult, cuMemGetInfo_v2, (size_t *f, size_t *t), (f, t))
EXPORT CUresult cuCtxCreate(CUcontext *c, unsigned f, CUdevice d) { return i_cuCtxCreate_v2(c, f, d); }
FWD(CUresult, cuCtxCreate_v2, (CUcontext *c, unsigned f, CUdevice d), (c, f, d))
FWD(CUresult, cuCtxCreate_v3, (CUcontext *c, void *p, int n, unsigned f, CUdevice d), (c, p, n, f, d))
FWD(CUresult, cuCtxCreate_v4, (CUcontext *c, void *p, unsigned f, CUdevice d), (c, p, f, d))
EXPORT CUresult cuCtxDestroy(CUcontext c) { return i_cuCtxDestroy_v2(c); }
FWD(CUresult, cuCtxDestroy_v2, (CUcontext c), (c))
FWD(CUresult, cuCtxGetCurrent, (CUcontext *c), (c))
FWD(CUresult, cuCtxSetCurrent, (CUcontext c), (c))
FWD(CUresult, cuCtxGetDevice, (CUdevice *d), (d))
FWD(CUresult, cuCtxSynchronize, (void), ())
FWD(CUresult, cuDevicePrimaryCtxRetain, (CUcontext *c, CUdevice d), (c, d))
EXPORT CUresult cuDevicePrimaryCtxRelease(CUdevice d) { return i_cuDevicePrimaryCtxRelease_v2(d); }
FWD(CUresult, cuDevicePrimaryCtxRelease_v2, (CUdevice d), (d))
EXPORT CUresult cuDevicePrimaryCtxReset(CUdevice d) { return i_cuDevicePrimaryCtxReset_v2(d); }
FWD(CUresult, cuDevicePrimaryCtxReset_v2, (CUdevice d), (d))
FWD(CUresult, cuMemAlloc, (CUdeviceptr_v1 *p, unsigned n), (p, n))
FWD(CUresult, cuMemAlloc_v2, (CUdeviceptr *p, size_t n), (p, n))
FWD(CUresult, cuMemAllocManaged, (CUdeviceptr *p, size_t n, unsigned f), (p, n, f))
FWD(CUresult, cuMemAllocPitch, (CUdeviceptr_v1 *p, unsigned *pt, unsigned w, unsigned h, unsigned e), (p, pt, w, h, e))
FWD(CUresult, cuMemAllocPitch_v2, (CUdeviceptr *p, size_t *pt, size_t w, size_t h, unsigned e), (p, pt, w, h, e))
FWD(CUresult, cuMemFree, (CUdeviceptr_v1 p), (p))
FWD(CUresult, cuMemFree_v2, (CUdeviceptr p), (p))
FWD(CUresult, cuMemAllocAsync, (CUdeviceptr *p, size_t n, CUstream s), (p, n, s))
FWD(CUresult, cuMemAllocAsync_ptsz, (CUdeviceptr *p, size_t n, CUstream s), (p, n, s))
FWD(CUresult, cuMemAllocFromPoolAsync, (CUdeviceptr *p, size_t n, CUmemoryPool m, CUstream s), (p, n, m, s))
FWD(CUresult, cuMemAllocFromPoolAsync_ptsz, (CUdeviceptr *p, size_t n, CUmemoryPool m, CUstream s), (p, n, m, s))
FWD(CUresult, cuMemFreeAsync, (CUdeviceptr p, CUstream s), (p, s))
FWD(CUresult, cuMemFreeAsync_ptsz, (CUdeviceptr p, CUstream s), (p, s))
FWD(CUresult, cuMemCreate, (CUmemGenericAllocationHandle *h, size_t n, const MemProp *p, unsigned long long f), (h, n, p, f))
FWD(CUresult, cuMemRelease, (CUmemGenericAllocationHandle h), (h))
FWD(CUresult, cuArrayCreate, (void **a, const AD2_v1 *d), (a, d))
FWD(CUresult, cuArrayCreate_v2, (void **a, const AD2 *d), (a, d))
FWD(CUresult, cuArray3DCreate, (void **a, const AD3_v1 *d), (a, d))
FWD(CUresult, cuArray3DCreate_v2, (void **a, const AD3 *d), (a, d))
FWD(CUresult, cuArrayDestroy, (void *a), (a))
FWD(CUresult, cuMipmappedArrayCreate, (void **a, const AD3 *d, unsigned l), (a, d, l))
FWD(CUresult, cuMipmappedArrayDestroy, (void *a), (a))
FWD(CUresult, cuGetErrorString, (CUresult e, const char **s), (e, s))
FWD(CUresult, cuStreamCreate, (CUstream *s, unsigned f), (s, f))
EXPORT CUresult cuStreamDestroy(CUstream s); CUresult cuStreamDestroy(CUstream s) { return i_cuStreamDestroy_v2(s); }
FWD(CUresult, cuStreamDestroy_v2, (CUstream s), (s))
FWD(CUresult, cuStreamSynchronize, (CUstream s), (s))
FWD(CUresult, cuStreamGetCtx, (CUstream s, CUcontext *c), (s, c))
FWD(CUresult, cuStreamGetCtx_ptsz, (CUstream s, CUcontext *c), (s, c))
FWD(CUresult, cuDeviceGetAttribute, (int *v, int a, CUdevice d), (v, a, d))
FWD(CUresult, cuCtxGetLimit, (size_t *v, int l), (v, l))
FWD(CUresult, cuCtxSetLimit, (int l, size_t v), (l, v))
FWD(CUresult, cuModuleLoad, (struct fmod **m, const char *p), (m, p))
FWD(CUresult, cuModuleLoadData, (struct fmod **m, const void *i), (m, i))
FWD(CUresult, cuModuleLoadDataEx, (struct fmod **m, const void *i, unsigned n, void *o, void **v), (m, i, n, o, v))
FWD(CUresult, cuModuleUnload, (struct fmod *m), (m))
FWD(CUresult, cuLibraryLoadData, (struct fmod **l, const void *c, void *a, void *b, unsigned n, void *x, void *y, unsigned k), (l, c, a, b, n, x, y, k))
FWD(CUresult, cuLibraryGetModule, (struct fmod **m, struct fmod *l), (m, l))
FWD(CUresult, cuLibraryUnload, (struct fmod *l), (l))
FWD(CUresult, cuDeviceGetDefaultMemPool, (CUmemoryPool *p, CUdevice d), (p, d))
EXPORT CUresult cuDeviceGetMemPool(CUmemoryPool *p, CUdevice d) { return i_cuDeviceGetDefaultMemPool(p, d); }
FWD(CUresult, cuMemPoolTrimTo, (CUmemoryPool p, size_t k), (p, k))
FWD(CUresult, cuMemPoolGetAttribute, (CUmemoryPool p, int a, void *v), (p, a, v))
FWD(CUresult, cuMemPoolSetAttribute, (CUmemoryPool p, int a, void *v), (p, a, v))
EXPORT CUresult cuStreamBeginCapture(CUstream s, int m) { return i_cuStreamBeginCapture_v2(s, m); }
FWD(CUresult, cuStreamBeginCapture_v2, (CUstream s, int m), (s, m))
FWD(CUresult, cuStreamIsCapturing, (CUstream s, int *st), (s, st))
FWD(CUresult, cuStreamEndCapture, (CUstream s, struct fgraph **g), (s, g))
FWD(CUresult, cuGraphGetNodes, (struct fgraph *g, struct fnode **n, size_t *c), (g, n, c))
FWD(CUresult, cuGraphNodeGetType, (struct fnode *n, int *t), (n, t))
FWD(CUresult, cuGraphMemAllocNodeGetParams, (struct fnode *n, AllocParams *p), (n, p))
FWD(CUresult, cuGraphInstantiateWithFlags, (struct fexec **e, struct fgraph *g, unsigned long long f), (e, g, f))
FWD(CUresult, cuGraphLaunch, (struct fexec *e, CUstream s), (e, s))
FWD(CUresult, cuGraphExecDestroy, (struct fexec *e), (e))
FWD(CUresult, cuDeviceGraphMemTrim, (CUdevice d), (d))
FWD(CUresult, cuLibraryGetKernel, (struct fkern **k, struct fmod *l, const char *n), (k, l, n))
FWD(CUresult, cuModuleGetFunction, (struct ffunc **f, void *m, const char *n), (f, m, n))
FWD(CUresult, cuFuncGetAttribute, (int *v, int a, struct ffunc *f), (v, a, f))
FWD(CUresult, cuLaunchKernel, (struct ffunc *f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz, unsigned sh, CUstream s, void **p, void **e), (f, gx, gy, gz, bx, by, bz, sh, s, p, e))
EXPORT CUresult cuLaunchKernel_ptsz(struct ffunc *f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz, unsigned sh, CUstream s, void **p, void **e) { return i_cuLaunchKernel(f, gx, gy, gz, bx, by, bz, sh, s, p, e); }
FWD(CUresult, cuLaunchKernelEx, (const void *c, struct ffunc *f, void **p, void **e), (c, f, p, e))
EXPORT CUresult cuLaunchKernelEx_ptsz(const void *c, struct ffunc *f, void **p, void **e) { return i_cuLaunchKernelEx(c, f, p, e); }
FWD(CUresult, cuLaunchCooperativeKernel, (struct ffunc *f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz, unsigned sh, CUstream s, void **p), (f, gx, gy, gz, bx, by, bz, sh, s, p))
EXPORT CUresult cuLaunchCooperativeKernel_ptsz(struct ffunc *f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz, unsigned sh, CUstream s, void **p) { return i_cuLaunchCooperativeKernel(f, gx, gy, gz, bx, by, bz, sh, s, p); }
FWD(CUresult, cuModuleLoadFatBinary, (struct fmod **m, const void *f), (m, f))
FWD(CUresult, cuKernelGetFunction, (void **f, void *k), (f, k))
FWD(CUresult, cuLibraryGetGlobal, (CUdeviceptr *p, size_t *n, struct fmod *l, const char *name), (p, n, l, name))
FWD(CUresult, cuMemPoolCreate, (CUmemoryPool *p, const void *props), (p, props))
FWD(CUresult, cuMemPoolDestroy, (CUmemoryPool p), (p))
EXPORT CUresult cuStreamBeginCapture_ptsz(CUstream s, int m) { return i_cuStreamBeginCapture_v2(s, m); }
EXPORT CUresult cuStreamEndCapture_ptsz(CUstream s, struct fgraph **g) { return i_cuStreamEndCapture(s, g); }
EXPORT CUresult cuStreamIsCapturing_ptsz(CUstream s, int *st) { return i_cuStreamIsCapturing(s, st); }
FWD(CUresult, cuStreamBeginCaptureToGraph, (CUstream s, void *g, const void *d, const void *e, size_t n, int m), (s, g, d, e, n, m))
EXPORT CUresult cuStreamBeginCaptureToGraph_ptsz(CUstream s, void *g, const void *d, const void *e, size_t n, int m) { return i_cuStreamBeginCaptureToGraph(s, g, d, e, n, m); }
FWD(CUresult, cuGraphInstantiateWithParams, (struct fexec **e, struct fgraph *g, void *p), (e, g, p))
EXPORT CUresult cuGraphInstantiateWithParams_ptsz(struct fexec **e, struct fgraph *g, void *p) { return i_cuGraphInstantiateWithParams(e, g, p); }
FWD(CUresult, cuDeviceGetGraphMemAttribute, (CUdevice d, int a, void *v), (d, a, v))
FWD(CUresult, cuGraphInstantiate, (struct fexec **e, struct fgraph *g, void *err, char *log, size_t n), (e, g, err, log, n))
FWD(CUresult, cuGraphInstantiate_v2, (struct fexec **e, struct fgraph *g, void *err, char *log, size_t n), (e, g, err, log, n))
FWD(CUresult, cuCtxPushCurrent_v2, (CUcontext c), (c))
FWD(CUresult, cuCtxPopCurrent_v2, (CUcontext *c), (c))
FWD(CUresult, cuDeviceGetDevResource, (CUdevice d, int *r, int t), (d, r, t))
FWD(CUresult, cuDevResourceGenerateDesc, (void **d, int *r, unsigned n), (d, r, n))
FWD(CUresult, cuGreenCtxCreate, (struct fgreen **g, void *d, CUdevice dev, unsigned f), (g, d, dev, f))
FWD(CUresult, cuGreenCtxDestroy, (struct fgreen *g), (g))
FWD(CUresult, cuCtxFromGreenCtx, (CUcontext *c, struct fgreen *g), (c, g))
FWD(CUresult, cuGreenCtxStreamCreate, (CUstream *s, struct fgreen *g, unsigned f, int p), (s, g, f, p))

__attribute__((constructor)) static void fake_cuda_init(void) { setup(); }
