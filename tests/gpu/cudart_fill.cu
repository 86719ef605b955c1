// A plain CUDA C program: reports cudaMemGetInfo, then fills device memory with cudaMalloc
// (or cudaMallocAsync with "async") until a 1 MiB request is refused. One line of key=value.
// Built twice by tests/gpu/acceptance.py: with the static libcudart (nvcc's default) and -cudart shared.
#include <cuda_runtime.h>
#include <stdio.h>
#include <string.h>
#include <vector>

int main(int argc, char **argv) {
    bool use_async = argc > 1 && strcmp(argv[1], "async") == 0;
    size_t free_b = 0, total_b = 0;
    cudaError_t err = cudaMemGetInfo(&free_b, &total_b);
    if (err != cudaSuccess) { printf("error=%s\n", cudaGetErrorName(err)); return 1; }
    cudaStream_t stream;
    cudaStreamCreate(&stream);
    std::vector<void *> blocks;
    size_t chunk = 256u << 20, held = 0;
    cudaError_t first_refusal = cudaSuccess;
    while (chunk >= (1u << 20)) {
        void *p = nullptr;
        err = use_async ? cudaMallocAsync(&p, chunk, stream) : cudaMalloc(&p, chunk);
        if (use_async && err == cudaSuccess) err = cudaStreamSynchronize(stream);
        if (err == cudaSuccess) { blocks.push_back(p); held += chunk; continue; }
        if (first_refusal == cudaSuccess) first_refusal = err;
        cudaGetLastError();  // clear the sticky-free error so the loop can go on
        chunk /= 2;
    }
    cudaDeviceSynchronize();
    printf("total=%zu free=%zu held=%zu error=%s\n", total_b, free_b, held,
           cudaGetErrorName(first_refusal));
    for (void *p : blocks) use_async ? cudaFreeAsync(p, stream) : cudaFree(p);
    cudaStreamSynchronize(stream);
    return first_refusal == cudaErrorMemoryAllocation ? 0 : 2;
}
