/* The ledger's file (ledger_file.c): found, judged, made or rebuilt; never mapped here. */
#ifndef GPUMEM_LEDGER_FILE_H
#define GPUMEM_LEDGER_FILE_H
#include <sys/stat.h>
struct ledger;
/* Open dir's ledger (path = dir/LEDGER_NAME): 0 and *fd_out (O_RDWR, close-on-exec), a regular
 * file of a ledger's size with this layout's header and its blocks allocated; a missing one is
 * made, a bad one rebuilt when no live process holds it.  Else an errno (> 0) or -1, with *why. */
GPUMEM_HIDDEN int ledger_file_open(const char *dir, const char *path, int *fd_out, const char **why);
GPUMEM_HIDDEN void ledger_layout_init(struct ledger *l);
GPUMEM_HIDDEN int ledger_fstat(int fd, struct stat *st);   /* by the system call (no fstat@GLIBC_2.33) */
#endif
