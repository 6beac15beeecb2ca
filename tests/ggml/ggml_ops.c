/* Real ggml ops on the vGPU: a registry build of ggml's CUDA backend computes each op on the
 * soft device (its kernels run from their PTX), and ggml's CPU backend computes the same op
 * on the same inputs; the two must agree within the op's tolerance. Sizes leave partial
 * blocks and warps (rows of 320, 5 rows). ggml's C API is declared here, as the ggml 0.27
 * headers define it. Exit status 0 when every op agrees. */
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

struct ggml_init_params { size_t mem_size; void *mem_buffer; bool no_alloc; };
typedef struct ggml_context ggml_context;
typedef struct ggml_tensor ggml_tensor;
typedef struct ggml_cgraph ggml_cgraph;
typedef void *ggml_backend_t;
typedef void *ggml_backend_buffer_t;
enum { F32 = 0, F16 = 1, Q4_0 = 2, Q8_0 = 8, Q4_K = 12, Q6_K = 14, I32 = 26, I64 = 27 };

ggml_context *ggml_init(struct ggml_init_params);
void ggml_free(ggml_context *);
ggml_tensor *ggml_new_tensor_1d(ggml_context *, int, int64_t);
ggml_tensor *ggml_new_tensor_2d(ggml_context *, int, int64_t, int64_t);
ggml_tensor *ggml_new_tensor_3d(ggml_context *, int, int64_t, int64_t, int64_t);
ggml_tensor *ggml_rms_norm(ggml_context *, ggml_tensor *, float);
ggml_tensor *ggml_norm(ggml_context *, ggml_tensor *, float);
ggml_tensor *ggml_add(ggml_context *, ggml_tensor *, ggml_tensor *);
ggml_tensor *ggml_sub(ggml_context *, ggml_tensor *, ggml_tensor *);
ggml_tensor *ggml_div(ggml_context *, ggml_tensor *, ggml_tensor *);
ggml_tensor *ggml_mul(ggml_context *, ggml_tensor *, ggml_tensor *);
ggml_tensor *ggml_scale(ggml_context *, ggml_tensor *, float);
ggml_tensor *ggml_silu(ggml_context *, ggml_tensor *);
ggml_tensor *ggml_gelu(ggml_context *, ggml_tensor *);
ggml_tensor *ggml_soft_max(ggml_context *, ggml_tensor *);
ggml_tensor *ggml_soft_max_ext(ggml_context *, ggml_tensor *, ggml_tensor *, float, float);
ggml_tensor *ggml_get_rows(ggml_context *, ggml_tensor *, ggml_tensor *);
ggml_tensor *ggml_cpy(ggml_context *, ggml_tensor *, ggml_tensor *);
ggml_tensor *ggml_mul_mat(ggml_context *, ggml_tensor *, ggml_tensor *);
ggml_tensor *ggml_swiglu(ggml_context *, ggml_tensor *);
ggml_tensor *ggml_geglu(ggml_context *, ggml_tensor *);
ggml_tensor *ggml_set_rows(ggml_context *, ggml_tensor *, ggml_tensor *, ggml_tensor *);
ggml_tensor *ggml_transpose(ggml_context *, ggml_tensor *);
ggml_tensor *ggml_cont(ggml_context *, ggml_tensor *);
ggml_tensor *ggml_diag_mask_inf(ggml_context *, ggml_tensor *, int);
ggml_tensor *ggml_sum_rows(ggml_context *, ggml_tensor *);
ggml_tensor *ggml_argmax(ggml_context *, ggml_tensor *);
ggml_tensor *ggml_flash_attn_ext(ggml_context *, ggml_tensor *, ggml_tensor *, ggml_tensor *,
                                 ggml_tensor *, float, float, float);
ggml_tensor *ggml_rope_ext(ggml_context *, ggml_tensor *, ggml_tensor *, ggml_tensor *, int, int,
                           int, float, float, float, float, float, float);
ggml_cgraph *ggml_new_graph(ggml_context *);
void ggml_build_forward_expand(ggml_cgraph *, ggml_tensor *);
size_t ggml_nbytes(const ggml_tensor *);
size_t ggml_quantize_chunk(int, const float *, void *, int64_t, int64_t, int64_t, const float *);
size_t ggml_row_size(int, int64_t);
ggml_backend_buffer_t ggml_backend_alloc_ctx_tensors(ggml_context *, ggml_backend_t);
void ggml_backend_buffer_free(ggml_backend_buffer_t);
void ggml_backend_tensor_set(ggml_tensor *, const void *, size_t, size_t);
void ggml_backend_tensor_get(const ggml_tensor *, void *, size_t, size_t);
int ggml_backend_graph_compute(ggml_backend_t, ggml_cgraph *);
ggml_backend_t ggml_backend_cuda_init(int);
int ggml_backend_cuda_get_device_count(void);
void ggml_backend_cuda_get_device_description(int, char *, size_t);
void ggml_backend_cuda_get_device_memory(int, size_t *, size_t *);
ggml_backend_t ggml_backend_cpu_init(void);
void ggml_backend_cpu_set_n_threads(ggml_backend_t backend, int n_threads);
void ggml_backend_free(ggml_backend_t);

#define N 320 /* a row: ten 32-element quantization blocks, not a power of two */
#define R 5   /* rows */
#define HEADS 4
#define HEAD_DIM 64
#define B 16  /* columns of the batched products (ggml's MMQ kernels, int8 tensor-core mma) */
#define K 512  /* rows of the k-quant products: two 256-element super-blocks */
#define M 96   /* their outputs */
#define KV 256 /* keys and values of the attention */
#define BG 64  /* columns of the products ggml hands to cuBLAS (more than its own kernels take) */
#define QG 32  /* queries of the batched K·Q product (cuBLAS strided-batched GEMM) */
#define MAX_OUT (KV * QG * HEADS)

/* The ops, each with its tolerance on the normalized mean squared error
 * sum((cpu - vgpu)^2) / sum(cpu^2), the measure llama.cpp's test-backend-ops uses: exact ops
 * must agree exactly; where the two backends round differently (the CPU backend rounds the
 * activations of an f16 mat-vec to f16, and quantizes those of a q8_0/q4_0 one to q8_0 where
 * the CUDA backend uses q8_1; gelu uses a table on the CPU) the tolerance is test-backend-ops'.
 * For the k-quant products the activations are quantized in blocks of 256 on the CPU (q8_K)
 * and of 32 on the vGPU (q8_1), so the two differ by more: there each must also be as close
 * to the exact product of the f32 weights as the CPU backend is (within 25%). */
enum { RMS_NORM, NORM, ADD, MUL, SCALE, SILU, GELU, SOFT_MAX, GET_ROWS, CPY_F16, ROPE,
       MATVEC_F32, MATVEC_F16, MATVEC_Q8_0, MATVEC_Q4_0, MMQ_Q8_0, MMQ_Q4_0, MATVEC_Q4_K,
       MATVEC_Q6_K, MMQ_Q4_K, MMQ_Q6_K, SWIGLU, TRANSPOSE, DIAG_MASK, SUM_ROWS, ARGMAX,
       FLASH_ATTN_1, FLASH_ATTN_8, GEMM_F32, GEMM_F16, GEMM_KQ, SUB, DIV, GEGLU, SET_ROWS_F16,
       SET_ROWS_Q8_0, CPY_Q8_0, CPY_F32, GET_ROWS_F16, GET_ROWS_Q8_0, ROPE_NORM, SOFT_MAX_EXT, OPS };
static const char *names[OPS] = {
    "rms_norm", "norm", "add (broadcast row)", "mul", "scale", "silu", "gelu", "soft_max",
    "get_rows", "cpy f32->f16", "rope (neox)", "mul_mat f32 (mat-vec)", "mul_mat f16 (mat-vec)",
    "mul_mat q8_0 (mat-vec)", "mul_mat q4_0 (mat-vec)", "mul_mat q8_0 (16 columns)",
    "mul_mat q4_0 (16 columns)", "mul_mat q4_K (mat-vec)", "mul_mat q6_K (mat-vec)",
    "mul_mat q4_K (16 columns)", "mul_mat q6_K (16 columns)", "swiglu", "cont(transpose)",
    "diag_mask_inf + soft_max", "sum_rows", "argmax", "flash_attn_ext (1 query)",
    "flash_attn_ext (8 queries)", "mul_mat f32 (64 cols, cuBLAS)", "mul_mat f16 (64 cols, cuBLAS)",
    "mul_mat f16 K·Q (batched cuBLAS)", "sub (broadcast row)", "div (broadcast row)", "geglu",
    "set_rows f32->f16", "set_rows f32->q8_0", "cpy f32->q8_0", "cpy f16->f32", "get_rows f16",
    "get_rows q8_0", "rope (normal)", "soft_max (scale, mask)",
};
static const double tolerance[OPS] = {
    1e-7, 1e-7, 0, 0, 0, 1e-7, 1e-6, 1e-7, 0, 0, 1e-7, 1e-7, 5e-4, 5e-4, 5e-4, 5e-4, 5e-4,
    1e-3, 1e-3, 1e-3, 1e-3, 1e-7, 0, 1e-7, 1e-7, 0, 5e-4, 5e-4, 1e-7, 5e-4, 5e-4, 0, 1e-7,
    1e-6, 0, 1e-7, 1e-7, 0, 0, 0, 1e-7, 1e-7,
};

static float xs[N * R], ys[N], ws[N * N], vs[N], bs[N * B], wks[K * M], vks[K * B], gs[N * BG];
static unsigned char wq4k[K * M], wq6k[K * M];
static float qs[HEAD_DIM * 8 * HEADS], kvs[HEAD_DIM * KV * HEADS];
static uint16_t kh[HEAD_DIM * KV * HEADS], vh[HEAD_DIM * KV * HEADS];
static int32_t rows[3] = {4, 0, 2}, pos[R] = {0, 1, 2, 7, 30};
/* Where set_rows puts the R rows of x among the SR rows of its destination (others keep theirs). */
#define SR 8
static int64_t dest_rows[R] = {6, 0, 3, 7, 1};
/* An attention mask: each row hides the columns past its own, as a causal one does. */
static float mask[N * R];
static unsigned char wq8[N * N * 2], wq4[N * N];
static uint16_t wh[N * N];

static void inputs(void) {
    for (int i = 0; i < N * R; i++) xs[i] = sinf(i * 0.37f) * 3.0f;
    for (int i = 0; i < N; i++) ys[i] = cosf(i * 0.11f);
    for (int i = 0; i < N * N; i++) ws[i] = sinf(i * 0.013f) * 0.5f;
    for (int i = 0; i < N; i++) vs[i] = cosf(i * 0.7f);
    for (int i = 0; i < N * B; i++) bs[i] = sinf(i * 0.29f + 1.0f);
    for (int i = 0; i < N * BG; i++) gs[i] = cosf(i * 0.31f + 0.5f);
    for (int i = 0; i < K * M; i++) wks[i] = cosf(i * 0.021f) * 0.7f;
    for (int i = 0; i < K * B; i++) vks[i] = sinf(i * 0.43f);
    for (int i = 0; i < HEAD_DIM * 8 * HEADS; i++) qs[i] = sinf(i * 0.3f);
    for (int i = 0; i < N * R; i++) mask[i] = i % N > 250 + 10 * (i / N) ? -INFINITY : 0.0f;
    for (int i = 0; i < HEAD_DIM * KV * HEADS; i++) kvs[i] = cosf(i * 0.017f);
    ggml_quantize_chunk(F16, kvs, kh, 0, KV * HEADS, HEAD_DIM, NULL);
    for (int i = 0; i < HEAD_DIM * KV * HEADS; i++) kvs[i] = sinf(i * 0.05f);
    ggml_quantize_chunk(F16, kvs, vh, 0, KV * HEADS, HEAD_DIM, NULL);
    ggml_quantize_chunk(Q4_K, wks, wq4k, 0, M, K, NULL);
    ggml_quantize_chunk(Q6_K, wks, wq6k, 0, M, K, NULL);
    ggml_quantize_chunk(Q8_0, ws, wq8, 0, N, N, NULL);
    ggml_quantize_chunk(Q4_0, ws, wq4, 0, N, N, NULL);
    ggml_quantize_chunk(F16, ws, wh, 0, N, N, NULL);
}

/* An f16's value: sign, exponent and mantissa moved into place. */
static float half_to_float(uint16_t hb) {
    uint32_t s = hb & 0x8000u, e = (hb >> 10) & 0x1f, m = hb & 0x3ff;
    float f = e == 31 ? (m ? NAN : INFINITY)
                      : e == 0 ? ldexpf((float)m, -24) : ldexpf((float)(m | 0x400), (int)e - 25);
    return s ? -f : f;
}

/* Computes every op on backend `be`; out[op] gets its result, count[op] its length. */
static void run(ggml_backend_t be, float out[OPS][MAX_OUT], int count[OPS]) {
    struct ggml_init_params p = {1 << 20, NULL, true};
    ggml_context *ctx = ggml_init(p);
    ggml_tensor *x = ggml_new_tensor_2d(ctx, F32, N, R);
    ggml_tensor *y = ggml_new_tensor_1d(ctx, F32, N);
    ggml_tensor *w = ggml_new_tensor_2d(ctx, F32, N, N);
    ggml_tensor *w16 = ggml_new_tensor_2d(ctx, F16, N, N);
    ggml_tensor *w8 = ggml_new_tensor_2d(ctx, Q8_0, N, N);
    ggml_tensor *w4 = ggml_new_tensor_2d(ctx, Q4_0, N, N);
    ggml_tensor *v = ggml_new_tensor_2d(ctx, F32, N, 1);
    ggml_tensor *vb = ggml_new_tensor_2d(ctx, F32, N, B);
    ggml_tensor *wk4 = ggml_new_tensor_2d(ctx, Q4_K, K, M);
    ggml_tensor *wk6 = ggml_new_tensor_2d(ctx, Q6_K, K, M);
    ggml_tensor *vk = ggml_new_tensor_2d(ctx, F32, K, 1);
    ggml_tensor *vkb = ggml_new_tensor_2d(ctx, F32, K, B);
    ggml_tensor *sq = ggml_new_tensor_2d(ctx, F32, R, R);
    ggml_tensor *q1 = ggml_new_tensor_3d(ctx, F32, HEAD_DIM, 1, HEADS);
    ggml_tensor *q8 = ggml_new_tensor_3d(ctx, F32, HEAD_DIM, 8, HEADS);
    ggml_tensor *kk = ggml_new_tensor_3d(ctx, F16, HEAD_DIM, KV, HEADS);
    ggml_tensor *vv = ggml_new_tensor_3d(ctx, F16, HEAD_DIM, KV, HEADS);
    ggml_tensor *idx = ggml_new_tensor_1d(ctx, I32, 3);
    ggml_tensor *ps = ggml_new_tensor_1d(ctx, I32, R);
    ggml_tensor *h = ggml_new_tensor_2d(ctx, F16, N, R);
    ggml_tensor *q = ggml_new_tensor_3d(ctx, F32, HEAD_DIM, HEADS, R);
    ggml_tensor *vg = ggml_new_tensor_2d(ctx, F32, N, BG);
    ggml_tensor *qg = ggml_new_tensor_3d(ctx, F32, HEAD_DIM, QG, HEADS);
    ggml_tensor *sh = ggml_new_tensor_2d(ctx, F16, N, SR);
    ggml_tensor *s8 = ggml_new_tensor_2d(ctx, Q8_0, N, SR);
    ggml_tensor *dst = ggml_new_tensor_1d(ctx, I64, R);
    ggml_tensor *h8 = ggml_new_tensor_2d(ctx, Q8_0, N, R);
    ggml_tensor *hin = ggml_new_tensor_2d(ctx, F16, N, R);
    ggml_tensor *hout = ggml_new_tensor_2d(ctx, F32, N, R);
    ggml_tensor *m = ggml_new_tensor_2d(ctx, F32, N, R);
    ggml_tensor *o[OPS];
    o[RMS_NORM] = ggml_rms_norm(ctx, x, 1e-5f);
    o[NORM] = ggml_norm(ctx, x, 1e-5f);
    o[ADD] = ggml_add(ctx, x, y);
    o[MUL] = ggml_mul(ctx, x, y);
    o[SCALE] = ggml_scale(ctx, x, 0.125f);
    o[SILU] = ggml_silu(ctx, x);
    o[GELU] = ggml_gelu(ctx, x);
    o[SOFT_MAX] = ggml_soft_max(ctx, x);
    o[GET_ROWS] = ggml_get_rows(ctx, x, idx);
    o[CPY_F16] = ggml_cpy(ctx, x, h);
    o[ROPE] = ggml_rope_ext(ctx, q, ps, NULL, HEAD_DIM, 2 /* neox */, 128, 10000.0f, 1.0f, 0.0f,
                            1.0f, 32.0f, 1.0f);
    o[MATVEC_F32] = ggml_mul_mat(ctx, w, v);
    o[MATVEC_F16] = ggml_mul_mat(ctx, w16, v);
    o[MATVEC_Q8_0] = ggml_mul_mat(ctx, w8, v);
    o[MATVEC_Q4_0] = ggml_mul_mat(ctx, w4, v);
    o[MMQ_Q8_0] = ggml_mul_mat(ctx, w8, vb);
    o[MMQ_Q4_0] = ggml_mul_mat(ctx, w4, vb);
    o[MATVEC_Q4_K] = ggml_mul_mat(ctx, wk4, vk);
    o[MATVEC_Q6_K] = ggml_mul_mat(ctx, wk6, vk);
    o[MMQ_Q4_K] = ggml_mul_mat(ctx, wk4, vkb);
    o[MMQ_Q6_K] = ggml_mul_mat(ctx, wk6, vkb);
    o[SWIGLU] = ggml_swiglu(ctx, x);
    o[TRANSPOSE] = ggml_cont(ctx, ggml_transpose(ctx, x));
    o[DIAG_MASK] = ggml_soft_max(ctx, ggml_diag_mask_inf(ctx, sq, 0));
    o[SUM_ROWS] = ggml_sum_rows(ctx, x);
    o[ARGMAX] = ggml_argmax(ctx, x);
    o[FLASH_ATTN_1] = ggml_flash_attn_ext(ctx, q1, kk, vv, NULL, 0.125f, 0.0f, 0.0f);
    o[FLASH_ATTN_8] = ggml_flash_attn_ext(ctx, q8, kk, vv, NULL, 0.125f, 0.0f, 0.0f);
    o[GEMM_F32] = ggml_mul_mat(ctx, w, vg);
    o[GEMM_F16] = ggml_mul_mat(ctx, w16, vg);
    o[GEMM_KQ] = ggml_mul_mat(ctx, kk, qg);
    o[SUB] = ggml_sub(ctx, x, y);
    o[DIV] = ggml_div(ctx, x, y);
    o[GEGLU] = ggml_geglu(ctx, x);
    o[SET_ROWS_F16] = ggml_set_rows(ctx, sh, x, dst);
    o[SET_ROWS_Q8_0] = ggml_set_rows(ctx, s8, x, dst);
    o[CPY_Q8_0] = ggml_cpy(ctx, x, h8);
    o[CPY_F32] = ggml_cpy(ctx, hin, hout);
    o[GET_ROWS_F16] = ggml_get_rows(ctx, w16, idx);
    o[GET_ROWS_Q8_0] = ggml_get_rows(ctx, w8, idx);
    o[ROPE_NORM] = ggml_rope_ext(ctx, q, ps, NULL, HEAD_DIM, 0, 128, 10000.0f, 1.0f, 0.0f, 1.0f,
                                 32.0f, 1.0f);
    o[SOFT_MAX_EXT] = ggml_soft_max_ext(ctx, x, m, 0.125f, 0.0f);
    ggml_cgraph *g = ggml_new_graph(ctx);
    for (int i = 0; i < OPS; i++) ggml_build_forward_expand(g, o[i]);
    ggml_backend_buffer_t buf = ggml_backend_alloc_ctx_tensors(ctx, be);
    if (!buf) {
        fprintf(stderr, "ggml_ops: allocating the tensors failed\n");
        exit(2);
    }
    ggml_backend_tensor_set(x, xs, 0, sizeof xs);
    ggml_backend_tensor_set(q, xs, 0, ggml_nbytes(q));
    ggml_backend_tensor_set(y, ys, 0, sizeof ys);
    ggml_backend_tensor_set(w, ws, 0, sizeof ws);
    ggml_backend_tensor_set(w16, wh, 0, ggml_nbytes(w16));
    ggml_backend_tensor_set(w8, wq8, 0, ggml_nbytes(w8));
    ggml_backend_tensor_set(w4, wq4, 0, ggml_nbytes(w4));
    ggml_backend_tensor_set(v, vs, 0, sizeof vs);
    ggml_backend_tensor_set(vb, bs, 0, sizeof bs);
    ggml_backend_tensor_set(wk4, wq4k, 0, ggml_nbytes(wk4));
    ggml_backend_tensor_set(wk6, wq6k, 0, ggml_nbytes(wk6));
    ggml_backend_tensor_set(vk, vks, 0, sizeof(float) * K);
    ggml_backend_tensor_set(vkb, vks, 0, sizeof vks);
    ggml_backend_tensor_set(sq, xs, 0, ggml_nbytes(sq));
    ggml_backend_tensor_set(q1, qs, 0, ggml_nbytes(q1));
    ggml_backend_tensor_set(q8, qs, 0, ggml_nbytes(q8));
    ggml_backend_tensor_set(kk, kh, 0, sizeof kh);
    ggml_backend_tensor_set(vv, vh, 0, sizeof vh);
    ggml_backend_tensor_set(vg, gs, 0, sizeof gs);
    ggml_backend_tensor_set(qg, gs, 0, ggml_nbytes(qg));
    ggml_backend_tensor_set(idx, rows, 0, sizeof rows);
    ggml_backend_tensor_set(ps, pos, 0, sizeof pos);
    ggml_backend_tensor_set(sh, wh, 0, ggml_nbytes(sh));
    ggml_backend_tensor_set(s8, wq8, 0, ggml_nbytes(s8));
    ggml_backend_tensor_set(dst, dest_rows, 0, sizeof dest_rows);
    ggml_backend_tensor_set(m, mask, 0, sizeof mask);
    ggml_backend_tensor_set(hin, wh + N * SR, 0, ggml_nbytes(hin));
    int status = ggml_backend_graph_compute(be, g);
    if (status != 0) {
        fprintf(stderr, "ggml_ops: graph compute failed with status %d\n", status);
        exit(2);
    }
    for (int i = 0; i < OPS; i++) {
        size_t bytes = ggml_nbytes(o[i]);
        if (i == CPY_F16 || i == SET_ROWS_F16) {
            static uint16_t half[N * SR];
            int n = (int)(bytes / sizeof half[0]);
            ggml_backend_tensor_get(o[i], half, 0, bytes);
            for (int k = 0; k < n; k++) out[i][k] = half_to_float(half[k]);
            count[i] = n;
        } else if (i == SET_ROWS_Q8_0 || i == CPY_Q8_0) {
            static unsigned char q[N * SR * 34 / 32];
            int n = (int)(bytes / 34 * 32);
            ggml_backend_tensor_get(o[i], q, 0, bytes);
            /* A q8_0 block: an f16 scale, then 32 signed quants. */
            for (int k = 0; k < n; k++) {
                const unsigned char *blk = q + k / 32 * 34;
                out[i][k] = half_to_float((uint16_t)(blk[0] | blk[1] << 8)) * (signed char)blk[2 + k % 32];
            }
            count[i] = n;
        } else if (i == ARGMAX) {
            int32_t at[R];
            ggml_backend_tensor_get(o[i], at, 0, bytes);
            for (int k = 0; k < R; k++) out[i][k] = (float)at[k];
            count[i] = R;
        } else {
            ggml_backend_tensor_get(o[i], out[i], 0, bytes);
            count[i] = (int)(bytes / sizeof(float));
        }
    }
    ggml_backend_buffer_free(buf);
    ggml_free(ctx);
}

/* The k-quant products against the exact product of the f32 weights: the vGPU's NMSE must
 * not exceed 1.25 times the CPU backend's. */
static int kquant_as_close(int op, const float *cpu, const float *gpu, int cols) {
    double ec = 0, eg = 0, ref = 0;
    for (int col = 0; col < cols; col++)
        for (int r = 0; r < M; r++) {
            double exact = 0;
            for (int k = 0; k < K; k++) exact += (double)wks[r * K + k] * vks[col * K + k];
            double c = cpu[col * M + r] - exact, g = gpu[col * M + r] - exact;
            ec += c * c;
            eg += g * g;
            ref += exact * exact;
        }
    int ok = eg <= 1.25 * ec;
    printf("  %-24s against the exact product: cpu NMSE %.2e, vgpu NMSE %.2e  %s\n", names[op],
           ec / ref, eg / ref, ok ? "ok" : "FAILED");
    return ok;
}

/* The q8_0 copy of x, read back, against x itself: the blocks are read as they are laid out
 * (an 8-bit quant keeps the NMSE near 1e-5). */
static int q8_0_as_close(const float *gpu, int n) {
    double err = 0, ref = 0;
    for (int k = 0; k < n && k < N * R; k++) {
        err += ((double)gpu[k] - xs[k]) * ((double)gpu[k] - xs[k]);
        ref += (double)xs[k] * xs[k];
    }
    int ok = n == N * R && err <= 1e-4 * ref;
    printf("  %-24s against its input: NMSE %.2e  %s\n", names[CPY_Q8_0], err / ref, ok ? "ok" : "FAILED");
    return ok;
}

/* `ggml_ops --bench`: three ops of a decode step at a size a small model has, timed on the
 * vGPU against ggml's CPU backend in the same run (median of several computes, after
 * WARM_UP that load the kernels and bring them to the code a decode loop runs them in: the
 * soft device compiles a kernel's vector forms once its warps called it 1,024 times, 32
 * computes for the mat-vec's quantizing kernel of 32 warps). */
#define WARM_UP 40
#define BN 1024    /* a row */
#define BROWS 1024 /* rows of the mat-vec's weights */
#define BR 32      /* rows of the soft_max and rms_norm inputs */
enum { B_MATVEC_Q8_0, B_SOFT_MAX, B_RMS_NORM, BENCH };
static const char *bench_names[BENCH] = {
    "mul_mat q8_0 (mat-vec, 1024x1024)", "soft_max (32x1024)", "rms_norm (32x1024)",
};

static double seconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + t.tv_nsec * 1e-9;
}

static int by_value(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The median time in milliseconds of `reps` (at most 15) computes of op `which` on `be`. */
static double bench_op(ggml_backend_t be, int which, int reps) {
    static float wf[BN * BROWS], xf[BN * BR];
    static unsigned char wq[BN * BROWS * 34 / 32];
    for (int i = 0; i < BN * BROWS; i++) wf[i] = sinf(i * 0.011f) * 0.5f;
    for (int i = 0; i < BN * BR; i++) xf[i] = cosf(i * 0.37f) * 2.0f;
    ggml_quantize_chunk(Q8_0, wf, wq, 0, BROWS, BN, NULL);
    struct ggml_init_params p = {1 << 20, NULL, true};
    ggml_context *ctx = ggml_init(p);
    ggml_tensor *w = NULL, *x, *out;
    if (which == B_MATVEC_Q8_0) {
        w = ggml_new_tensor_2d(ctx, Q8_0, BN, BROWS);
        x = ggml_new_tensor_2d(ctx, F32, BN, 1);
        out = ggml_mul_mat(ctx, w, x);
    } else {
        x = ggml_new_tensor_2d(ctx, F32, BN, BR);
        out = which == B_SOFT_MAX ? ggml_soft_max(ctx, x) : ggml_rms_norm(ctx, x, 1e-5f);
    }
    ggml_cgraph *g = ggml_new_graph(ctx);
    ggml_build_forward_expand(g, out);
    ggml_backend_buffer_t buf = ggml_backend_alloc_ctx_tensors(ctx, be);
    if (!buf) {
        fprintf(stderr, "ggml_ops: allocating the bench tensors failed\n");
        exit(2);
    }
    if (w) ggml_backend_tensor_set(w, wq, 0, ggml_nbytes(w));
    ggml_backend_tensor_set(x, xf, 0, ggml_nbytes(x));
    double t[16];
    for (int i = 0; i < WARM_UP + reps; i++) {
        double t0 = seconds();
        if (ggml_backend_graph_compute(be, g) != 0) {
            fprintf(stderr, "ggml_ops: bench compute failed\n");
            exit(2);
        }
        if (i >= WARM_UP) t[i - WARM_UP] = (seconds() - t0) * 1e3;
    }
    qsort(t, reps, sizeof t[0], by_value);
    ggml_backend_buffer_free(buf);
    ggml_free(ctx);
    return t[reps / 2];
}

static int bench(void) {
    ggml_backend_t c = ggml_backend_cpu_init();
    ggml_backend_t cuda = ggml_backend_cuda_init(0);
    if (!c || !cuda) {
        fprintf(stderr, "ggml_ops: ggml found no %s backend\n", c ? "CUDA" : "CPU");
        return 2;
    }
    /* One thread per core, as llama.cpp sets it: ggml's default of 4 threads, on a host
     * with fewer cores, spins threads against each other at every barrier and makes the
     * CPU backend several times slower than it can be (and the ratio look better). */
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    ggml_backend_cpu_set_n_threads(c, cores > 0 ? (int)cores : 1);
    for (int i = 0; i < BENCH; i++) {
        double cpu = bench_op(c, i, 15), gpu = bench_op(cuda, i, 15);
        printf("ggml_ops bench: %-34s cpu backend %8.3f ms   vgpu %8.3f ms   vgpu/cpu %6.1fx\n",
               bench_names[i], cpu, gpu, gpu / cpu);
    }
    ggml_backend_free(cuda);
    ggml_backend_free(c);
    return 0;
}

/* `ggml_ops --discover`: the CUDA devices ggml finds, one line. */
static int discover(void) {
    int n = ggml_backend_cuda_get_device_count();
    printf("ggml_ops: %d CUDA device(s)", n);
    for (int i = 0; i < n; i++) {
        char desc[256];
        size_t free = 0, total = 0;
        ggml_backend_cuda_get_device_description(i, desc, sizeof desc);
        ggml_backend_cuda_get_device_memory(i, &free, &total);
        printf("; %d: %s, %zu MiB", i, desc, total >> 20);
    }
    printf("\n");
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 2 && strcmp(argv[1], "--discover") == 0) return discover();
    if (argc == 2 && strcmp(argv[1], "--bench") == 0) return bench();
    static float cpu[OPS][MAX_OUT], gpu[OPS][MAX_OUT];
    static int ncpu[OPS], ngpu[OPS];
    inputs();
    ggml_backend_t c = ggml_backend_cpu_init();
    run(c, cpu, ncpu);
    ggml_backend_t cuda = ggml_backend_cuda_init(0);
    if (!cuda) {
        fprintf(stderr, "ggml_ops: ggml found no CUDA device\n");
        return 2;
    }
    run(cuda, gpu, ngpu);
    int bad = 0;
    for (int i = 0; i < OPS; i++) {
        double ref = 0, err = 0;
        for (int k = 0; k < ncpu[i]; k++) {
            double d = (double)cpu[i][k] - gpu[i][k];
            ref += (double)cpu[i][k] * cpu[i][k];
            err += isnan(d) ? INFINITY : d * d;
        }
        double nmse = ref > 0 ? err / ref : err;
        int ok = ncpu[i] == ngpu[i] && nmse <= tolerance[i];
        printf("%-26s %4d values  NMSE %.2e  (tolerance %.0e)  %s\n", names[i], ncpu[i], nmse,
               tolerance[i], ok ? "ok" : "FAILED");
        if (i >= MATVEC_Q4_K && i <= MMQ_Q6_K)
            ok &= kquant_as_close(i, cpu[i], gpu[i], i >= MMQ_Q4_K ? B : 1);
        if (i == CPY_Q8_0) ok &= q8_0_as_close(gpu[i], ngpu[i]);
        bad |= !ok;
    }
    ggml_backend_free(cuda);
    ggml_backend_free(c);
    printf("ggml_ops: %s\n", bad ? "some ops disagree" : "every op agrees with ggml's CPU backend");
    return bad;
}
