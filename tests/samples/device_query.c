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
extern int cuDeviceGetName(char *name, int len, int dev);
extern int cuDeviceTotalMem_v2(size_t *bytes, int dev);

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
    }
    return 0;
}
