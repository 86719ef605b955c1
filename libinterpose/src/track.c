/* Per-process allocation table: pointer/handle -> (size, device, context, kind).
 * 64 shards, each a mutex and a chained hash, so 16 threads rarely meet on one lock.  Each shard
 * keeps up to SPARE freed nodes for the next record: an alloc/free pair then calls neither malloc
 * nor free (a fifth of the library's own time per pair, by callgrind on the stand-in driver). */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include "gpumem.h"

#define NSHARD 64
#define NBUCKET 256

struct node { struct track_rec r; struct node *next; };
#define SPARE 32
struct shard { pthread_mutex_t mu; struct node *b[NBUCKET]; struct node *spare; int nspare; } __attribute__((aligned(64)));
static struct shard shards[NSHARD] = { [0 ... NSHARD - 1] = { PTHREAD_MUTEX_INITIALIZER, { 0 }, NULL, 0 } };

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
    pthread_mutex_lock(&s->mu);
    struct node *n = node_get(s);
    if (!n) {
        pthread_mutex_unlock(&s->mu);
        LOG(LOG_ERROR, "out of host memory tracking an allocation; it stays charged");
        return;
    }
    n->r = (struct track_rec){ key, size, dev, kind, ctx };
    struct node **b = &s->b[(h / NSHARD) % NBUCKET];
    n->next = *b;
    *b = n;
    pthread_mutex_unlock(&s->mu);
}

int track_remove(uint64_t key, int kind, struct track_rec *out)
{
    uint64_t h = mix(key ^ ((uint64_t)kind << 56));
    struct shard *s = &shards[h % NSHARD];
    int found = 0;
    pthread_mutex_lock(&s->mu);
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
    pthread_mutex_unlock(&s->mu);
    return found;
}

void track_drop_ctx(void *ctx, uint64_t out[GPUMEM_MAX_DEV])
{
    for (int i = 0; i < NSHARD; i++) {
        struct shard *s = &shards[i];
        pthread_mutex_lock(&s->mu);
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
        pthread_mutex_unlock(&s->mu);
    }
}

void track_fork_prepare(void) { for (int i = 0; i < NSHARD; i++) pthread_mutex_lock(&shards[i].mu); }
void track_fork_parent(void) { for (int i = NSHARD - 1; i >= 0; i--) pthread_mutex_unlock(&shards[i].mu); }

/* The child owns none of its parent's device memory: forget the parent's records. */
void track_after_fork_child(void)
{
    for (int i = 0; i < NSHARD; i++) {
        for (int j = 0; j < NBUCKET; j++) {
            struct node *n = shards[i].b[j];
            while (n) { struct node *x = n->next; free(n); n = x; }
            shards[i].b[j] = NULL;
        }
        pthread_mutex_init(&shards[i].mu, NULL);
    }
}
