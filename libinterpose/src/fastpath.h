/* The stream-ordered pair's fast path, inlined into its hooks (allocs.c).  A pool's alloc+free
 * takes the driver about 0.6 us on an H100, so the hooks' whole budget (5%) is some 30 ns: here
 * a pair is a few loads and stores of this thread's own state and one CAS, no lock and no call.  Whatever
 * this path declines (another device, a full slot, a record made elsewhere) takes the one
 * allocation shape in devices.c and track.c, which handle every case. */
#ifndef GPUMEM_FASTPATH_H
#define GPUMEM_FASTPATH_H
#include "gpumem.h"

/* ---- track.c's per-thread tables (see there): key 0 marks a free slot */
#define TT_BITS 10                     /* 1024 records a thread before the shards */
#define TT_MASK ((1u << TT_BITS) - 1)
#define TT_PROBE 16                    /* a record lives within 16 slots of its hash */
struct tent { uint64_t key; uint64_t size; void *ctx; int32_t dev, kind; };
struct ttab { struct ttab *next; int owned; struct tent e[TT_MASK + 1]; };
GPUMEM_HIDDEN extern __thread struct ttab *gpumem_my_tab;

/* Fibonacci hashing: one multiply, then the top 24 bits, the only ones every bit of the key
 * below bit 40 reaches (a product's bit n depends on the key's bits 0..n: taking bits 16-25, as
 * before, left pointers 2 MiB apart 32 of the 1024 slots).  They pick the slot, or the shard
 * and its bucket.  The kind goes into the low bits, so it moves the slot too. */
static inline uint64_t track_hash(uint64_t key, int kind) { return ((key ^ (uint64_t)kind) * 0x9e3779b97f4a7c15ULL) >> 40; }

/* the fields before the key (release), so that a thread that sees the key sees them */
static inline void tent_fill(struct tent *e, uint64_t key, int kind, uint64_t size, int dev, void *ctx)
{
    __atomic_store_n(&e->size, size, __ATOMIC_RELAXED);
    __atomic_store_n(&e->ctx, ctx, __ATOMIC_RELAXED);
    __atomic_store_n(&e->dev, dev, __ATOMIC_RELAXED);
    __atomic_store_n(&e->kind, kind, __ATOMIC_RELAXED);
    __atomic_store_n(&e->key, key, __ATOMIC_RELEASE);
}

/* record in this thread's table at the hash's own slot; 0: track_add must */
static inline int track_add_fast(uint64_t key, int kind, uint64_t size, int dev, void *ctx)
{
    struct ttab *t = gpumem_my_tab;
    if (!t || !key) return 0;
    struct tent *e = &t->e[track_hash(key, kind) & TT_MASK];
    if (__atomic_load_n(&e->key, __ATOMIC_ACQUIRE)) return 0;
    tent_fill(e, key, kind, size, dev, ctx);
    return 1;
}

/* take slot e's record if it is (key, kind): by CAS, though only its table's thread adds there,
 * since another thread freeing the same pointer at once (a double free, a context's teardown) may
 * take it too (track.c) */
static inline int tent_take(struct tent *e, uint64_t key, int kind, struct track_rec *out)
{
    uint64_t k = __atomic_load_n(&e->key, __ATOMIC_ACQUIRE);
    if (k != key || __atomic_load_n(&e->kind, __ATOMIC_RELAXED) != kind) return 0;
    *out = (struct track_rec){ key, __atomic_load_n(&e->size, __ATOMIC_RELAXED), __atomic_load_n(&e->dev, __ATOMIC_RELAXED),
                               kind, __atomic_load_n(&e->ctx, __ATOMIC_RELAXED) };
    return __atomic_compare_exchange_n(&e->key, &k, 0, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
}

/* take a record from this thread's table at the hash's own slot; 0: track_remove must look further */
static inline int track_take_fast(uint64_t key, int kind, struct track_rec *out)
{
    struct ttab *t = gpumem_my_tab;
    return t && key && tent_take(&t->e[track_hash(key, kind) & TT_MASK], key, kind, out);
}

/* ---- devices.c's per-thread credit (see there): bytes this thread freed into a pool, still
 * charged in the ledger, that pay for its next stream-ordered allocation on the same device */
struct credit {
    struct gdev *d;        /* the device they are charged on */
    int ord;               /* its index (a record's dev) */
    unsigned epoch;        /* gpumem_credit_epoch when last set: any other voids the credit */
    uint64_t bytes, max;
    int keyed;             /* the thread-exit destructor is armed */
};
GPUMEM_HIDDEN extern __thread struct credit gpumem_credit;
GPUMEM_HIDDEN extern unsigned gpumem_credit_epoch;   /* bumped when a device's contexts all go */

static inline int credit_valid(const struct credit *c)
{
    return c->epoch == __atomic_load_n(&gpumem_credit_epoch, __ATOMIC_RELAXED);
}

/* pay for size bytes on d from the credit; 0: charge_begin must */
static inline int credit_take(struct gdev *d, uint64_t size)
{
    struct credit *c = &gpumem_credit;
    if (c->d != d || c->bytes < size || !credit_valid(c)) return 0;
    c->bytes -= size;
    return 1;
}

/* keep size freed bytes of the device with index ord as credit; 0: give_back must */
static inline int credit_keep(int ord, uint64_t size)
{
    struct credit *c = &gpumem_credit;
    if (!c->d || c->ord != ord || c->bytes + size > c->max || !credit_valid(c)) return 0;
    c->bytes += size;
    return 1;
}
#endif
