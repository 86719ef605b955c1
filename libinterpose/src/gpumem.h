/* libgpumem internal interface: driver/NVML types we need, and the modules' functions. */
#ifndef GPUMEM_H
#define GPUMEM_H
#include <stddef.h>
#include <stdint.h>

#define GPUMEM_HIDDEN __attribute__((visibility("hidden")))
#define GPUMEM_EXPORT __attribute__((visibility("default")))
#define GPUMEM_NO_SANITIZE __attribute__((no_sanitize_address))
#define GPUMEM_MAX_DEV 32
struct gdev;   /* a device of this process (devices.c) */

/* ---- the few CUDA driver types we touch (from cuda.h, declared here: no toolkit needed) ---- */
typedef int CUresult;
typedef int CUdevice;
typedef unsigned long long CUdeviceptr;
typedef unsigned int CUdeviceptr_v1;
typedef void *CUcontext;
typedef void *CUstream;
typedef void *CUarray;
typedef void *CUmipmappedArray;
typedef void *CUmemoryPool;
typedef unsigned long long CUmemGenericAllocationHandle;
typedef void *CUgraph;
typedef void *CUgraphExec;
typedef void *CUgraphNode;
typedef struct { char bytes[16]; } CUuuid;
typedef struct { size_t Width, Height; int Format; unsigned int NumChannels; } CUDA_ARRAY_DESCRIPTOR;
typedef struct { unsigned int Width, Height; int Format; unsigned int NumChannels; } CUDA_ARRAY_DESCRIPTOR_v1;
typedef struct { size_t Width, Height, Depth; int Format; unsigned int NumChannels, Flags; } CUDA_ARRAY3D_DESCRIPTOR;
typedef struct { unsigned int Width, Height, Depth; int Format; unsigned int NumChannels, Flags; } CUDA_ARRAY3D_DESCRIPTOR_v1;
typedef struct { int type; int id; } CUmemLocation;
typedef struct {
    int type;                 /* CUmemAllocationType */
    int requestedHandleTypes; /* CUmemAllocationHandleType */
    CUmemLocation location;
    void *win32HandleMetaData;
    unsigned char allocFlags[8];
} CUmemAllocationProp;

/* cuMemPoolCreate's properties (CUmemPoolProps) and cuGraphMemAllocNodeGetParams's
 * (CUDA_MEM_ALLOC_NODE_PARAMS_v1): the leading fields we read */
typedef struct {
    int allocType, handleTypes;
    CUmemLocation location;
    void *win32SecurityAttributes;
    size_t maxSize;
    unsigned short usage;
    unsigned char reserved[54];
} CUmemPoolProps;
typedef struct {
    CUmemPoolProps poolProps;
    const void *accessDescs;
    size_t accessDescCount;
    size_t bytesize;
    CUdeviceptr dptr;
} CUDA_MEM_ALLOC_NODE_PARAMS;

#define CUDA_SUCCESS 0
#define CUDA_ERROR_INVALID_VALUE 1
#define CUDA_ERROR_OUT_OF_MEMORY 2
#define CUDA_ERROR_NOT_INITIALIZED 3
#define CUDA_ERROR_NOT_FOUND 500
#define CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM 2 /* 1<<1 in cuda.h; 1<<0 is LEGACY_STREAM */
#define CU_MEM_LOCATION_TYPE_DEVICE 1

/* ---- NVML ---- */
typedef int nvmlReturn_t;
typedef void *nvmlDevice_t;
typedef struct { unsigned long long total, free, used; } nvmlMemory_t;
typedef struct { unsigned int version; unsigned long long total, reserved, free, used; } nvmlMemory_v2_t;
#define NVML_SUCCESS 0

/* ---- log.c ---- */
enum { LOG_ERROR = 0, LOG_WARN = 1, LOG_INFO = 2, LOG_DEBUG = 3 };
GPUMEM_HIDDEN extern int gpumem_log_level;
GPUMEM_HIDDEN void gpumem_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#define LOG(lvl, ...) do { if ((lvl) <= gpumem_log_level) gpumem_log((lvl), __VA_ARGS__); } while (0)

/* GPUMEM_STATS=1: calls and time per hook, printed at exit (stats.c) */
GPUMEM_HIDDEN extern int gpumem_stats_on;
GPUMEM_HIDDEN void gpumem_stats_init(void);
GPUMEM_HIDDEN uint64_t gpumem_now_ns(void);
GPUMEM_HIDDEN int gpumem_stats_index(const char *hook);
GPUMEM_HIDDEN void gpumem_stats_add(int i, uint64_t t_entry, uint64_t t_real0, uint64_t t_real1);
/* around each piece of start-up work (a clock read each end, once per process: always taken) */
enum { SP_CTOR, SP_DEVICES, SP_QUERIES, SP_LEDGER, SP_SLOT, SP_COUNT };
GPUMEM_HIDDEN uint64_t gpumem_startup_begin(void);
GPUMEM_HIDDEN void gpumem_startup_end(int piece, uint64_t t0);
#define STATS_NOW() (__builtin_expect(gpumem_stats_on, 0) ? gpumem_now_ns() : 0)
/* at a hook's return: t_entry_ from REAL, the driver call between t0 and t1 (0, 0: none) */
#define STATS_DONE(t0, t1) do {                                                   \
        if (__builtin_expect(gpumem_stats_on, 0)) {                               \
            static int si_ = -1;                                                  \
            if (si_ < 0) si_ = gpumem_stats_index(__func__);                      \
            gpumem_stats_add(si_, t_entry_, (t0), (t1));                          \
        }                                                                         \
    } while (0)
GPUMEM_HIDDEN void gpumem_log_init(void);
GPUMEM_HIDDEN const char *gpumem_human(uint64_t bytes, char *buf, size_t len);

/* ---- limits.c: the one limit parser ---- */
enum limit_kind { LIMIT_NONE = 0, LIMIT_BYTES, LIMIT_FRACTION, LIMIT_BAD };
struct limit { enum limit_kind kind; uint64_t bytes; double fraction; };
GPUMEM_HIDDEN struct limit gpumem_parse_limit(const char *text);
GPUMEM_HIDDEN int gpumem_limits_present(void);   /* any GPUMEM_LIMIT or GPUMEM_LIMIT_<N> set */
GPUMEM_HIDDEN int gpumem_device_limits_present(void);   /* any GPUMEM_LIMIT_<N> set */
/* limit for ordinal: *var_out names the variable that applied (NULL when none) */
GPUMEM_HIDDEN struct limit gpumem_limit_for(int ordinal, const char **var_out, const char **val_out);
GPUMEM_HIDDEN uint64_t gpumem_parse_size_env(const char *name, uint64_t dflt);

/* ---- ledger.c: the one ledger (reserve, release, usage, reclaim) ---- */
/* ledger index for a UUID (added if new); -1: this process holds no ledger slot yet, or could not
 * open the ledger yet (try again later), -2: the ledger has no room for another device (for good) */
GPUMEM_HIDDEN int ledger_device(const char *uuid, uint64_t total);
GPUMEM_HIDDEN int ledger_lookup(const char *uuid, uint64_t *total); /* a device a CUDA process registered, or -1 */
/* 0: reserved; -1: over the cap (*used_out: the usage that refused it); -2: no ledger slot */
GPUMEM_HIDDEN int ledger_reserve(int ldev, uint64_t bytes, uint64_t cap, uint64_t *used_out);
GPUMEM_HIDDEN void ledger_charge_held(int ldev, uint64_t bytes);   /* past the cap: what the driver keeps */
GPUMEM_HIDDEN void ledger_denied(void);   /* count a refusal for the cap on this process's slot */
GPUMEM_HIDDEN void ledger_release(int ldev, uint64_t bytes);
GPUMEM_HIDDEN uint64_t ledger_usage(int ldev);
GPUMEM_HIDDEN void ledger_reclaim(void);
GPUMEM_HIDDEN void ledger_after_fork_child(void);
GPUMEM_HIDDEN void ledger_fork_prepare(void);   /* no fork in the middle of our slot's claim */
GPUMEM_HIDDEN void ledger_fork_parent(void);

/* ---- track.c: per-process allocation table ---- */
/* TK_CTX: a context's own reserve, TK_LIMIT: a cuCtxSetLimit charge, TK_MODULE: a module's
 * globals, TK_GRAPH: an executable graph's allocation nodes, TK_GREEN: what a green context took
 * (kept under its primary context); every record dies with its context */
enum track_kind { TK_MEM = 1, TK_ARRAY, TK_MIPMAP, TK_VMM, TK_CTX, TK_LIMIT, TK_MODULE, TK_GRAPH, TK_GREEN };
/* or'ed into the kind given to charge_begin/uncharge_begin by the stream-ordered hooks: their
 * small frees stay charged to the thread as credit for its next one (devices.c) */
#define TK_POOLED 0x100
struct track_rec { uint64_t key; uint64_t size; int dev; int kind; void *ctx; };
GPUMEM_HIDDEN void track_add(uint64_t key, int kind, uint64_t size, int dev, void *ctx);
GPUMEM_HIDDEN int track_remove(uint64_t key, int kind, struct track_rec *out);
/* remove every record made in ctx; returns bytes per device in out[] */
GPUMEM_HIDDEN void track_drop_ctx(void *ctx, uint64_t out[GPUMEM_MAX_DEV]);
GPUMEM_HIDDEN void track_after_fork_child(void);
GPUMEM_HIDDEN void track_fork_prepare(void);
GPUMEM_HIDDEN void track_fork_parent(void);

/* ---- pools.c: what the process's stream-ordered and graph pools keep after frees, by device index */
GPUMEM_HIDDEN void pools_keep(int ord, uint64_t bytes);     /* a pooled free: still charged, the pool keeps it */
GPUMEM_HIDDEN int pools_take(int ord, uint64_t bytes);      /* 1: a pooled allocation paid from kept bytes */
GPUMEM_HIDDEN void graphs_keep(int ord, uint64_t bytes);    /* a destroyed graph's: the graph pool keeps them */
GPUMEM_HIDDEN void graphs_live(int ord, uint64_t bytes, int add);   /* charged to live executable graphs */
GPUMEM_HIDDEN void pools_created(CUmemoryPool pool, int ord);
GPUMEM_HIDDEN void pools_destroyed(CUmemoryPool pool);
GPUMEM_HIDDEN uint64_t pools_trim(int ord, CUdevice h);     /* trim them; the kept bytes no longer held */
GPUMEM_HIDDEN uint64_t pools_settle(int ord, CUdevice h);   /* the same, without trimming */
GPUMEM_HIDDEN uint64_t pools_drop(int ord);                 /* the device's contexts went: all kept bytes */
GPUMEM_HIDDEN uint64_t pools_kept(int ord);
GPUMEM_HIDDEN void pools_after_fork_child(void);

/* ---- graphs.c: captures under way (a stream-ordered allocation they capture is not charged:
 * the graph's instantiation is) */
GPUMEM_HIDDEN extern unsigned gpumem_captures;
GPUMEM_HIDDEN int graphs_capturing(CUstream s, int ptsz);

/* ---- ctxlimits.c, launch.c: a launch needing more stack is charged before it */
GPUMEM_HIDDEN extern unsigned gpumem_launch_epoch;   /* bumped when a stack limit is set */
GPUMEM_HIDDEN extern unsigned gpumem_memo_epoch;     /* bumped when a context or stream comes or goes */
GPUMEM_HIDDEN CUresult limits_stack_need(struct gdev *d, void *ctx, uint64_t need);

/* ---- modules.c: a lazy load measured from the driver's free memory before it */
GPUMEM_HIDDEN uint64_t modules_device_free(void);
GPUMEM_HIDDEN CUresult modules_charge_lazy(struct gdev *d, void *ctx, uint64_t before, const char *fn);

/* ---- resolve.c: the one place real symbols come from ---- */
enum { LIB_CUDA = 0, LIB_NVML = 1 };
typedef void *(*dlsym_fn)(void *, const char *);
GPUMEM_HIDDEN dlsym_fn get_real_dlsym(void);
GPUMEM_HIDDEN void *resolve_real_dlsym(void *handle, const char *name);
GPUMEM_HIDDEN void *resolve_symbol(int lib, const char *name);
GPUMEM_HIDDEN extern __thread int gpumem_in_resolve;

/* ---- table.c: the table (table.h) ---- */
GPUMEM_HIDDEN void *hooks_find_ours(const char *name);  /* for dlsym: our function or NULL */
GPUMEM_HIDDEN int hooks_is_ours(void *fn);

/* ---- devices.c: devices, caps, and the one allocation shape ---- */
struct gdev;
GPUMEM_HIDDEN extern int gpumem_active;          /* any GPUMEM_LIMIT*: else pure pass-through */
GPUMEM_HIDDEN void gpumem_init(void);            /* once; cheap after the first call */
struct charge { struct gdev *d; uint64_t size; int kind, pooled; void *ctx; const char *fn; };
GPUMEM_HIDDEN struct gdev *dev_current(void **ctx_out);   /* limited device of current ctx, or NULL */
GPUMEM_HIDDEN struct gdev *dev_of_stream(CUstream s, int ptsz, void **ctx_out);   /* ... of a stream's ctx */
GPUMEM_HIDDEN struct gdev *dev_by_handle(CUdevice h);    /* limited device, or NULL */
GPUMEM_HIDDEN int dev_cap_of(CUdevice h, uint64_t *cap);  /* 1 and its cap for a limited, well-formed device */
GPUMEM_HIDDEN struct gdev *dev_by_nvml(nvmlDevice_t h);  /* limited device, or NULL */
/* allocation shape: charge_begin (reserve; non-zero = refuse with that code), call the real
 * function, charge_end (record on success, roll back on failure) */
GPUMEM_HIDDEN CUresult charge_begin(struct charge *c, struct gdev *d, void *ctx, uint64_t size, int kind, const char *fn);
GPUMEM_HIDDEN void charge_settle(struct charge *c, uint64_t actual);
GPUMEM_HIDDEN void charge_end(struct charge *c, CUresult r, uint64_t key);
/* free shape: uncharge_begin (take the record), call the real function, uncharge_end */
GPUMEM_HIDDEN int uncharge_begin(uint64_t key, int kind, struct track_rec *rec);
GPUMEM_HIDDEN void uncharge_end(int took, struct track_rec *rec, CUresult r);
/* contexts: charge GPUMEM_CONTEXT_RESERVE per (process, device) while it holds one */
GPUMEM_HIDDEN CUresult ctx_create_begin(CUdevice h, int primary, struct gdev **d, uint64_t *extra, const char *fn);
GPUMEM_HIDDEN void ctx_create_end(struct gdev *d, CUresult r, CUcontext ctx, int primary, uint64_t extra);
GPUMEM_HIDDEN void ctx_destroyed(CUcontext ctx);
GPUMEM_HIDDEN void dev_memo_forget(void);   /* a context or stream came or went */
GPUMEM_HIDDEN void ctx_primary_released(CUdevice h);
GPUMEM_HIDDEN void ctx_primary_reset(CUdevice h);
/* green contexts: gctx (cuCtxFromGreenCtx) stands for green; what is made in it belongs to owner */
GPUMEM_HIDDEN void ctx_green_made(struct gdev *d, void *green, CUcontext gctx, CUcontext owner);
GPUMEM_HIDDEN int ctx_green_gone(void *green, CUdevice *h);   /* 1 and its device when it was followed */
/* charges that are no allocation (limits, modules, graphs): reserve (non-zero = refuse with that
 * code) and give back; a record's bytes by its device index */
GPUMEM_HIDDEN CUresult dev_reserve_bytes(struct gdev *d, uint64_t size, const char *fn);
GPUMEM_HIDDEN void dev_release_bytes(struct gdev *d, uint64_t size);
GPUMEM_HIDDEN void dev_charge_held(struct gdev *d, uint64_t size);   /* held by the driver whatever we answer */
GPUMEM_HIDDEN void dev_release_ord(int ord, uint64_t size);
GPUMEM_HIDDEN int dev_ord(const struct gdev *d);
GPUMEM_HIDDEN CUdevice dev_handle(const struct gdev *d);
/* reported memory: returns 1 when d is capped and the outputs were set */
GPUMEM_HIDDEN int dev_report(struct gdev *d, uint64_t real_free, uint64_t *free_out, uint64_t *total_out, uint64_t *used_out);
#endif
