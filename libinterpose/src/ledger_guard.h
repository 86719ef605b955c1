/* SIGBUS from a ledger file shrunk under us (ledger_guard.c) */
#ifndef GPUMEM_LEDGER_GUARD_H
#define GPUMEM_LEDGER_GUARD_H
#include <stddef.h>
GPUMEM_HIDDEN extern int ledger_broken;   /* the mapping lost its file: refuse, for good */
GPUMEM_HIDDEN void ledger_guard_watch(void *base, size_t len);   /* catch faults there (handler installed once) */
GPUMEM_HIDDEN void ledger_guard_trip(void);   /* the file shrank: stop sharing the mapping, mark broken */
#endif
