/* memory: copies of many sizes and alignments both ways (pageable and pinned), memsets,
 * device-to-device copies, streams, events and elapsed time, cudaMemcpyDefault, memory
 * info, host functions, registered host memory, and error paths, all through the runtime API. Exit status 0 when every check
 * passed. Build: cc memory.c -L target/shims -lcudart -o memory */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

typedef int cudaError_t;
typedef void *cudaStream_t;
typedef void *cudaEvent_t;
enum { H2H = 0, H2D = 1, D2H = 2, D2D = 3, DEFAULT = 4 };
extern cudaError_t cudaMalloc(void **p, size_t n);
extern cudaError_t cudaFree(void *p);
extern cudaError_t cudaMemcpy(void *d, const void *s, size_t n, int kind);
extern cudaError_t cudaMemcpyAsync(void *d, const void *s, size_t n, int kind, cudaStream_t st);
extern cudaError_t cudaMemset(void *p, int v, size_t n);
extern cudaError_t cudaMemsetAsync(void *p, int v, size_t n, cudaStream_t st);
extern cudaError_t cudaMallocHost(void **p, size_t n);
extern cudaError_t cudaFreeHost(void *p);
extern cudaError_t cudaMemGetInfo(size_t *free, size_t *total);
extern cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned flags);
extern cudaError_t cudaStreamDestroy(cudaStream_t s);
extern cudaError_t cudaStreamSynchronize(cudaStream_t s);
extern cudaError_t cudaEventCreate(cudaEvent_t *e);
extern cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s);
extern cudaError_t cudaEventSynchronize(cudaEvent_t e);
extern cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t a, cudaEvent_t b);
extern cudaError_t cudaEventDestroy(cudaEvent_t e);
extern cudaError_t cudaDeviceSynchronize(void);
extern cudaError_t cudaGetLastError(void);
extern const char *cudaGetErrorString(cudaError_t e);

static int failures = 0;
#define CHECK(cond, ...) do { if (!(cond)) { printf("FAILED: " __VA_ARGS__); printf("\n"); fflush(stdout); failures++; } } while (0)
#define OK(call) do { cudaError_t e_ = (call); CHECK(e_ == 0, "%s -> %s", #call, cudaGetErrorString(e_)); } while (0)

static void fill(unsigned char *p, size_t n, unsigned seed) {
    for (size_t i = 0; i < n; i++) p[i] = (unsigned char)(i * 131 + seed * 7 + (i >> 9));
}

static void round_trip(size_t n, size_t align, int pinned) {
    unsigned char *src, *dst;
    void *dev;
    if (pinned) {
        OK(cudaMallocHost((void **)&src, n + 64));
        OK(cudaMallocHost((void **)&dst, n + 64));
    } else {
        src = malloc(n + 64);
        dst = malloc(n + 64);
    }
    fill(src + align, n, (unsigned)n);
    memset(dst, 0, n + 64);
    OK(cudaMalloc(&dev, n));
    OK(cudaMemcpy(dev, src + align, n, H2D));
    OK(cudaMemcpy(dst + align, dev, n, D2H));
    CHECK(memcmp(src + align, dst + align, n) == 0, "round trip of %zu bytes at +%zu (%s)", n, align, pinned ? "pinned" : "pageable");
    CHECK(dst[align + n] == 0 && (align == 0 || dst[align - 1] == 0), "copy of %zu bytes wrote outside its range", n);
    OK(cudaFree(dev));
    if (pinned) {
        OK(cudaFreeHost(src));
        OK(cudaFreeHost(dst));
    } else {
        free(src);
        free(dst);
    }
}

extern cudaError_t cudaLaunchHostFunc(cudaStream_t s, void (*f)(void *), void *user);
extern cudaError_t cudaStreamAddCallback(cudaStream_t s, void (*f)(cudaStream_t, cudaError_t, void *), void *user, unsigned flags);

static void host_fn(void *p) { (*(int *)p)++; }
static void stream_cb(cudaStream_t s, cudaError_t e, void *p) { (void)s; if (e == 0) (*(int *)p) += 10; }

/* Host functions through the runtime: they run once each, after the stream's earlier work. */
static void host_functions(void) {
    cudaStream_t s;
    int calls = 0;
    OK(cudaStreamCreateWithFlags(&s, 1));
    OK(cudaLaunchHostFunc(s, host_fn, &calls));
    OK(cudaStreamAddCallback(s, stream_cb, &calls, 0));
    OK(cudaLaunchHostFunc(NULL, host_fn, &calls));
    OK(cudaStreamSynchronize(s));
    OK(cudaDeviceSynchronize());
    CHECK(calls == 12, "host functions: %d calls counted, 12 expected", calls);
    OK(cudaStreamDestroy(s));
}

extern cudaError_t cudaHostRegister(void *p, size_t n, unsigned flags);
extern cudaError_t cudaHostUnregister(void *p);

/* cudaHostRegister: part of a MAP_SHARED memfd mapping (not page aligned) becomes pinned
 * memory, round trips through it, and is given back; private memory is refused with
 * cudaErrorNotSupported (801), a second registration with 712, a second unregistration with
 * 713. With `keep_fd` 0 the process holds no descriptor of the file, only the mapping (found
 * through /proc/self/map_files, root only). Returns 1 when the round trip ran. */
static int host_register(int keep_fd) {
    if (!keep_fd && geteuid() != 0) return 0;
    size_t n = (3u << 20) + 5, len = n + 3 * 4096;
    int fd = memfd_create("memory-sample", MFD_CLOEXEC);
    CHECK(fd >= 0 && ftruncate(fd, (off_t)len) == 0, "memfd of %zu bytes", len);
    unsigned char *map = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    CHECK(map != MAP_FAILED, "mmap of the memfd");
    if (!keep_fd) close(fd);
    unsigned char *buf = map + 4096 + 100, *check = malloc(n);
    void *dev;
    fill(buf, n, 9);
    memcpy(check, buf, n);
    cudaError_t e = cudaHostRegister(buf, n, 0);
    if (e == 801) { /* no IOMMU: the driver cannot map it */
        printf("memory: registering host memory is not supported here\n");
        cudaGetLastError();
        munmap(map, len);
        if (keep_fd) close(fd);
        free(check);
        return 0;
    }
    CHECK(e == 0, "cudaHostRegister -> %s", cudaGetErrorString(e));
    CHECK(cudaHostRegister(buf + 8, 16, 0) == 712, "registering registered memory again is refused (712)");
    CHECK(cudaHostRegister(buf, (size_t)-1, 0) == 1, "a length that wraps the address space is invalid (1)");
    CHECK(cudaHostRegister(map, len, 64) == 1, "unknown flags are invalid (1)");
    cudaGetLastError();
    OK(cudaMalloc(&dev, n));
    OK(cudaMemcpy(dev, buf, n, H2D));
    memset(buf, 0, n);
    OK(cudaMemcpyAsync(buf, dev, n, D2H, NULL));
    OK(cudaStreamSynchronize(NULL));
    CHECK(memcmp(buf, check, n) == 0, "round trip through registered memory (descriptor %s)", keep_fd ? "kept" : "closed");
    CHECK(map[4096 + 99] == 0 && buf[n] == 0, "a copy through registered memory wrote outside its range");
    OK(cudaHostUnregister(buf));
    CHECK(cudaHostUnregister(buf) == 713, "unregistering twice is refused (713)");
    cudaGetLastError();
    void *priv = malloc(1 << 16);
    CHECK(cudaHostRegister(priv, 1 << 16, 0) == 801, "private (malloc) memory cannot be registered (801)");
    cudaGetLastError();
    free(priv);
    free(check);
    OK(cudaFree(dev));
    munmap(map, len);
    if (keep_fd) close(fd);
    return 1;
}

int main(void) {
    host_functions();
    if (host_register(1) + host_register(0) > 0) printf("memory: registered host memory checked\n");
    size_t sizes[] = {1, 3, 255, 4095, 4096, 65537, 1u << 20, (17u << 20) + 7};
    size_t aligns[] = {0, 1, 7};
    for (unsigned s = 0; s < sizeof sizes / sizeof *sizes; s++)
        for (unsigned a = 0; a < 3; a++)
            for (int pinned = 0; pinned < 2; pinned++)
                if (!(pinned && sizes[s] > (1u << 20) && a > 0)) round_trip(sizes[s], aligns[a], pinned);

    /* memset, device-to-device, cudaMemcpyDefault */
    size_t n = 1 << 16;
    unsigned char *h = malloc(n), *g = malloc(n);
    void *a, *b;
    size_t free0 = 0, total = 0, free1 = 0;
    /* Free memory is the device's: another process's frees can raise it at any moment (the
       VM test runs this next to itself), so the check has a few tries to see an allocation
       of 16 MiB lower it. */
    int lowered = 0;
    for (int t = 0; t < 10 && !lowered; t++) {
        void *x;
        OK(cudaMemGetInfo(&free0, &total));
        OK(cudaMalloc(&x, 16u << 20));
        OK(cudaMemGetInfo(&free1, &total));
        OK(cudaFree(x));
        lowered = free1 < free0 && free0 <= total;
    }
    CHECK(lowered, "memory info: free %zu then %zu of %zu", free0, free1, total);
    OK(cudaMalloc(&a, n));
    OK(cudaMalloc(&b, n));
    OK(cudaMemset(a, 0x5A, n));
    OK(cudaMemcpy(b, a, n, D2D));
    OK(cudaMemcpy(h, b, n, DEFAULT));
    int all = 1;
    for (size_t i = 0; i < n; i++) all &= h[i] == 0x5A;
    CHECK(all, "memset + device-to-device copy");
    fill(h, n, 3);
    OK(cudaMemcpy(a, h, n, DEFAULT));
    OK(cudaMemcpy(g, a, n, DEFAULT));
    CHECK(memcmp(h, g, n) == 0, "cudaMemcpyDefault round trip");

    /* a stream with events: ordered async work, elapsed time */
    cudaStream_t st;
    cudaEvent_t e0, e1;
    unsigned char *pin;
    OK(cudaStreamCreateWithFlags(&st, 1));
    OK(cudaEventCreate(&e0));
    OK(cudaEventCreate(&e1));
    OK(cudaMallocHost((void **)&pin, n));
    fill(pin, n, 9);
    OK(cudaEventRecord(e0, st));
    OK(cudaMemcpyAsync(a, pin, n, H2D, st));
    OK(cudaMemsetAsync(a, 0x11, 100, st));
    OK(cudaMemcpyAsync(pin, a, n, D2H, st));
    OK(cudaEventRecord(e1, st));
    OK(cudaStreamSynchronize(st));
    OK(cudaEventSynchronize(e1));
    float ms = -1;
    OK(cudaEventElapsedTime(&ms, e0, e1));
    CHECK(ms >= 0, "elapsed time %f", ms);
    fill(h, n, 9);
    memset(h, 0x11, 100);
    CHECK(memcmp(h, pin, n) == 0, "stream-ordered async copies and memset");
    OK(cudaEventDestroy(e0));
    OK(cudaEventDestroy(e1));
    OK(cudaStreamDestroy(st));
    OK(cudaFreeHost(pin));

    /* error paths */
    cudaError_t e = cudaMemcpy(h, (void *)0x1000, 16, D2H);
    CHECK(e != 0, "copy from a bogus device pointer must fail");
    CHECK(cudaGetLastError() == e && cudaGetLastError() == 0, "last error reported once");
    CHECK(cudaFree((void *)0x1234) != 0, "freeing a bogus pointer must fail");
    cudaGetLastError();
    CHECK(cudaStreamSynchronize(st) != 0, "a destroyed stream is refused");
    cudaGetLastError();
    OK(cudaFree(a));
    OK(cudaFree(b));
    OK(cudaDeviceSynchronize());
    if (failures) {
        printf("memory: %d checks failed\n", failures);
        return 1;
    }
    printf("memory: all checks passed\n");
    return 0;
}
