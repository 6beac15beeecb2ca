/* launch: a kernel launch through the CUDA 12 launch ABI, exactly as nvcc's generated code
 * does it: register the fatbin and the host stub at start-up, then <<<grid, block>>> pushes
 * the configuration and the stub pops it and calls cudaLaunchKernel. The fatbin is read
 * from the file named by argv[1] (fatbin/tests/fixtures/kernels.fatbin, built by nvcc).
 * Its vecAdd computes c[i] = a[i] + b[i] + g_table[i % 37], with g_table = {1, 0, ...}.
 * Build: cc launch.c -L target/shims -lcudart -o launch */
#include <stdio.h>
#include <stdlib.h>

typedef int cudaError_t;
typedef struct { unsigned x, y, z; } dim3;
extern void **__cudaRegisterFatBinary(void *wrapper);
extern void __cudaRegisterFatBinaryEnd(void **handle);
extern void __cudaRegisterFunction(void **handle, const char *host_fun, char *device_fun, const char *device_name,
                                   int thread_limit, void *tid, void *bid, void *bdim, void *gdim, int *wsize);
extern unsigned __cudaPushCallConfiguration(dim3 grid, dim3 block, size_t shared, void *stream);
extern unsigned __cudaPopCallConfiguration(dim3 *grid, dim3 *block, size_t *shared, void **stream);
extern cudaError_t cudaLaunchKernel(const void *func, dim3 grid, dim3 block, void **args, size_t shared, void *stream);
extern cudaError_t cudaMalloc(void **p, size_t n);
extern cudaError_t cudaMemcpy(void *d, const void *s, size_t n, int kind);
extern cudaError_t cudaDeviceSynchronize(void);
extern const char *cudaGetErrorString(cudaError_t e);

struct fatbin_wrapper { int magic; int version; const void *data; void *filename; };
static char vec_add_stub; /* the host stub's identity */

/* What nvcc generates for vecAdd<<<grid, block>>>(a, b, c, n). */
static cudaError_t vec_add(dim3 grid, dim3 block, const float *a, const float *b, float *c, int n) {
    __cudaPushCallConfiguration(grid, block, 0, 0);
    dim3 g, bl;
    size_t shared;
    void *stream;
    __cudaPopCallConfiguration(&g, &bl, &shared, &stream);
    void *args[] = {&a, &b, &c, &n};
    return cudaLaunchKernel(&vec_add_stub, g, bl, args, shared, stream);
}

int main(int argc, char **argv) {
    if (argc < 2) { fprintf(stderr, "usage: launch FATBIN\n"); return 1; }
    FILE *f = fopen(argv[1], "rb");
    if (!f) { perror(argv[1]); return 1; }
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    void *image = aligned_alloc(64, (size + 63) / 64 * 64);
    if (fread(image, 1, size, f) != (size_t)size) { perror("read"); return 1; }
    fclose(f);
    static struct fatbin_wrapper wrapper;
    wrapper = (struct fatbin_wrapper){0x466243b1, 1, image, 0};
    void **h = __cudaRegisterFatBinary(&wrapper);
    __cudaRegisterFunction(h, &vec_add_stub, "_Z6vecAddPKfS0_Pfi", "_Z6vecAddPKfS0_Pfi", -1, 0, 0, 0, 0, 0);
    __cudaRegisterFatBinaryEnd(h);

    int n = 1000;
    float *ha = malloc(n * 4), *hb = malloc(n * 4), *hc = malloc(n * 4);
    for (int i = 0; i < n; i++) { ha[i] = (float)i; hb[i] = 0.5f * i; }
    float *a, *b, *c;
    cudaMalloc((void **)&a, n * 4);
    cudaMalloc((void **)&b, n * 4);
    cudaMalloc((void **)&c, n * 4);
    cudaMemcpy(a, ha, n * 4, 1);
    cudaMemcpy(b, hb, n * 4, 1);
    cudaError_t e = vec_add((dim3){(n + 255) / 256, 1, 1}, (dim3){256, 1, 1}, a, b, c, n);
    if (e) { printf("launch failed: %s (%d)\n", cudaGetErrorString(e), e); return 1; }
    e = cudaDeviceSynchronize();
    if (e) { printf("synchronize: %s\n", cudaGetErrorString(e)); return 1; }
    cudaMemcpy(hc, c, n * 4, 2);
    for (int i = 0; i < n; i++) {
        float want = ha[i] + hb[i] + (i % 37 == 0 ? 1.0f : 0.0f);
        if (hc[i] != want) { printf("c[%d] = %f, want %f\n", i, hc[i], want); return 1; }
    }
    printf("launch: vecAdd over %d elements checked\n", n);
    return 0;
}
