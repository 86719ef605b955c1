/* Graph memory: a graph's allocation nodes (captured cuMemAllocAsync, cuGraphAddMemAllocNode)
 * take memory from the device's graph pool at launch, and the pool keeps it after the graph is
 * destroyed until cuDeviceGraphMemTrim (1 GiB taken at the first launch on an H200, kept after
 * cuGraphExecDestroy).  So a captured stream-ordered allocation is not charged when captured;
 * the executable graph is, at instantiation (every form: WithFlags, WithParams, the old
 * cuGraphInstantiate/_v2), for the sum of its allocation nodes (each rounded
 * up to 2 MiB), before the driver is asked; destroyed, its bytes stay charged as the graph
 * pool's until a refusal trims the pool (pools.c). */
#include <stdlib.h>
#include "table.h"

#define NODE_TYPE_GRAPH 4
#define NODE_TYPE_MEM_ALLOC 10
#define CAPTURE_STATUS_NONE 0
#define GRAPH_ROUND (2ULL << 20)

unsigned gpumem_captures;   /* captures begun and not yet ended, in any thread */

typedef CUresult (*fn_iscap)(CUstream, int *);
typedef CUresult (*fn_nodes)(CUgraph, CUgraphNode *, size_t *);
typedef CUresult (*fn_ntype)(CUgraphNode, int *);
typedef CUresult (*fn_allocparams)(CUgraphNode, CUDA_MEM_ALLOC_NODE_PARAMS *);
typedef CUresult (*fn_child)(CUgraphNode, CUgraph *);

int graphs_capturing(CUstream s, int ptsz)
{
    static fn_iscap is, is_ptsz;
    fn_iscap f = ptsz ? is_ptsz : is;
    if (!f) {
        f = (fn_iscap)resolve_symbol(LIB_CUDA, ptsz ? "cuStreamIsCapturing_ptsz" : "cuStreamIsCapturing");
        if (!f && ptsz) f = (fn_iscap)resolve_symbol(LIB_CUDA, "cuStreamIsCapturing");
        if (ptsz) is_ptsz = f; else is = f;
    }
    int st = CAPTURE_STATUS_NONE;
    return f && f(s, &st) == CUDA_SUCCESS && st != CAPTURE_STATUS_NONE;
}

#define BEGIN_CAPTURE(call) do {                                                  \
        CUresult r_ = (call);                                                     \
        if (r_ == CUDA_SUCCESS) __atomic_add_fetch(&gpumem_captures, 1, __ATOMIC_ACQ_REL); \
        return r_;                                                                \
    } while (0)

int cuStreamBeginCapture(CUstream s, int mode) { REAL(cuStreamBeginCapture, CUDA_ERROR_NOT_FOUND); BEGIN_CAPTURE(real_(s, mode)); }
int cuStreamBeginCapture_v2(CUstream s, int mode) { REAL(cuStreamBeginCapture_v2, CUDA_ERROR_NOT_FOUND); BEGIN_CAPTURE(real_(s, mode)); }
int cuStreamBeginCapture_ptsz(CUstream s, int mode) { REAL(cuStreamBeginCapture_ptsz, CUDA_ERROR_NOT_FOUND); BEGIN_CAPTURE(real_(s, mode)); }
int cuStreamBeginCaptureToGraph(CUstream s, CUgraph g, const void *deps, const void *edges, size_t n, int mode)
{
    REAL(cuStreamBeginCaptureToGraph, CUDA_ERROR_NOT_FOUND);
    BEGIN_CAPTURE(real_(s, g, deps, edges, n, mode));
}
int cuStreamBeginCaptureToGraph_ptsz(CUstream s, CUgraph g, const void *deps, const void *edges, size_t n, int mode)
{
    REAL(cuStreamBeginCaptureToGraph_ptsz, CUDA_ERROR_NOT_FOUND);
    BEGIN_CAPTURE(real_(s, g, deps, edges, n, mode));
}

/* the capture ends, well or not, when its stream was capturing */
#define END_CAPTURE(s, ptsz, call) do {                                           \
        int was_ = graphs_capturing((s), (ptsz));                                 \
        CUresult r_ = (call);                                                     \
        if (was_ && !graphs_capturing((s), (ptsz))) {                             \
            unsigned n_ = __atomic_load_n(&gpumem_captures, __ATOMIC_ACQUIRE);    \
            while (n_ && !__atomic_compare_exchange_n(&gpumem_captures, &n_, n_ - 1, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {} \
        }                                                                         \
        return r_;                                                                \
    } while (0)

int cuStreamEndCapture(CUstream s, CUgraph *g) { REAL(cuStreamEndCapture, CUDA_ERROR_NOT_FOUND); END_CAPTURE(s, 0, real_(s, g)); }
int cuStreamEndCapture_ptsz(CUstream s, CUgraph *g) { REAL(cuStreamEndCapture_ptsz, CUDA_ERROR_NOT_FOUND); END_CAPTURE(s, 1, real_(s, g)); }

/* bytes of g's allocation nodes (child graphs' too) per device ordinal, added to out[] */
static void alloc_node_bytes(CUgraph g, uint64_t out[GPUMEM_MAX_DEV], int depth)
{
    static fn_nodes nodes;
    static fn_ntype ntype;
    static fn_allocparams params;
    static fn_child child;
    if (!nodes) {
        ntype = (fn_ntype)resolve_symbol(LIB_CUDA, "cuGraphNodeGetType");
        params = (fn_allocparams)resolve_symbol(LIB_CUDA, "cuGraphMemAllocNodeGetParams");
        child = (fn_child)resolve_symbol(LIB_CUDA, "cuGraphChildGraphNodeGetGraph");
        nodes = (fn_nodes)resolve_symbol(LIB_CUDA, "cuGraphGetNodes");
    }
    size_t n = 0;
    if (!nodes || !ntype || !params || depth > 8 || nodes(g, NULL, &n) != CUDA_SUCCESS || !n) return;
    CUgraphNode *list = malloc(n * sizeof *list);
    if (!list) return;
    if (nodes(g, list, &n) == CUDA_SUCCESS)
        for (size_t i = 0; i < n; i++) {
            int type = -1;
            if (ntype(list[i], &type) != CUDA_SUCCESS) continue;
            CUDA_MEM_ALLOC_NODE_PARAMS p;
            CUgraph sub;
            if (type == NODE_TYPE_MEM_ALLOC && params(list[i], &p) == CUDA_SUCCESS) {
                int ord = p.poolProps.location.id;
                if (ord >= 0 && ord < GPUMEM_MAX_DEV) out[ord] += (p.bytesize + GRAPH_ROUND - 1) & ~(GRAPH_ROUND - 1);
            } else if (type == NODE_TYPE_GRAPH && child && child(list[i], &sub) == CUDA_SUCCESS) {
                alloc_node_bytes(sub, out, depth + 1);
            }
        }
    free(list);
}

static uint64_t exec_key(CUgraphExec e, int ord) { return ((uint64_t)(uintptr_t)e << 5) | (uint64_t)ord; }

/* charge g's allocation nodes before instantiating it; on success recorded under the exec */
#define INSTANTIATE(fname, g, call) do {                                          \
        REAL(fname, CUDA_ERROR_NOT_FOUND);                                        \
        if (!gpumem_active) return (call);                                        \
        uint64_t need_[GPUMEM_MAX_DEV] = { 0 };                                   \
        struct gdev *devs_[GPUMEM_MAX_DEV] = { 0 };                               \
        alloc_node_bytes((g), need_, 0);                                          \
        void *ctx_ = NULL;                                                        \
        dev_current(&ctx_);                                                       \
        for (int i_ = 0; i_ < GPUMEM_MAX_DEV; i_++) {                             \
            if (!need_[i_] || !(devs_[i_] = dev_by_handle(i_))) continue;          \
            if (dev_reserve_bytes(devs_[i_], need_[i_], #fname) != CUDA_SUCCESS) { \
                for (int j_ = 0; j_ < i_; j_++) if (devs_[j_]) dev_release_bytes(devs_[j_], need_[j_]); \
                return CUDA_ERROR_OUT_OF_MEMORY;                                  \
            }                                                                     \
        }                                                                         \
        CUresult r_ = (call);                                                     \
        for (int i_ = 0; i_ < GPUMEM_MAX_DEV; i_++) {                             \
            if (!devs_[i_]) continue;                                             \
            if (r_ != CUDA_SUCCESS) { dev_release_bytes(devs_[i_], need_[i_]); continue; } \
            track_add(exec_key(*exec, dev_ord(devs_[i_])), TK_GRAPH, need_[i_], dev_ord(devs_[i_]), ctx_); \
            graphs_live(dev_ord(devs_[i_]), need_[i_], 1);                        \
        }                                                                         \
        return r_;                                                                \
    } while (0)

/* the old signature (error node, log buffer): what binaries built before CUDA 12 call, and what
 * cuGetProcAddress("cuGraphInstantiate") hands out at every cudaVersion (_v2 from 11000; seen on
 * an H200, driver 580.159.04: never cuGraphInstantiateWithFlags) */
int cuGraphInstantiate(CUgraphExec *exec, CUgraph g, CUgraphNode *err_node, char *log, size_t log_size)
{
    INSTANTIATE(cuGraphInstantiate, g, real_(exec, g, err_node, log, log_size));
}
int cuGraphInstantiate_v2(CUgraphExec *exec, CUgraph g, CUgraphNode *err_node, char *log, size_t log_size)
{
    INSTANTIATE(cuGraphInstantiate_v2, g, real_(exec, g, err_node, log, log_size));
}
int cuGraphInstantiateWithFlags(CUgraphExec *exec, CUgraph g, unsigned long long flags)
{
    INSTANTIATE(cuGraphInstantiateWithFlags, g, real_(exec, g, flags));
}
int cuGraphInstantiateWithParams(CUgraphExec *exec, CUgraph g, void *params)
{
    INSTANTIATE(cuGraphInstantiateWithParams, g, real_(exec, g, params));
}
int cuGraphInstantiateWithParams_ptsz(CUgraphExec *exec, CUgraph g, void *params)
{
    INSTANTIATE(cuGraphInstantiateWithParams_ptsz, g, real_(exec, g, params));
}

/* destroyed: the graph pool keeps what its nodes took, so the bytes stay charged as its */
int cuGraphExecDestroy(CUgraphExec exec)
{
    REAL(cuGraphExecDestroy, CUDA_ERROR_NOT_FOUND);
    struct track_rec recs[GPUMEM_MAX_DEV];
    int took[GPUMEM_MAX_DEV] = { 0 }, any = 0;
    if (gpumem_active)
        for (int i = 0; i < GPUMEM_MAX_DEV; i++) any |= took[i] = track_remove(exec_key(exec, i), TK_GRAPH, &recs[i]);
    CUresult r = real_(exec);
    for (int i = 0; any && i < GPUMEM_MAX_DEV; i++) {
        if (!took[i]) continue;
        if (r != CUDA_SUCCESS) { track_add(recs[i].key, TK_GRAPH, recs[i].size, recs[i].dev, recs[i].ctx); continue; }
        graphs_live(recs[i].dev, recs[i].size, 0);
        graphs_keep(recs[i].dev, recs[i].size);
    }
    return r;
}
