/* gpubench: the figures the GPU kit compares, measured the same way natively and on the
 * vGPU. It loads libcuda.so.1 and libcublas.so.12 with dlopen, so the library path decides
 * which CUDA it measures: NVIDIA's (native) or vgpu's drop-in libraries (the vGPU).
 * Prints one line per figure, "name value unit", and checks its kernels' and GEMM's results
 * (exit 1 when one is wrong). Without a libcublas.so.12 it skips the SGEMM row. Needs no CUDA headers or toolkit to build: cc gpubench.c -ldl.
 *   gpubench [--quick]
 */
#include <dlfcn.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef int CUresult;
typedef unsigned long long CUdeviceptr;
typedef void *CUcontext, *CUmodule, *CUfunction, *CUstream;

static CUresult (*cuInit)(unsigned);
static CUresult (*cuDeviceGet)(int *, int);
static CUresult (*cuDeviceGetName)(char *, int, int);
static CUresult (*cuDevicePrimaryCtxRetain)(CUcontext *, int);
static CUresult (*cuCtxSetCurrent)(CUcontext);
static CUresult (*cuMemAlloc)(CUdeviceptr *, size_t);
static CUresult (*cuMemFree)(CUdeviceptr);
static CUresult (*cuMemAllocHost)(void **, size_t);
static CUresult (*cuMemFreeHost)(void *);
static CUresult (*cuMemcpyHtoD)(CUdeviceptr, const void *, size_t);
static CUresult (*cuMemcpyDtoH)(void *, CUdeviceptr, size_t);
static CUresult (*cuModuleLoadData)(CUmodule *, const void *);
static CUresult (*cuModuleGetFunction)(CUfunction *, CUmodule, const char *);
static CUresult (*cuLaunchKernel)(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned,
                                  unsigned, unsigned, CUstream, void **, void **);
static CUresult (*cuStreamSynchronize)(CUstream);
static int (*cublasCreate)(void **);
static int (*cublasSgemm)(void *, int, int, int, int, int, const float *, const float *, int,
                          const float *, int, const float *, float *, int);

static void *sym(void *lib, const char *name) {
  void *p = dlsym(lib, name);
  if (!p) { fprintf(stderr, "gpubench: %s: %s\n", name, dlerror()); exit(2); }
  return p;
}

#define CK(call) do { CUresult r_ = (call); if (r_) { \
  fprintf(stderr, "gpubench: %s failed: %d\n", #call, r_); exit(1); } } while (0)

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

/* Median of n timings of f, in microseconds. */
static double median_us(int n, void (*f)(void *), void *arg) {
  double *t = malloc(sizeof(double) * n);
  f(arg); /* warm-up */
  for (int i = 0; i < n; i++) { double s = now(); f(arg); t[i] = (now() - s) * 1e6; }
  qsort(t, n, sizeof(double), cmp);
  double m = t[n / 2];
  free(t);
  return m;
}

static const char PTX[] =
  ".version 7.0\n.target sm_70\n.address_size 64\n"
  ".visible .entry empty() { ret; }\n"
  ".visible .entry scale(.param .u64 p, .param .f32 f, .param .u32 n) {\n"
  "  .reg .pred %p; .reg .b32 %r<5>; .reg .f32 %f<3>; .reg .b64 %rd<4>;\n"
  "  ld.param.u64 %rd1, [p]; ld.param.f32 %f1, [f]; ld.param.u32 %r1, [n];\n"
  "  mov.u32 %r2, %ctaid.x; mov.u32 %r3, %ntid.x; mov.u32 %r4, %tid.x;\n"
  "  mad.lo.s32 %r2, %r2, %r3, %r4; setp.ge.u32 %p, %r2, %r1; @%p bra DONE;\n"
  "  cvta.to.global.u64 %rd1, %rd1; mul.wide.u32 %rd2, %r2, 4; add.s64 %rd3, %rd1, %rd2;\n"
  "  ld.global.f32 %f2, [%rd3]; mul.f32 %f2, %f2, %f1; st.global.f32 [%rd3], %f2;\n"
  "DONE: ret; }\n";

static CUfunction k_empty, k_scale;
static CUdeviceptr dbuf;
static void *hbuf;
static size_t copy_len;

static void sync_once(void *a) { (void)a; CK(cuStreamSynchronize(0)); }
static void launch_once(void *a) {
  (void)a;
  CK(cuLaunchKernel(k_empty, 1, 1, 1, 1, 1, 1, 0, 0, NULL, NULL));
  CK(cuStreamSynchronize(0));
}
static void htod_once(void *a) { (void)a; CK(cuMemcpyHtoD(dbuf, hbuf, copy_len)); }
static void dtoh_once(void *a) { (void)a; CK(cuMemcpyDtoH(hbuf, dbuf, copy_len)); }

int main(int argc, char **argv) {
  int quick = argc > 1 && !strcmp(argv[1], "--quick");
  int reps = quick ? 50 : 1000;
  void *cu = dlopen("libcuda.so.1", RTLD_NOW);
  if (!cu) { fprintf(stderr, "gpubench: %s\n", dlerror()); return 2; }
  void *bl = dlopen("libcublas.so.12", RTLD_NOW);
  if (!bl) fprintf(stderr, "gpubench: no SGEMM row: %s\n", dlerror());
#define L(v, n) *(void **)&v = sym(cu, n)
  L(cuInit, "cuInit"); L(cuDeviceGet, "cuDeviceGet"); L(cuDeviceGetName, "cuDeviceGetName");
  L(cuDevicePrimaryCtxRetain, "cuDevicePrimaryCtxRetain"); L(cuCtxSetCurrent, "cuCtxSetCurrent");
  L(cuMemAlloc, "cuMemAlloc_v2"); L(cuMemFree, "cuMemFree_v2");
  L(cuMemAllocHost, "cuMemAllocHost_v2"); L(cuMemFreeHost, "cuMemFreeHost");
  L(cuMemcpyHtoD, "cuMemcpyHtoD_v2"); L(cuMemcpyDtoH, "cuMemcpyDtoH_v2");
  L(cuModuleLoadData, "cuModuleLoadData"); L(cuModuleGetFunction, "cuModuleGetFunction");
  L(cuLaunchKernel, "cuLaunchKernel"); L(cuStreamSynchronize, "cuStreamSynchronize");
  if (bl) {
    *(void **)&cublasCreate = sym(bl, "cublasCreate_v2");
    *(void **)&cublasSgemm = sym(bl, "cublasSgemm_v2");
  }

  int dev; CUcontext ctx; char name[256];
  CK(cuInit(0)); CK(cuDeviceGet(&dev, 0)); CK(cuDeviceGetName(name, sizeof name, dev));
  CK(cuDevicePrimaryCtxRetain(&ctx, dev)); CK(cuCtxSetCurrent(ctx));
  fprintf(stderr, "gpubench: device 0 is %s\n", name);
  CUmodule mod;
  CK(cuModuleLoadData(&mod, PTX));
  CK(cuModuleGetFunction(&k_empty, mod, "empty"));
  CK(cuModuleGetFunction(&k_scale, mod, "scale"));

  /* A kernel's result, checked. */
  unsigned n = 1 << 20;
  float *v = malloc(n * 4);
  for (unsigned i = 0; i < n; i++) v[i] = (float)i;
  CUdeviceptr dv; CK(cuMemAlloc(&dv, n * 4)); CK(cuMemcpyHtoD(dv, v, n * 4));
  float f = 0.5f; void *params[] = {&dv, &f, &n};
  CK(cuLaunchKernel(k_scale, n / 256, 1, 1, 256, 1, 1, 0, 0, params, NULL));
  CK(cuMemcpyDtoH(v, dv, n * 4));
  for (unsigned i = 0; i < n; i++)
    if (v[i] != 0.5f * (float)i) { fprintf(stderr, "gpubench: scale[%u] = %g\n", i, v[i]); return 1; }
  CK(cuMemFree(dv)); free(v);

  printf("sync_round_trip %.2f us\n", median_us(reps, sync_once, NULL));
  printf("launch_and_sync %.2f us\n", median_us(reps, launch_once, NULL));
  double s = now();
  for (int i = 0; i < reps; i++) CK(cuLaunchKernel(k_empty, 1, 1, 1, 1, 1, 1, 0, 0, NULL, NULL));
  CK(cuStreamSynchronize(0));
  printf("launch_async %.2f us\n", (now() - s) * 1e6 / reps);

  size_t big = (size_t)(quick ? 16 : 256) << 20;
  CK(cuMemAlloc(&dbuf, big));
  for (int pinned = 0; pinned < 2; pinned++) {
    if (pinned) CK(cuMemAllocHost(&hbuf, big)); else hbuf = malloc(big);
    memset(hbuf, 1, big);
    const char *kind = pinned ? "pinned" : "pageable";
    copy_len = 4096;
    printf("htod_4k_%s %.2f us\n", kind, median_us(reps, htod_once, NULL));
    printf("dtoh_4k_%s %.2f us\n", kind, median_us(reps, dtoh_once, NULL));
    copy_len = big;
    int r = quick ? 3 : 10;
    printf("htod_%zuM_%s %.2f GB/s\n", big >> 20, kind, big / median_us(r, htod_once, NULL) / 1e3);
    printf("dtoh_%zuM_%s %.2f GB/s\n", big >> 20, kind, big / median_us(r, dtoh_once, NULL) / 1e3);
    if (pinned) CK(cuMemFreeHost(hbuf)); else free(hbuf);
  }
  CK(cuMemFree(dbuf));

  if (!bl) return 0;
  /* SGEMM: C = A·B with A = 1, B = 2: every element is 2k. */
  int m = quick ? 256 : 2048;
  size_t bytes = (size_t)m * m * 4;
  float *h = malloc(bytes);
  CUdeviceptr a, b, c;
  CK(cuMemAlloc(&a, bytes)); CK(cuMemAlloc(&b, bytes)); CK(cuMemAlloc(&c, bytes));
  for (size_t i = 0; i < (size_t)m * m; i++) h[i] = 1.0f;
  CK(cuMemcpyHtoD(a, h, bytes));
  for (size_t i = 0; i < (size_t)m * m; i++) h[i] = 2.0f;
  CK(cuMemcpyHtoD(b, h, bytes));
  void *blas;
  if (cublasCreate(&blas)) { fprintf(stderr, "gpubench: cublasCreate failed\n"); return 1; }
  float one = 1, zero = 0;
  double best = 1e30;
  for (int i = 0; i < 3; i++) {
    double t = now();
    if (cublasSgemm(blas, 0, 0, m, m, m, &one, (float *)a, m, (float *)b, m, &zero, (float *)c, m)) {
      fprintf(stderr, "gpubench: cublasSgemm failed\n"); return 1;
    }
    CK(cuStreamSynchronize(0));
    t = now() - t;
    if (t < best) best = t;
  }
  CK(cuMemcpyDtoH(h, c, bytes));
  for (size_t i = 0; i < (size_t)m * m; i++)
    if (fabsf(h[i] - 2.0f * m) > 1e-3f * m) { fprintf(stderr, "gpubench: C[%zu] = %g\n", i, h[i]); return 1; }
  printf("sgemm_%d %.1f GFLOP/s\n", m, 2.0 * m * m * m / best / 1e9);
  fprintf(stderr, "gpubench: kernel and SGEMM results checked\n");
  return 0;
}
