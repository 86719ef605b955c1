/* The ledger file's layout: shared by the library (ledger.c) and the reader (tools/gpumem-ledger.c),
 * so nothing else ever parses the binary file.  Change a field and LEDGER_VERSION/LEDGER_NAME go
 * up together: a process of another build then never reads this layout as its own. */
#ifndef GPUMEM_LEDGER_LAYOUT_H
#define GPUMEM_LEDGER_LAYOUT_H
#include <stdint.h>

#define LEDGER_MAGIC 0x6770756d656d4c31ULL /* "gpumemL1" */
#define LEDGER_VERSION 4
#define LEDGER_SLOTS 1024
#define LEDGER_DEVS 32   /* = GPUMEM_MAX_DEV */
#define LEDGER_NAME "ledger-v4"
#define LEDGER_TAIL 0x6c6961744c6d6570ULL /* "pemLtail": the file's last word, gone when it is cut short */

struct ldev {          /* empty (all zero) until a process registers a device here */
    char uuid[64];
    uint64_t used;    /* sum of the live slots' used[] for this device (the invariant recovery restores) */
    uint64_t total;   /* cuDeviceTotalMem, for NVML-only processes */
    uint64_t cap;     /* the cap of the last reservation on it (0: none yet): for readers */
    uint64_t check;   /* ledger_uuid_hash(uuid): with uuid_copy, any one damaged field is outvoted */
    char uuid_copy[64];
};
struct lslot {
    int32_t pid;        /* as its owner sees itself (another pid namespace may number it otherwise) */
    uint32_t in_use;    /* 0 or 1; anything else is damage */
    uint32_t gen;       /* bumped whenever the slot changes hands */
    uint32_t denials;   /* allocations this process was refused for the cap */
    uint64_t used[LEDGER_DEVS];
};
struct ledger {
    uint64_t magic;
    uint32_t version, size;
    uint32_t ndev, nslots;
    uint32_t hiwater;   /* slots at or past this index were never used: scans stop here */
    uint32_t owner;     /* the lock: 0 free, else OWNER(slot's generation, slot) */
    char pad[64];
    struct ldev dev[LEDGER_DEVS];
    struct lslot slot[LEDGER_SLOTS];
    uint64_t tail;      /* LEDGER_TAIL: read at every lock, so a file truncated under us is seen */
};

/* the lock word: the holder's slot + 1 in the low bits, its generation above */
#define OWNER_SLOT_BITS 11   /* slot + 1 <= 1024 */
#define OWNER_GEN_MASK 0x1fffffu
#define OWNER(gen, slot) ((((gen) & OWNER_GEN_MASK) << OWNER_SLOT_BITS) | (uint32_t)((slot) + 1))
#define OWNER_SLOT(w) ((int)((w) & ((1u << OWNER_SLOT_BITS) - 1)) - 1)

/* FNV-1a of a device's name, as stored in struct ldev's check */
static inline uint64_t ledger_uuid_hash(const char *u, unsigned long max)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    for (unsigned long i = 0; i < max && u[i]; i++) h = (h ^ (unsigned char)u[i]) * 0x100000001b3ULL;
    return h;
}

/* offset of slot i's first byte: its owner holds a write lock on it for life */
#define SLOT_LOCK_OFFSET(i) ((long)__builtin_offsetof(struct ledger, slot) + (long)(i) * (long)sizeof(struct lslot))
#endif
