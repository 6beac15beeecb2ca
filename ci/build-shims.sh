#!/usr/bin/env bash
# Builds the drop-in CUDA libraries and lays them out under their real names:
#   OUTDIR/libcuda.so.1     (SONAME libcuda.so.1, unversioned exports)
#   OUTDIR/libcudart.so.12  (SONAME and version node libcudart.so.12)
#   OUTDIR/libcublas.so.12  (SONAME and version node libcublas.so.12; NEEDED libcublasLt.so.12)
#   OUTDIR/libcublasLt.so.12 (SONAME and version node libcublasLt.so.12)
#   OUTDIR/libnvidia-ml.so.1 (SONAME libnvidia-ml.so.1, unversioned exports)
# plus the libcuda.so / libcudart.so development links.
#   ci/build-shims.sh [--release] [OUTDIR]      (default OUTDIR: target/shims)
# Point LD_LIBRARY_PATH at OUTDIR to use them.
set -euo pipefail
cd "$(dirname "$0")/.."
profile=debug
flag=()
if [ "${1:-}" = --release ]; then profile=release; flag=(--release); shift; fi
out=${1:-target/shims}
cargo build "${flag[@]}" --quiet -p vgpu-libcuda -p vgpu-libcudart -p vgpu-libcublas -p vgpu-libcublaslt -p vgpu-libnvml
mkdir -p "$out"
link() { # archive soname version-script [libraries it needs]
  cc -shared -o "$out/$2.tmp" \
    -Wl,--whole-archive "target/$profile/lib$1.a" -Wl,--no-whole-archive \
    -Wl,-soname,"$2" -Wl,--version-script="$3" -Wl,--gc-sections -Wl,-z,defs \
    -L"$out" "${@:4}" -lgcc_s -lpthread -ldl -lm -lc
  mv "$out/$2.tmp" "$out/$2"
}
link vgpu_cuda libcuda.so.1 shim/libcuda/libcuda.map
link vgpu_cudart libcudart.so.12 shim/libcudart/libcudart.map
link vgpu_cublaslt libcublasLt.so.12 shim/libcublaslt/libcublasLt.map
# -Wl,--no-as-needed: NEEDED libcublasLt.so.12 as NVIDIA's, though nothing is called in it yet.
link vgpu_cublas libcublas.so.12 shim/libcublas/libcublas.map -Wl,--no-as-needed -l:libcublasLt.so.12
link vgpu_nvml libnvidia-ml.so.1 shim/libnvml/libnvidia-ml.map
# What the libraries were built from, so that tests can tell stale libraries from current
# ones (shim/libcudart/tests/stack.rs computes the same digest).
find os/src proto/src shim/src shim/abi/src shim/libcuda/src shim/libcudart/src shim/libcublas/src shim/libcublaslt/src shim/libnvml/src -name '*.rs' | LC_ALL=C sort |
  xargs cat | sha256sum | cut -d' ' -f1 > "$out/SOURCES.sha256"
ln -sf libcuda.so.1 "$out/libcuda.so"
ln -sf libcudart.so.12 "$out/libcudart.so"
ln -sf libcublas.so.12 "$out/libcublas.so"
ln -sf libcublasLt.so.12 "$out/libcublasLt.so"
ln -sf libnvidia-ml.so.1 "$out/libnvidia-ml.so"
echo "shims in $out: $(cd "$out" && ls libcuda.so.1 libcudart.so.12 libcublas.so.12 libcublasLt.so.12 libnvidia-ml.so.1 | tr '\n' ' ')"
