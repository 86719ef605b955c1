// A module with 6 GiB of __device__ globals, loaded by classes.cu's "module" mode (nvcc -cubin).
__device__ char big[6ull << 30];
extern "C" __global__ void touch(int i) { big[i] = 1; }
