/* cuclient: a CUDA driver client for the libgpumem tests.  Arguments are commands run in order,
 * each printing one line ("<command> <result>"):
 *   mode=link|dlsym|gpa1|gpa2 ver=N flags=N   how entry points are reached (before init):
 *        link  - the linked symbols (LD_PRELOAD interposition), cuda.h's _v2 names
 *        dlsym - dlopen("libcuda.so.1") + dlsym, cuda.h's _v2 names
 *        gpa1  - cuGetProcAddress (found with dlsym) with cudaVersion ver and flags
 *        gpa2  - cuGetProcAddress_v2 (found with dlsym), then cuGetProcAddress fetched through
 *                itself, as libcudart 12/13 does; every entry point fetched by base name
 *   init  dev=N  primary  ctx  ctx3  ctx4 (cuCtxCreate_v3/_v4)  current=I (make the I-th ctx current)  destroy (the last ctx)
 *   release  reset   (the primary context)
 *   alloc=SIZE free  pitch=W,H  managed=SIZE  async=SIZE  pool=SIZE  freeasync  vmm=SIZE vmmfree
 *   stream   (a stream in the current context; async/pool/freeasync then use it)  streamdestroy
 *   array=W,H  array3d=W,H,D  arrayfree  mipmap=W,H,LEVELS  mipmapfree
 *   limit=L,VALUE (cuCtxSetLimit)  module=SIZE modunload (cuModuleLoadData of "globals=SIZE")
 *   library=SIZE (cuLibraryLoadData, then cuLibraryGetModule: its lazy load)  poolkeep (the
 *   device's default pool keeps what is freed: release threshold UINT64_MAX)
 *   capture endcapture instantiate launch execdestroy   (a graph of the stream's capture)
 *   oldinstantiate=VER  (the same by the old signature, cuGraphInstantiate with an error node and a
 *        log: cuGetProcAddress("cuGraphInstantiate", VER) in the gpa modes, else the symbol
 *        cuGraphInstantiate below VER 11000 and cuGraphInstantiate_v2 from it)
 *   green  (a green context on dev, all of its SMs)  greencurrent (the last one's CUcontext made
 *   current)  greenstream (a stream of the last one)  greendestroy (the last one)
 *   kernel=LOCAL (a function of LOCAL bytes of local memory a thread)  launchk (cuLaunchKernel of it)
 *   libkernel=SIZE (a kernel of a library with SIZE of globals, loaded lazily)
 *   info  totalmem  peak  used  sleep=SEC  ready  hold  threads=N,ITERS,SIZE[,self]  bench=N,SIZE  openclose=PATH
 *   clobber=SUBSTR   (the application reuses our descriptor's number: /dev/null over fds naming SUBSTR)
 *   fds=SUBSTR       how many open descriptors name SUBSTR
 *   fdmax=SUBSTR     the highest open descriptor naming SUBSTR (-1: none)
 *   fill_keys        create pthread keys until none is left (prints how many)
 *   fill_fds         open /dev/null until open fails (EMFILE: the process is out of descriptors)
 *   free_fds=N       close the last N of those (all of them without N)
 *   dlsym=NAME   prints which library's function dlsym(libcuda, NAME) returned (or NULL)
 *   thread ... endthread   (the commands between run in a new thread, in the current context; joined)
 *   atexit ... endatexit   (in a thread block: the commands between run as the thread exits, from a
 *        thread-specific data destructor made here, after the library's own destructors)
 *   racefree=N,SIZE[,async]   N times: allocate SIZE here, then free it here and in a second thread at
 *        once (an application's double free); prints how many frees succeeded and failed
 *   fork ... endfork   (the commands between run in a child; the parent waits for it)
 *   forknowait ... endfork   (same, the parent never waits: the child stays a zombie)
 * SIZE takes K/M/G suffixes (binary).  Results: "ok", "err=<CUresult>", numbers. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

typedef int CUresult;
typedef int CUdevice;
typedef void *CUcontext;
typedef unsigned long long CUdeviceptr;
typedef struct { size_t Width, Height; int Format; unsigned int NumChannels; } AD2;
typedef struct { size_t Width, Height, Depth; int Format; unsigned int NumChannels, Flags; } AD3;
typedef struct { int type, requestedHandleTypes; struct { int type, id; } location; void *win32; unsigned char flags[8]; } MemProp;

/* linked symbols (link mode) */
CUresult cuInit(unsigned int);
CUresult cuDeviceGet(CUdevice *, int);
CUresult cuDevicePrimaryCtxRetain(CUcontext *, CUdevice);
CUresult cuDevicePrimaryCtxRelease_v2(CUdevice);
CUresult cuDevicePrimaryCtxReset_v2(CUdevice);
CUresult cuCtxSetCurrent(CUcontext);
CUresult cuCtxCreate_v2(CUcontext *, unsigned int, CUdevice);
CUresult cuCtxDestroy_v2(CUcontext);
CUresult cuMemAlloc_v2(CUdeviceptr *, size_t);
CUresult cuMemFree_v2(CUdeviceptr);
CUresult cuMemAllocPitch_v2(CUdeviceptr *, size_t *, size_t, size_t, unsigned int);
CUresult cuMemAllocManaged(CUdeviceptr *, size_t, unsigned int);
CUresult cuMemAllocAsync(CUdeviceptr *, size_t, void *);
CUresult cuMemAllocFromPoolAsync(CUdeviceptr *, size_t, void *, void *);
CUresult cuMemFreeAsync(CUdeviceptr, void *);
CUresult cuMemCreate(unsigned long long *, size_t, const MemProp *, unsigned long long);
CUresult cuMemRelease(unsigned long long);
CUresult cuArrayCreate_v2(void **, const AD2 *);
CUresult cuArray3DCreate_v2(void **, const AD3 *);
CUresult cuArrayDestroy(void *);
CUresult cuMipmappedArrayCreate(void **, const AD3 *, unsigned int);
CUresult cuMipmappedArrayDestroy(void *);
CUresult cuMemGetInfo_v2(size_t *, size_t *);
CUresult cuDeviceTotalMem_v2(size_t *, CUdevice);
CUresult cuStreamCreate(void **, unsigned int);
CUresult cuStreamDestroy_v2(void *);

#define API(X) \
  X(cuInit, cuInit, CUresult (*)(unsigned int)) \
  X(cuDeviceGet, cuDeviceGet, CUresult (*)(CUdevice *, int)) \
  X(cuDevicePrimaryCtxRetain, cuDevicePrimaryCtxRetain, CUresult (*)(CUcontext *, CUdevice)) \
  X(cuDevicePrimaryCtxRelease, cuDevicePrimaryCtxRelease_v2, CUresult (*)(CUdevice)) \
  X(cuDevicePrimaryCtxReset, cuDevicePrimaryCtxReset_v2, CUresult (*)(CUdevice)) \
  X(cuCtxSetCurrent, cuCtxSetCurrent, CUresult (*)(CUcontext)) \
  X(cuCtxCreate, cuCtxCreate_v2, CUresult (*)(CUcontext *, unsigned int, CUdevice)) \
  X(cuCtxDestroy, cuCtxDestroy_v2, CUresult (*)(CUcontext)) \
  X(cuMemAlloc, cuMemAlloc_v2, CUresult (*)(CUdeviceptr *, size_t)) \
  X(cuMemFree, cuMemFree_v2, CUresult (*)(CUdeviceptr)) \
  X(cuMemAllocPitch, cuMemAllocPitch_v2, CUresult (*)(CUdeviceptr *, size_t *, size_t, size_t, unsigned int)) \
  X(cuMemAllocManaged, cuMemAllocManaged, CUresult (*)(CUdeviceptr *, size_t, unsigned int)) \
  X(cuMemAllocAsync, cuMemAllocAsync, CUresult (*)(CUdeviceptr *, size_t, void *)) \
  X(cuMemAllocFromPoolAsync, cuMemAllocFromPoolAsync, CUresult (*)(CUdeviceptr *, size_t, void *, void *)) \
  X(cuMemFreeAsync, cuMemFreeAsync, CUresult (*)(CUdeviceptr, void *)) \
  X(cuMemCreate, cuMemCreate, CUresult (*)(unsigned long long *, size_t, const MemProp *, unsigned long long)) \
  X(cuMemRelease, cuMemRelease, CUresult (*)(unsigned long long)) \
  X(cuArrayCreate, cuArrayCreate_v2, CUresult (*)(void **, const AD2 *)) \
  X(cuArray3DCreate, cuArray3DCreate_v2, CUresult (*)(void **, const AD3 *)) \
  X(cuArrayDestroy, cuArrayDestroy, CUresult (*)(void *)) \
  X(cuMipmappedArrayCreate, cuMipmappedArrayCreate, CUresult (*)(void **, const AD3 *, unsigned int)) \
  X(cuMipmappedArrayDestroy, cuMipmappedArrayDestroy, CUresult (*)(void *)) \
  X(cuMemGetInfo, cuMemGetInfo_v2, CUresult (*)(size_t *, size_t *)) \
  X(cuDeviceTotalMem, cuDeviceTotalMem_v2, CUresult (*)(size_t *, CUdevice)) \
  X(cuStreamCreate, cuStreamCreate, CUresult (*)(void **, unsigned int)) \
  X(cuStreamDestroy, cuStreamDestroy_v2, CUresult (*)(void *))

#define FIELD(base, v2, type) __typeof__(type) base;
static struct { API(FIELD) } A;

typedef CUresult (*gpa1_fn)(const char *, void **, int, unsigned long long);
typedef CUresult (*gpa2_fn)(const char *, void **, int, unsigned long long, int *);
static const char *mode = "link";
static int ver = 13000;
static unsigned long long flags;
static gpa1_fn gpa1;
static gpa2_fn gpa2;
static void *lib;

static void *get(const char *base, const char *v2, void *linked)
{
    void *p = NULL;
    int st = -1;
    /* the client calls cuCtxCreate with the _v2 signature: ask for that version, as code using
     * cudaTypedefs.h's PFN_cuCtxCreate_v3020 does (a newer cudaVersion hands out _v3/_v4) */
    int v = !strcmp(base, "cuCtxCreate") && ver > 3020 ? 3020 : ver;
    if (!strcmp(mode, "link")) return linked;
    if (!strcmp(mode, "dlsym")) return dlsym(lib, v2);
    if (gpa2) gpa2(base, &p, v, flags, &st);
    else if (gpa1) gpa1(base, &p, v, flags);
    return p;
}

static void load(void)
{
    lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!lib) { printf("load err=dlopen\n"); exit(1); }
    if (!strcmp(mode, "gpa1")) {
        gpa1 = (gpa1_fn)dlsym(lib, "cuGetProcAddress");
    } else if (!strcmp(mode, "gpa2")) {
        gpa2_fn first = (gpa2_fn)dlsym(lib, "cuGetProcAddress_v2");
        void *again = NULL;
        int st;
        if (first && first("cuGetProcAddress", &again, ver, 0, &st) == 0) gpa2 = (gpa2_fn)again;
    }
    if (strcmp(mode, "link") && strcmp(mode, "dlsym") && !gpa1 && !gpa2) { printf("load err=gpa\n"); exit(1); }
#define LOAD(base, v2, type) A.base = (type)get(#base, #v2, (void *)v2);
    API(LOAD)
}

/* entry points of the classes of driver memory (issue 12), reached the same way as the rest */
static void *api(const char *base, const char *v2) { return get(base, v2, dlsym(RTLD_DEFAULT, v2)); }

static unsigned long long size_arg(const char *s)
{
    char *end;
    unsigned long long v = strtoull(s, &end, 0);
    switch (*end) {
    case 'k': case 'K': v <<= 10; break;
    case 'm': case 'M': v <<= 20; break;
    case 'g': case 'G': v <<= 30; break;
    default: break;
    }
    return v;
}

#define STACK 4096
static CUdeviceptr ptrs[STACK]; static int nptr;
static unsigned long long handles[STACK]; static int nhandle;
static void *arrays[STACK]; static int narray;
static void *mips[STACK]; static int nmip;
static CUcontext ctxs[64]; static int nctx;
static CUdevice dev;
static void *stream;   /* the last one made by `stream`; NULL is the default stream */
static void *module, *graph, *gexec, *kernel;   /* the last module loaded, graph captured, graph instantiated */
static void *greens[64]; static int ngreen;   /* green contexts made, the last on top */
#define MAX_FILL 65536   /* the tests lower RLIMIT_NOFILE well below this */
static int filled[MAX_FILL]; static int nfilled;   /* fill_fds's descriptors */

static void res(const char *cmd, CUresult r)
{
    if (r) printf("%s err=%d\n", cmd, r);
    else printf("%s ok\n", cmd);
}

struct tharg { int iters; size_t size; int ok, oom; CUcontext ctx; };
static void *hammer(void *p)
{
    struct tharg *a = p;
    A.cuCtxSetCurrent(a->ctx);
    for (int i = 0; i < a->iters; i++) {
        CUdeviceptr d;
        CUresult r = A.cuMemAlloc(&d, a->size);
        if (r == 0) { a->ok++; sched_yield(); A.cuMemFree(d); }
        else if (r == 2) a->oom++;
    }
    return NULL;
}

/* racefree: the second thread frees each round's pointer as soon as this one is told to */
struct racer { CUdeviceptr p; int async, rounds, go, done, ok, err; CUcontext ctx; };
static void race_free(struct racer *r)
{
    CUresult x = r->async ? A.cuMemFreeAsync(r->p, stream) : A.cuMemFree(r->p);
    if (x) r->err++; else r->ok++;
}
static void *racer(void *p)
{
    struct racer *r = p;
    A.cuCtxSetCurrent(r->ctx);
    for (int i = 1; i <= r->rounds; i++) {
        while (__atomic_load_n(&r->go, __ATOMIC_ACQUIRE) != i) {}
        race_free(r);
        __atomic_store_n(&r->done, i, __ATOMIC_RELEASE);
    }
    return NULL;
}

/* how many of our descriptors name a file whose path holds substr; *top: the highest, or -1 */
static int fds_naming(const char *substr, int *top)
{
    int n = 0;
    *top = -1;
    for (int fd = 0; fd < 4096; fd++) {
        char link[64], target[512];
        snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
        ssize_t len = readlink(link, target, sizeof target - 1);
        if (len <= 0) continue;
        target[len] = 0;
        if (strstr(target, substr)) { n++; *top = fd; }
    }
    return n;
}

static uint64_t stub_counter(const char *name)
{
    uint64_t (*f)(int) = (uint64_t (*)(int))dlsym(RTLD_DEFAULT, name);
    return f ? f(dev) : 0;
}

static CUcontext cur;
static int run_cmds(int from, int to, char **argv);

/* the index of the end marker that closes the block opened at argv[i] (nested blocks skipped) */
static int block_end(int i, int argc, char **argv, const char *open, const char *close)
{
    int depth = 0, j;
    for (j = i + 1; j < argc; j++) {
        if (!strchr(argv[j], '=') && !strncmp(argv[j], open, strlen(open))) depth++;   /* not threads=... */
        if (!strcmp(argv[j], close) && depth-- == 0) break;
    }
    return j;
}

struct block { int from, to; char **argv; int rc; };
static void *block_thread(void *p)
{
    struct block *b = p;
    A.cuCtxSetCurrent(cur);   /* the current context is per thread: the block runs in the caller's */
    b->rc = run_cmds(b->from, b->to, b->argv);
    return NULL;
}
static void block_at_exit(void *p)
{
    struct block *b = p;
    run_cmds(b->from, b->to, b->argv);
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    return run_cmds(1, argc, argv);
}

static int run_cmds(int from, int argc, char **argv)
{
    for (int i = from; i < argc; i++) {
        char *c = argv[i], *v = strchr(c, '=');
        char name[64];
        snprintf(name, sizeof name, "%.*s", v ? (int)(v - c) : (int)strlen(c), c);
        if (v) v++;
        if (!strcmp(name, "mode")) mode = v;
        else if (!strcmp(name, "ver")) ver = atoi(v);
        else if (!strcmp(name, "flags")) flags = strtoull(v, NULL, 0);
        else if (!strcmp(name, "init")) { load(); res("init", A.cuInit(0)); }
        else if (!strcmp(name, "dev")) { res("dev", A.cuDeviceGet(&dev, atoi(v))); }
        else if (!strcmp(name, "primary")) {
            CUresult r = A.cuDevicePrimaryCtxRetain(&cur, dev);
            if (!r) r = A.cuCtxSetCurrent(cur);
            res("primary", r);
        } else if (!strcmp(name, "ctx")) {
            CUresult r = A.cuCtxCreate(&cur, 0, dev);
            if (!r) ctxs[nctx++] = cur;
            res("ctx", r);
        } else if (!strcmp(name, "ctx3") || !strcmp(name, "ctx4")) {   /* cuCtxCreate_v3 / _v4 */
            int v3 = name[3] == '3';
            void *fp = NULL;
            int st;
            if (gpa2) gpa2("cuCtxCreate", &fp, v3 ? 11040 : 12050, 0, &st);
            else if (gpa1) gpa1("cuCtxCreate", &fp, v3 ? 11040 : 12050, 0);
            else fp = dlsym(lib ? lib : RTLD_DEFAULT, v3 ? "cuCtxCreate_v3" : "cuCtxCreate_v4");
            CUresult r = !fp ? 500
                       : v3 ? ((CUresult (*)(CUcontext *, void *, int, unsigned int, CUdevice))fp)(&cur, NULL, 0, 0, dev)
                            : ((CUresult (*)(CUcontext *, void *, unsigned int, CUdevice))fp)(&cur, NULL, 0, dev);
            if (!r) ctxs[nctx++] = cur;
            res(name, r);
        } else if (!strcmp(name, "current")) {
            int k = atoi(v);
            cur = k < nctx ? ctxs[k] : NULL;
            res("current", A.cuCtxSetCurrent(cur));
        } else if (!strcmp(name, "destroy")) res("destroy", nctx ? A.cuCtxDestroy(ctxs[--nctx]) : 1);
        else if (!strcmp(name, "release")) res("release", A.cuDevicePrimaryCtxRelease(dev));
        else if (!strcmp(name, "reset")) res("reset", A.cuDevicePrimaryCtxReset(dev));
        else if (!strcmp(name, "alloc") || !strcmp(name, "managed") || !strcmp(name, "async") || !strcmp(name, "pool")) {
            CUdeviceptr d = 0;
            size_t n = size_arg(v);
            CUresult r = !strcmp(name, "alloc") ? A.cuMemAlloc(&d, n)
                       : !strcmp(name, "managed") ? A.cuMemAllocManaged(&d, n, 1)
                       : !strcmp(name, "async") ? A.cuMemAllocAsync(&d, n, stream)
                       : A.cuMemAllocFromPoolAsync(&d, n, NULL, stream);
            if (!r) ptrs[nptr++] = d;
            res(name, r);
        } else if (!strcmp(name, "pitch")) {
            CUdeviceptr d; size_t pitch = 0, w = size_arg(v), h = size_arg(strchr(v, ',') + 1);
            CUresult r = A.cuMemAllocPitch(&d, &pitch, w, h, 4);
            if (!r) { ptrs[nptr++] = d; printf("pitch ok pitch=%zu\n", pitch); } else res("pitch", r);
        } else if (!strcmp(name, "free")) res("free", nptr ? A.cuMemFree(ptrs[--nptr]) : 1);
        else if (!strcmp(name, "freeasync")) res("freeasync", nptr ? A.cuMemFreeAsync(ptrs[--nptr], stream) : 1);
        else if (!strcmp(name, "stream")) res("stream", A.cuStreamCreate(&stream, 0));
        else if (!strcmp(name, "streamdestroy")) { res("streamdestroy", A.cuStreamDestroy(stream)); stream = NULL; }
        else if (!strcmp(name, "vmm")) {
            MemProp p; memset(&p, 0, sizeof p);
            p.type = 1; p.location.type = 1; p.location.id = dev;
            unsigned long long h;
            CUresult r = A.cuMemCreate(&h, size_arg(v), &p, 0);
            if (!r) handles[nhandle++] = h;
            res("vmm", r);
        } else if (!strcmp(name, "vmmfree")) res("vmmfree", nhandle ? A.cuMemRelease(handles[--nhandle]) : 1);
        else if (!strcmp(name, "array") || !strcmp(name, "array3d") || !strcmp(name, "mipmap")) {
            size_t a = 0, b = 0, d = 0;
            sscanf(v, "%zu,%zu,%zu", &a, &b, &d);
            void *arr = NULL;
            CUresult r;
            if (!strcmp(name, "array")) { AD2 x = { a, b, 0x20, 1 }; r = A.cuArrayCreate(&arr, &x); if (!r) arrays[narray++] = arr; }
            else if (!strcmp(name, "array3d")) { AD3 x = { a, b, d, 0x20, 1, 0 }; r = A.cuArray3DCreate(&arr, &x); if (!r) arrays[narray++] = arr; }
            else { AD3 x = { a, b, 0, 0x20, 1, 0 }; r = A.cuMipmappedArrayCreate(&arr, &x, (unsigned)d); if (!r) mips[nmip++] = arr; }
            res(name, r);
        } else if (!strcmp(name, "arrayfree")) res("arrayfree", narray ? A.cuArrayDestroy(arrays[--narray]) : 1);
        else if (!strcmp(name, "mipmapfree")) res("mipmapfree", nmip ? A.cuMipmappedArrayDestroy(mips[--nmip]) : 1);
        else if (!strcmp(name, "limit")) {
            CUresult (*f)(int, size_t) = (CUresult (*)(int, size_t))api("cuCtxSetLimit", "cuCtxSetLimit");
            char *comma = strchr(v, ',');
            res("limit", f && comma ? f(atoi(v), (size_t)size_arg(comma + 1)) : 1);
        } else if (!strcmp(name, "module") || !strcmp(name, "library")) {
            char image[64];
            snprintf(image, sizeof image, "globals=%llu", size_arg(v));
            if (!strcmp(name, "module")) {
                CUresult (*f)(void **, const void *) = (CUresult (*)(void **, const void *))api("cuModuleLoadData", "cuModuleLoadData");
                void *m = NULL;
                CUresult r = f ? f(&m, image) : 1;
                if (!r) module = m;
                res("module", r);
            } else {
                CUresult (*load_lib)(void **, const void *, void *, void *, unsigned, void *, void *, unsigned) =
                    (CUresult (*)(void **, const void *, void *, void *, unsigned, void *, void *, unsigned))api("cuLibraryLoadData", "cuLibraryLoadData");
                CUresult (*getmod)(void **, void *) = (CUresult (*)(void **, void *))api("cuLibraryGetModule", "cuLibraryGetModule");
                void *l = NULL, *m = NULL;
                CUresult r = load_lib && getmod ? load_lib(&l, image, NULL, NULL, 0, NULL, NULL, 0) : 1;
                res("library", r ? r : getmod(&m, l));
            }
        } else if (!strcmp(name, "modunload")) {
            CUresult (*f)(void *) = (CUresult (*)(void *))api("cuModuleUnload", "cuModuleUnload");
            res("modunload", f && module ? f(module) : 1);
            module = NULL;
        } else if (!strcmp(name, "libkernel")) {   /* libkernel=SIZE: a kernel of a library of SIZE globals */
            char image[64];
            snprintf(image, sizeof image, "globals=%llu", size_arg(v));
            CUresult (*load_lib)(void **, const void *, void *, void *, unsigned, void *, void *, unsigned) =
                (CUresult (*)(void **, const void *, void *, void *, unsigned, void *, void *, unsigned))api("cuLibraryLoadData", "cuLibraryLoadData");
            CUresult (*getk)(void **, void *, const char *) = (CUresult (*)(void **, void *, const char *))api("cuLibraryGetKernel", "cuLibraryGetKernel");
            void *l = NULL;
            CUresult r = load_lib && getk ? load_lib(&l, image, NULL, NULL, 0, NULL, NULL, 0) : 1;
            res("libkernel", r ? r : getk(&kernel, l, "k"));
        } else if (!strcmp(name, "kernel")) {
            CUresult (*f)(void **, void *, const char *) = (CUresult (*)(void **, void *, const char *))api("cuModuleGetFunction", "cuModuleGetFunction");
            char fname[64];
            snprintf(fname, sizeof fname, "local=%llu", size_arg(v));
            res("kernel", f ? f(&kernel, module, fname) : 1);
        } else if (!strcmp(name, "launchk")) {
            CUresult (*f)(void *, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, void *, void **, void **) =
                (CUresult (*)(void *, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, void *, void **, void **))api("cuLaunchKernel", "cuLaunchKernel");
            res("launchk", f && kernel ? f(kernel, 1, 1, 1, 1, 1, 1, 0, stream, NULL, NULL) : 1);
        } else if (!strcmp(name, "poolkeep")) {
            CUresult (*getpool)(void **, CUdevice) = (CUresult (*)(void **, CUdevice))api("cuDeviceGetDefaultMemPool", "cuDeviceGetDefaultMemPool");
            CUresult (*setattr)(void *, int, void *) = (CUresult (*)(void *, int, void *))api("cuMemPoolSetAttribute", "cuMemPoolSetAttribute");
            void *pool = NULL;
            unsigned long long keep = ~0ULL;
            CUresult r = getpool && setattr ? getpool(&pool, dev) : 1;
            res("poolkeep", r ? r : setattr(pool, 4 /* CU_MEMPOOL_ATTR_RELEASE_THRESHOLD */, &keep));
        } else if (!strcmp(name, "capture")) {
            CUresult (*f)(void *, int) = (CUresult (*)(void *, int))api("cuStreamBeginCapture", "cuStreamBeginCapture_v2");
            res("capture", f ? f(stream, 0) : 1);
        } else if (!strcmp(name, "endcapture")) {
            CUresult (*f)(void *, void **) = (CUresult (*)(void *, void **))api("cuStreamEndCapture", "cuStreamEndCapture");
            res("endcapture", f ? f(stream, &graph) : 1);
        } else if (!strcmp(name, "instantiate")) {
            CUresult (*f)(void **, void *, unsigned long long) =
                (CUresult (*)(void **, void *, unsigned long long))api("cuGraphInstantiateWithFlags", "cuGraphInstantiateWithFlags");
            res("instantiate", f ? f(&gexec, graph, 0) : 1);
        } else if (!strcmp(name, "oldinstantiate")) {
            int want = atoi(v), keep = ver;
            ver = want;
            CUresult (*f)(void **, void *, void **, char *, size_t) = (CUresult (*)(void **, void *, void **, char *, size_t))api(
                "cuGraphInstantiate", want < 11000 ? "cuGraphInstantiate" : "cuGraphInstantiate_v2");
            ver = keep;
            void *err_node = NULL;
            char log[64];
            res("oldinstantiate", f ? f(&gexec, graph, &err_node, log, sizeof log) : 1);
        } else if (!strcmp(name, "green")) {
            CUresult (*getres)(CUdevice, void *, int) = (CUresult (*)(CUdevice, void *, int))api("cuDeviceGetDevResource", "cuDeviceGetDevResource");
            CUresult (*gen)(void **, void *, unsigned) = (CUresult (*)(void **, void *, unsigned))api("cuDevResourceGenerateDesc", "cuDevResourceGenerateDesc");
            CUresult (*make)(void **, void *, CUdevice, unsigned) = (CUresult (*)(void **, void *, CUdevice, unsigned))api("cuGreenCtxCreate", "cuGreenCtxCreate");
            unsigned char resource[256] = { 0 };   /* a CUdevResource, 144 bytes in CUDA 13 */
            void *desc = NULL, *g = NULL;
            CUresult r = getres && gen && make ? getres(dev, resource, 1 /* CU_DEV_RESOURCE_TYPE_SM */) : 1;
            if (!r) r = gen(&desc, resource, 1);
            if (!r) r = make(&g, desc, dev, 1 /* CU_GREEN_CTX_DEFAULT_STREAM */);
            if (!r && ngreen < 64) greens[ngreen++] = g;
            res("green", r);
        } else if (!strcmp(name, "greencurrent")) {
            CUresult (*from)(CUcontext *, void *) = (CUresult (*)(CUcontext *, void *))api("cuCtxFromGreenCtx", "cuCtxFromGreenCtx");
            CUresult r = from && ngreen ? from(&cur, greens[ngreen - 1]) : 1;
            res("greencurrent", r ? r : A.cuCtxSetCurrent(cur));
        } else if (!strcmp(name, "greenstream")) {
            CUresult (*f)(void **, void *, unsigned, int) = (CUresult (*)(void **, void *, unsigned, int))api("cuGreenCtxStreamCreate", "cuGreenCtxStreamCreate");
            res("greenstream", f && ngreen ? f(&stream, greens[ngreen - 1], 1, 0) : 1);
        } else if (!strcmp(name, "greendestroy")) {
            CUresult (*f)(void *) = (CUresult (*)(void *))api("cuGreenCtxDestroy", "cuGreenCtxDestroy");
            res("greendestroy", f && ngreen ? f(greens[--ngreen]) : 1);
        } else if (!strcmp(name, "launch")) {
            CUresult (*f)(void *, void *) = (CUresult (*)(void *, void *))api("cuGraphLaunch", "cuGraphLaunch");
            res("launch", f ? f(gexec, stream) : 1);
        } else if (!strcmp(name, "execdestroy")) {
            CUresult (*f)(void *) = (CUresult (*)(void *))api("cuGraphExecDestroy", "cuGraphExecDestroy");
            res("execdestroy", f && gexec ? f(gexec) : 1);
            gexec = NULL;
        }
        else if (!strcmp(name, "info")) {
            size_t f = 0, t = 0;
            CUresult r = A.cuMemGetInfo(&f, &t);
            if (r) res("info", r); else printf("info total=%zu free=%zu\n", t, f);
        } else if (!strcmp(name, "totalmem")) {
            size_t t = 0;
            CUresult r = A.cuDeviceTotalMem(&t, dev);
            if (r) res("totalmem", r); else printf("totalmem %zu\n", t);
        } else if (!strcmp(name, "peak")) printf("peak %llu\n", (unsigned long long)stub_counter("fake_cuda_peak"));
        else if (!strcmp(name, "used")) printf("used %llu\n", (unsigned long long)stub_counter("fake_cuda_used"));
        else if (!strcmp(name, "sleep")) { usleep((useconds_t)(atof(v) * 1e6)); printf("sleep ok\n"); }
        else if (!strcmp(name, "ready")) printf("ready\n");
        else if (!strcmp(name, "clobber")) {   /* clobber=SUBSTR: dup2 /dev/null over every fd whose target holds SUBSTR */
            int n = 0, null = open("/dev/null", O_RDONLY);
            for (int fd = 3; fd < 4096; fd++) {
                char link[64], target[512];
                snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
                ssize_t len = readlink(link, target, sizeof target - 1);
                if (len <= 0 || fd == null) continue;
                target[len] = 0;
                if (strstr(target, v) && dup2(null, fd) == fd) n++;
            }
            printf("clobber %d\n", n);
        } else if (!strcmp(name, "fds")) {   /* fds=SUBSTR: how many of our descriptors name SUBSTR */
            int top;
            printf("fds %d\n", fds_naming(v, &top));
        } else if (!strcmp(name, "fill_keys")) {   /* every pthread key taken, as a key-hungry application may */
            pthread_key_t k;
            int n = 0;
            while (pthread_key_create(&k, NULL) == 0) n++;
            printf("fill_keys %d\n", n);
        } else if (!strcmp(name, "fdmax")) {   /* fdmax=SUBSTR: the highest of our descriptors naming SUBSTR, or -1 */
            int top;
            fds_naming(v, &top);
            printf("fdmax %d\n", top);
        } else if (!strcmp(name, "fill_fds")) {   /* out of descriptors, as a leaking application is */
            int fd = -1;
            while (nfilled < MAX_FILL && (fd = open("/dev/null", O_RDONLY)) >= 0) filled[nfilled++] = fd;
            printf("fill_fds %d%s\n", nfilled, fd < 0 && errno == EMFILE ? " EMFILE" : "");
        } else if (!strcmp(name, "free_fds")) {
            int n = v ? atoi(v) : nfilled, k;
            for (k = 0; k < n && nfilled; k++) close(filled[--nfilled]);
            printf("free_fds %d\n", k);
        } else if (!strcmp(name, "openclose")) {   /* openclose=PATH: as a tool reading a file would */
            int fd = open(v, O_RDONLY);
            printf("openclose %s\n", fd >= 0 && close(fd) == 0 ? "ok" : "err");
        }
        else if (!strcmp(name, "hold")) { printf("holding\n"); fflush(stdout); for (;;) pause(); }
        else if (!strcmp(name, "threads")) {
            int n = 1, iters = 1; size_t sz = 0;
            char szs[64] = "0", how[16] = "";
            sscanf(v, "%d,%d,%63[^,],%15s", &n, &iters, szs, how);
            sz = size_arg(szs);
            pthread_t t[64]; struct tharg a[64];
            if (n > 64) n = 64;
            for (int k = 0; k < n; k++) { a[k] = (struct tharg){ iters, sz, 0, 0, cur }; pthread_create(&t[k], NULL, hammer, &a[k]); }
            int ok = 0, oom = 0;
            if (!strcmp(how, "self")) {   /* this thread hammers too, alongside them */
                struct tharg me = { iters, sz, 0, 0, cur };
                hammer(&me);
                ok += me.ok; oom += me.oom;
            }
            for (int k = 0; k < n; k++) { pthread_join(t[k], NULL); ok += a[k].ok; oom += a[k].oom; }
            printf("threads ok=%d oom=%d\n", ok, oom);
        } else if (!strcmp(name, "racefree")) {
            char szs[64] = "1", how[16] = "";
            struct racer r = { 0 }, mine = { 0 };
            sscanf(v, "%d,%63[^,],%15s", &r.rounds, szs, how);
            size_t sz = size_arg(szs);
            r.async = mine.async = !strcmp(how, "async");
            r.ctx = cur;
            pthread_t t;
            pthread_create(&t, NULL, racer, &r);
            int allocerr = 0;
            for (int i = 1; i <= r.rounds; i++) {
                CUdeviceptr d = 0;
                CUresult a = r.async ? A.cuMemAllocAsync(&d, sz, stream) : A.cuMemAlloc(&d, sz);
                if (a) allocerr++;
                r.p = mine.p = d;
                __atomic_store_n(&r.go, i, __ATOMIC_RELEASE);
                for (volatile int k = 0; k < (i * 7) % 397; k++) {}   /* a varying head start for the other */
                race_free(&mine);
                while (__atomic_load_n(&r.done, __ATOMIC_ACQUIRE) != i) {}
            }
            pthread_join(t, NULL);
            printf("racefree ok=%d err=%d allocerr=%d\n", r.ok + mine.ok, r.err + mine.err, allocerr);
        } else if (!strcmp(name, "dlsym")) {   /* dlsym=NAME on libcuda: which library answered */
            if (!lib) lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
            void *p = dlsym(lib, v);
            Dl_info info;
            const char *from = p && dladdr(p, &info) && info.dli_fname ? strrchr(info.dli_fname, '/') : NULL;
            printf("dlsym %s %s\n", v, p ? (from ? from + 1 : "?") : "NULL");
        } else if (!strcmp(name, "bench")) {   /* bench=N,SIZE: mean time of one alloc+free pair */
            int n = 1; char szs[64] = "1";
            sscanf(v, "%d,%63s", &n, szs);
            size_t sz = size_arg(szs);
            struct timespec a, b;
            int fails = 0;
            clock_gettime(CLOCK_MONOTONIC, &a);
            for (int k = 0; k < n; k++) {
                CUdeviceptr d;
                if (A.cuMemAlloc(&d, sz) == 0) A.cuMemFree(d); else fails++;
            }
            clock_gettime(CLOCK_MONOTONIC, &b);
            double ns = ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / (n ? n : 1);
            printf("bench ns_per_pair=%.0f fails=%d\n", ns, fails);
        } else if (!strcmp(name, "thread")) {   /* thread ... endthread: the block in a new thread, joined */
            int j = block_end(i, argc, argv, "thread", "endthread");
            struct block b = { i + 1, j, argv, 0 };
            pthread_t t;
            if (pthread_create(&t, NULL, block_thread, &b) != 0) { printf("thread err\n"); return 1; }
            pthread_join(t, NULL);
            printf("thread done\n");
            if (b.rc) return b.rc;
            i = j;
        } else if (!strcmp(name, "atexit")) {   /* atexit ... endatexit: the block at this thread's exit */
            int j = block_end(i, argc, argv, "atexit", "endatexit");
            struct block *b = malloc(sizeof *b);
            pthread_key_t k;
            *b = (struct block){ i + 1, j, argv, 0 };
            res("atexit", pthread_key_create(&k, block_at_exit) || pthread_setspecific(k, b));
            i = j;
        } else if (!strcmp(name, "fork") || !strcmp(name, "forknowait")) {
            int j = block_end(i, argc, argv, "fork", "endfork");
            fflush(stdout);
            pid_t pid = fork();
            if (pid == 0) { printf("child pid=%d\n", (int)getpid()); continue; }   /* child runs the block */
            if (!strcmp(name, "fork")) {
                int st = 0;
                waitpid(pid, &st, 0);
                printf("parent child_exit=%d\n", WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
            } else {
                printf("parent child=%d\n", (int)pid);
            }
            i = j;   /* parent resumes after endfork */
        } else if (!strcmp(name, "endfork")) { fflush(stdout); _exit(0); }   /* reached only by a child */
        else { printf("unknown %s\n", c); return 2; }
    }
    return 0;
}
