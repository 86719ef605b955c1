/* Per-process allocation table: pointer/handle -> (size, device, context, kind).
 * 64 shards, each a mutex and a chained hash, so 16 threads rarely meet on one lock.  Each shard
 * keeps up to SPARE freed nodes for the next record: an alloc/free pair then calls neither malloc
 * nor free (a fifth of the library's own time per pair, by callgrind on the stand-in driver). */
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include "gpumem.h"

#define NSHARD 64
#define NBUCKET 256

struct node { struct track_rec r; struct node *next; };
#define SPARE 32
struct shard { int mu; struct node *b[NBUCKET]; struct node *spare; int nspare; } __attribute__((aligned(64)));
static struct shard shards[NSHARD];

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

static inline uint64_t mix(uint64_t k)
{
    k ^= k >> 33; k *= 0xff51afd7ed558ccdULL; k ^= k >> 33; k *= 0xc4ceb9fe1a85ec53ULL; k ^= k >> 33;
    return k;
}

void track_add(uint64_t key, int kind, uint64_t size, int dev, void *ctx)
{
    uint64_t h = mix(key ^ ((uint64_t)kind << 56));
    struct shard *s = &shards[h % NSHARD];
    shard_lock(s);
    struct node *n = node_get(s);
    if (!n) {
        shard_unlock(s);
        LOG(LOG_ERROR, "out of host memory tracking an allocation; it stays charged");
        return;
    }
    n->r = (struct track_rec){ key, size, dev, kind, ctx };
    struct node **b = &s->b[(h / NSHARD) % NBUCKET];
    n->next = *b;
    *b = n;
    shard_unlock(s);
}

int track_remove(uint64_t key, int kind, struct track_rec *out)
{
    uint64_t h = mix(key ^ ((uint64_t)kind << 56));
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

void track_drop_ctx(void *ctx, uint64_t out[GPUMEM_MAX_DEV])
{
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

/* The child owns none of its parent's device memory: forget the parent's records. */
void track_after_fork_child(void)
{
    for (int i = 0; i < NSHARD; i++) {
        for (int j = 0; j < NBUCKET; j++) {
            struct node *n = shards[i].b[j];
            while (n) { struct node *x = n->next; free(n); n = x; }
            shards[i].b[j] = NULL;
        }
        shards[i].mu = 0;
    }
}
