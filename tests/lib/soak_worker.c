/* soak_worker: allocates and frees device memory at random, forever, and keeps in a shared record
 * file a lower bound of what it holds: added after an allocation succeeded, taken off before the
 * free is asked.  tests/lib/test_soak.py stops every worker at once and sums the records.
 *   soak_worker RECORD_FILE INDEX SEED */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

typedef int CUresult;
typedef int CUdevice;
typedef void *CUcontext;
typedef unsigned long long CUdeviceptr;
CUresult cuInit(unsigned int);
CUresult cuDeviceGet(CUdevice *, int);
CUresult cuDevicePrimaryCtxRetain(CUcontext *, CUdevice);
CUresult cuCtxSetCurrent(CUcontext);
CUresult cuMemAlloc_v2(CUdeviceptr *, size_t);
CUresult cuMemFree_v2(CUdeviceptr);

#define HOLD_MAX 16
#define MiB (1ull << 20)

int main(int argc, char **argv)
{
    if (argc != 4) { fprintf(stderr, "usage: soak_worker RECORD_FILE INDEX SEED\n"); return 2; }
    int fd = open(argv[1], O_RDWR);
    int index = atoi(argv[2]);
    unsigned seed = (unsigned)strtoul(argv[3], NULL, 10);
    int64_t *records = fd < 0 ? MAP_FAILED : mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (records == MAP_FAILED || index < 0 || index >= 512) { perror("soak_worker: record file"); return 2; }
    int64_t *held = &records[index];
    CUdevice dev;
    CUcontext ctx;
    if (cuInit(0) || cuDeviceGet(&dev, 0) || cuDevicePrimaryCtxRetain(&ctx, dev) || cuCtxSetCurrent(ctx)) return 3;
    printf("ready\n");
    fflush(stdout);
    CUdeviceptr ptr[HOLD_MAX];
    size_t size[HOLD_MAX];
    int n = 0;
    for (;;) {
        if (n < HOLD_MAX && (n == 0 || rand_r(&seed) % 2)) {
            size_t want = (1 + rand_r(&seed) % 96) * MiB;
            if (cuMemAlloc_v2(&ptr[n], want) == 0) {
                size[n++] = want;
                __atomic_add_fetch(held, (int64_t)want, __ATOMIC_SEQ_CST);
            }
        } else {
            int i = rand_r(&seed) % n;
            __atomic_sub_fetch(held, (int64_t)size[i], __ATOMIC_SEQ_CST);
            cuMemFree_v2(ptr[i]);
            ptr[i] = ptr[--n];
            size[i] = size[n];
        }
        if (rand_r(&seed) % 8 == 0) usleep(200);
    }
}
