/* SIGBUS from the ledger's mapping: a file shrunk under us (another program truncated it) makes
 * every access past its new end fault, in whatever thread touches it.  The fault must not kill
 * the application: the handler puts anonymous zero pages where the mapping was, so the access
 * completes on memory nobody shares, and marks the ledger broken; ledger.c then refuses every
 * allocation on limited devices (fail closed: what the file held is gone).  Any other SIGBUS
 * goes to the handler that was there before ours, or kills as it would have.  An application
 * that installs its own SIGBUS handler after us takes these faults itself. */
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/mman.h>
#include "gpumem.h"
#include "ledger_guard.h"

int ledger_broken;
static char *watch_lo, *watch_hi;   /* the ledger's mapping */
static struct sigaction before;     /* the disposition ours replaced */

void ledger_guard_trip(void)
{
    char *lo = __atomic_load_n(&watch_lo, __ATOMIC_ACQUIRE), *hi = __atomic_load_n(&watch_hi, __ATOMIC_ACQUIRE);
    if (lo && hi > lo)   /* mmap is a system call: safe in a handler */
        mmap(lo, (size_t)(hi - lo), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
    __atomic_store_n(&ledger_broken, 1, __ATOMIC_RELEASE);
}

static void on_sigbus(int sig, siginfo_t *si, void *uc)
{
    char *a = si ? (char *)si->si_addr : NULL;
    char *lo = __atomic_load_n(&watch_lo, __ATOMIC_ACQUIRE), *hi = __atomic_load_n(&watch_hi, __ATOMIC_ACQUIRE);
    if (si && si->si_code > 0 && a >= lo && a < hi) {   /* a fault (not a kill) in our mapping */
        ledger_guard_trip();
        return;   /* the access runs again, on the anonymous pages */
    }
    if ((before.sa_flags & SA_SIGINFO) && before.sa_sigaction) {
        before.sa_sigaction(sig, si, uc);
        return;
    }
    if (before.sa_handler != SIG_DFL && before.sa_handler != SIG_IGN) {
        before.sa_handler(sig);
        return;
    }
    struct sigaction dfl = { .sa_handler = SIG_DFL };   /* as if we were never here */
    sigaction(SIGBUS, &dfl, NULL);
    raise(sig);
}

void ledger_guard_watch(void *base, size_t len)
{
    __atomic_store_n(&watch_hi, (char *)base + len, __ATOMIC_RELEASE);
    __atomic_store_n(&watch_lo, (char *)base, __ATOMIC_RELEASE);
    static int installed;
    if (__atomic_exchange_n(&installed, 1, __ATOMIC_ACQ_REL)) return;
    struct sigaction sa = { .sa_sigaction = on_sigbus, .sa_flags = SA_SIGINFO | SA_ONSTACK | SA_RESTART };
    sigemptyset(&sa.sa_mask);
    struct sigaction old;
    if (sigaction(SIGBUS, &sa, &old) == 0) before = old;
}
