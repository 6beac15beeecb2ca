// kernels_app: a real CUDA program, compiled by a CUDA toolchain from the package
// registries (ci/build-cuda-programs.sh), in both kernel-launch ABIs:
//   CUDA 12 (clang): <<<...>>> -> __cudaPushCallConfiguration, the host stub pops it and
//                    calls cudaLaunchKernel;
//   CUDA 13 (nvcc 13): the host stub calls __cudaGetKernel once, then __cudaLaunchKernel.
// Both link against libcudart.so.12. It launches vecAdd (a vector add that also reads an
// initialised __device__ array) and odd_params (a struct by value, then pointer, long long,
// short and pointer parameters at awkward offsets) with a __constant__ table set through
// cudaMemcpyToSymbol, resets the device and runs again, and checks every result on the host.
// The kernels are the parser fixtures' (fatbin/tests/fixtures/kernels.cu), which the soft
// executor runs as CPU reference kernels.
#include <cstdio>
#include <cstring>
#include <vector>

#include "../../fatbin/tests/fixtures/kernels.cu"

#define CHECK(call)                                                                        \
    do {                                                                                   \
        cudaError_t e_ = (call);                                                           \
        if (e_ != cudaSuccess) {                                                           \
            std::printf("FAIL %s:%d: %s -> %s (%d)\n", __FILE__, __LINE__, #call,          \
                        cudaGetErrorString(e_), (int)e_);                                  \
            return 1;                                                                      \
        }                                                                                  \
    } while (0)

static int vector_add() {
    const int n = 100000;
    std::vector<float> a(n), b(n), c(n);
    for (int i = 0; i < n; i++) {
        a[i] = (float)i;
        b[i] = 0.25f * (float)(n - i);
    }
    float *da, *db, *dc;
    CHECK(cudaMalloc(&da, n * sizeof(float)));
    CHECK(cudaMalloc(&db, n * sizeof(float)));
    CHECK(cudaMalloc(&dc, n * sizeof(float)));
    CHECK(cudaMemcpy(da, a.data(), n * sizeof(float), cudaMemcpyHostToDevice));
    CHECK(cudaMemcpy(db, b.data(), n * sizeof(float), cudaMemcpyHostToDevice));
    cudaStream_t s;
    CHECK(cudaStreamCreate(&s));
    // Twice on a stream: the second launch finds the function already resolved.
    vecAdd<<<(n + 255) / 256, 256, 0, s>>>(da, db, dc, n);
    CHECK(cudaGetLastError());
    vecAdd<<<(n + 127) / 128, 128, 0, s>>>(da, db, dc, n);
    CHECK(cudaGetLastError());
    CHECK(cudaStreamSynchronize(s));
    CHECK(cudaMemcpy(c.data(), dc, n * sizeof(float), cudaMemcpyDeviceToHost));
    for (int i = 0; i < n; i++) {
        float want = a[i] + b[i] + (i % 37 == 0 ? 1.0f : 0.0f);  // g_table = {1, 0, ...}
        if (c[i] != want) {
            std::printf("FAIL vecAdd: c[%d] = %f, want %f\n", i, c[i], want);
            return 1;
        }
    }
    CHECK(cudaStreamDestroy(s));
    CHECK(cudaFree(da));
    CHECK(cudaFree(db));
    CHECK(cudaFree(dc));
    std::printf("vecAdd: %d elements checked\n", n);
    return 0;
}

static int awkward_parameters() {
    Params p;
    std::memset(&p, 0, sizeof p);
    p.i = 1000;
    p.d = 234.75;
    std::memcpy(p.c, "abcdefghijkl", 12);
    p.c[12] = 7;
    int q = 50000, *dq, *dout;
    CHECK(cudaMalloc(&dq, sizeof(int)));
    CHECK(cudaMalloc(&dout, sizeof(int)));
    CHECK(cudaMemcpy(dq, &q, sizeof q, cudaMemcpyHostToDevice));
    long long r = 3000000000LL - 2999000000LL;  // 1000000: high bits pass through
    short s = -3;
    // The __constant__ table, through its host shadow: c_coeffs[s & 15] = c_coeffs[13].
    int coeffs[16] = {0};
    coeffs[13] = 400;
    CHECK(cudaMemcpyToSymbol(c_coeffs, coeffs, sizeof coeffs));
    int back[16] = {0};
    CHECK(cudaMemcpyFromSymbol(back, c_coeffs, 4, 13 * sizeof(int)));
    size_t size = 0;
    CHECK(cudaGetSymbolSize(&size, c_coeffs));
    void *table = nullptr;
    CHECK(cudaGetSymbolAddress(&table, g_table));
    float t0 = 0;
    CHECK(cudaMemcpy(&t0, table, sizeof t0, cudaMemcpyDeviceToHost));
    if (back[0] != 400 || size != sizeof coeffs || t0 != 1.0f) {
        std::printf("FAIL symbols: c_coeffs[13] = %d, size %zu, g_table[0] = %f\n", back[0], size, t0);
        return 1;
    }
    if (cudaMemcpyToSymbol(c_coeffs, coeffs, sizeof coeffs + 4) != cudaErrorInvalidValue) {
        std::printf("FAIL symbols: a copy past the end of c_coeffs was accepted\n");
        return 1;
    }
    cudaGetLastError();
    odd_params<<<1, 1>>>(p, dq, r, s, dout);
    CHECK(cudaGetLastError());
    int out = 0;
    CHECK(cudaMemcpy(&out, dout, sizeof out, cudaMemcpyDeviceToHost));
    int want = p.i + (int)p.d + p.c[12] + q + (int)r + s + 400;
    if (out != want) {
        std::printf("FAIL odd_params: out = %d, want %d\n", out, want);
        return 1;
    }
    CHECK(cudaFree(dq));
    CHECK(cudaFree(dout));
    std::printf("odd_params: struct by value and mixed parameters checked (%d), with symbols\n", out);
    return 0;
}

int main() {
    int count = 0;
    CHECK(cudaGetDeviceCount(&count));
    // Attributes, not cudaDeviceProp: the CUDA 13 headers' cudaDeviceProp is not the layout
    // libcudart.so.12 fills.
    int major = 0, minor = 0;
    CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, 0));
    CHECK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, 0));
    std::printf("%d device(s); device 0 has compute capability %d.%d\n", count, major, minor);
    if (vector_add() || awkward_parameters()) return 1;
    CHECK(cudaDeviceSynchronize());
    // A device reset destroys everything; kernels and symbols work again afterwards.
    CHECK(cudaDeviceReset());
    if (vector_add()) return 1;
    std::printf("cudaDeviceReset: the program ran again after it\n");
    std::printf("kernels_app: all checks passed\n");
    return 0;
}
