/* gpumem-ledger: print a state directory's ledger as JSON, so that no other program parses the
 * binary layout (src/ledger_layout.h) itself.
 *
 *   gpumem-ledger [DIR]      DIR: the state dir (default $GPUMEM_STATE_DIR, else /dev/shm/gpumem)
 *
 * Exit: 0 a valid ledger; 1 a ledger that is damaged or of another kind (the JSON says what);
 * 2 no ledger in DIR; 3 usage error or the file cannot be read (one line on stderr, no JSON).
 * It never waits on the ledger: the file is opened non-blocking and not followed through a link,
 * read with pread into a copy (a shrunken file cannot fault it), the slot locks are only queried,
 * and an alarm ends it after ALARM_S whatever the file system does.  A host tool, linked
 * statically (Makefile), so it runs on any glibc the wheel's manylinux_2_17 tag promises.  The JSON is documented in
 * libinterpose/README.md ("Reading a ledger"). */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include "../src/ledger_layout.h"

#define ALARM_S 10
#define READ_TRIES 20   /* copies taken to see the totals match the slots outside a writer's update */

enum { EXIT_VALID = 0, EXIT_DAMAGED = 1, EXIT_NO_LEDGER = 2, EXIT_ERROR = 3 };

static char problems[16][160];
static int nproblems;

static void problem(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void problem(const char *fmt, ...)
{
    if (nproblems >= (int)(sizeof problems / sizeof problems[0])) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(problems[nproblems++], sizeof problems[0], fmt, ap);
    va_end(ap);
}

static void json_string(const char *s, size_t max)
{
    putchar('"');
    for (size_t i = 0; i < max && s[i]; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') printf("\\%c", c);
        else if (c < 0x20 || c >= 0x7f) printf("\\u%04x", c);
        else putchar(c);
    }
    putchar('"');
}

/* live: slot i's byte is write-locked by someone (its owner holds it for life) */
static int slot_locked(int fd, int i, int *known)
{
    struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = SLOT_LOCK_OFFSET(i), .l_len = 1 };
    if (fcntl(fd, F_OFD_GETLK, &fl) != 0) {
        fl = (struct flock){ .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = SLOT_LOCK_OFFSET(i), .l_len = 1 };
        if (fcntl(fd, F_GETLK, &fl) != 0) { *known = 0; return 1; }
    }
    return fl.l_type != F_UNLCK;
}

static int uuid_ok(const struct ldev *v)
{
    size_t n = strnlen(v->uuid, sizeof v->uuid);
    if (n == 0 || n == sizeof v->uuid || memcmp(v->uuid, v->uuid_copy, sizeof v->uuid) ||
        ledger_uuid_hash(v->uuid, sizeof v->uuid) != v->check)
        return 0;
    for (size_t i = 0; i < n; i++) if ((unsigned char)v->uuid[i] < 0x20 || (unsigned char)v->uuid[i] >= 0x7f) return 0;
    return 1;
}

/* the header's own fields; 0 when the rest cannot be read as this layout */
static int header_ok(const struct ledger *l)
{
    int ok = 1;
    if (l->magic != LEDGER_MAGIC) { problem("bad magic 0x%016llx", (unsigned long long)l->magic); ok = 0; }
    if (l->version != LEDGER_VERSION) { problem("version %u, expected %u", l->version, LEDGER_VERSION); ok = 0; }
    if (l->size != sizeof *l) { problem("size field %u, expected %zu", l->size, sizeof *l); ok = 0; }
    if (l->nslots != LEDGER_SLOTS) { problem("nslots %u, expected %u", l->nslots, LEDGER_SLOTS); ok = 0; }
    if (l->tail != LEDGER_TAIL) { problem("last word 0x%016llx, not the ledger's", (unsigned long long)l->tail); ok = 0; }
    return ok;
}

/* field checks that stand without the locks; sums are checked by the caller */
static void fields_check(const struct ledger *l)
{
    if (l->ndev > LEDGER_DEVS) problem("ndev %u past %u", l->ndev, LEDGER_DEVS);
    if (l->hiwater > LEDGER_SLOTS) problem("hiwater %u past %u", l->hiwater, LEDGER_SLOTS);
    if (l->owner && (OWNER_SLOT(l->owner) < 0 || OWNER_SLOT(l->owner) >= LEDGER_SLOTS))
        problem("lock word 0x%08x names no slot", l->owner);
    uint32_t ndev = l->ndev <= LEDGER_DEVS ? l->ndev : LEDGER_DEVS;
    for (uint32_t d = 0; d < ndev; d++)
        if (!uuid_ok(&l->dev[d])) problem("device %u: its name, copy and check disagree or are not printable", d);
    for (int i = 0; i < LEDGER_SLOTS; i++) {
        const struct lslot *s = &l->slot[i];
        if (s->in_use > 1) problem("slot %d: in_use %u", i, s->in_use);
        if (s->in_use && (uint32_t)i >= l->hiwater) problem("slot %d in use past hiwater %u", i, l->hiwater);
        for (uint32_t d = ndev; d < LEDGER_DEVS; d++)
            if (s->in_use && s->used[d]) { problem("slot %d: bytes on unregistered device %u", i, d); break; }
    }
}

/* does every device's total equal the sum of its in-use slots? (index of the first that does not, or -1) */
static int sums_mismatch(const struct ledger *l, uint64_t *sum_out)
{
    uint32_t ndev = l->ndev <= LEDGER_DEVS ? l->ndev : LEDGER_DEVS;
    for (uint32_t d = 0; d < ndev; d++) {
        uint64_t sum = 0;
        for (int i = 0; i < LEDGER_SLOTS; i++) if (l->slot[i].in_use == 1) sum += l->slot[i].used[d];
        if (sum != l->dev[d].used) { *sum_out = sum; return (int)d; }
    }
    return -1;
}

int main(int argc, char **argv)
{
    if (argc > 2 || (argc == 2 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")))) {
        fprintf(stderr, "usage: gpumem-ledger [STATE_DIR]   (default $GPUMEM_STATE_DIR or /dev/shm/gpumem)\n");
        return argc == 2 ? EXIT_VALID : EXIT_ERROR;
    }
    alarm(ALARM_S);   /* a hung file system must not hang the caller (SIGALRM ends us, exit 142) */
    const char *dir = argc == 2 ? argv[1] : getenv("GPUMEM_STATE_DIR");
    if (!dir || !*dir) dir = "/dev/shm/gpumem";
    char path[4096];
    if (snprintf(path, sizeof path, "%s/%s", dir, LEDGER_NAME) >= (int)sizeof path) {
        fprintf(stderr, "gpumem-ledger: %s: path too long\n", dir);
        return EXIT_ERROR;
    }
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY);
    if (fd < 0 && (errno == ENOENT || errno == ENOTDIR)) {
        printf("{\"path\": ");
        json_string(path, sizeof path);
        printf(", \"exists\": false, \"valid\": false, \"problems\": [\"no ledger\"], \"devices\": [], \"processes\": []}\n");
        return EXIT_NO_LEDGER;
    }
    static struct ledger l;
    struct stat st;
    int readable = 0;
    if (fd < 0 && errno == ELOOP) problem("the ledger's path is a symbolic link");
    else if (fd < 0) { fprintf(stderr, "gpumem-ledger: cannot open %s: %s\n", path, strerror(errno)); return EXIT_ERROR; }
    else if (syscall(SYS_fstat, fd, &st) != 0) { fprintf(stderr, "gpumem-ledger: cannot stat %s: %s\n", path, strerror(errno)); return EXIT_ERROR; }
    else if (!S_ISREG(st.st_mode)) problem("the ledger's path is not a regular file");
    else if (st.st_size < (off_t)sizeof l) problem("file of %lld bytes, expected %zu", (long long)st.st_size, sizeof l);
    else readable = 1;

    int mismatch = -1, known = 1;
    uint64_t sum = 0;
    if (readable) {
        for (int t = 0; t < READ_TRIES; t++) {
            ssize_t n = pread(fd, &l, sizeof l, 0);
            if (n != (ssize_t)sizeof l) { problem("short read (%zd bytes)", n); readable = 0; break; }
            if (!header_ok(&l)) { readable = 0; break; }
            if (l.owner == 0 && (mismatch = sums_mismatch(&l, &sum)) < 0) break;   /* a quiet copy */
            struct timespec ms = { 0, 1000000 };
            nanosleep(&ms, NULL);
        }
    }
    if (readable) {
        fields_check(&l);
        if (mismatch >= 0)
            problem("device %d: total %llu bytes, its slots hold %llu", mismatch,
                    (unsigned long long)l.dev[mismatch].used, (unsigned long long)sum);
    }

    printf("{\"path\": ");
    json_string(path, sizeof path);
    printf(", \"exists\": true, \"valid\": %s, \"problems\": [", nproblems ? "false" : "true");
    for (int i = 0; i < nproblems; i++) {
        if (i) printf(", ");
        json_string(problems[i], sizeof problems[i]);
    }
    printf("], \"devices\": [");
    uint32_t ndev = readable ? (l.ndev <= LEDGER_DEVS ? l.ndev : LEDGER_DEVS) : 0;
    for (uint32_t d = 0; d < ndev; d++) {
        const struct ldev *v = &l.dev[d];
        printf("%s{\"index\": %u, \"uuid\": ", d ? ", " : "", d);
        json_string(v->uuid, sizeof v->uuid);
        printf(", \"total\": %llu, \"cap\": ", (unsigned long long)v->total);
        if (v->cap) printf("%llu", (unsigned long long)v->cap);
        else printf("null");
        printf(", \"used\": %llu}", (unsigned long long)v->used);
    }
    printf("], \"processes\": [");
    int first = 1;
    for (int i = 0; readable && i < LEDGER_SLOTS; i++) {
        const struct lslot *s = &l.slot[i];
        if (s->in_use != 1) continue;
        int live = slot_locked(fd, i, &known);
        printf("%s{\"slot\": %d, \"pid\": %d, \"live\": %s, \"denials\": %u, \"used\": [", first ? "" : ", ", i,
               (int)s->pid, live ? "true" : "false", s->denials);
        for (uint32_t d = 0; d < ndev; d++) printf("%s%llu", d ? ", " : "", (unsigned long long)s->used[d]);
        printf("]}");
        first = 0;
    }
    printf("], \"liveness_known\": %s}\n", known ? "true" : "false");
    if (fflush(stdout) != 0) return EXIT_ERROR;
    return nproblems ? EXIT_DAMAGED : EXIT_VALID;
}
