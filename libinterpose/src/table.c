/* THE table of hooked entry points (table.h lists them): each entry's real function, looked up
 * on its first call, and the lookups dlsym and cuGetProcAddress make in it.  Calls the resolver,
 * which calls nothing of ours back. */
#include <dlfcn.h>
#include <string.h>
#include "table.h"

#define GPUMEM_ROW(lib, name, base, ver, ptsz, params) { #name, #base, lib, ver, ptsz, (void *)name, NULL, NULL },
struct hook gpumem_table[H_COUNT] = { GPUMEM_HOOKS(GPUMEM_ROW) };
#undef GPUMEM_ROW
#define table gpumem_table

void *hooks_real(int i) { return hooks_real_fast(table, i); }

int hooks_is_ours(void *fn)
{
    for (int i = 0; i < H_COUNT; i++) if (table[i].ours == fn) return 1;
    return (void *)fn == (void *)dlsym;
}

/* the first call of an entry: look its real function up (hooks_real is the inlined fast path);
 * never one of ours (a real failure mode once a library hooks dlsym) */
void *hooks_real_slow(int i)
{
    void *p = __atomic_load_n(&table[i].real, __ATOMIC_ACQUIRE);
    if (p) return p;
    p = resolve_symbol(table[i].lib, table[i].name);
    if (p && hooks_is_ours(p)) {
        LOG(LOG_ERROR, "%s resolved to our own hook; treating it as missing", table[i].name);
        p = NULL;
    }
    if (!p) p = __atomic_load_n(&table[i].seed, __ATOMIC_ACQUIRE);
    if (p) __atomic_store_n(&table[i].real, p, __ATOMIC_RELEASE);
    return p;
}

int hooks_find(const char *name)
{
    for (int i = 0; i < H_COUNT; i++) if (!strcmp(table[i].name, name)) return i;
    return -1;
}

void *hooks_find_ours(const char *name)
{
    int i = hooks_find(name);
    return i >= 0 ? table[i].ours : NULL;
}

/* cuGetProcAddress(sym, ver, flags): the entry the driver's rules pick (table.h) */
int hooks_proc_lookup(const char *sym, int ver, uint64_t flags)
{
    int want_ptsz = (flags & CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM) != 0, best = -1, best_score = -1;
    for (int i = 0; i < H_COUNT; i++) {
        const struct hook *h = &table[i];
        if (h->lib != LIB_CUDA || strcmp(h->base, sym) || h->ver > ver || (h->ptsz && !want_ptsz)) continue;
        int score = h->ptsz * 1000000 + h->ver;
        if (score > best_score) { best = i; best_score = score; }
    }
    return best >= 0 ? best : hooks_find(sym);
}
