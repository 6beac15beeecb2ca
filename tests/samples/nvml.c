/* nvml: NVML through libnvidia-ml.so.1 agrees with the driver API (name, UUID, PCI bus id,
 * memory), answers what Ollama and pynvml-based tools ask, and fails as NVML does on bad
 * arguments. Exit status 0 when every check passed.
 * Build: cc nvml.c -L target/shims -lnvidia-ml -lcuda -o nvml */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef int nvmlReturn_t;
typedef void *nvmlDevice_t;
typedef struct { unsigned long long total, free, used; } nvmlMemory_t;
typedef struct { unsigned int version; unsigned long long total, reserved, free, used; } nvmlMemory_v2_t;
typedef struct {
    char busIdLegacy[16];
    unsigned int domain, bus, device, pciDeviceId, pciSubSystemId;
    char busId[32];
} nvmlPciInfo_t;
typedef struct { unsigned int gpu, memory; } nvmlUtilization_t;
typedef struct { unsigned int pid; unsigned long long usedGpuMemory; unsigned int gi, ci; } nvmlProcessInfo_t;
extern nvmlReturn_t nvmlInit_v2(void);
extern nvmlReturn_t nvmlInitWithFlags(unsigned int);
extern nvmlReturn_t nvmlShutdown(void);
extern const char *nvmlErrorString(nvmlReturn_t);
extern nvmlReturn_t nvmlSystemGetDriverVersion(char *, unsigned int);
extern nvmlReturn_t nvmlSystemGetCudaDriverVersion_v2(int *);
extern nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *);
extern nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int, nvmlDevice_t *);
extern nvmlReturn_t nvmlDeviceGetHandleByUUID(const char *, nvmlDevice_t *);
extern nvmlReturn_t nvmlDeviceGetHandleByPciBusId_v2(const char *, nvmlDevice_t *);
extern nvmlReturn_t nvmlDeviceGetName(nvmlDevice_t, char *, unsigned int);
extern nvmlReturn_t nvmlDeviceGetUUID(nvmlDevice_t, char *, unsigned int);
extern nvmlReturn_t nvmlDeviceGetSerial(nvmlDevice_t, char *, unsigned int);
extern nvmlReturn_t nvmlDeviceGetPciInfo_v3(nvmlDevice_t, nvmlPciInfo_t *);
extern nvmlReturn_t nvmlDeviceGetMemoryInfo(nvmlDevice_t, nvmlMemory_t *);
extern nvmlReturn_t nvmlDeviceGetMemoryInfo_v2(nvmlDevice_t, nvmlMemory_v2_t *);
extern nvmlReturn_t nvmlDeviceGetUtilizationRates(nvmlDevice_t, nvmlUtilization_t *);
extern nvmlReturn_t nvmlDeviceGetTemperature(nvmlDevice_t, int, unsigned int *);
extern nvmlReturn_t nvmlDeviceGetCudaComputeCapability(nvmlDevice_t, int *, int *);
extern nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v3(nvmlDevice_t, unsigned int *, nvmlProcessInfo_t *);
extern nvmlReturn_t nvmlDeviceGetFanSpeed(nvmlDevice_t, unsigned int *);

typedef int CUresult;
extern CUresult cuInit(unsigned);
extern CUresult cuDeviceGetName(char *, int, int);
extern CUresult cuDeviceGetUuid(unsigned char *, int);
extern CUresult cuDeviceGetPCIBusId(char *, int, int);
extern CUresult cuDeviceGetAttribute(int *, int, int);
extern CUresult cuMemGetInfo_v2(size_t *, size_t *);
extern CUresult cuMemAlloc_v2(unsigned long long *, size_t);
extern CUresult cuDriverGetVersion(int *);

static int failures = 0;
#define CHECK(cond, ...) do { if (!(cond)) { printf("FAILED: " __VA_ARGS__); printf("\n"); fflush(stdout); failures++; } } while (0)
#define NV(call) do { nvmlReturn_t r_ = (call); CHECK(r_ == 0, "%s -> %s", #call, nvmlErrorString(r_)); } while (0)

/* "0000:3b:00.0" and "00000000:3B:00.0" name the same function. */
static void canon(const char *in, char *out) {
    const char *colon = strchr(in, ':');
    unsigned long dom = strtoul(in, NULL, 16);
    sprintf(out, "%08lx", dom);
    for (char *o = out + 8; colon && *colon; colon++) *o++ = (char)tolower((unsigned char)*colon), *o = 0;
}

int main(void) {
    CHECK(nvmlDeviceGetCount_v2(&(unsigned){0}) == 1, "before nvmlInit: not NVML_ERROR_UNINITIALIZED");
    NV(nvmlInit_v2());
    NV(nvmlInitWithFlags(0));
    char drv[80];
    NV(nvmlSystemGetDriverVersion(drv, sizeof drv));
    printf("nvml: driver %s\n", drv);
    CHECK(atoi(drv) >= 550, "driver version %s is older than Ollama accepts", drv);
    CHECK(nvmlSystemGetDriverVersion(drv, 3) == 7, "a short buffer: not NVML_ERROR_INSUFFICIENT_SIZE");
    int nv_cuda = 0, cu_cuda = 0;
    NV(nvmlSystemGetCudaDriverVersion_v2(&nv_cuda));
    cuInit(0);
    cuDriverGetVersion(&cu_cuda);
    CHECK(nv_cuda == cu_cuda && nv_cuda >= 12000, "CUDA version: NVML %d, driver API %d", nv_cuda, cu_cuda);
    unsigned count = 0;
    NV(nvmlDeviceGetCount_v2(&count));
    CHECK(count == 1, "count %u", count);
    nvmlDevice_t dev = NULL, by = NULL;
    NV(nvmlDeviceGetHandleByIndex_v2(0, &dev));
    CHECK(nvmlDeviceGetHandleByIndex_v2(1, &by) == 2, "index 1: not NVML_ERROR_INVALID_ARGUMENT");

    char name[96], cuname[96];
    NV(nvmlDeviceGetName(dev, name, sizeof name));
    cuDeviceGetName(cuname, sizeof cuname, 0);
    CHECK(strcmp(name, cuname) == 0, "name: NVML \"%s\", driver API \"%s\"", name, cuname);

    char uuid[96], want[96];
    unsigned char u[16];
    NV(nvmlDeviceGetUUID(dev, uuid, sizeof uuid));
    cuDeviceGetUuid(u, 0);
    sprintf(want, "GPU-%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", u[0], u[1],
            u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12], u[13], u[14], u[15]);
    CHECK(strcmp(uuid, want) == 0, "UUID: NVML %s, driver API %s", uuid, want);
    NV(nvmlDeviceGetHandleByUUID(uuid, &by));
    CHECK(by == dev, "handle by UUID");
    CHECK(nvmlDeviceGetHandleByUUID("GPU-00000000-0000-0000-0000-000000000000", &by) == 6,
          "an unknown UUID: not NVML_ERROR_NOT_FOUND");

    nvmlPciInfo_t pci;
    char cubus[32], a[64], b[64];
    NV(nvmlDeviceGetPciInfo_v3(dev, &pci));
    cuDeviceGetPCIBusId(cubus, sizeof cubus, 0);
    canon(pci.busId, a);
    canon(cubus, b);
    CHECK(strcmp(a, b) == 0, "PCI bus id: NVML %s, driver API %s", pci.busId, cubus);
    NV(nvmlDeviceGetHandleByPciBusId_v2(cubus, &by));
    CHECK(by == dev, "handle by PCI bus id");

    size_t cufree = 0, cutotal = 0;
    nvmlMemory_t m;
    unsigned long long dptr;
    cuMemAlloc_v2(&dptr, 64 << 20);
    cuMemGetInfo_v2(&cufree, &cutotal);
    NV(nvmlDeviceGetMemoryInfo(dev, &m));
    CHECK(m.total == cutotal && m.free == cufree && m.used == cutotal - cufree,
          "memory: NVML total %llu free %llu used %llu, driver API total %zu free %zu", m.total, m.free,
          m.used, cutotal, cufree);
    CHECK(m.used >= (64ull << 20), "the 64 MiB allocated are not counted as used (%llu)", m.used);
    nvmlMemory_v2_t m2 = {.version = (unsigned)sizeof(nvmlMemory_v2_t) | 2u << 24};
    NV(nvmlDeviceGetMemoryInfo_v2(dev, &m2));
    CHECK(m2.total == m.total && m2.free == m.free, "memory v2");
    m2.version = 1;
    CHECK(nvmlDeviceGetMemoryInfo_v2(dev, &m2) == 25, "a wrong struct version: not NVML_ERROR_ARGUMENT_VERSION_MISMATCH");

    int major = 0, minor = 0, cmaj = 0, cmin = 0;
    NV(nvmlDeviceGetCudaComputeCapability(dev, &major, &minor));
    cuDeviceGetAttribute(&cmaj, 75, 0);
    cuDeviceGetAttribute(&cmin, 76, 0);
    CHECK(major == cmaj && minor == cmin, "compute capability: NVML %d.%d, driver API %d.%d", major, minor, cmaj, cmin);
    nvmlUtilization_t ut;
    NV(nvmlDeviceGetUtilizationRates(dev, &ut));
    CHECK(ut.gpu <= 100 && ut.memory <= 100, "utilization %u %u", ut.gpu, ut.memory);
    unsigned t;
    nvmlReturn_t tr = nvmlDeviceGetTemperature(dev, 0, &t);
    CHECK(tr == 0 || tr == 3, "temperature: %s", nvmlErrorString(tr));
    char serial[32];
    NV(nvmlDeviceGetSerial(dev, serial, sizeof serial));

    unsigned n = 0;
    CHECK(nvmlDeviceGetComputeRunningProcesses_v3(dev, &n, NULL) == 7 && n == 1,
          "process count query: not NVML_ERROR_INSUFFICIENT_SIZE with 1");
    nvmlProcessInfo_t procs[4];
    n = 4;
    NV(nvmlDeviceGetComputeRunningProcesses_v3(dev, &n, procs));
    CHECK(n == 1 && procs[0].pid == (unsigned)getpid() && procs[0].usedGpuMemory == m.used,
          "processes: %u, pid %u (want %d), used %llu", n, procs[0].pid, getpid(), procs[0].usedGpuMemory);
    CHECK(nvmlDeviceGetFanSpeed(dev, &t) == 3, "fan speed: not NVML_ERROR_NOT_SUPPORTED");
    CHECK(nvmlDeviceGetName((nvmlDevice_t)0x1234, name, sizeof name) == 2, "a bad handle: not NVML_ERROR_INVALID_ARGUMENT");
    CHECK(strcmp(nvmlErrorString(1), "Uninitialized") == 0, "nvmlErrorString");
    NV(nvmlShutdown());
    NV(nvmlShutdown());
    CHECK(nvmlShutdown() == 1, "a third shutdown: not NVML_ERROR_UNINITIALIZED");
    CHECK(nvmlDeviceGetName(dev, name, sizeof name) == 1, "after shutdown: not NVML_ERROR_UNINITIALIZED");
    if (failures) { printf("nvml: %d checks FAILED\n", failures); return 1; }
    printf("nvml: %s %s, %llu MiB; agrees with the driver API, all checks passed\n", name, uuid, m.total >> 20);
    return 0;
}
