/* The ledger's file: find it, judge it, make it, and rebuild it when it is damaged and nobody
 * uses it.  Nothing here maps it or holds a slot (ledger.c does).
 *
 * Judged before anything is mapped: a path that is a link, a FIFO, a device or a directory, a
 * file shorter than a ledger or whose header is not this layout's, is bad.  A bad file is
 * rebuilt (a fresh one renamed over it) only when no process holds a record lock on it: every
 * process of the ledger locks its slot's byte for life, so "no lock" is "no live process" (from
 * every pid namespace, zombies included).  Rebuilds are serialised by a lock on the directory, and
 * each rebuilder judges the path again under it, so two never replace each other's fresh file.
 * A file gets its blocks before it is mapped (fallocate): on a full tmpfs a sparse file maps fine
 * and faults SIGBUS at the first write. */
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include "gpumem.h"
#include "ledger_file.h"
#include "ledger_layout.h"

#define DIR_LOCK_WAIT_MS 2000   /* another process rebuilding takes microseconds; a stuck one is refused */

void ledger_layout_init(struct ledger *l)
{
    memset(l, 0, sizeof *l);
    l->magic = LEDGER_MAGIC;
    l->version = LEDGER_VERSION;
    l->size = sizeof *l;
    l->nslots = LEDGER_SLOTS;
    l->tail = LEDGER_TAIL;
}

/* the file's blocks, by the system call: glibc's posix_fallocate emulates a file system without it
 * by writing a zero byte into every block that reads as zero, which races with a live ledger's
 * writers.  Where the file system cannot, nothing is done (0). */
static int allocate_blocks(int fd)
{
    if (syscall(SYS_fallocate, fd, 0, (off_t)0, (off_t)sizeof(struct ledger)) == 0) return 0;
    return errno == EOPNOTSUPP || errno == ENOSYS ? 0 : errno;
}

/* fstat by the raw system call (glibc's fstat is fstat@GLIBC_2.33) */
int ledger_fstat(int fd, struct stat *st) { return (int)syscall(SYS_fstat, fd, st); }

/* mkdir -p: missing parents 0755, the state dir itself 1777 so every uid of the container can
 * use it */
static int make_dirs(const char *dir)
{
    char p[4096];
    if (snprintf(p, sizeof p, "%s", dir) >= (int)sizeof p) { errno = ENAMETOOLONG; return -1; }
    for (char *c = p + 1; *c; c++) {
        if (*c != '/') continue;
        *c = 0;
        if (mkdir(p, 0755) != 0 && errno != EEXIST) return -1;
        *c = '/';
    }
    if (mkdir(p, 0777) == 0) chmod(p, 01777);
    else if (errno != EEXIST) return -1;
    return 0;
}

/* A fresh ledger at name: a temp file with its blocks allocated and its header written, then
 * linked into place (replace 0: only where there is none) or renamed over what is there.
 * 0, else the errno that failed it. */
static int make_file(const char *dir, const char *path, int replace)
{
    char tmp[4200];
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    snprintf(tmp, sizeof tmp, "%s/.%s.%d.%ld", dir, LEDGER_NAME, (int)getpid(), (long)ts.tv_nsec);
    int t = open(tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0666);
    if (t < 0) return errno;
    fchmod(t, 0666);
    int e = allocate_blocks(t);
    if (!e && ftruncate(t, sizeof(struct ledger)) != 0) e = errno;   /* where fallocate could not */
    if (!e) {
        struct ledger head;   /* only the header is not zero: write what precedes the tables */
        ledger_layout_init(&head);
        size_t n = offsetof(struct ledger, dev);
        uint64_t tail = LEDGER_TAIL;
        if (pwrite(t, &head, n, 0) != (ssize_t)n ||
            pwrite(t, &tail, sizeof tail, offsetof(struct ledger, tail)) != (ssize_t)sizeof tail)
            e = errno ? errno : EIO;
    }
    close(t);
    if (!e && (replace ? rename(tmp, path) : link(tmp, path)) != 0 && !(errno == EEXIST && !replace)) e = errno;
    unlink(tmp);   /* after a rename it is gone already */
    return e;
}

enum verdict { V_GOOD, V_ABSENT, V_BAD, V_ERR };

/* Open and judge what the ledger's path names.  V_GOOD: *fd is it; V_BAD: *why says what is wrong
 * and *fd is the file when it is a regular one (to ask who holds it), else -1; V_ERR: *err. */
static enum verdict judge(const char *path, int *fd, const char **why, int *err)
{
    *fd = -1;
    int f = open(path, O_RDWR | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY);
    if (f < 0) {
        if (errno == ENOENT) return V_ABSENT;
        if (errno == ELOOP) { *why = "its path is a symbolic link"; return V_BAD; }
        if (errno == EISDIR || errno == ENXIO || errno == ENODEV) { *why = "its path is not a regular file"; return V_BAD; }
        *err = errno;
        return V_ERR;
    }
    struct stat st;
    if (ledger_fstat(f, &st) != 0) { *err = errno; close(f); return V_ERR; }
    if (!S_ISREG(st.st_mode)) { close(f); *why = "its path is not a regular file"; return V_BAD; }
    *fd = f;
    if (st.st_size < (off_t)sizeof(struct ledger)) { *why = "the file is shorter than a ledger"; return V_BAD; }
    struct ledger head;
    size_t n = offsetof(struct ledger, pad);
    if (pread(f, &head, n, 0) != (ssize_t)n) { *err = errno ? errno : EIO; close(f); *fd = -1; return V_ERR; }
    if (head.magic != LEDGER_MAGIC || head.version != LEDGER_VERSION || head.size != sizeof head ||
        head.nslots != LEDGER_SLOTS) {
        *why = "its header is not this version's (another version, or damaged)";
        return V_BAD;
    }
    uint64_t tail = 0;
    if (pread(f, &tail, sizeof tail, offsetof(struct ledger, tail)) != (ssize_t)sizeof tail || tail != LEDGER_TAIL) {
        *why = "its last word is not the ledger's (cut short and extended, or damaged)";
        return V_BAD;
    }
    /* a sparse file (made by another program, or a ledger whose blocks were never allocated)
     * would fault SIGBUS where a full tmpfs has no page for it: allocate its blocks now */
    int e = allocate_blocks(f);
    if (e) { *err = e; close(f); *fd = -1; return V_ERR; }
    return V_GOOD;
}

/* any record lock on the file: a live process of the ledger holds its slot's byte */
static int someone_holds(int fd)
{
    struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 0 };
    if (fcntl(fd, F_OFD_GETLK, &fl) != 0) {
        fl = (struct flock){ .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 0 };
        if (fcntl(fd, F_GETLK, &fl) != 0) return 1;   /* cannot tell: assume it is used */
    }
    return fl.l_type != F_UNLCK;
}

/* the directory's lock, serialising rebuilds: 0 taken, else an errno */
static int dir_lock(int dfd)
{
    for (int ms = 0; ; ms++) {
        if (flock(dfd, LOCK_EX | LOCK_NB) == 0) return 0;
        if (errno != EWOULDBLOCK && errno != EINTR) return errno;
        if (ms >= DIR_LOCK_WAIT_MS) return EWOULDBLOCK;
        struct timespec one = { 0, 1000000 };
        nanosleep(&one, NULL);
    }
}

/* Under the directory's lock: judge again (another process may have rebuilt it), and replace it
 * when it is still bad and nobody holds it.  0: look again; else why not in *why. */
static char held_why[256];
static int rebuild(int dfd, const char *dir, const char *path, const char **why)
{
    int e = dir_lock(dfd);
    if (e) { *why = "another process holds the state directory's lock"; return e; }
    int fd, err = 0;
    const char *bad = NULL;
    enum verdict v = judge(path, &fd, &bad, &err);
    int rc = 0;
    if (v == V_BAD && fd >= 0 && someone_holds(fd)) {
        snprintf(held_why, sizeof held_why, "the ledger is damaged (%s) and live processes still use it", bad);
        *why = held_why;
        rc = -1;
    } else if (v == V_BAD) {
        e = make_file(dir, path, 1);
        if (e) { *why = strerror(e); rc = e; }
        else gpumem_log(LOG_WARN, "ledger %s was unusable (%s) and no live process held it: rebuilt", path, bad);
    } else if (v == V_ERR) {
        *why = strerror(err);
        rc = err;
    }
    if (fd >= 0) close(fd);
    flock(dfd, LOCK_UN);
    return rc;
}

/* the state dir, opened for making or rebuilding the file only (the common open takes one
 * descriptor, for a process with one left) */
static int rebuild_in(const char *dir, const char *path, const char **why)
{
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0) { int e = errno; *why = strerror(e); return e; }
    int e = rebuild(dfd, dir, path, why);
    close(dfd);
    return e;
}

int ledger_file_open(const char *dir, const char *path, int *fd_out, const char **why)
{
    *fd_out = -1;
    if (make_dirs(dir) != 0) { int e = errno; *why = strerror(e); return e; }
    *why = "the ledger's path keeps changing";
    for (int round = 0; round < 4; round++) {   /* each round: one change seen; a fifth is a fight */
        int fd, err = 0;
        const char *bad = NULL;
        enum verdict v = judge(path, &fd, &bad, &err);
        if (v == V_GOOD) { *fd_out = fd; return 0; }
        if (v == V_ERR) { *why = strerror(err); return err; }
        if (fd >= 0) close(fd);
        int e = v == V_BAD ? rebuild_in(dir, path, why) : make_file(dir, path, 0);
        if (e > 0 && v != V_BAD) *why = strerror(e);
        if (e) return e;
    }
    return -1;
}
