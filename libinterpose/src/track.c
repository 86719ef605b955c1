/* Per-process allocation table: pointer/handle -> (size, device, context, kind).
 *
 * Two tiers.  Each thread owns a small open-addressed table that only it inserts into, with plain
 * stores: the allocation hooks of a stream-ordered pool pair (cudaMallocAsync + cudaFreeAsync,
 * about 0.6 us native on an H100) then take no locked instruction to record, where one per call
 * cost about 10 ns (bench/gpu/abhook.c, rmw row, bench/RESULTS.md).  Any thread may remove a
 * record from any table, the owner too, with a CAS, so a record is taken once: with a plain store
 * the owner and another thread freeing one pointer at once (an application's double free, or a
 * context's teardown) both took it, the refused free put it back with no charge behind it, and
 * the cap was passed (tests/lib/test_track_review.py).  A record whose probe window is full goes
 * to the second tier, 64 shards each a spin lock and a chained hash.  Tables of exited threads
 * are adopted by new ones. */
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include "fastpath.h"

/* ---------------------------------------------------------------- tier 1: per-thread tables */

static struct ttab *ttabs;             /* every table ever made (push-only, never freed) */
__thread struct ttab *gpumem_my_tab;   /* this thread's (fastpath.h reads it) */
static pthread_key_t tab_key;
static pthread_once_t tab_key_once = PTHREAD_ONCE_INIT;

/* at thread exit: the thread forgets its table, then hands it on.  Another library's destructor
 * may run after this one and still allocate: with the table kept, the thread would add to it with
 * plain stores beside the new thread that adopted it, and records were lost (the cap filled with
 * bytes no free gave back).  It takes a table afresh, and glibc runs this destructor again. */
static void tab_release(void *t)
{
    gpumem_my_tab = NULL;
    __atomic_store_n(&((struct ttab *)t)->owned, 0, __ATOMIC_RELEASE);
}
static int tab_key_ok;
static void tab_key_make(void) { tab_key_ok = pthread_key_create(&tab_key, tab_release) == 0; }

/* this thread's table: an exited thread's, else a new one; NULL when out of memory */
static struct ttab *tab_mine(void)
{
    if (__builtin_expect(gpumem_my_tab != NULL, 1)) return gpumem_my_tab;
    pthread_once(&tab_key_once, tab_key_make);
    struct ttab *t;
    for (t = __atomic_load_n(&ttabs, __ATOMIC_ACQUIRE); t; t = t->next) {
        int free_ = 0;
        if (__atomic_load_n(&t->owned, __ATOMIC_RELAXED) == 0 &&
            __atomic_compare_exchange_n(&t->owned, &free_, 1, 0, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED))
            break;
    }
    if (!t) {
        t = calloc(1, sizeof *t);
        if (!t) return NULL;
        t->owned = 1;
        t->next = __atomic_load_n(&ttabs, __ATOMIC_RELAXED);
        while (!__atomic_compare_exchange_n(&ttabs, &t->next, t, 0, __ATOMIC_RELEASE, __ATOMIC_RELAXED)) {}
    }
    /* its destructor hands the table on at thread exit; with no key, the table stays this
     * thread's for good (its records still found by every thread) */
    if (tab_key_ok) pthread_setspecific(tab_key, t);
    gpumem_my_tab = t;
    return t;
}

static inline __attribute__((always_inline)) int tab_add(struct ttab *t, uint64_t h, const struct track_rec *r)
{
    for (unsigned j = 0; j < TT_PROBE; j++) {
        struct tent *e = &t->e[(h + j) & TT_MASK];
        if (__atomic_load_n(&e->key, __ATOMIC_ACQUIRE)) continue;
        tent_fill(e, r->key, r->kind, r->size, r->dev, r->ctx);
        return 1;
    }
    return 0;
}


/* take the record of (key, kind) from table t, by CAS whoever owns t (see the top) */
static inline __attribute__((always_inline)) int tab_take(struct ttab *t, uint64_t h, uint64_t key, int kind, struct track_rec *out)
{
    for (unsigned j = 0; j < TT_PROBE; j++) {
        if (tent_take(&t->e[(h + j) & TT_MASK], key, kind, out)) return 1;
    }
    return 0;
}

/* ---------------------------------------------------------------- tier 2: shards */

#define NSHARD 64
#define NBUCKET 256

struct node { struct track_rec r; struct node *next; };
#define SPARE 32
struct shard { int mu; struct node *b[NBUCKET]; struct node *spare; int nspare; } __attribute__((aligned(64)));
static struct shard shards[NSHARD];
static int shards_used;   /* any record ever went to a shard: else a miss skips the 64 locks */

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/* A shard is held for a few dozen instructions with no call that can block, so a spin lock that
 * yields when it waits long costs a tenth of a pthread mutex's lock and unlock. */
static void shard_lock(struct shard *s)
{
    for (unsigned spins = 0; __atomic_exchange_n(&s->mu, 1, __ATOMIC_ACQUIRE); spins++) {
        if (spins > 100) sched_yield();
        else cpu_relax();
    }
}

static void shard_unlock(struct shard *s) { __atomic_store_n(&s->mu, 0, __ATOMIC_RELEASE); }

/* under the shard's lock */
static struct node *node_get(struct shard *s)
{
    struct node *n = s->spare;
    if (!n) return malloc(sizeof *n);
    s->spare = n->next;
    s->nspare--;
    return n;
}

/* under the shard's lock */
static void node_put(struct shard *s, struct node *n)
{
    if (s->nspare >= SPARE) {
        free(n);
        return;
    }
    n->next = s->spare;
    s->spare = n;
    s->nspare++;
}

static int shard_add(uint64_t h, const struct track_rec *r)
{
    struct shard *s = &shards[h % NSHARD];
    __atomic_store_n(&shards_used, 1, __ATOMIC_RELEASE);
    shard_lock(s);
    struct node *n = node_get(s);
    if (n) {
        n->r = *r;
        struct node **b = &s->b[(h / NSHARD) % NBUCKET];
        n->next = *b;
        *b = n;
    }
    shard_unlock(s);
    return n != NULL;
}

static int shard_take(uint64_t h, uint64_t key, int kind, struct track_rec *out)
{
    struct shard *s = &shards[h % NSHARD];
    int found = 0;
    shard_lock(s);
    for (struct node **p = &s->b[(h / NSHARD) % NBUCKET]; *p; p = &(*p)->next) {
        if ((*p)->r.key == key && (*p)->r.kind == kind) {
            struct node *n = *p;
            *p = n->next;
            *out = n->r;
            node_put(s, n);
            found = 1;
            break;
        }
    }
    shard_unlock(s);
    return found;
}

/* ---------------------------------------------------------------- the table */



void track_add(uint64_t key, int kind, uint64_t size, int dev, void *ctx)
{
    uint64_t h = track_hash(key, kind);
    struct track_rec r = { key, size, dev, kind, ctx };
    struct ttab *t = key ? tab_mine() : NULL;   /* key 0 marks a free slot: such a record goes to a shard */
    if (t && tab_add(t, h, &r)) return;
    if (!shard_add(h, &r)) LOG(LOG_ERROR, "out of host memory tracking an allocation; it stays charged");
}

int track_remove(uint64_t key, int kind, struct track_rec *out)
{
    uint64_t h = track_hash(key, kind);
    if (key) {
        struct ttab *mine = gpumem_my_tab;   /* the common case: freed by the thread that allocated */
        if (mine && tab_take(mine, h, key, kind, out)) return 1;
        for (struct ttab *t = __atomic_load_n(&ttabs, __ATOMIC_ACQUIRE); t; t = t->next)
            if (t != mine && tab_take(t, h, key, kind, out)) return 1;
    }
    return __atomic_load_n(&shards_used, __ATOMIC_ACQUIRE) && shard_take(h, key, kind, out);
}

void track_drop_ctx(void *ctx, uint64_t out[GPUMEM_MAX_DEV])
{
    for (struct ttab *t = __atomic_load_n(&ttabs, __ATOMIC_ACQUIRE); t; t = t->next) {
        for (unsigned i = 0; i <= TT_MASK; i++) {
            struct tent *e = &t->e[i];
            uint64_t k = __atomic_load_n(&e->key, __ATOMIC_ACQUIRE);
            if (!k || __atomic_load_n(&e->ctx, __ATOMIC_RELAXED) != ctx) continue;
            int dev = __atomic_load_n(&e->dev, __ATOMIC_RELAXED);
            uint64_t size = __atomic_load_n(&e->size, __ATOMIC_RELAXED);
            if (__atomic_compare_exchange_n(&e->key, &k, 0, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE) &&
                dev >= 0 && dev < GPUMEM_MAX_DEV)
                out[dev] += size;
        }
    }
    for (int i = 0; i < NSHARD; i++) {
        struct shard *s = &shards[i];
        shard_lock(s);
        for (int j = 0; j < NBUCKET; j++) {
            struct node **p = &s->b[j];
            while (*p) {
                if ((*p)->r.ctx == ctx) {
                    struct node *n = *p;
                    *p = n->next;
                    if (n->r.dev >= 0 && n->r.dev < GPUMEM_MAX_DEV) out[n->r.dev] += n->r.size;
                    node_put(s, n);
                } else {
                    p = &(*p)->next;
                }
            }
        }
        shard_unlock(s);
    }
}

void track_fork_prepare(void) { for (int i = 0; i < NSHARD; i++) shard_lock(&shards[i]); }
void track_fork_parent(void) { for (int i = NSHARD - 1; i >= 0; i--) shard_unlock(&shards[i]); }

/* The child owns none of its parent's device memory: forget the parent's records.  Only the
 * forking thread lives on in the child, so it alone keeps its table. */
void track_after_fork_child(void)
{
    for (struct ttab *t = ttabs; t; t = t->next) {
        memset(t->e, 0, sizeof t->e);
        t->owned = t == gpumem_my_tab;
    }
    for (int i = 0; i < NSHARD; i++) {
        for (int j = 0; j < NBUCKET; j++) {
            struct node *n = shards[i].b[j];
            while (n) { struct node *x = n->next; free(n); n = x; }
            shards[i].b[j] = NULL;
        }
        shards[i].mu = 0;
    }
    shards_used = 0;
}
