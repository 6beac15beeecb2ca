/* discover: loads a ggml CUDA backend the way Ollama's runner does (dlopen with RTLD_NOW |
 * RTLD_LOCAL; the library path decides which CUDA libraries it binds) and prints the CUDA
 * devices it finds. Exit status 0 when it finds at least one.
 * Build: cc discover.c -ldl -o discover;   discover PATH/libggml-cuda.so */
#include <dlfcn.h>
#include <stdio.h>

int main(int argc, char **argv) {
    if (argc != 2) { fprintf(stderr, "usage: discover LIBGGML_CUDA\n"); return 2; }
    void *h = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (!h) { printf("discover: the backend does not load: %s\n", dlerror()); return 1; }
    int (*count)(void) = (int (*)(void))dlsym(h, "ggml_backend_cuda_get_device_count");
    void (*desc)(int, char *, size_t) = (void (*)(int, char *, size_t))dlsym(h, "ggml_backend_cuda_get_device_description");
    if (!count || !desc) { printf("discover: not a ggml CUDA backend\n"); return 1; }
    int n = count();
    printf("discover: %d CUDA device(s)", n);
    for (int i = 0; i < n; i++) {
        char d[256];
        desc(i, d, sizeof d);
        printf("; %d: %s", i, d);
    }
    printf("\n");
    return n > 0 ? 0 : 1;
}
