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

struct fctx { int magic, dev, primary, alive; };
typedef struct fctx *CUcontext;

static int g_init, g_ndev = 1, g_init_fails;
static uint64_t g_total = 8ULL << 30, g_ctx_bytes;
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
    for (int i = 0; i < MAXDEV; i++) g_primary[i] = (struct fctx){ 0xC7C7, i, 1, 0 };
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

static int rec_del(uint64_t key, int kind)
{
    pthread_mutex_lock(&g_mu);
    for (struct rec **p = &g_recs[key % NB]; *p; p = &(*p)->next)
        if ((*p)->key == key && (*p)->kind == kind) {
            struct rec *r = *p;
            *p = r->next;
            pthread_mutex_unlock(&g_mu);
            phys_give(r->dev, r->size);
            reuse_put(r->key, r->size, r->kind);
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
struct fstream { int magic; struct fctx *ctx; };
static struct fctx *stream_ctx(CUstream s)
{
    if ((uintptr_t)s <= 2) return t_cur;
    struct fstream *st = s;
    return st->magic == 0x5757 ? st->ctx : NULL;
}

/* the one allocation path of the stub */
static CUresult do_alloc_in(struct fctx *c, uint64_t *out, uint64_t size, int kind, int small, int dev_override)
{
    if (!g_init) return E_NOT_INIT;
    int dev = dev_override >= 0 ? dev_override : (c ? c->dev : -1);
    if (dev < 0) return E_INVALID_CONTEXT;
    if (!out || !size) return E_INVALID_VALUE;
    if (phys_take(dev, size)) return E_OOM;
    uint64_t key = kind == 4 ? __atomic_fetch_add(&g_next_handle, 1, __ATOMIC_RELAXED) : next_key(size, small);
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
    *c = (struct fctx){ 0xC7C7, d, 0, 1 };
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
static CUresult i_cuMemFree_v2(CUdeviceptr p) { if (!g_init) return E_NOT_INIT; return p ? rec_del(p, 1) : OK; }
static CUresult i_cuMemFree(CUdeviceptr_v1 p) { return i_cuMemFree_v2(p); }
static CUresult i_cuMemAllocAsync(CUdeviceptr *p, size_t n, CUstream s) { return do_alloc_in(stream_ctx(s), (uint64_t *)p, n, 1, 0, -1); }
static CUresult i_cuMemAllocAsync_ptsz(CUdeviceptr *p, size_t n, CUstream s) { return do_alloc_in(stream_ctx(s), (uint64_t *)p, n, 1, 0, -1); }
static CUresult i_cuMemAllocFromPoolAsync(CUdeviceptr *p, size_t n, CUmemoryPool m, CUstream s) { (void)m; return do_alloc_in(stream_ctx(s), (uint64_t *)p, n, 1, 0, -1); }
static CUresult i_cuMemAllocFromPoolAsync_ptsz(CUdeviceptr *p, size_t n, CUmemoryPool m, CUstream s) { (void)m; return do_alloc_in(stream_ctx(s), (uint64_t *)p, n, 1, 0, -1); }
static CUresult i_cuStreamCreate(CUstream *ps, unsigned f)
{
    (void)f;
    if (!g_init) return E_NOT_INIT;
    if (!t_cur) return E_INVALID_CONTEXT;
    struct fstream *st = malloc(sizeof *st);
    *st = (struct fstream){ 0x5757, t_cur };
    *ps = st;
    return OK;
}
static CUresult i_cuStreamDestroy_v2(CUstream s) { struct fstream *st = s; if ((uintptr_t)s <= 2 || st->magic != 0x5757) return E_INVALID_VALUE; st->magic = 0; free(st); return OK; }
static CUresult i_cuStreamGetCtx(CUstream s, CUcontext *pc) { struct fctx *c = stream_ctx(s); if (!c) return E_INVALID_CONTEXT; *pc = c; return OK; }
static CUresult i_cuStreamGetCtx_ptsz(CUstream s, CUcontext *pc) { return i_cuStreamGetCtx(s, pc); }
/* nothing is ever queued here: a stream is always done */
static CUresult i_cuStreamSynchronize(CUstream s) { return (uintptr_t)s <= 2 || stream_ctx(s) ? OK : E_INVALID_VALUE; }
static CUresult i_cuMemFreeAsync(CUdeviceptr p, CUstream s) { (void)s; return i_cuMemFree_v2(p); }
static CUresult i_cuMemFreeAsync_ptsz(CUdeviceptr p, CUstream s) { (void)s; return i_cuMemFree_v2(p); }
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

__attribute__((constructor)) static void fake_cuda_init(void) { setup(); }
