/* device_query: finds the CUDA device through the runtime and driver APIs, the way an
 * application (or Ollama's discovery) does, and prints what it found.
 * Exit status: 0 when a device was found, 2 when there is none, 1 on any other error.
 * Build: cc device_query.c -L target/shims -lcudart -lcuda -o device_query */
#include <stdio.h>
#include <stddef.h>

typedef int cudaError_t;
extern cudaError_t cudaGetDeviceCount(int *count);
extern cudaError_t cudaDriverGetVersion(int *version);
extern cudaError_t cudaDeviceGetAttribute(int *value, int attr, int device);
extern cudaError_t cudaDeviceGetPCIBusId(char *id, int len, int device);
extern cudaError_t cudaGetLastError(void);
extern const char *cudaGetErrorString(cudaError_t e);
extern cudaError_t cudaGetDeviceProperties_v2(void *prop, int device);
extern int cuDeviceGetName(char *name, int len, int dev);
extern int cuDeviceTotalMem_v2(size_t *bytes, int dev);

/* cudaDeviceProp (CUDA 12, 1032 bytes) read at its documented offsets, so that this sample
 * needs no CUDA headers; shim/libcudart/src/props.rs pins the same offsets. */
struct prop_view { unsigned char raw[1032]; };
#define PROP_NAME 0
#define PROP_TOTAL_MEM 288
#define PROP_MAJOR 360
#define PROP_MINOR 364
#define PROP_SM_COUNT 388
#define PROP_INTEGRATED 396
#include <string.h>
static int prop_int(const struct prop_view *p, int off) { int v; memcpy(&v, p->raw + off, sizeof v); return v; }
static size_t prop_size(const struct prop_view *p, int off) { size_t v; memcpy(&v, p->raw + off, sizeof v); return v; }

int main(void) {
    int n = -1, version = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != 0) {
        printf("no CUDA device: %s (error %d); count %d\n", cudaGetErrorString(e), e, n);
        cudaGetLastError();
        return e == 100 ? 2 : 1;
    }
    cudaDriverGetVersion(&version);
    for (int d = 0; d < n; d++) {
        char name[256] = {0}, bus[32] = {0};
        int major = 0, minor = 0, sms = 0;
        size_t mem = 0;
        cuDeviceGetName(name, sizeof name, d);
        cuDeviceTotalMem_v2(&mem, d);
        cudaDeviceGetAttribute(&major, 75, d);
        cudaDeviceGetAttribute(&minor, 76, d);
        cudaDeviceGetAttribute(&sms, 16, d);
        cudaDeviceGetPCIBusId(bus, sizeof bus, d);
        printf("device %d: %s, compute capability %d.%d, %d SMs, %zu MiB, PCI %s, CUDA %d.%d\n",
               d, name, major, minor, sms, mem >> 20, bus, version / 1000, (version % 1000) / 10);
        if (major == 0 || mem == 0) {
            printf("device %d: properties are missing\n", d);
            return 1;
        }
        struct prop_view p;
        memset(&p, 0xAB, sizeof p);
        e = cudaGetDeviceProperties_v2(&p, d);
        if (e != 0) {
            printf("cudaGetDeviceProperties_v2: %s\n", cudaGetErrorString(e));
            return 1;
        }
        int agree = strncmp((const char *)p.raw + PROP_NAME, name, sizeof name) == 0 &&
                    prop_size(&p, PROP_TOTAL_MEM) == mem && prop_int(&p, PROP_MAJOR) == major &&
                    prop_int(&p, PROP_MINOR) == minor && prop_int(&p, PROP_SM_COUNT) == sms &&
                    prop_int(&p, PROP_INTEGRATED) == 0;
        printf("device %d: cudaGetDeviceProperties_v2 %s the driver API\n", d, agree ? "agrees with" : "DISAGREES with");
        if (!agree)
            return 1;
    }
    return 0;
}
