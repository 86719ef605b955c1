/* Memory the process's pools keep after their frees: stream-ordered pools (cuMemFreeAsync hands
 * a block back to its pool, which keeps it up to its release threshold: PyTorch's cudaMallocAsync
 * backend sets UINT64_MAX) and the graph memory pool (a graph's allocation nodes take memory at
 * launch and the pool keeps it after the graph is destroyed, until cuDeviceGraphMemTrim).
 * Such bytes stay charged as "kept" per device; a refused reservation trims the pools and gives
 * back what they no longer hold (pools_trim), then asks again.  A leaf: it calls the driver
 * and nothing else of ours but the table and the resolver. */
#include <pthread.h>
#include <stdlib.h>
#include "table.h"

#define MAX_POOLS 64
#define MEMPOOL_ATTR_RESERVED_MEM_CURRENT 5
#define MEMPOOL_ATTR_USED_MEM_CURRENT 7
#define GRAPH_MEM_ATTR_RESERVED_MEM_CURRENT 2

static uint64_t pool_kept[GPUMEM_MAX_DEV];    /* freed into a stream-ordered pool, still charged */
static uint64_t graph_kept[GPUMEM_MAX_DEV];   /* of destroyed graphs, the graph pool may hold it */
static uint64_t graph_live[GPUMEM_MAX_DEV];   /* charged to live executable graphs */
static struct { CUmemoryPool pool; int ord; } created[MAX_POOLS];   /* cuMemPoolCreate'd */
static pthread_mutex_t pools_mu = PTHREAD_MUTEX_INITIALIZER;   /* created[]; a leaf lock */

typedef CUresult (*fn_devpool)(CUmemoryPool *, CUdevice);
typedef CUresult (*fn_trim)(CUmemoryPool, size_t);
typedef CUresult (*fn_poolattr)(CUmemoryPool, int, void *);
typedef CUresult (*fn_graphtrim)(CUdevice);
typedef CUresult (*fn_graphattr)(CUdevice, int, void *);

static int ord_ok(int ord) { return ord >= 0 && ord < GPUMEM_MAX_DEV; }

void pools_keep(int ord, uint64_t bytes)
{
    if (ord_ok(ord)) __atomic_add_fetch(&pool_kept[ord], bytes, __ATOMIC_RELAXED);
}

/* pay a stream-ordered allocation from bytes the pools keep: they are charged already */
int pools_take(int ord, uint64_t bytes)
{
    if (!ord_ok(ord)) return 0;
    uint64_t cur = __atomic_load_n(&pool_kept[ord], __ATOMIC_RELAXED);
    do {
        if (cur < bytes) return 0;
    } while (!__atomic_compare_exchange_n(&pool_kept[ord], &cur, cur - bytes, 0, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED));
    return 1;
}

void graphs_live(int ord, uint64_t bytes, int add)
{
    if (!ord_ok(ord)) return;
    if (add) __atomic_add_fetch(&graph_live[ord], bytes, __ATOMIC_RELAXED);
    else __atomic_sub_fetch(&graph_live[ord], bytes, __ATOMIC_RELAXED);
}

void graphs_keep(int ord, uint64_t bytes)
{
    if (ord_ok(ord)) __atomic_add_fetch(&graph_kept[ord], bytes, __ATOMIC_RELAXED);
}

void pools_created(CUmemoryPool pool, int ord)
{
    pthread_mutex_lock(&pools_mu);
    for (int i = 0; i < MAX_POOLS; i++)
        if (!created[i].pool) { created[i].pool = pool; created[i].ord = ord; break; }
    pthread_mutex_unlock(&pools_mu);
}

void pools_destroyed(CUmemoryPool pool)
{
    pthread_mutex_lock(&pools_mu);
    for (int i = 0; i < MAX_POOLS; i++)
        if (created[i].pool == pool) created[i].pool = NULL;
    pthread_mutex_unlock(&pools_mu);
}

/* lower *kept to at most `held` (atomically against pools_keep/pools_take); returns what went */
static uint64_t lower_to(uint64_t *kept, uint64_t held)
{
    uint64_t cur = __atomic_load_n(kept, __ATOMIC_RELAXED);
    do {
        if (cur <= held) return 0;
    } while (!__atomic_compare_exchange_n(kept, &cur, held, 0, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED));
    return cur - held;
}

/* one pool: trimmed to nothing unused, then what it still holds beyond its allocations */
static uint64_t trim_one(CUmemoryPool p, fn_trim trim, fn_poolattr attr)
{
    uint64_t reserved = 0, used = 0;
    if (!p) return 0;
    if (trim) trim(p, 0);
    if (attr(p, MEMPOOL_ATTR_RESERVED_MEM_CURRENT, &reserved) != CUDA_SUCCESS ||
        attr(p, MEMPOOL_ATTR_USED_MEM_CURRENT, &used) != CUDA_SUCCESS)
        return UINT64_MAX;   /* unknown: keep the charge */
    return reserved > used ? reserved - used : 0;
}

/* A reservation on device (ord, h) is about to be refused: trim this process's pools of the
 * device, and return the kept bytes they no longer hold (the caller gives them back). */
static uint64_t settle(int ord, CUdevice h, int do_trim);

uint64_t pools_trim(int ord, CUdevice h) { return settle(ord, h, 1); }

/* memory is reported: the kept bytes the pools no longer hold (a pool of release threshold 0
 * gives its memory back at synchronisation) are given back, nothing is trimmed */
uint64_t pools_settle(int ord, CUdevice h) { return settle(ord, h, 0); }

static uint64_t settle(int ord, CUdevice h, int do_trim)
{
    if (!ord_ok(ord)) return 0;
    uint64_t back = 0;
    if (__atomic_load_n(&pool_kept[ord], __ATOMIC_RELAXED)) {
        fn_devpool def = (fn_devpool)resolve_symbol(LIB_CUDA, "cuDeviceGetDefaultMemPool");
        fn_devpool cur = (fn_devpool)resolve_symbol(LIB_CUDA, "cuDeviceGetMemPool");
        fn_trim trim = (fn_trim)resolve_symbol(LIB_CUDA, "cuMemPoolTrimTo");
        fn_poolattr attr = (fn_poolattr)resolve_symbol(LIB_CUDA, "cuMemPoolGetAttribute");
        if (!do_trim) trim = NULL;
        if (def && attr) {
            CUmemoryPool pd = NULL, pc = NULL;
            uint64_t held = 0, one;
            int unknown = 0;
            if (def(&pd, h) == CUDA_SUCCESS) { one = trim_one(pd, trim, attr); unknown |= one == UINT64_MAX; held += one; }
            if (cur && cur(&pc, h) == CUDA_SUCCESS && pc != pd) { one = trim_one(pc, trim, attr); unknown |= one == UINT64_MAX; held += one; }
            pthread_mutex_lock(&pools_mu);
            for (int i = 0; i < MAX_POOLS; i++)
                if (created[i].pool && created[i].ord == ord && created[i].pool != pd && created[i].pool != pc) {
                    one = trim_one(created[i].pool, trim, attr);
                    unknown |= one == UINT64_MAX;
                    held += one;
                }
            pthread_mutex_unlock(&pools_mu);
            if (!unknown) back += lower_to(&pool_kept[ord], held);
        }
    }
    if (do_trim && __atomic_load_n(&graph_kept[ord], __ATOMIC_RELAXED)) {
        fn_graphtrim gtrim = (fn_graphtrim)resolve_symbol(LIB_CUDA, "cuDeviceGraphMemTrim");
        fn_graphattr gattr = (fn_graphattr)resolve_symbol(LIB_CUDA, "cuDeviceGetGraphMemAttribute");
        uint64_t reserved = 0;
        if (gtrim && gattr && gtrim(h) == CUDA_SUCCESS &&
            gattr(h, GRAPH_MEM_ATTR_RESERVED_MEM_CURRENT, &reserved) == CUDA_SUCCESS) {
            uint64_t live = __atomic_load_n(&graph_live[ord], __ATOMIC_RELAXED);
            back += lower_to(&graph_kept[ord], reserved > live ? reserved - live : 0);
        }
    }
    return back;
}

/* the device's contexts all went, and its pools' memory with them: every kept byte comes back */
uint64_t pools_drop(int ord)
{
    if (!ord_ok(ord)) return 0;
    return __atomic_exchange_n(&pool_kept[ord], 0, __ATOMIC_ACQ_REL) +
           __atomic_exchange_n(&graph_kept[ord], 0, __ATOMIC_ACQ_REL);
}

/* a forked child charges nothing of its parent's: its pools' kept bytes are none of its own */
void pools_after_fork_child(void)
{
    for (int i = 0; i < GPUMEM_MAX_DEV; i++) pool_kept[i] = graph_kept[i] = graph_live[i] = 0;
    pthread_mutex_init(&pools_mu, NULL);
}

uint64_t pools_kept(int ord)
{
    if (!ord_ok(ord)) return 0;
    return __atomic_load_n(&pool_kept[ord], __ATOMIC_RELAXED) + __atomic_load_n(&graph_kept[ord], __ATOMIC_RELAXED);
}

/* pools the application makes are trimmed too: their device from the properties */
int cuMemPoolCreate(CUmemoryPool *pool, const CUmemPoolProps *props)
{
    REAL(cuMemPoolCreate, CUDA_ERROR_NOT_FOUND);
    CUresult r = real_(pool, props);
    if (r == CUDA_SUCCESS && gpumem_active && props && props->location.type == CU_MEM_LOCATION_TYPE_DEVICE)
        pools_created(*pool, props->location.id);
    return r;
}

int cuMemPoolDestroy(CUmemoryPool pool)
{
    REAL(cuMemPoolDestroy, CUDA_ERROR_NOT_FOUND);
    pools_destroyed(pool);
    return real_(pool);
}
