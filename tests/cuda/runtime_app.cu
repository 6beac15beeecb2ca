// runtime_app: a real CUDA program (built in both launch ABIs by ci/build-cuda-programs.sh)
// that checks the runtime API beyond plain copies: 2-D copies and memsets (pageable and
// pinned, every direction, odd pitches), stream capture and graphs (replay and update),
// cudaLaunchKernelExC with attributes, function attributes, peer queries, error paths
// (bad pointers, bad handles, unregistered functions) and, last, a sticky error.
//   runtime_app            run every check against the device
//   runtime_app no-device  expect no device (cudaErrorNoDevice or InsufficientDriver)
#include <cstdio>
#include <cstring>
#include <vector>

#include "../../fatbin/tests/fixtures/kernels.cu"

static int failures = 0;
#define EXPECT(call, want)                                                                 \
    do {                                                                                   \
        cudaError_t e_ = (call);                                                           \
        if (e_ != (want)) {                                                                \
            std::printf("FAIL %s:%d: %s -> %s (%d), want %d\n", __FILE__, __LINE__, #call, \
                        cudaGetErrorName(e_), (int)e_, (int)(want));                       \
            failures++;                                                                    \
        }                                                                                  \
    } while (0)
#define CHECK(call) EXPECT(call, cudaSuccess)
#define TRUE(cond)                                                                         \
    do {                                                                                   \
        if (!(cond)) {                                                                     \
            std::printf("FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond);                  \
            failures++;                                                                    \
        }                                                                                  \
    } while (0)

static unsigned char pattern(size_t row, size_t col) { return (unsigned char)(row * 31 + col * 7 + 1); }

// Pitched 2-D copies host -> device -> device -> host, through pageable or pinned memory.
static void copies_2d(bool pinned) {
    const size_t width = 1003, height = 37, hpitch = 1100, dpitch = 1024 + 64, dpitch2 = 1500;
    unsigned char *src, *dst;
    std::vector<unsigned char> src_v, dst_v;
    if (pinned) {
        CHECK(cudaMallocHost(&src, hpitch * height));
        CHECK(cudaMallocHost(&dst, hpitch * height));
    } else {
        src_v.resize(hpitch * height);
        dst_v.resize(hpitch * height);
        src = src_v.data();
        dst = dst_v.data();
    }
    for (size_t r = 0; r < height; r++)
        for (size_t c = 0; c < hpitch; c++) src[r * hpitch + c] = pattern(r, c);
    std::memset(dst, 0xEE, hpitch * height);
    unsigned char *d1, *d2;
    CHECK(cudaMalloc(&d1, dpitch * height));
    CHECK(cudaMalloc(&d2, dpitch2 * height));
    CHECK(cudaMemset(d2, 0, dpitch2 * height));
    cudaStream_t s;
    CHECK(cudaStreamCreate(&s));
    CHECK(cudaMemcpy2DAsync(d1, dpitch, src, hpitch, width, height, cudaMemcpyHostToDevice, s));
    CHECK(cudaMemcpy2DAsync(d2, dpitch2, d1, dpitch, width, height, cudaMemcpyDeviceToDevice, s));
    // A 2-D memset over a column band of d2: columns 10..19 of rows 5..9 become 0x5A.
    CHECK(cudaMemset2DAsync(d2 + 5 * dpitch2 + 10, dpitch2, 0x5A, 10, 5, s));
    CHECK(cudaMemcpy2DAsync(dst, hpitch, d2, dpitch2, width, height, cudaMemcpyDefault, s));
    CHECK(cudaStreamSynchronize(s));
    for (size_t r = 0; r < height; r++)
        for (size_t c = 0; c < hpitch; c++) {
            unsigned char want = c >= width ? 0xEE
                                 : (r >= 5 && r < 10 && c >= 10 && c < 20) ? 0x5A
                                                                           : pattern(r, c);
            if (dst[r * hpitch + c] != want) {
                std::printf("FAIL 2-D copy (%s): [%zu][%zu] = %d, want %d\n",
                            pinned ? "pinned" : "pageable", r, c, dst[r * hpitch + c], want);
                failures++;
                r = height;
                break;
            }
        }
    // Synchronous forms, and a pitch smaller than the width.
    CHECK(cudaMemcpy2D(d1, dpitch, src, hpitch, width, height, cudaMemcpyHostToDevice));
    CHECK(cudaMemset2D(d1, dpitch, 0, 3, height));
    CHECK(cudaMemcpy2D(dst, hpitch, d1, dpitch, 5, height, cudaMemcpyDeviceToHost));
    TRUE(dst[0] == 0 && dst[2] == 0 && dst[3] == pattern(0, 3) && dst[(height - 1) * hpitch + 4] == pattern(height - 1, 4));
    EXPECT(cudaMemcpy2D(d1, 10, src, hpitch, 11, 2, cudaMemcpyHostToDevice), cudaErrorInvalidValue);
    cudaGetLastError();
    CHECK(cudaStreamDestroy(s));
    CHECK(cudaFree(d1));
    CHECK(cudaFree(d2));
    if (pinned) {
        CHECK(cudaFreeHost(src));
        CHECK(cudaFreeHost(dst));
    }
    std::printf("2-D copies and memsets (%s): checked\n", pinned ? "pinned" : "pageable");
}

// vecAdd on n elements into dc, on stream s.
static void add(const float *a, const float *b, float *c, int n, cudaStream_t s) {
    vecAdd<<<(n + 127) / 128, 128, 0, s>>>(a, b, c, n);
}

static bool check_sum(const float *c, const float *a, const float *b, int n, float extra) {
    for (int i = 0; i < n; i++) {
        float want = a[i] + b[i] + extra + (i % 37 == 0 ? 1.0f : 0.0f);
        if (c[i] != want) {
            std::printf("FAIL: c[%d] = %f, want %f\n", i, c[i], want);
            return false;
        }
    }
    return true;
}

static void graphs() {
    const int n = 4096;
    std::vector<float> a(n), b(n), c(n), ones(n, 1.0f);
    for (int i = 0; i < n; i++) {
        a[i] = (float)i;
        b[i] = (float)(2 * i);
    }
    float *da, *db, *dc, *dtmp, *hpinned;
    CHECK(cudaMalloc(&da, n * 4));
    CHECK(cudaMalloc(&db, n * 4));
    CHECK(cudaMalloc(&dc, n * 4));
    CHECK(cudaMalloc(&dtmp, n * 4));
    CHECK(cudaMallocHost(&hpinned, n * 4));
    CHECK(cudaMemcpy(da, a.data(), n * 4, cudaMemcpyHostToDevice));
    CHECK(cudaMemcpy(db, b.data(), n * 4, cudaMemcpyHostToDevice));
    CHECK(cudaMemset(dc, 0, n * 4));
    cudaStream_t s;
    CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));

    // Capture a memset, a launch (tmp = a + b + g_table) and two copies (tmp -> c -> host).
    cudaStreamCaptureStatus st = cudaStreamCaptureStatusActive;
    CHECK(cudaStreamIsCapturing(s, &st));
    TRUE(st == cudaStreamCaptureStatusNone);
    CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeRelaxed));
    CHECK(cudaStreamIsCapturing(s, &st));
    TRUE(st == cudaStreamCaptureStatusActive);
    CHECK(cudaMemsetAsync(dc, 0, n * 4, s));
    add(da, db, dtmp, n, s);
    CHECK(cudaGetLastError());
    CHECK(cudaMemcpyAsync(dc, dtmp, n * 4, cudaMemcpyDeviceToDevice, s));
    CHECK(cudaMemcpyAsync(hpinned, dc, n * 4, cudaMemcpyDeviceToHost, s));
    cudaGraph_t g;
    CHECK(cudaStreamEndCapture(s, &g));
    CHECK(cudaStreamIsCapturing(s, &st));
    TRUE(st == cudaStreamCaptureStatusNone);
    // Nothing ran while capturing.
    CHECK(cudaMemcpy(c.data(), dc, n * 4, cudaMemcpyDeviceToHost));
    TRUE(c[1] == 0.0f);
    cudaGraphExec_t ge;
    CHECK(cudaGraphInstantiate(&ge, g, 0));
    for (int rep = 0; rep < 3; rep++) {
        std::memset(hpinned, 0, n * 4);
        CHECK(cudaGraphLaunch(ge, s));
        CHECK(cudaStreamSynchronize(s));
        TRUE(check_sum(hpinned, a.data(), b.data(), n, 0.0f));
    }
    // The same topology with other inputs: update the executable graph in place.
    CHECK(cudaMemcpy(dtmp, ones.data(), n * 4, cudaMemcpyHostToDevice));
    CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
    CHECK(cudaMemsetAsync(dc, 0, n * 4, s));
    add(da, da, dtmp, n, s);
    CHECK(cudaMemcpyAsync(dc, dtmp, n * 4, cudaMemcpyDeviceToDevice, s));
    CHECK(cudaMemcpyAsync(hpinned, dc, n * 4, cudaMemcpyDeviceToHost, s));
    cudaGraph_t g2;
    CHECK(cudaStreamEndCapture(s, &g2));
    cudaGraphExecUpdateResultInfo info;
    CHECK(cudaGraphExecUpdate(ge, g2, &info));
    TRUE(info.result == cudaGraphExecUpdateSuccess);
    CHECK(cudaGraphLaunch(ge, s));
    CHECK(cudaStreamSynchronize(s));
    TRUE(check_sum(hpinned, a.data(), a.data(), n, 0.0f));
    // A different topology cannot be updated into it.
    CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
    add(da, db, dc, n, s);
    cudaGraph_t g3;
    CHECK(cudaStreamEndCapture(s, &g3));
    EXPECT(cudaGraphExecUpdate(ge, g3, &info), cudaErrorGraphExecUpdateFailure);
    TRUE(info.result != cudaGraphExecUpdateSuccess);
    cudaGetLastError();
    // Ending a capture that never began.
    cudaGraph_t none;
    EXPECT(cudaStreamEndCapture(s, &none), cudaErrorStreamCaptureUnmatched);
    cudaGetLastError();
    CHECK(cudaGraphExecDestroy(ge));
    CHECK(cudaGraphDestroy(g));
    CHECK(cudaGraphDestroy(g2));
    CHECK(cudaGraphDestroy(g3));
    CHECK(cudaStreamDestroy(s));
    CHECK(cudaFree(da));
    CHECK(cudaFree(db));
    CHECK(cudaFree(dc));
    CHECK(cudaFree(dtmp));
    CHECK(cudaFreeHost(hpinned));
    std::printf("graphs: capture, replay x3, update and its refusal checked\n");
}

static void launch_ex_and_attributes() {
    const int n = 1000;
    std::vector<float> a(n), b(n), c(n);
    for (int i = 0; i < n; i++) {
        a[i] = 1.5f * i;
        b[i] = 3.0f;
    }
    float *da, *db, *dc;
    CHECK(cudaMalloc(&da, n * 4));
    CHECK(cudaMalloc(&db, n * 4));
    CHECK(cudaMalloc(&dc, n * 4));
    CHECK(cudaMemcpy(da, a.data(), n * 4, cudaMemcpyHostToDevice));
    CHECK(cudaMemcpy(db, b.data(), n * 4, cudaMemcpyHostToDevice));
    cudaLaunchAttribute attrs[2];
    attrs[0].id = cudaLaunchAttributeCooperative;
    attrs[0].val.cooperative = 1;
    attrs[1].id = cudaLaunchAttributePriority;
    attrs[1].val.priority = 0;
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = dim3((n + 255) / 256);
    cfg.blockDim = dim3(256);
    cfg.attrs = attrs;
    cfg.numAttrs = 2;
    int nn = n;
    CHECK(cudaLaunchKernelEx(&cfg, vecAdd, (const float *)da, (const float *)db, dc, nn));
    CHECK(cudaMemcpy(c.data(), dc, n * 4, cudaMemcpyDeviceToHost));
    TRUE(check_sum(c.data(), a.data(), b.data(), n, 0.0f));
    // An attribute the device ABI does not carry.
    attrs[0].id = cudaLaunchAttributeAccessPolicyWindow;
    cfg.numAttrs = 1;
    EXPECT(cudaLaunchKernelEx(&cfg, vecAdd, (const float *)da, (const float *)db, dc, nn), cudaErrorNotSupported);
    cudaGetLastError();

    cudaFuncAttributes fa;
    CHECK(cudaFuncGetAttributes(&fa, vecAdd));
    TRUE(fa.maxThreadsPerBlock > 0 && fa.binaryVersion >= 80);
    CHECK(cudaFuncSetAttribute(vecAdd, cudaFuncAttributeMaxDynamicSharedMemorySize, 64 * 1024));
    CHECK(cudaFuncGetAttributes(&fa, vecAdd));
    TRUE(fa.maxDynamicSharedSizeBytes == 64 * 1024);
    EXPECT(cudaFuncGetAttributes(&fa, (const void *)&failures), cudaErrorInvalidDeviceFunction);
    cudaGetLastError();

    // Occupancy: vecAdd uses few registers and no shared memory, so 128-thread blocks are
    // limited by threads per multiprocessor (2048 on sm_80/sm_90).
    int per_sm = 0;
    CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessorWithFlags(&per_sm, vecAdd, 128, 0, 0));
    TRUE(per_sm == 16);
    CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, vecAdd, 1024, 0));
    TRUE(per_sm == 2);
    void *coop_args[] = {&da, &db, &dc, &nn};
    CHECK(cudaMemset(dc, 0, n * 4));
    CHECK(cudaLaunchCooperativeKernel((const void *)vecAdd, dim3((n + 63) / 64), dim3(64), coop_args, 0, 0));
    CHECK(cudaMemcpy(c.data(), dc, n * 4, cudaMemcpyDeviceToHost));
    TRUE(check_sum(c.data(), a.data(), b.data(), n, 0.0f));
    CHECK(cudaSetDeviceFlags(cudaDeviceScheduleBlockingSync));
    EXPECT(cudaSetDeviceFlags(0x1000), cudaErrorInvalidValue);
    cudaGetLastError();

    int can = -1;
    CHECK(cudaDeviceCanAccessPeer(&can, 0, 0));
    TRUE(can == 0);
    EXPECT(cudaDeviceEnablePeerAccess(0, 0), cudaErrorInvalidDevice);
    EXPECT(cudaDeviceCanAccessPeer(&can, 0, 7), cudaErrorInvalidDevice);
    CHECK(cudaMemcpyPeerAsync(dc, 0, da, 0, n * 4, 0));
    CHECK(cudaMemcpy(c.data(), dc, n * 4, cudaMemcpyDeviceToHost));
    TRUE(c[10] == a[10]);
    cudaGetLastError();
    CHECK(cudaFree(da));
    CHECK(cudaFree(db));
    CHECK(cudaFree(dc));
    std::printf("cudaLaunchKernelExC, cooperative launch, occupancy, function attributes and peer queries: checked\n");
}

static void error_paths() {
    char host[64];
    void *bogus = (void *)0x7e0000001000ull;
    EXPECT(cudaMemcpy(host, bogus, sizeof host, cudaMemcpyDeviceToHost), cudaErrorInvalidValue);
    EXPECT(cudaMemset(bogus, 0, 64), cudaErrorInvalidValue);
    EXPECT(cudaFree(bogus), cudaErrorInvalidValue);
    EXPECT(cudaStreamSynchronize((cudaStream_t)0x1234567), cudaErrorInvalidResourceHandle);
    EXPECT(cudaEventRecord((cudaEvent_t)0x1234567, 0), cudaErrorInvalidResourceHandle);
    EXPECT(cudaGraphLaunch((cudaGraphExec_t)0x1234567, 0), cudaErrorInvalidResourceHandle);
    EXPECT(cudaMemsetAsync(bogus, 0, 64, (cudaStream_t)0x1234567), cudaErrorInvalidResourceHandle);
    float *dp;
    CHECK(cudaMalloc(&dp, 256));
    vecAdd<<<1, 1, 0, (cudaStream_t)0x1234567>>>(dp, dp, dp, 1);
    EXPECT(cudaGetLastError(), cudaErrorInvalidResourceHandle);
    CHECK(cudaFree(dp));
    EXPECT(cudaLaunchKernel((const void *)&failures, dim3(1), dim3(1), nullptr, 0, 0), cudaErrorInvalidDeviceFunction);
    TRUE(cudaGetLastError() == cudaErrorInvalidDeviceFunction);
    TRUE(cudaGetLastError() == cudaSuccess);
    void *p;
    EXPECT(cudaMalloc(&p, (size_t)1 << 50), cudaErrorMemoryAllocation);
    cudaGetLastError();
    // None of that harmed the context.
    CHECK(cudaDeviceSynchronize());
    std::printf("error paths: bad pointers, bad handles, unregistered function, huge allocation checked\n");
}

// Last: a kernel that faults makes the context's error sticky.
static void sticky_error() {
    float *dc;
    CHECK(cudaMalloc(&dc, 4096));
    vecAdd<<<1, 32>>>((const float *)0x10, (const float *)0x10, dc, 32);
    EXPECT(cudaDeviceSynchronize(), cudaErrorIllegalAddress);
    EXPECT(cudaDeviceSynchronize(), cudaErrorIllegalAddress);
    void *p;
    EXPECT(cudaMalloc(&p, 256), cudaErrorIllegalAddress);
    std::printf("sticky error: cudaErrorIllegalAddress persists\n");
}

int main(int argc, char **argv) {
    int count = -1;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (argc > 1 && std::strcmp(argv[1], "no-device") == 0) {
        bool ok = (e == cudaErrorNoDevice || e == cudaErrorInsufficientDriver) && count == 0;
        std::printf("no device: cudaGetDeviceCount -> %s, count %d: %s\n", cudaGetErrorName(e), count, ok ? "as expected" : "WRONG");
        void *p;
        cudaError_t m = cudaMalloc(&p, 16);
        std::printf("no device: cudaMalloc -> %s\n", cudaGetErrorName(m));
        return ok && m != cudaSuccess ? 0 : 1;
    }
    if (e != cudaSuccess || count < 1) {
        std::printf("FAIL: no device (%s)\n", cudaGetErrorName(e));
        return 1;
    }
    copies_2d(false);
    copies_2d(true);
    graphs();
    launch_ex_and_attributes();
    error_paths();
    if (failures == 0) sticky_error();
    if (failures) {
        std::printf("runtime_app: %d check(s) failed\n", failures);
        return 1;
    }
    std::printf("runtime_app: all checks passed\n");
    return 0;
}
