/* cublas: every forwarded GEMM variant (f32, f64, f16, bf16; all transposes; alpha/beta;
 * plain, batched over pointer arrays, strided-batched; math modes; a stream), batched
 * TRSM, gemv, scal, axpy, dot and nrm2, against a float64 reference computed here from the same inputs;
 * then bad arguments, which must get the status real cuBLAS gives. Exit status 0 when every
 * check passed. cuBLASLt too: matmul descriptors, layouts (batched, strided), preferences,
 * the heuristic, cublasLtMatmul with alpha/beta and the RELU/BIAS epilogues, and its errors.
 * Build: cc cublas.c -L target/shims -lcublas -lcublasLt -lcudart -lm -o cublas */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef int cudaError_t;
typedef void *cudaStream_t;
extern cudaError_t cudaMalloc(void **p, size_t n);
extern cudaError_t cudaFree(void *p);
extern cudaError_t cudaMemcpy(void *d, const void *s, size_t n, int kind);
extern cudaError_t cudaStreamCreate(cudaStream_t *s);
extern cudaError_t cudaStreamSynchronize(cudaStream_t s);
extern cudaError_t cudaDeviceSynchronize(void);
extern const char *cudaGetErrorString(cudaError_t e);

typedef void *cublasHandle_t;
typedef int cublasStatus_t;
extern cublasStatus_t cublasCreate_v2(cublasHandle_t *h);
extern cublasStatus_t cublasDestroy_v2(cublasHandle_t h);
extern cublasStatus_t cublasGetVersion_v2(cublasHandle_t h, int *v);
extern cublasStatus_t cublasSetStream_v2(cublasHandle_t h, cudaStream_t s);
extern cublasStatus_t cublasGetStream_v2(cublasHandle_t h, cudaStream_t *s);
extern cublasStatus_t cublasSetMathMode(cublasHandle_t h, int mode);
extern cublasStatus_t cublasGetMathMode(cublasHandle_t h, int *mode);
extern cublasStatus_t cublasSetPointerMode_v2(cublasHandle_t h, int mode);
extern cublasStatus_t cublasSetWorkspace_v2(cublasHandle_t h, void *ws, size_t n);
extern const char *cublasGetStatusString(cublasStatus_t s);
extern const char *cublasGetStatusName(cublasStatus_t s);
extern cublasStatus_t cublasSgemm_v2(cublasHandle_t, int, int, int, int, int, const float *,
                                     const float *, int, const float *, int, const float *,
                                     float *, int);
extern cublasStatus_t cublasDgemm_v2(cublasHandle_t, int, int, int, int, int, const double *,
                                     const double *, int, const double *, int, const double *,
                                     double *, int);
extern cublasStatus_t cublasHgemm(cublasHandle_t, int, int, int, int, int, const uint16_t *,
                                  const void *, int, const void *, int, const uint16_t *,
                                  void *, int);
extern cublasStatus_t cublasGemmEx(cublasHandle_t, int, int, int, int, int, const void *,
                                   const void *, int, int, const void *, int, int, const void *,
                                   void *, int, int, int, int);
extern cublasStatus_t cublasSgemmStridedBatched(cublasHandle_t, int, int, int, int, int,
                                                const float *, const float *, int, long long,
                                                const float *, int, long long, const float *,
                                                float *, int, long long, int);
extern cublasStatus_t cublasGemmStridedBatchedEx(cublasHandle_t, int, int, int, int, int,
                                                 const void *, const void *, int, int, long long,
                                                 const void *, int, int, long long, const void *,
                                                 void *, int, int, long long, int, int, int);
extern cublasStatus_t cublasSgemmBatched(cublasHandle_t, int, int, int, int, int, const float *,
                                         const float *const *, int, const float *const *, int,
                                         const float *, float *const *, int, int);
extern cublasStatus_t cublasGemmBatchedEx(cublasHandle_t, int, int, int, int, int, const void *,
                                          const void *const *, int, int, const void *const *, int,
                                          int, const void *, void *const *, int, int, int, int,
                                          int);
extern cublasStatus_t cublasStrsmBatched(cublasHandle_t, int, int, int, int, int, int,
                                         const float *, const float *const *, int,
                                         float *const *, int, int);
extern cublasStatus_t cublasSgemv_v2(cublasHandle_t, int, int, int, const float *, const float *,
                                     int, const float *, int, const float *, float *, int);
extern cublasStatus_t cublasSscal_v2(cublasHandle_t, int, const float *, float *, int);
extern cublasStatus_t cublasSdot_v2(cublasHandle_t, int, const float *, int, const float *, int,
                                    float *);
extern cublasStatus_t cublasDdot_v2(cublasHandle_t, int, const double *, int, const double *, int,
                                    double *);
extern cublasStatus_t cublasSnrm2_v2(cublasHandle_t, int, const float *, int, float *);
extern cublasStatus_t cublasSaxpy_v2(cublasHandle_t, int, const float *, const float *, int, float *, int);
extern cublasStatus_t cublasDaxpy_v2(cublasHandle_t, int, const double *, const double *, int, double *, int);
extern cublasStatus_t cublasSasum_v2(cublasHandle_t, int, const float *, int, float *);

typedef void *cublasLtHandle_t, *cublasLtMatmulDesc_t, *cublasLtMatrixLayout_t, *cublasLtMatmulPreference_t;
typedef struct { unsigned long long data[8]; } cublasLtMatmulAlgo_t;
typedef struct { cublasLtMatmulAlgo_t algo; size_t workspaceSize; int state; float wavesCount; int reserved[4]; } cublasLtMatmulHeuristicResult_t;
extern cublasStatus_t cublasLtCreate(cublasLtHandle_t *);
extern cublasStatus_t cublasLtDestroy(cublasLtHandle_t);
extern cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t *, int, int);
extern cublasStatus_t cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t);
extern cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t, int, const void *, size_t);
extern cublasStatus_t cublasLtMatmulDescGetAttribute(cublasLtMatmulDesc_t, int, void *, size_t, size_t *);
extern cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t *, int, unsigned long long, unsigned long long, long long);
extern cublasStatus_t cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t);
extern cublasStatus_t cublasLtMatrixLayoutSetAttribute(cublasLtMatrixLayout_t, int, const void *, size_t);
extern cublasStatus_t cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t *);
extern cublasStatus_t cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t);
extern cublasStatus_t cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t, int, const void *, size_t);
extern cublasStatus_t cublasLtMatmulAlgoGetHeuristic(cublasLtHandle_t, cublasLtMatmulDesc_t, cublasLtMatrixLayout_t,
                                                     cublasLtMatrixLayout_t, cublasLtMatrixLayout_t, cublasLtMatrixLayout_t,
                                                     cublasLtMatmulPreference_t, int, cublasLtMatmulHeuristicResult_t *, int *);
extern cublasStatus_t cublasLtMatmul(cublasLtHandle_t, cublasLtMatmulDesc_t, const void *, const void *, cublasLtMatrixLayout_t,
                                     const void *, cublasLtMatrixLayout_t, const void *, const void *, cublasLtMatrixLayout_t,
                                     void *, cublasLtMatrixLayout_t, const cublasLtMatmulAlgo_t *, void *, size_t, cudaStream_t);

enum { H2D = 1, D2H = 2 };
enum { R_32F = 0, R_64F = 1, R_16F = 2, R_16BF = 14 };
enum { C16F = 64, C32F = 68, C64F = 70 };
enum { V_SGEMM, V_DGEMM, V_HGEMM, V_EX, V_SSTRIDED, V_EXSTRIDED, V_SBATCHED, V_EXBATCHED };
static const char *VNAME[] = {"cublasSgemm_v2", "cublasDgemm_v2", "cublasHgemm", "cublasGemmEx",
                              "cublasSgemmStridedBatched", "cublasGemmStridedBatchedEx",
                              "cublasSgemmBatched", "cublasGemmBatchedEx"};

static int failures = 0, checked = 0;
#define CHECK(cond, ...) do { if (!(cond)) { printf("FAILED: " __VA_ARGS__); printf("\n"); fflush(stdout); failures++; } } while (0)
#define CU(call) do { cudaError_t e_ = (call); CHECK(e_ == 0, "%s -> %s", #call, cudaGetErrorString(e_)); } while (0)
#define BL(call) do { cublasStatus_t s_ = (call); CHECK(s_ == 0, "%s -> %s", #call, cublasGetStatusName(s_)); } while (0)

static uint16_t f2h(float f) { /* round to nearest even */
    uint32_t x; memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000; int e = (int)((x >> 23) & 0xff) - 127 + 15; uint32_t m = x & 0x7fffff;
    if (e <= 0) {
        if (e < -10) return sign;
        m |= 0x800000;
        int s = 14 - e;
        uint32_t h = m >> s, r = m & ((1u << s) - 1), half = 1u << (s - 1);
        if (r > half || (r == half && (h & 1))) h++;
        return sign | h;
    }
    if (e >= 31) return sign | 0x7c00;
    uint32_t h = (e << 10) | (m >> 13), r = m & 0x1fff;
    if (r > 0x1000 || (r == 0x1000 && (h & 1))) h++;
    return sign | h;
}
static float h2f(uint16_t h) {
    uint32_t sign = (h & 0x8000u) << 16, e = (h >> 10) & 0x1f, m = h & 0x3ff, x;
    if (e == 0) { if (!m) x = sign; else { e = 113; while (!(m & 0x400)) { m <<= 1; e--; } x = sign | (e << 23) | ((m & 0x3ff) << 13); } }
    else if (e == 31) x = sign | 0x7f800000 | (m << 13);
    else x = sign | ((e + 112) << 23) | (m << 13);
    float f; memcpy(&f, &x, 4); return f;
}
static uint16_t f2bf(float f) { uint32_t x; memcpy(&x, &f, 4); x += 0x7fff + ((x >> 16) & 1); return x >> 16; }
static float bf2f(uint16_t b) { uint32_t x = (uint32_t)b << 16; float f; memcpy(&f, &x, 4); return f; }

static size_t esize(int t) { return t == R_64F ? 8 : t == R_32F ? 4 : 2; }
static double get(const void *p, int t, size_t i) {
    switch (t) {
    case R_32F: return ((const float *)p)[i];
    case R_64F: return ((const double *)p)[i];
    case R_16F: return h2f(((const uint16_t *)p)[i]);
    default: return bf2f(((const uint16_t *)p)[i]);
    }
}
static void put(void *p, int t, size_t i, double v) {
    switch (t) {
    case R_32F: ((float *)p)[i] = (float)v; break;
    case R_64F: ((double *)p)[i] = v; break;
    case R_16F: ((uint16_t *)p)[i] = f2h((float)v); break;
    default: ((uint16_t *)p)[i] = f2bf((float)v); break;
    }
}
static unsigned rng = 12345;
static double rnd(void) { rng = rng * 1103515245u + 12345u; return ((rng >> 8) & 0xffff) / 32768.0 - 1.0; }
/* A scalar in the scale type of a compute type. */
static void scalar(void *out, int compute, double v) {
    if (compute == C16F) { uint16_t h = f2h((float)v); memcpy(out, &h, 2); }
    else if (compute == C64F) memcpy(out, &v, 8);
    else { float f = (float)v; memcpy(out, &f, 4); }
}
static void *dev(size_t n) { void *p = NULL; CU(cudaMalloc(&p, n ? n : 1)); return p; }

static void gemm_case(cublasHandle_t h, int v, int ta, int tb, int m, int n, int k, int ab_t, int c_t,
                      int compute, double alpha, double beta, int batch, double tol) {
    int ar = ta ? k : m, ac = ta ? m : k, br = tb ? n : k, bc = tb ? k : n;
    int lda = ar + 3, ldb = br + 2, ldc = m + 1;
    size_t sa = (size_t)lda * ac + 5, sb = (size_t)ldb * bc + 7, sc = (size_t)ldc * n + 3; /* batch strides */
    size_t ea = esize(ab_t), ec = esize(c_t);
    unsigned char *A = malloc(sa * batch * ea), *B = malloc(sb * batch * ea), *C = malloc(sc * batch * ec), *R = malloc(sc * batch * ec);
    double *ref = malloc(sizeof(double) * sc * batch);
    for (size_t i = 0; i < sa * batch; i++) put(A, ab_t, i, rnd());
    for (size_t i = 0; i < sb * batch; i++) put(B, ab_t, i, rnd());
    for (size_t i = 0; i < sc * batch; i++) { put(C, c_t, i, rnd()); ref[i] = get(C, c_t, i); }
    for (int q = 0; q < batch; q++)
        for (int j = 0; j < n; j++)
            for (int i = 0; i < m; i++) {
                double s = 0;
                for (int l = 0; l < k; l++) {
                    double a = get(A, ab_t, q * sa + (ta ? (size_t)i * lda + l : (size_t)l * lda + i));
                    double b = get(B, ab_t, q * sb + (tb ? (size_t)l * ldb + j : (size_t)j * ldb + l));
                    s += a * b;
                }
                size_t ci = q * sc + (size_t)j * ldc + i;
                ref[ci] = alpha * s + (beta == 0 ? 0 : beta * ref[ci]);
            }
    void *dA = dev(sa * batch * ea), *dB = dev(sb * batch * ea), *dC = dev(sc * batch * ec);
    CU(cudaMemcpy(dA, A, sa * batch * ea, H2D));
    CU(cudaMemcpy(dB, B, sb * batch * ea, H2D));
    CU(cudaMemcpy(dC, C, sc * batch * ec, H2D));
    unsigned char al[16], be[16];
    scalar(al, compute, alpha);
    scalar(be, compute, beta);
    void **ptrs = malloc(sizeof(void *) * 3 * batch), *dptrs = dev(sizeof(void *) * 3 * batch);
    for (int q = 0; q < batch; q++) {
        ptrs[q] = (char *)dA + q * sa * ea;
        ptrs[batch + q] = (char *)dB + q * sb * ea;
        ptrs[2 * batch + q] = (char *)dC + q * sc * ec;
    }
    CU(cudaMemcpy(dptrs, ptrs, sizeof(void *) * 3 * batch, H2D));
    void **pa = dptrs, **pb = (void **)dptrs + batch, **pc = (void **)dptrs + 2 * batch;
    cublasStatus_t s = -1;
    switch (v) {
    case V_SGEMM: s = cublasSgemm_v2(h, ta, tb, m, n, k, (float *)al, dA, lda, dB, ldb, (float *)be, dC, ldc); break;
    case V_DGEMM: s = cublasDgemm_v2(h, ta, tb, m, n, k, (double *)al, dA, lda, dB, ldb, (double *)be, dC, ldc); break;
    case V_HGEMM: s = cublasHgemm(h, ta, tb, m, n, k, (uint16_t *)al, dA, lda, dB, ldb, (uint16_t *)be, dC, ldc); break;
    case V_EX: s = cublasGemmEx(h, ta, tb, m, n, k, al, dA, ab_t, lda, dB, ab_t, ldb, be, dC, c_t, ldc, compute, -1); break;
    case V_SSTRIDED: s = cublasSgemmStridedBatched(h, ta, tb, m, n, k, (float *)al, dA, lda, sa, dB, ldb, sb, (float *)be, dC, ldc, sc, batch); break;
    case V_EXSTRIDED: s = cublasGemmStridedBatchedEx(h, ta, tb, m, n, k, al, dA, ab_t, lda, sa, dB, ab_t, ldb, sb, be, dC, c_t, ldc, sc, batch, compute, -1); break;
    case V_SBATCHED: s = cublasSgemmBatched(h, ta, tb, m, n, k, (float *)al, (const float *const *)pa, lda, (const float *const *)pb, ldb, (float *)be, (float *const *)pc, ldc, batch); break;
    case V_EXBATCHED: s = cublasGemmBatchedEx(h, ta, tb, m, n, k, al, (const void *const *)pa, ab_t, lda, (const void *const *)pb, ab_t, ldb, be, (void *const *)pc, c_t, ldc, batch, compute, -1); break;
    }
    CHECK(s == 0, "%s(ta %d tb %d %dx%dx%d types %d/%d compute %d batch %d) -> %s", VNAME[v], ta, tb, m, n, k, ab_t, c_t, compute, batch, cublasGetStatusName(s));
    CU(cudaDeviceSynchronize());
    CU(cudaMemcpy(R, dC, sc * batch * ec, D2H));
    double worst = 0;
    for (size_t i = 0; i < sc * batch; i++) {
        double e = fabs(get(R, c_t, i) - ref[i]) / (1 + fabs(ref[i]));
        if (e > worst) worst = e;
    }
    CHECK(worst <= tol, "%s(ta %d tb %d %dx%dx%d types %d/%d compute %d alpha %g beta %g batch %d): error %g > %g",
          VNAME[v], ta, tb, m, n, k, ab_t, c_t, compute, alpha, beta, batch, worst, tol);
    checked++;
    cudaFree(dA); cudaFree(dB); cudaFree(dC); cudaFree(dptrs);
    free(A); free(B); free(C); free(R); free(ref); free(ptrs);
}

/* Tolerances (relative to 1 + |ref|): f32 accumulation over k ≤ 40 terms of size ≤ 1 is
 * good to ~1e-5; f16 outputs round to 2^-11; bf16 to 2^-8. */
static void gemms(cublasHandle_t h) {
    for (int ta = 0; ta <= 2; ta++)
        for (int tb = 0; tb <= 2; tb++) {
            gemm_case(h, V_SGEMM, ta, tb, 7, 5, 9, R_32F, R_32F, C32F, 1.5, -0.5, 1, 1e-5);
            gemm_case(h, V_DGEMM, ta, tb, 6, 4, 11, R_64F, R_64F, C64F, -0.75, 2.0, 1, 1e-12);
        }
    gemm_case(h, V_SGEMM, 0, 0, 33, 17, 40, R_32F, R_32F, C32F, 1.0, 0.0, 1, 1e-5);
    gemm_case(h, V_SGEMM, 1, 0, 16, 24, 32, R_32F, R_32F, C32F, 0.0, 1.0, 1, 1e-6);
    gemm_case(h, V_HGEMM, 1, 0, 8, 6, 16, R_16F, R_16F, C16F, 1.0, 0.5, 1, 2e-3);
    gemm_case(h, V_EX, 1, 0, 12, 9, 32, R_16F, R_32F, C32F, 1.0, 0.0, 1, 1e-5);
    gemm_case(h, V_EX, 0, 1, 12, 9, 32, R_16F, R_16F, C32F, 2.0, 1.0, 1, 2e-3);
    gemm_case(h, V_EX, 1, 0, 10, 7, 24, R_16F, R_16F, C16F, 1.0, 0.0, 1, 2e-3);
    gemm_case(h, V_EX, 0, 0, 10, 7, 24, R_16BF, R_32F, C32F, 1.0, -1.0, 1, 1e-5);
    gemm_case(h, V_EX, 1, 1, 10, 7, 24, R_16BF, R_16BF, C32F, 0.5, 0.0, 1, 1e-2);
    gemm_case(h, V_EX, 0, 0, 9, 8, 20, R_32F, R_32F, C32F, 1.0, 0.25, 1, 1e-5);
    gemm_case(h, V_SSTRIDED, 1, 0, 8, 5, 12, R_32F, R_32F, C32F, 1.0, 0.5, 4, 1e-5);
    gemm_case(h, V_EXSTRIDED, 1, 0, 8, 5, 12, R_16F, R_16F, C16F, 1.0, 0.0, 3, 2e-3);
    gemm_case(h, V_EXSTRIDED, 0, 1, 8, 5, 12, R_16F, R_32F, C32F, -1.0, 1.0, 3, 1e-5);
    gemm_case(h, V_SBATCHED, 0, 1, 6, 7, 9, R_32F, R_32F, C32F, 1.0, -2.0, 5, 1e-5);
    gemm_case(h, V_EXBATCHED, 1, 0, 6, 7, 16, R_16F, R_16F, C16F, 1.0, 0.0, 4, 2e-3);
    gemm_case(h, V_EXBATCHED, 1, 0, 6, 7, 16, R_16F, R_32F, C32F, 1.0, 0.0, 2, 1e-5);
    /* Math modes change how cuBLAS may compute, not what it computes within tolerance. */
    int modes[] = {1, 2, 3, 16};
    for (int i = 0; i < 4; i++) {
        BL(cublasSetMathMode(h, modes[i]));
        int got = -1;
        BL(cublasGetMathMode(h, &got));
        CHECK(got == modes[i], "math mode %d read back as %d", modes[i], got);
        gemm_case(h, V_SGEMM, 1, 0, 9, 9, 16, R_32F, R_32F, C32F, 1.0, 0.0, 1, modes[i] == 3 ? 2e-3 : 1e-5);
    }
    BL(cublasSetMathMode(h, 0));
}

static void trsm(cublasHandle_t h) {
    /* Left, lower, no transpose, non-unit: A X = alpha B, batch 2. */
    enum { M = 5, N = 3, LDA = 6, LDB = 7, BATCH = 2 };
    float A[BATCH][LDA * M], B[BATCH][LDB * N], X[BATCH][LDB * N];
    for (int q = 0; q < BATCH; q++) {
        for (int i = 0; i < LDA * M; i++) A[q][i] = (float)rnd();
        for (int i = 0; i < M; i++) A[q][i * LDA + i] = 2.0f + (float)i;
        for (int i = 0; i < LDB * N; i++) B[q][i] = (float)rnd();
    }
    void *dA = dev(sizeof A), *dB = dev(sizeof B), *dp = dev(4 * sizeof(void *));
    CU(cudaMemcpy(dA, A, sizeof A, H2D));
    CU(cudaMemcpy(dB, B, sizeof B, H2D));
    void *ptrs[4] = {dA, (char *)dA + sizeof A[0], dB, (char *)dB + sizeof B[0]};
    CU(cudaMemcpy(dp, ptrs, sizeof ptrs, H2D));
    float alpha = 1.5f;
    BL(cublasStrsmBatched(h, 0, 0, 0, 0, M, N, &alpha, (const float *const *)dp, LDA, (float *const *)((void **)dp + 2), LDB, BATCH));
    CU(cudaMemcpy(X, dB, sizeof X, D2H));
    double worst = 0;
    for (int q = 0; q < BATCH; q++)
        for (int j = 0; j < N; j++)
            for (int i = 0; i < M; i++) {
                double s = 0;
                for (int l = 0; l <= i; l++) s += (double)A[q][l * LDA + i] * X[q][j * LDB + l];
                double e = fabs(s - alpha * B[q][j * LDB + i]);
                if (e > worst) worst = e;
            }
    CHECK(worst < 1e-4, "cublasStrsmBatched: residual %g", worst);
    checked++;
    cudaFree(dA); cudaFree(dB); cudaFree(dp);
}

static void level2(cublasHandle_t h) {
    enum { M = 7, N = 5, LDA = 9, INCX = 2, INCY = 3 };
    float A[LDA * N], x[INCX * M], y[INCY * M], out[INCY * M];
    for (int i = 0; i < LDA * N; i++) A[i] = (float)rnd();
    for (int i = 0; i < INCX * M; i++) x[i] = (float)rnd();
    for (int trans = 0; trans <= 1; trans++) {
        int lx = trans ? M : N, ly = trans ? N : M;
        for (int i = 0; i < INCY * M; i++) y[i] = (float)rnd();
        void *dA = dev(sizeof A), *dx = dev(sizeof x), *dy = dev(sizeof y);
        CU(cudaMemcpy(dA, A, sizeof A, H2D));
        CU(cudaMemcpy(dx, x, sizeof x, H2D));
        CU(cudaMemcpy(dy, y, sizeof y, H2D));
        float alpha = 0.5f, beta = -1.0f;
        BL(cublasSgemv_v2(h, trans, M, N, &alpha, dA, LDA, dx, INCX, &beta, dy, INCY));
        CU(cudaMemcpy(out, dy, sizeof out, D2H));
        double worst = 0;
        for (int i = 0; i < INCY * M; i++) {
            double want = y[i];
            if (i % INCY == 0 && i / INCY < ly) {
                int r = i / INCY;
                double s = 0;
                for (int l = 0; l < lx; l++) s += (double)(trans ? A[r * LDA + l] : A[l * LDA + r]) * x[l * INCX];
                want = alpha * s + beta * y[i];
            }
            double e = fabs(out[i] - want);
            if (e > worst) worst = e;
        }
        CHECK(worst < 1e-5, "cublasSgemv_v2(trans %d): error %g", trans, worst);
        checked++;
        cudaFree(dA); cudaFree(dx); cudaFree(dy);
    }
    float v[10], w[10], a = -3.0f;
    for (int i = 0; i < 10; i++) v[i] = (float)i;
    void *dv = dev(sizeof v);
    CU(cudaMemcpy(dv, v, sizeof v, H2D));
    BL(cublasSscal_v2(h, 5, &a, dv, 2));
    CU(cudaMemcpy(w, dv, sizeof w, D2H));
    for (int i = 0; i < 10; i++) CHECK(w[i] == (i % 2 ? v[i] : a * v[i]), "cublasSscal_v2: [%d] = %g", i, w[i]);
    checked++;
    cudaFree(dv);

    /* axpy, dot and nrm2 (as GEMMs), with increments, in f32 and f64. */
    enum { L = 50 };
    float fx[2 * L], fy[3 * L], fout[3 * L], alpha = 0.5f;
    double dx[L], dy[L], dout[L], dalpha = -2.0;
    for (int i = 0; i < 2 * L; i++) fx[i] = (float)rnd();
    for (int i = 0; i < 3 * L; i++) fy[i] = (float)rnd();
    for (int i = 0; i < L; i++) { dx[i] = rnd(); dy[i] = rnd(); }
    void *dfx = dev(sizeof fx), *dfy = dev(sizeof fy), *ddx = dev(sizeof dx), *ddy = dev(sizeof dy), *dres = dev(8);
    CU(cudaMemcpy(dfx, fx, sizeof fx, H2D));
    CU(cudaMemcpy(dfy, fy, sizeof fy, H2D));
    CU(cudaMemcpy(ddx, dx, sizeof dx, H2D));
    CU(cudaMemcpy(ddy, dy, sizeof dy, H2D));
    double want = 0, wantn = 0, wantd = 0;
    for (int i = 0; i < L; i++) {
        want += (double)fx[2 * i] * fy[3 * i];
        wantn += (double)fx[2 * i] * fx[2 * i];
        wantd += dx[i] * dy[i];
    }
    float got = 0, nrm = 0;
    double gotd = 0;
    BL(cublasSdot_v2(h, L, dfx, 2, dfy, 3, &got));
    BL(cublasSnrm2_v2(h, L, dfx, 2, &nrm));
    BL(cublasDdot_v2(h, L, ddx, 1, ddy, 1, &gotd));
    CHECK(fabs(got - want) < 1e-4 && fabs(nrm - sqrt(wantn)) < 1e-4 && fabs(gotd - wantd) < 1e-12,
          "dot %g (want %g), nrm2 %g (want %g), ddot %g (want %g)", got, want, nrm, sqrt(wantn), gotd, wantd);
    got = 7;
    BL(cublasSdot_v2(h, 0, dfx, 2, dfy, 3, &got));
    CHECK(got == 0, "dot of no elements: %g", got);
    /* In device pointer mode dot writes its result to device memory, without a round trip. */
    BL(cublasSetPointerMode_v2(h, 1));
    BL(cublasSdot_v2(h, L, dfx, 2, dfy, 3, (float *)dres));
    BL(cublasSetPointerMode_v2(h, 0));
    CU(cudaMemcpy(&got, dres, 4, D2H));
    CHECK(fabs(got - want) < 1e-4, "dot in device pointer mode: %g (want %g)", got, want);
    BL(cublasSaxpy_v2(h, L, &alpha, dfx, 2, dfy, 3));
    BL(cublasDaxpy_v2(h, L, &dalpha, ddx, 1, ddy, 1));
    CU(cudaMemcpy(fout, dfy, sizeof fout, D2H));
    CU(cudaMemcpy(dout, ddy, sizeof dout, D2H));
    double worst = 0;
    for (int i = 0; i < 3 * L; i++) {
        double w2 = i % 3 == 0 ? fy[i] + alpha * fx[2 * (i / 3)] : fy[i];
        worst = fmax(worst, fabs(fout[i] - w2));
    }
    for (int i = 0; i < L; i++) worst = fmax(worst, fabs(dout[i] - (dy[i] + dalpha * dx[i])));
    CHECK(worst < 1e-6, "axpy: error %g", worst);
    checked++;
    cudaFree(dfx); cudaFree(dfy); cudaFree(ddx); cudaFree(ddy); cudaFree(dres);
}

static void bad_arguments(cublasHandle_t h) {
    float one = 1, zero = 0;
    void *d = dev(4096);
    CHECK(cublasSgemm_v2(h, 0, 0, 8, 8, 8, &one, d, 7, d, 8, &zero, d, 8) == 7, "lda < m: not CUBLAS_STATUS_INVALID_VALUE");
    CHECK(cublasSgemm_v2(h, 1, 0, 8, 8, 9, &one, d, 8, d, 9, &zero, d, 8) == 7, "lda < k (transposed A)");
    CHECK(cublasSgemm_v2(h, 0, 0, 8, 8, 8, &one, d, 8, d, 8, &zero, d, 7) == 7, "ldc < m");
    CHECK(cublasSgemm_v2(h, 5, 0, 8, 8, 8, &one, d, 8, d, 8, &zero, d, 8) == 7, "bad transa");
    CHECK(cublasSgemm_v2(h, 0, 0, -1, 8, 8, &one, d, 8, d, 8, &zero, d, 8) == 7, "m < 0");
    CHECK(cublasSgemm_v2(h, 0, 0, 8, 8, 8, NULL, d, 8, d, 8, &zero, d, 8) == 7, "null alpha");
    CHECK(cublasSgemmStridedBatched(h, 0, 0, 8, 8, 8, &one, d, 8, 64, d, 8, 64, &zero, d, 8, 64, -1) == 7, "batch < 0");
    CHECK(cublasSgemm_v2(h, 0, 0, 0, 8, 8, &one, d, 1, d, 8, &zero, d, 1) == 0, "m = 0 is a quick return");
    CHECK(cublasGemmEx(h, 0, 0, 8, 8, 8, &one, d, R_32F, 8, d, R_32F, 8, &zero, d, R_32F, 8, 999, -1) == 15, "unknown compute type: not CUBLAS_STATUS_NOT_SUPPORTED");
    CHECK(cublasSetMathMode(h, 9) == 7, "bad math mode");
    BL(cublasSetPointerMode_v2(h, 1));
    CHECK(cublasSgemm_v2(h, 0, 0, 8, 8, 8, d, d, 8, d, 8, d, d, 8) == 15, "device pointer mode: not CUBLAS_STATUS_NOT_SUPPORTED");
    BL(cublasSetPointerMode_v2(h, 0));
    float r;
    CHECK(cublasSasum_v2(h, 4, d, 1, &r) == 15, "cublasSasum_v2 is not supported and says so");
    CHECK(strcmp(cublasGetStatusName(7), "CUBLAS_STATUS_INVALID_VALUE") == 0, "status name");
    CHECK(strstr(cublasGetStatusString(15), "not supported") != NULL, "status string");
    CU(cudaDeviceSynchronize());
    cudaFree(d);
    checked++;
}

/* cublasLtMatmul: D = relu(alpha op(A) op(B) + beta C + bias) over `batch` strided batches,
 * A transposed, against float64; `ab_t` is the type of A and B (f32 or f16), C and D f32. */
static void lt_case(cublasLtHandle_t lt, cudaStream_t st, int ab_t, int epilogue, int batch) {
    int m = 9, n = 6, k = 13;
    long long sa = (long long)k * m + 3, sb = (long long)k * n + 5, sc = (long long)m * n + 7;
    size_t ea = esize(ab_t);
    unsigned char *A = malloc(sa * batch * ea), *B = malloc(sb * batch * ea);
    float *C = malloc(4 * sc * batch), *D = malloc(4 * sc * batch), bias[9];
    for (long long i = 0; i < sa * batch; i++) put(A, ab_t, i, rnd());
    for (long long i = 0; i < sb * batch; i++) put(B, ab_t, i, rnd());
    for (long long i = 0; i < sc * batch; i++) C[i] = (float)rnd();
    for (int i = 0; i < m; i++) bias[i] = (float)rnd();
    void *dA = dev(sa * batch * ea), *dB = dev(sb * batch * ea), *dC = dev(4 * sc * batch), *dD = dev(4 * sc * batch), *dbias = dev(sizeof bias);
    CU(cudaMemcpy(dA, A, sa * batch * ea, H2D));
    CU(cudaMemcpy(dB, B, sb * batch * ea, H2D));
    CU(cudaMemcpy(dC, C, 4 * sc * batch, H2D));
    CU(cudaMemcpy(dbias, bias, sizeof bias, H2D));
    cublasLtMatmulDesc_t desc;
    BL(cublasLtMatmulDescCreate(&desc, C32F, R_32F));
    int t = 1;
    BL(cublasLtMatmulDescSetAttribute(desc, 3 /* TRANSA */, &t, sizeof t));
    BL(cublasLtMatmulDescSetAttribute(desc, 7 /* EPILOGUE */, &epilogue, sizeof epilogue));
    if (epilogue & 4) BL(cublasLtMatmulDescSetAttribute(desc, 8 /* BIAS_POINTER */, &dbias, sizeof dbias));
    int got = -1;
    size_t written = 0;
    BL(cublasLtMatmulDescGetAttribute(desc, 3, &got, sizeof got, &written));
    CHECK(got == 1 && written == 4, "TRANSA read back as %d (%zu bytes)", got, written);
    cublasLtMatrixLayout_t la, lb, lc, ld;
    BL(cublasLtMatrixLayoutCreate(&la, ab_t, k, m, k));
    BL(cublasLtMatrixLayoutCreate(&lb, ab_t, k, n, k));
    BL(cublasLtMatrixLayoutCreate(&lc, R_32F, m, n, m));
    BL(cublasLtMatrixLayoutCreate(&ld, R_32F, m, n, m));
    cublasLtMatrixLayout_t ls[4] = {la, lb, lc, ld};
    long long strides[4] = {sa, sb, sc, sc};
    for (int i = 0; i < 4; i++) {
        BL(cublasLtMatrixLayoutSetAttribute(ls[i], 5 /* BATCH_COUNT */, &batch, sizeof batch));
        BL(cublasLtMatrixLayoutSetAttribute(ls[i], 6 /* STRIDED_BATCH_OFFSET */, &strides[i], sizeof strides[i]));
    }
    cublasLtMatmulPreference_t pref;
    BL(cublasLtMatmulPreferenceCreate(&pref));
    unsigned long long wsmax = 1 << 20;
    BL(cublasLtMatmulPreferenceSetAttribute(pref, 1 /* MAX_WORKSPACE_BYTES */, &wsmax, sizeof wsmax));
    cublasLtMatmulHeuristicResult_t res[4];
    int found = 0;
    BL(cublasLtMatmulAlgoGetHeuristic(lt, desc, la, lb, lc, ld, pref, 4, res, &found));
    CHECK(found == 1 && res[0].state == 0, "heuristic: %d algorithms", found);
    float alpha = 0.75f, beta = -0.5f;
    BL(cublasLtMatmul(lt, desc, &alpha, dA, la, dB, lb, &beta, dC, lc, dD, ld, &res[0].algo, NULL, 0, st));
    CU(cudaStreamSynchronize(st));
    CU(cudaMemcpy(D, dD, 4 * sc * batch, D2H));
    double worst = 0;
    for (int q = 0; q < batch; q++)
        for (int j = 0; j < n; j++)
            for (int i = 0; i < m; i++) {
                double s = 0;
                for (int l = 0; l < k; l++)
                    s += get(A, ab_t, q * sa + (size_t)i * k + l) * get(B, ab_t, q * sb + (size_t)j * k + l);
                double want = alpha * s + beta * C[q * sc + (size_t)j * m + i];
                if (epilogue & 4) want += bias[i];
                if (epilogue & 2) want = want > 0 ? want : 0;
                double e = fabs(D[q * sc + (size_t)j * m + i] - want) / (1 + fabs(want));
                if (e > worst) worst = e;
            }
    CHECK(worst <= 1e-5, "cublasLtMatmul(types %d, epilogue %d, batch %d): error %g", ab_t, epilogue, batch, worst);
    checked++;
    /* Shapes that do not fit: op(A) has k rows where D has m. */
    CHECK(cublasLtMatmul(lt, desc, &alpha, dA, lb, dB, lb, &beta, dC, lc, dD, ld, NULL, NULL, 0, st) == 7,
          "mismatched layouts: not CUBLAS_STATUS_INVALID_VALUE");
    for (int i = 0; i < 4; i++) BL(cublasLtMatrixLayoutDestroy(ls[i]));
    BL(cublasLtMatmulPreferenceDestroy(pref));
    BL(cublasLtMatmulDescDestroy(desc));
    cudaFree(dA); cudaFree(dB); cudaFree(dC); cudaFree(dD); cudaFree(dbias);
    free(A); free(B); free(C); free(D);
}

static void cublaslt(cudaStream_t st) {
    cublasLtHandle_t lt = NULL;
    BL(cublasLtCreate(&lt));
    lt_case(lt, st, R_32F, 1 /* DEFAULT */, 1);
    lt_case(lt, st, R_32F, 6 /* RELU_BIAS */, 3);
    lt_case(lt, st, R_16F, 2 /* RELU */, 2);
    lt_case(lt, st, R_16F, 4 /* BIAS */, 1);
    cublasLtMatmulDesc_t desc;
    BL(cublasLtMatmulDescCreate(&desc, C32F, R_32F));
    int gelu = 32, order = 1;
    CHECK(cublasLtMatmulDescSetAttribute(desc, 7, &gelu, sizeof gelu) == 15, "the GELU epilogue: not CUBLAS_STATUS_NOT_SUPPORTED");
    CHECK(cublasLtMatmulDescSetAttribute(desc, 7, &gelu, 2) == 7, "a short attribute: not CUBLAS_STATUS_INVALID_VALUE");
    cublasLtMatrixLayout_t l;
    BL(cublasLtMatrixLayoutCreate(&l, R_32F, 4, 4, 4));
    CHECK(cublasLtMatrixLayoutSetAttribute(l, 1 /* ORDER */, &order, sizeof order) == 15, "row-major order: not CUBLAS_STATUS_NOT_SUPPORTED");
    CHECK(cublasLtMatrixLayoutCreate(&l, R_32F, 4, 4, 3) == 7, "ld < rows: not CUBLAS_STATUS_INVALID_VALUE");
    BL(cublasLtMatmulDescDestroy(desc));
    BL(cublasLtDestroy(lt));
    CHECK(cublasLtDestroy(lt) == 1, "a destroyed handle: not CUBLAS_STATUS_NOT_INITIALIZED");
    checked++;
}

int main(void) {
    cublasHandle_t h = NULL;
    BL(cublasCreate_v2(&h));
    if (!h) { printf("cublas: no handle\n"); return 1; }
    int version = 0;
    BL(cublasGetVersion_v2(h, &version));
    printf("cublas: version %d\n", version);
    CHECK(version >= 120000, "version %d", version);
    cudaStream_t s, got;
    CU(cudaStreamCreate(&s));
    BL(cublasSetStream_v2(h, s));
    BL(cublasGetStream_v2(h, &got));
    CHECK(got == s, "stream read back");
    void *ws = dev(1 << 20);
    BL(cublasSetWorkspace_v2(h, ws, 1 << 20));
    gemms(h);
    CU(cudaStreamSynchronize(s));
    trsm(h);
    level2(h);
    bad_arguments(h);
    cublaslt(s);
    BL(cublasDestroy_v2(h));
    float one = 1;
    CHECK(cublasSgemm_v2(h, 0, 0, 1, 1, 1, &one, ws, 1, ws, 1, &one, ws, 1) == 1, "destroyed handle: not CUBLAS_STATUS_NOT_INITIALIZED");
    cudaFree(ws);
    if (failures) { printf("cublas: %d checks FAILED\n", failures); return 1; }
    printf("cublas: %d cases checked against float64, all checks passed\n", checked);
    return 0;
}
