/* libcublas.so.12 for the ggml ops test, until vgpu's own libcublas exists: it only lets the
 * loader resolve the 13 functions a registry ggml-cuda build imports. Each answers
 * CUBLAS_STATUS_NOT_SUPPORTED (15) and says so on stderr, so a test that reaches cuBLAS fails
 * clearly instead of computing anything. The ops the test runs never call it. */
#include <stdio.h>

#define NOT_SUPPORTED(name)                                                                   \
    int name(void) {                                                                          \
        fprintf(stderr, "cublas stand-in: %s is not supported\n", #name);                     \
        return 15;                                                                            \
    }

NOT_SUPPORTED(cublasCreate_v2)
NOT_SUPPORTED(cublasDestroy_v2)
NOT_SUPPORTED(cublasGemmBatchedEx)
NOT_SUPPORTED(cublasGemmEx)
NOT_SUPPORTED(cublasGemmStridedBatchedEx)
NOT_SUPPORTED(cublasSetMathMode)
NOT_SUPPORTED(cublasSetStream_v2)
NOT_SUPPORTED(cublasSetWorkspace_v2)
NOT_SUPPORTED(cublasSgemmBatched)
NOT_SUPPORTED(cublasSgemmStridedBatched)
NOT_SUPPORTED(cublasSgemm_v2)
NOT_SUPPORTED(cublasStrsmBatched)

const char *cublasGetStatusString(int status) {
    return status == 15 ? "CUBLAS_STATUS_NOT_SUPPORTED" : "CUBLAS_STATUS_UNKNOWN";
}
