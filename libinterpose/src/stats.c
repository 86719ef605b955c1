/* GPUMEM_STATS=1: per hooked entry point, how many calls, and how long they spent in this library
 * and in the driver, printed to stderr at exit.  It answers "what does the cap cost on this
 * driver" from one run (bench/RESULTS.md left the stream-ordered pair open).  Off by default: a
 * hook then pays one well-predicted branch per timing point. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "gpumem.h"
#include "table.h"

int gpumem_stats_on;

struct stat_row { uint64_t calls, ours_ns, real_ns; };
static struct stat_row rows[H_COUNT];

#define GPUMEM_NAME(lib, name, base, ver, ptsz, params) #name,
static const char *const names[H_COUNT] = { GPUMEM_HOOKS(GPUMEM_NAME) };
#undef GPUMEM_NAME

uint64_t gpumem_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

int gpumem_stats_index(const char *hook)
{
    for (int i = 0; i < H_COUNT; i++) if (!strcmp(names[i], hook)) return i;
    return -1;
}

void gpumem_stats_add(int i, uint64_t t_entry, uint64_t t_real0, uint64_t t_real1)
{
    if (i < 0 || i >= H_COUNT) return;
    uint64_t t_exit = gpumem_now_ns();
    uint64_t in_real = t_real1 > t_real0 ? t_real1 - t_real0 : 0;   /* 0, 0: refused before the driver */
    uint64_t total = t_exit > t_entry ? t_exit - t_entry : 0;
    __atomic_add_fetch(&rows[i].calls, 1, __ATOMIC_RELAXED);
    __atomic_add_fetch(&rows[i].real_ns, in_real, __ATOMIC_RELAXED);
    __atomic_add_fetch(&rows[i].ours_ns, total > in_real ? total - in_real : 0, __ATOMIC_RELAXED);
}

/* Start-up work, the library's whole cost before an application's first allocation, by piece:
 * the constructor, the device table (the driver queries it makes, the ledger's file and the
 * process's slot inside it).  The total counts only outermost pieces, so nothing twice. */
static const char *const startup_names[SP_COUNT] = { "constructor", "device table", "driver queries", "ledger file", "slot" };
static uint64_t startup_ns[SP_COUNT], startup_total_ns;
static __thread int startup_depth;

uint64_t gpumem_startup_begin(void)
{
    startup_depth++;
    return gpumem_now_ns();
}

void gpumem_startup_end(int piece, uint64_t t0)
{
    uint64_t d = gpumem_now_ns() - t0;
    __atomic_add_fetch(&startup_ns[piece], d, __ATOMIC_RELAXED);
    if (--startup_depth == 0) __atomic_add_fetch(&startup_total_ns, d, __ATOMIC_RELAXED);
}

static void startup_report(void)
{
    char parts[256];
    size_t n = 0;
    parts[0] = 0;
    for (int i = 0; i < SP_COUNT && n < sizeof parts; i++)
        n += (size_t)snprintf(parts + n, sizeof parts - n, "%s%s %.3f", i ? ", " : "", startup_names[i], startup_ns[i] / 1e6);
    fprintf(stderr, "gpumem: stats start-up: %.3f ms in gpumem (%s ms; the last three inside the device table) [pid %d]\n",
            startup_total_ns / 1e6, parts, (int)getpid());
}

/* What one clock read costs here: each "in gpumem" figure includes about two of them (entry to
 * the driver call, and the driver's return to exit), on a VM tens of ns each. */
static double clock_read_ns;

static void measure_clock(void)
{
    enum { N = 1000 };
    uint64_t t0 = gpumem_now_ns();
    for (int i = 0; i < N; i++) (void)gpumem_now_ns();
    clock_read_ns = (double)(gpumem_now_ns() - t0) / (N + 1);
}

static void stats_report(void)
{
    fprintf(stderr, "gpumem: stats clock read: %.1f ns (each figure in gpumem below includes about two) [pid %d]\n",
            clock_read_ns, (int)getpid());
    if (startup_total_ns) startup_report();
    for (int i = 0; i < H_COUNT; i++) {
        uint64_t n = rows[i].calls;
        if (!n) continue;
        /* one line each, whatever GPUMEM_LOG says: the user asked for them */
        fprintf(stderr, "gpumem: stats %s: %llu calls, %.3f us in gpumem and %.3f us in the driver per call [pid %d]\n",
                names[i], (unsigned long long)n, rows[i].ours_ns / 1e3 / (double)n, rows[i].real_ns / 1e3 / (double)n,
                (int)getpid());
    }
}

void gpumem_stats_init(void)
{
    const char *s = getenv("GPUMEM_STATS");
    if (s && s[0] == '1' && !s[1]) {
        gpumem_stats_on = 1;
        measure_clock();
        atexit(stats_report);
    }
}
