// Test kernels for the PTX parser: tensor cores through wmma and through inline mma.sync /
// ldmatrix, cp.async, and a switch and a function pointer call.
#include <cuda_fp16.h>
#include <mma.h>
using namespace nvcuda;

__global__ void wmma_16x16(const half* a, const half* b, float* c) {
    wmma::fragment<wmma::matrix_a, 16, 16, 16, half, wmma::row_major> fa;
    wmma::fragment<wmma::matrix_b, 16, 16, 16, half, wmma::col_major> fb;
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> fc;
    wmma::fill_fragment(fc, 0.0f);
    wmma::load_matrix_sync(fa, a, 16);
    wmma::load_matrix_sync(fb, b, 16);
    wmma::mma_sync(fc, fa, fb, fc);
    wmma::store_matrix_sync(c, fc, 16, wmma::mem_row_major);
}

__global__ void mma_ldmatrix(const half* a, const unsigned* b, float* d) {
    __shared__ __align__(16) half tile[16 * 16];
    int lane = threadIdx.x & 31;
    for (int j = lane; j < 256; j += 32) tile[j] = a[j];
    __syncthreads();
    unsigned r0, r1;
    unsigned addr = (unsigned)__cvta_generic_to_shared(&tile[(lane & 15) * 16]);
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0, %1}, [%2];"
                 : "=r"(r0), "=r"(r1) : "r"(addr));
    float c0 = 0.f, c1 = 0.f, c2 = 0.f, c3 = 0.f;
    asm volatile("mma.sync.aligned.m16n8k8.row.col.f32.f16.f16.f32 "
                 "{%0, %1, %2, %3}, {%4, %5}, {%6}, {%0, %1, %2, %3};"
                 : "+f"(c0), "+f"(c1), "+f"(c2), "+f"(c3)
                 : "r"(r0), "r"(r1), "r"(b[lane]));
    unsigned pr;
    asm("prmt.b32 %0, %1, %2, 0x3210;" : "=r"(pr) : "r"(r0), "r"(r1));
    d[lane * 4 + 0] = c0;
    d[lane * 4 + 1] = c1;
    d[lane * 4 + 2] = c2 + (float)pr;
    d[lane * 4 + 3] = c3;
}

__global__ void async_copy(const float4* in, float4* out) {
    __shared__ float4 buf[128];
    unsigned dst = (unsigned)__cvta_generic_to_shared(&buf[threadIdx.x]);
    asm volatile("cp.async.ca.shared.global [%0], [%1], 16;" :: "r"(dst), "l"(in + threadIdx.x));
    asm volatile("cp.async.wait_all;" ::: "memory");
    __syncthreads();
    out[threadIdx.x] = buf[127 - threadIdx.x];
}

typedef float (*unary_fn)(float);
__device__ float twice(float x) { return 2.0f * x; }
__device__ float square(float x) { return x * x; }
__device__ unary_fn g_fns[2] = {twice, square};

__global__ void dispatch(float* out, int which, int op) {
    unary_fn f = g_fns[which & 1];
    float v = out[threadIdx.x];
    switch (op) {
    case 0: v += 1.0f; break;
    case 1: v -= 3.0f; break;
    case 2: v *= 5.0f; break;
    case 3: v = -v; break;
    case 4: v = v * v * 0.5f; break;
    case 5: v = __fsqrt_rn(v); break;
    case 6: v = 7.0f; break;
    default: break;
    }
    out[threadIdx.x] = f(v);
}
