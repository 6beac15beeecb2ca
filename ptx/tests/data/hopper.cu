// Test kernel for the PTX parser: cluster launch directives and a register cap (sm_90).
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
#define CLUSTER __cluster_dims__(2, 1, 1)
#else
#define CLUSTER
#endif

__global__ void CLUSTER __maxnreg__(64) clustered(int* out) {
    out[blockIdx.x * blockDim.x + threadIdx.x] = (int)(blockIdx.x ^ threadIdx.x);
}
