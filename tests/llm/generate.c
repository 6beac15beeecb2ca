/* generate: greedy generation with a registry build of llama.cpp (libllama), on whatever
 * backend ggml finds — the vGPU when vgpu's libraries and driver are there, the CPU when
 * not — and the comparison of two runs.
 *
 *   GENERATE_BACKENDS=CPU.so:CUDA.so generate MODEL.gguf N_TOKENS LOGITS.bin "PROMPT"
 *       loads ggml's backends from those files (ggml_backend_load: dlopen with RTLD_NOW |
 *       RTLD_LOCAL, as llama.cpp's and Ollama's loaders do), decodes the prompt (one batch), then
 *       N_TOKENS tokens one at a time, each the argmax of the last logits; prints the device,
 *       the tokens, the text and the speed, and writes every step's logits to LOGITS.bin.
 *       With GENERATE_FORCE=REF.bin the tokens fed back are those of that earlier run (the
 *       argmax of its logits), so that two runs are compared step by step even where a
 *       near-tie sends them different ways.
 *   generate --compare REF.bin B.bin TOLERANCE         logits within TOLERANCE (max |a - b| /
 *       max |a|, per step), and the same token at every step, or a near-tie: B's token
 *       within TOLERANCE of REF's best in REF's own logits
 *
 * Only llama.h's stable C API is used. The parameter structs are passed through as libllama
 * returns them except n_ctx, n_batch and n_ubatch, the struct's first three fields; their
 * defaults offload every layer to the GPU when there is one. The context's CPU threads are
 * set to the number of cores (llama_set_n_threads). */
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* llama_model_params and llama_context_params are larger than these in every version this
 * harness meets (80 and 168 bytes here); they go by memory in the x86-64 ABI either way. */
struct model_params { unsigned char bytes[256]; };
struct context_params { uint32_t n_ctx, n_batch, n_ubatch; unsigned char rest[500]; };
struct llama_batch {
    int32_t n_tokens;
    int32_t *token;
    float *embd;
    int32_t *pos;
    int32_t *n_seq_id;
    int32_t **seq_id;
    int8_t *logits;
};
typedef void (*log_callback)(int level, const char *text, void *user);
extern void llama_log_set(log_callback cb, void *user);
extern void llama_backend_init(void);
extern struct model_params llama_model_default_params(void);
extern struct context_params llama_context_default_params(void);
extern void *llama_model_load_from_file(const char *path, struct model_params p);
extern void *llama_init_from_model(void *model, struct context_params p);
extern void llama_set_n_threads(void *ctx, int32_t n_threads, int32_t n_threads_batch);
extern const void *llama_model_get_vocab(const void *model);
extern int32_t llama_vocab_n_tokens(const void *vocab);
extern int32_t llama_tokenize(const void *vocab, const char *text, int32_t len, int32_t *tokens,
                              int32_t max, bool add_special, bool parse_special);
extern struct llama_batch llama_batch_get_one(int32_t *tokens, int32_t n);
extern int32_t llama_decode(void *ctx, struct llama_batch batch);
extern float *llama_get_logits_ith(void *ctx, int32_t i);
extern int32_t llama_token_to_piece(const void *vocab, int32_t token, char *buf, int32_t len,
                                    int32_t lstrip, bool special);
extern void llama_free(void *ctx);
extern void llama_model_free(void *model);
extern void *ggml_backend_load(const char *path);
extern size_t ggml_backend_dev_count(void);
extern void *ggml_backend_dev_get(size_t i);
extern const char *ggml_backend_dev_name(void *dev);
extern const char *ggml_backend_dev_description(void *dev);

static void quiet(int level, const char *text, void *user) {
    (void)user;
    if (level == 4 /* GGML_LOG_LEVEL_ERROR */ || getenv("GENERATE_VERBOSE")) fputs(text, stderr);
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static int argmax(const float *v, int n) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (v[i] > v[best]) best = i;
    return best;
}

static int compare(const char *a_path, const char *b_path, double tol) {
    FILE *a = fopen(a_path, "rb"), *b = fopen(b_path, "rb");
    if (!a || !b) { fprintf(stderr, "generate: cannot open the logits files\n"); return 2; }
    int32_t na[2], nb[2];
    if (fread(na, 4, 2, a) != 2 || fread(nb, 4, 2, b) != 2 || na[0] != nb[0] || na[1] != nb[1]) {
        fprintf(stderr, "generate: the runs differ in steps or vocabulary\n");
        return 1;
    }
    int steps = na[0], nv = na[1], bad = 0, ties = 0;
    float *x = malloc(4 * nv), *y = malloc(4 * nv);
    double worst = 0;
    for (int s = 0; s < steps; s++) {
        if (fread(x, 4, nv, a) != (size_t)nv || fread(y, 4, nv, b) != (size_t)nv) { bad = 1; break; }
        double big = 0, diff = 0;
        for (int i = 0; i < nv; i++) {
            big = fmax(big, fabs(x[i]));
            diff = fmax(diff, fabs(x[i] - y[i]));
        }
        double rel = diff / (big > 0 ? big : 1);
        worst = fmax(worst, rel);
        int ta = argmax(x, nv), tb = argmax(y, nv);
        if (ta != tb) {
            double gap = (x[ta] - x[tb]) / (big > 0 ? big : 1);
            printf("step %d: token %d against %d, %.2e apart in the reference's logits%s\n", s, ta,
                   tb, gap, gap <= tol ? " (a near-tie)" : "");
            if (gap <= tol) ties++; else bad = 1;
        }
        if (!(rel <= tol)) { printf("step %d: logits differ by %.2e of their largest\n", s, rel); bad = 1; }
    }
    printf("compare: %d steps, the same tokens: %s (%d near-ties); logits within %.2e (tolerance %.0e)\n",
           steps, bad ? "NO" : "yes", ties, worst, tol);
    return bad;
}

int main(int argc, char **argv) {
    if (argc == 5 && strcmp(argv[1], "--compare") == 0) return compare(argv[2], argv[3], atof(argv[4]));
    if (argc != 5) {
        fprintf(stderr, "usage: generate MODEL.gguf N_TOKENS LOGITS.bin PROMPT | --compare A B TOL\n");
        return 2;
    }
    int n_gen = atoi(argv[2]);
    llama_log_set(quiet, NULL);
    const char *backends = getenv("GENERATE_BACKENDS");
    if (!backends) { fprintf(stderr, "generate: set GENERATE_BACKENDS\n"); return 2; }
    char list[4096];
    snprintf(list, sizeof list, "%s", backends);
    for (char *save = NULL, *p = strtok_r(list, ":", &save); p; p = strtok_r(NULL, ":", &save))
        if (!ggml_backend_load(p)) { fprintf(stderr, "generate: cannot load the backend %s\n", p); return 2; }
    llama_backend_init();
    for (size_t i = 0; i < ggml_backend_dev_count(); i++) {
        void *d = ggml_backend_dev_get(i);
        printf("device %zu: %s (%s)\n", i, ggml_backend_dev_name(d), ggml_backend_dev_description(d));
    }
    void *model = llama_model_load_from_file(argv[1], llama_model_default_params());
    if (!model) { fprintf(stderr, "generate: cannot load %s\n", argv[1]); return 2; }
    struct context_params cp = llama_context_default_params();
    cp.n_ctx = 256;
    cp.n_batch = cp.n_ubatch = 64;
    void *ctx = llama_init_from_model(model, cp);
    if (!ctx) { fprintf(stderr, "generate: cannot make a context\n"); return 2; }
    /* One CPU thread per core, as llama.cpp's tools set it: libllama's default of 4, on a
     * host with fewer cores, spins its threads against each other at every barrier and
     * makes the CPU backend's run, the speed the vGPU's is set against, slower than it can
     * be. */
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    llama_set_n_threads(ctx, cores > 0 ? (int32_t)cores : 1, cores > 0 ? (int32_t)cores : 1);
    const void *vocab = llama_model_get_vocab(model);
    int nv = llama_vocab_n_tokens(vocab);
    int32_t tokens[256];
    int n = llama_tokenize(vocab, argv[4], (int32_t)strlen(argv[4]), tokens, 128, true, false);
    if (n <= 0 || n + n_gen > 256) { fprintf(stderr, "generate: the prompt does not fit\n"); return 2; }
    FILE *out = fopen(argv[3], "wb");
    int32_t head[2] = {n_gen, nv};
    fwrite(head, 4, 2, out);
    double t0 = now();
    if (llama_decode(ctx, llama_batch_get_one(tokens, n)) != 0) { fprintf(stderr, "generate: prompt decode failed\n"); return 1; }
    double t1 = now();
    FILE *force = getenv("GENERATE_FORCE") ? fopen(getenv("GENERATE_FORCE"), "rb") : NULL;
    float *forced = NULL;
    if (getenv("GENERATE_FORCE")) {
        int32_t fh[2];
        forced = malloc(4 * (size_t)nv);
        if (!force || fread(fh, 4, 2, force) != 2 || fh[0] != n_gen || fh[1] != nv) {
            fprintf(stderr, "generate: %s is not a run of this model and length\n", getenv("GENERATE_FORCE"));
            return 2;
        }
    }
    int32_t gen[256];
    char text[4096] = "";
    for (int s = 0; s < n_gen; s++) {
        const float *logits = llama_get_logits_ith(ctx, -1);
        fwrite(logits, 4, nv, out);
        gen[s] = argmax(logits, nv);
        if (forced) {
            if (fread(forced, 4, nv, force) != (size_t)nv) { fprintf(stderr, "generate: short reference\n"); return 2; }
            gen[s] = argmax(forced, nv);
        }
        char piece[64];
        int len = llama_token_to_piece(vocab, gen[s], piece, sizeof piece - 1, 0, false);
        if (len > 0 && strlen(text) + len < sizeof text) strncat(text, piece, len);
        if (s + 1 < n_gen && llama_decode(ctx, llama_batch_get_one(&gen[s], 1)) != 0) {
            fprintf(stderr, "generate: decode failed at step %d\n", s);
            return 1;
        }
    }
    double t2 = now();
    fclose(out);
    printf("prompt: %d tokens; %s:", n, forced ? "fed back (from the reference run)" : "generated");
    for (int s = 0; s < n_gen; s++) printf(" %d", gen[s]);
    printf("\ntext: %s%s\n", argv[4], text);
    printf("speed: prompt %.1f tokens/s, decode %.2f tokens/s\n", n / (t1 - t0), (n_gen - 1) / (t2 - t1));
    llama_free(ctx);
    llama_model_free(model);
    return 0;
}
