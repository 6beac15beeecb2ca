// Test kernels for the PTX parser (ptx/tests/parse.rs): shared memory, barriers, atomics,
// warp shuffles and votes, f16 arithmetic, a device function call, local arrays and printf.
// The .ptx files beside it are generated from it (see gen.sh).
#include <cstdio>
#include <cuda_fp16.h>

__device__ unsigned int g_hits;
__device__ float g_weights[4] = {1.0f, 0.5f, 0.25f, 0.125f};
__constant__ int c_offsets[3] = {-1, 0, 1};

__device__ __noinline__ float scale_by(float x, int k) {
    return x * g_weights[k & 3] + (float)c_offsets[k % 3];
}

__global__ void __launch_bounds__(256, 2) block_sum(const float* in, float* out, int n) {
    __shared__ float tile[256];
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    tile[threadIdx.x] = i < n ? in[i] : 0.0f;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) tile[threadIdx.x] += tile[threadIdx.x + s];
        __syncthreads();
    }
    if (threadIdx.x == 0) {
        atomicAdd(out, tile[0]);
        atomicInc(&g_hits, 1u << 30);
    }
}

__global__ void warp_ops(const int* in, int* out) {
    int lane = threadIdx.x & 31;
    int v = in[blockIdx.x * blockDim.x + threadIdx.x];
    for (int o = 16; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
    int up = __shfl_up_sync(0xffffffffu, v, 1);
    int idx = __shfl_sync(0xffffffffu, v, (lane + 3) & 31);
    unsigned ballot = __ballot_sync(0xffffffffu, v > 0);
    int all = __all_sync(0xffffffffu, up >= 0);
    int any = __any_sync(0xffffffffu, idx < 0);
    unsigned peers = __match_any_sync(0xffffffffu, v);
    if (lane == 0) {
        out[blockIdx.x * 4 + 0] = v;
        out[blockIdx.x * 4 + 1] = (int)ballot + all;
        out[blockIdx.x * 4 + 2] = any + __popc(peers);
        atomicMax(&out[blockIdx.x * 4 + 3], idx);
        atomicCAS(&out[blockIdx.x * 4 + 3], 0, up);
    }
}

__global__ void half_math(const __half* a, const __half2* b, __half* c, __half2* d, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    __half x = __hfma(a[i], __float2half(1.5f), __int2half_rn(i));
    __half2 y = __hmul2(b[i], __halves2half2(x, __float2half(-2.0f)));
    c[i] = __hadd(x, __low2half(y));
    d[i] = __h2div(y, __float2half2_rn(3.0f));
}

__global__ void calls_and_locals(float* out, int k, int n) {
    float local[24];
    for (int j = 0; j < 24; j++) local[j] = scale_by((float)j, j + k);
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = local[(i + k) % 24] + sinf(out[i]) + expf(-out[i]);
    if (i == 0) printf("calls_and_locals: k=%d first=%f hits=%u\n", k, local[0], g_hits);
}
