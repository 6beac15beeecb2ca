/* driver_api: the driver API beyond plain copies, as a program that uses libcuda.so.1
 * directly would: cuGetProcAddress, 2-D copies through CUDA_MEMCPY2D (pageable, pinned,
 * unified addressing), 2-D memsets, modules and cuLaunchKernelEx with attributes, function
 * attributes, stream capture with graph replay, contexts (the primary context, created
 * ones, each thread's stack, and CUDA's errors for a missing or destroyed one), and what
 * general programs use besides: cuModuleLoad from a file, cuModuleLoadDataEx, unified
 * cuMemcpy, allocation ranges, stream priorities and flags, parameter layouts and the
 * occupancy calculation. The fatbin is argv[1]
 * (fatbin/tests/fixtures/kernels.fatbin, built by nvcc); its vecAdd computes
 * c[i] = a[i] + b[i] + g_table[i % 37], with g_table = {1, 0, ...}.
 * Build: cc driver_api.c -L target/shims -lcuda -o driver_api */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef int CUresult;
typedef unsigned long long CUdeviceptr;
typedef void *CUmodule, *CUfunction, *CUstream, *CUgraph, *CUgraphExec;
typedef struct {
    size_t srcXInBytes, srcY; int srcMemoryType; const void *srcHost; CUdeviceptr srcDevice; void *srcArray; size_t srcPitch;
    size_t dstXInBytes, dstY; int dstMemoryType; void *dstHost; CUdeviceptr dstDevice; void *dstArray; size_t dstPitch;
    size_t WidthInBytes, Height;
} CUDA_MEMCPY2D;
typedef struct { int id; char pad[4]; union { char raw[64]; int i; unsigned dims[3]; } value; } CUlaunchAttribute;
typedef struct {
    unsigned gridDimX, gridDimY, gridDimZ, blockDimX, blockDimY, blockDimZ, sharedMemBytes;
    CUstream hStream; CUlaunchAttribute *attrs; unsigned numAttrs;
} CUlaunchConfig;
enum { HOST = 1, DEVICE = 2, UNIFIED = 4 };

extern CUresult cuInit(unsigned flags);
extern CUresult cuGetProcAddress_v2(const char *sym, void **fn, int version, unsigned long long flags, int *status);
extern CUresult cuMemAlloc_v2(CUdeviceptr *p, size_t n);
extern CUresult cuMemAllocHost_v2(void **p, size_t n);
extern CUresult cuMemcpy2D_v2(const CUDA_MEMCPY2D *p);
extern CUresult cuMemcpy2DAsync_v2(const CUDA_MEMCPY2D *p, CUstream s);
extern CUresult cuMemsetD2D32_v2(CUdeviceptr p, size_t pitch, unsigned v, size_t w, size_t h);
extern CUresult cuMemcpyHtoD_v2(CUdeviceptr d, const void *s, size_t n);
extern CUresult cuMemcpyDtoH_v2(void *d, CUdeviceptr s, size_t n);
extern CUresult cuModuleLoadData(CUmodule *m, const void *image);
extern CUresult cuModuleGetFunction(CUfunction *f, CUmodule m, const char *name);
extern CUresult cuLaunchKernelEx(const CUlaunchConfig *c, CUfunction f, void **params, void **extra);
extern CUresult cuFuncGetAttribute(int *v, int attr, CUfunction f);
extern CUresult cuStreamCreate(CUstream *s, unsigned flags);
extern CUresult cuStreamSynchronize(CUstream s);
extern CUresult cuStreamBeginCapture_v2(CUstream s, int mode);
extern CUresult cuStreamEndCapture(CUstream s, CUgraph *g);
extern CUresult cuStreamIsCapturing(CUstream s, int *status);
extern CUresult cuGraphLaunch(CUgraphExec e, CUstream s);
extern CUresult cuGraphDestroy(CUgraph g);
extern CUresult cuGraphExecDestroy(CUgraphExec e);
extern CUresult cuCtxSynchronize(void);

static int failures;
#define CHECK(call) do { CUresult r_ = (call); if (r_) { printf("FAIL %d: %s -> %d\n", __LINE__, #call, r_); failures++; } } while (0)
#define EXPECT(call, want) do { CUresult r_ = (call); if (r_ != (want)) { printf("FAIL %d: %s -> %d, want %d\n", __LINE__, #call, r_, want); failures++; } } while (0)
#define TRUE(c) do { if (!(c)) { printf("FAIL %d: %s\n", __LINE__, #c); failures++; } } while (0)

static void *read_file(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) { perror(path); exit(1); }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    void *p = aligned_alloc(64, (n + 63) / 64 * 64);
    if (fread(p, 1, n, f) != (size_t)n) { perror("read"); exit(1); }
    fclose(f);
    return p;
}

static void proc_address(void) {
    void *fn = 0;
    int st = -1;
    CHECK(cuGetProcAddress_v2("cuMemAlloc", &fn, 12000, 0, &st));
    TRUE(fn == (void *)cuMemAlloc_v2 && st == 0);
    CHECK(cuGetProcAddress_v2("cuGraphInstantiate", &fn, 12080, 0, &st));
    TRUE(fn != 0);
    CHECK(cuGetProcAddress_v2("cuLaunchKernelEx", &fn, 12080, 0, &st));
    TRUE(fn == (void *)cuLaunchKernelEx);
    EXPECT(cuGetProcAddress_v2("cuNoSuchFunction", &fn, 12080, 0, &st), 500);
    TRUE(fn == 0 && st == 1);
    printf("cuGetProcAddress: checked\n");
}

static void copies_2d(void) {
    enum { W = 300, H = 20, HP = 320, DP = 512 };
    unsigned char *pageable = malloc(HP * H), *back = malloc(HP * H), *pinned;
    CHECK(cuMemAllocHost_v2((void **)&pinned, HP * H));
    for (int i = 0; i < HP * H; i++) pageable[i] = (unsigned char)(i * 13 + 5);
    memcpy(pinned, pageable, HP * H);
    CUdeviceptr d;
    CHECK(cuMemAlloc_v2(&d, DP * H));
    for (int pass = 0; pass < 2; pass++) {
        unsigned char *src = pass ? pinned : pageable;
        CUDA_MEMCPY2D up = {0};
        up.srcMemoryType = HOST; up.srcHost = src; up.srcPitch = HP;
        up.dstMemoryType = DEVICE; up.dstDevice = d; up.dstPitch = DP;
        up.WidthInBytes = W; up.Height = H;
        CHECK(cuMemcpy2D_v2(&up));
        /* Columns 8..15 (two 32-bit words) of every row become 0xA5A5A5A5. */
        CHECK(cuMemsetD2D32_v2(d + 8, DP, 0xA5A5A5A5u, 2, H));
        memset(back, 0, HP * H);
        CUDA_MEMCPY2D down = {0};
        /* Unified addressing: the driver tells the sides apart; start at row 1, column 4. */
        down.srcMemoryType = UNIFIED; down.srcDevice = d; down.srcPitch = DP; down.srcXInBytes = 4; down.srcY = 1;
        down.dstMemoryType = UNIFIED; down.dstDevice = (CUdeviceptr)(pass ? pinned : back); down.dstPitch = HP;
        down.WidthInBytes = W - 4; down.Height = H - 1;
        unsigned char *out = pass ? pinned : back;
        if (pass) memset(pinned, 0, HP * H);
        CHECK(cuMemcpy2DAsync_v2(&down, 0));
        CHECK(cuCtxSynchronize());
        for (int r = 0; r < H - 1; r++)
            for (int c = 0; c < W - 4; c++) {
                int col = c + 4, row = r + 1;
                unsigned char want = (col >= 8 && col < 16) ? 0xA5 : pageable[row * HP + col];
                if (out[r * HP + c] != want) {
                    printf("FAIL 2-D pass %d: [%d][%d] = %d, want %d\n", pass, r, c, out[r * HP + c], want);
                    failures++;
                    r = H;
                    break;
                }
            }
    }
    printf("cuMemcpy2D (pageable, pinned, unified) and cuMemsetD2D32: checked\n");
}

static void launches_and_graphs(const void *image) {
    CUmodule m;
    CUfunction f;
    CHECK(cuModuleLoadData(&m, image));
    CHECK(cuModuleGetFunction(&f, m, "_Z6vecAddPKfS0_Pfi"));
    int threads = 0;
    CHECK(cuFuncGetAttribute(&threads, 0 /* MAX_THREADS_PER_BLOCK */, f));
    TRUE(threads > 0);
    enum { N = 2000 };
    float ha[N], hb[N], hc[N];
    for (int i = 0; i < N; i++) { ha[i] = (float)i; hb[i] = 2.0f; }
    CUdeviceptr a, b, c;
    CHECK(cuMemAlloc_v2(&a, sizeof ha));
    CHECK(cuMemAlloc_v2(&b, sizeof hb));
    CHECK(cuMemAlloc_v2(&c, sizeof hc));
    CHECK(cuMemcpyHtoD_v2(a, ha, sizeof ha));
    CHECK(cuMemcpyHtoD_v2(b, hb, sizeof hb));
    int n = N;
    void *params[] = {&a, &b, &c, &n};
    CUlaunchAttribute attrs[2];
    memset(attrs, 0, sizeof attrs);
    attrs[0].id = 4; /* CLUSTER_DIMENSION 1x1x1 */
    attrs[0].value.dims[0] = attrs[0].value.dims[1] = attrs[0].value.dims[2] = 1;
    attrs[1].id = 8; /* PRIORITY */
    CUlaunchConfig cfg = {(N + 255) / 256, 1, 1, 256, 1, 1, 0, 0, attrs, 2};
    CHECK(cuLaunchKernelEx(&cfg, f, params, 0));
    CHECK(cuMemcpyDtoH_v2(hc, c, sizeof hc));
    for (int i = 0; i < N; i++)
        if (hc[i] != ha[i] + hb[i] + (i % 37 == 0 ? 1.0f : 0.0f)) { printf("FAIL launch: c[%d] = %f\n", i, hc[i]); failures++; break; }
    attrs[0].id = 1; /* ACCESS_POLICY_WINDOW: not carried by the device ABI */
    EXPECT(cuLaunchKernelEx(&cfg, f, params, 0), 801);

    /* Capture the launch and a copy-back, replay twice. */
    CUstream s;
    CHECK(cuStreamCreate(&s, 1));
    float *hp;
    CHECK(cuMemAllocHost_v2((void **)&hp, sizeof hc));
    CHECK(cuStreamBeginCapture_v2(s, 2));
    int st = 0;
    CHECK(cuStreamIsCapturing(s, &st));
    TRUE(st == 1);
    cfg.hStream = s;
    cfg.numAttrs = 0;
    CHECK(cuLaunchKernelEx(&cfg, f, params, 0));
    CUDA_MEMCPY2D down = {0};
    down.srcMemoryType = DEVICE; down.srcDevice = c; down.srcPitch = sizeof hc;
    down.dstMemoryType = HOST; down.dstHost = hp; down.dstPitch = sizeof hc;
    down.WidthInBytes = sizeof hc; down.Height = 1;
    CHECK(cuMemcpy2DAsync_v2(&down, s));
    /* A copy from pageable memory cannot be captured (its staging buffer is reused). */
    EXPECT(cuMemcpy2DAsync_v2(&(CUDA_MEMCPY2D){.srcMemoryType = HOST, .srcHost = ha, .srcPitch = 8, .dstMemoryType = DEVICE,
                                                .dstDevice = a, .dstPitch = 8, .WidthInBytes = 8, .Height = 1}, s), 900);
    CUgraph g;
    CHECK(cuStreamEndCapture(s, &g));
    extern CUresult cuGraphInstantiateWithFlags(CUgraphExec *e, CUgraph g, unsigned long long flags);
    CUgraphExec e;
    CHECK(cuGraphInstantiateWithFlags(&e, g, 0));
    for (int rep = 0; rep < 2; rep++) {
        memset(hp, 0, sizeof hc);
        CHECK(cuGraphLaunch(e, s));
        CHECK(cuStreamSynchronize(s));
        TRUE(hp[5] == ha[5] + hb[5] && hp[37] == ha[37] + hb[37] + 1.0f);
    }
    EXPECT(cuGraphLaunch((CUgraphExec)0x999, s), 400);
    CHECK(cuGraphExecDestroy(e));
    CHECK(cuGraphDestroy(g));
    printf("modules, cuLaunchKernelEx with attributes, capture and graph replay: checked\n");
}

typedef void *CUcontext;
extern CUresult cuCtxCreate_v2(CUcontext *, unsigned, int);
extern CUresult cuCtxDestroy_v2(CUcontext);
extern CUresult cuCtxPushCurrent_v2(CUcontext);
extern CUresult cuCtxPopCurrent_v2(CUcontext *);
extern CUresult cuCtxSetCurrent(CUcontext);
extern CUresult cuCtxGetCurrent(CUcontext *);
extern CUresult cuCtxGetDevice(int *);
extern CUresult cuCtxGetApiVersion(CUcontext, unsigned *);
extern CUresult cuCtxGetFlags(unsigned *);
extern CUresult cuCtxGetLimit(size_t *, int);
extern CUresult cuDevicePrimaryCtxRetain(CUcontext *, int);
extern CUresult cuDevicePrimaryCtxRelease_v2(int);
extern CUresult cuDevicePrimaryCtxGetState(int, unsigned *, int *);
extern CUresult cuDeviceComputeCapability(int *, int *, int);
extern CUresult cuDeviceGetProperties(int *, int);

static void contexts(void) {
    CUcontext cur = (CUcontext)1, prim = NULL, mine = NULL, popped = NULL;
    int dev = -1, active = -1;
    unsigned flags = 99, version = 0;
    CHECK(cuCtxGetCurrent(&cur));
    EXPECT(cur == NULL ? 0 : 1, 0); /* nothing is current on a new thread */
    EXPECT(cuCtxGetDevice(&dev), 201);      /* CUDA_ERROR_INVALID_CONTEXT */
    EXPECT(cuCtxPopCurrent_v2(&popped), 201);
    CHECK(cuDevicePrimaryCtxGetState(0, &flags, &active));
    EXPECT(active, 0);
    CHECK(cuDevicePrimaryCtxRetain(&prim, 0));
    CHECK(cuDevicePrimaryCtxGetState(0, &flags, &active));
    EXPECT(active, 1);
    CHECK(cuCtxSetCurrent(prim));
    CHECK(cuCtxGetDevice(&dev));
    EXPECT(dev, 0);
    CHECK(cuCtxGetApiVersion(NULL, &version));
    EXPECT(version, 3020);
    CHECK(cuCtxCreate_v2(&mine, 4 /* CU_CTX_SCHED_BLOCKING_SYNC */, 0));
    CHECK(cuCtxGetCurrent(&cur));
    EXPECT(cur == mine, 1); /* cuCtxCreate pushes the new context */
    CHECK(cuCtxGetFlags(&flags));
    EXPECT(flags, 4);
    size_t stack = 0;
    CHECK(cuCtxGetLimit(&stack, 0 /* CU_LIMIT_STACK_SIZE */));
    CHECK(cuCtxPopCurrent_v2(&popped));
    EXPECT(popped == mine, 1);
    CHECK(cuCtxGetCurrent(&cur));
    EXPECT(cur == prim, 1);
    CHECK(cuCtxPushCurrent_v2(mine));
    CHECK(cuCtxDestroy_v2(mine));
    EXPECT(cuCtxDestroy_v2(mine), 201);
    EXPECT(cuCtxPushCurrent_v2(mine), 201);
    CHECK(cuCtxGetCurrent(&cur));
    EXPECT(cur == prim, 1); /* destroying the current context popped it */
    CHECK(cuDevicePrimaryCtxRelease_v2(0));
    EXPECT(cuDevicePrimaryCtxRelease_v2(0), 201);
    CHECK(cuCtxSetCurrent(NULL));
    int major = 0, minor = 0, props[14] = {0};
    CHECK(cuDeviceComputeCapability(&major, &minor, 0));
    CHECK(cuDeviceGetProperties(props, 0));
    EXPECT(props[0] >= 1024 && props[9] == 32 ? 1 : 0, 1); /* threads per block, SIMD width */
    EXPECT(cuDeviceComputeCapability(&major, &minor, 7), 101);
    printf("contexts: primary, created, stacks and their errors: checked (compute capability %d.%d)\n",
           major, minor);
}

extern CUresult cuModuleLoad(CUmodule *, const char *);
extern CUresult cuModuleLoadDataEx(CUmodule *, const void *, unsigned, void *, void **);
extern CUresult cuMemcpy(CUdeviceptr, CUdeviceptr, size_t);
extern CUresult cuMemGetAddressRange_v2(CUdeviceptr *, size_t *, CUdeviceptr);
extern CUresult cuStreamCreateWithPriority(CUstream *, unsigned, int);
extern CUresult cuStreamGetPriority(CUstream, int *);
extern CUresult cuStreamGetFlags(CUstream, unsigned *);
extern CUresult cuFuncGetParamInfo(CUfunction, size_t, size_t *, size_t *);
extern CUresult cuOccupancyMaxActiveBlocksPerMultiprocessor(int *, CUfunction, int, size_t);
extern CUresult cuOccupancyMaxPotentialBlockSize(int *, int *, CUfunction, size_t (*)(int), size_t, int);
typedef void *CUlibrary, *CUkernel;
extern CUresult cuLibraryLoadData(CUlibrary *, const void *, void *, void **, unsigned, void *, void **, unsigned);
extern CUresult cuLibraryGetKernel(CUkernel *, CUlibrary, const char *);
extern CUresult cuKernelGetFunction(CUfunction *, CUkernel);
extern CUresult cuLibraryUnload(CUlibrary);
static size_t shared_for(int block) { return (size_t)block * 64; }

typedef void (*CUhostFn)(void *);
typedef void (*CUstreamCallback)(CUstream, CUresult, void *);
extern CUresult cuLaunchHostFunc(CUstream, CUhostFn, void *);
extern CUresult cuStreamAddCallback(CUstream, CUstreamCallback, void *, unsigned);
extern CUresult cuMemcpyDtoHAsync_v2(void *, CUdeviceptr, size_t, CUstream);
extern CUresult cuMemsetD8_v2(CUdeviceptr, unsigned char, size_t);

/* What the host functions saw: how often each ran, and whether the copy before them had
 * landed when they ran. */
struct seen { int calls; int data_ok; const unsigned char *pinned; CUstream stream; CUresult status; };
static void host_fn(void *p) {
    struct seen *s = p;
    s->calls++;
    s->data_ok = s->pinned[0] == 0x5A && s->pinned[4095] == 0x5A;
}
static void stream_cb(CUstream st, CUresult status, void *p) {
    struct seen *s = p;
    s->calls++;
    s->stream = st;
    s->status = status;
}

/* Host functions run after the work before them on their stream, on the library's thread,
 * and release the stream. */
static void host_functions(void) {
    CUstream s;
    CUdeviceptr d;
    unsigned char *pinned;
    CHECK(cuStreamCreate(&s, 0));
    CHECK(cuMemAlloc_v2(&d, 4096));
    CHECK(cuMemAllocHost_v2((void **)&pinned, 4096));
    memset(pinned, 0, 4096);
    CHECK(cuMemsetD8_v2(d, 0x5A, 4096));
    struct seen a = {0, 0, pinned, NULL, -1}, b = {0, 0, pinned, NULL, -1};
    CHECK(cuMemcpyDtoHAsync_v2(pinned, d, 4096, s));
    CHECK(cuLaunchHostFunc(s, host_fn, &a));
    CHECK(cuStreamAddCallback(s, stream_cb, &b, 0));
    CHECK(cuStreamSynchronize(s));
    TRUE(a.calls == 1 && a.data_ok == 1);
    TRUE(b.calls == 1 && b.stream == s && b.status == 0);
    EXPECT(cuLaunchHostFunc(s, NULL, &a), 1);
    EXPECT(cuStreamAddCallback(s, stream_cb, &b, 1), 1);
    /* Many in a row, on the NULL stream too. */
    struct seen c = {0, 1, pinned, NULL, -1};
    for (int i = 0; i < 20; i++) CHECK(cuLaunchHostFunc(i % 2 ? s : NULL, host_fn, &c));
    CHECK(cuCtxSynchronize());
    TRUE(c.calls == 20);
    printf("host functions: ran after the stream's copy, in order, on both streams: checked\n");
}

static void general(const char *path, const void *image) {
    CUmodule m1, m2;
    CUfunction f;
    CHECK(cuModuleLoad(&m1, path));
    EXPECT(cuModuleLoad(&m2, "/nonexistent/module.fatbin"), 301); /* CUDA_ERROR_FILE_NOT_FOUND */
    CHECK(cuModuleLoadDataEx(&m2, image, 0, NULL, NULL));
    CHECK(cuModuleGetFunction(&f, m1, "_Z6vecAddPKfS0_Pfi"));
    size_t off[4], size[4];
    for (int i = 0; i < 4; i++) CHECK(cuFuncGetParamInfo(f, i, &off[i], &size[i]));
    TRUE(off[0] == 0 && off[1] == 8 && off[2] == 16 && off[3] == 24);
    TRUE(size[0] == 8 && size[3] == 4);
    EXPECT(cuFuncGetParamInfo(f, 4, &off[0], &size[0]), 1);
    int blocks = 0;
    CHECK(cuOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, f, 256, 0));
    TRUE(blocks >= 1 && blocks <= 32);
    int min_grid = 0, block = 0, block2 = 0;
    CHECK(cuOccupancyMaxPotentialBlockSize(&min_grid, &block, f, NULL, 0, 0));
    TRUE(block >= 32 && block % 32 == 0 && min_grid >= 1);
    CHECK(cuOccupancyMaxPotentialBlockSize(&min_grid, &block2, f, shared_for, 0, 128));
    TRUE(block2 >= 32 && block2 <= 128);
    CUlibrary lib;
    CUkernel k;
    CUfunction kf;
    CHECK(cuLibraryLoadData(&lib, image, NULL, NULL, 0, NULL, NULL, 0));
    CHECK(cuLibraryGetKernel(&k, lib, "_Z6vecAddPKfS0_Pfi"));
    CHECK(cuKernelGetFunction(&kf, k));
    size_t koff = 9, ksize = 9;
    CHECK(cuFuncGetParamInfo(kf, 3, &koff, &ksize));
    TRUE(koff == 24 && ksize == 4);
    EXPECT(cuLibraryGetKernel(&k, lib, "no_such_kernel"), 500);
    CHECK(cuLibraryUnload(lib));
    enum { N = 4096 };
    static unsigned char src[N], back[N];
    for (int i = 0; i < N; i++) src[i] = (unsigned char)(i * 7 + 1);
    CUdeviceptr a, b, base;
    size_t len = 0;
    CHECK(cuMemAlloc_v2(&a, N));
    CHECK(cuMemAlloc_v2(&b, N));
    CHECK(cuMemcpy(a, (CUdeviceptr)(size_t)src, N));        /* host to device */
    CHECK(cuMemcpy(b + 0, a, N));                            /* device to device */
    CHECK(cuMemcpy((CUdeviceptr)(size_t)back, b, N));        /* device to host */
    TRUE(memcmp(src, back, N) == 0);
    CHECK(cuMemGetAddressRange_v2(&base, &len, b + 100));
    TRUE(base == b && len >= N);
    EXPECT(cuMemGetAddressRange_v2(&base, &len, (CUdeviceptr)(size_t)src), 500);
    CUstream s;
    int prio = -1;
    unsigned flags = 9;
    CHECK(cuStreamCreateWithPriority(&s, 1 /* CU_STREAM_NON_BLOCKING */, -2));
    CHECK(cuStreamGetPriority(s, &prio));
    CHECK(cuStreamGetFlags(s, &flags));
    TRUE(prio == 0 && flags == 1);
    EXPECT(cuStreamGetFlags((CUstream)0x777, &flags), 400);
    printf("general: module from a file and with options, libraries and kernels, unified copies, ranges, stream priority and flags, parameter layout, occupancy %d, block size %d: checked\n", blocks, block);
}

int main(int argc, char **argv) {
    if (argc < 2) { fprintf(stderr, "usage: driver_api FATBIN\n"); return 1; }
    void *image = read_file(argv[1]);
    if (cuInit(0)) { printf("no device\n"); return 1; }
    proc_address();
    copies_2d();
    launches_and_graphs(image);
    contexts();
    general(argv[1], image);
    host_functions();
    if (failures) { printf("driver_api: %d check(s) failed\n", failures); return 1; }
    printf("driver_api: all checks passed\n");
    return 0;
}
