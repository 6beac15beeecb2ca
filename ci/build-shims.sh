#!/usr/bin/env bash
# Builds the drop-in CUDA libraries and lays them out under their real names:
#   OUTDIR/libcuda.so.1     (SONAME libcuda.so.1, unversioned exports)
#   OUTDIR/libcudart.so.12  (SONAME and version node libcudart.so.12)
# plus the libcuda.so / libcudart.so development links.
#   ci/build-shims.sh [--release] [OUTDIR]      (default OUTDIR: target/shims)
# Point LD_LIBRARY_PATH at OUTDIR to use them.
set -euo pipefail
cd "$(dirname "$0")/.."
profile=debug
flag=()
if [ "${1:-}" = --release ]; then profile=release; flag=(--release); shift; fi
out=${1:-target/shims}
cargo build "${flag[@]}" --quiet -p vgpu-libcuda -p vgpu-libcudart
mkdir -p "$out"
link() { # archive soname version-script
  cc -shared -o "$out/$2.tmp" \
    -Wl,--whole-archive "target/$profile/lib$1.a" -Wl,--no-whole-archive \
    -Wl,-soname,"$2" -Wl,--version-script="$3" -Wl,--gc-sections -Wl,-z,defs \
    -lgcc_s -lpthread -ldl -lm -lc
  mv "$out/$2.tmp" "$out/$2"
}
link vgpu_cuda libcuda.so.1 shim/libcuda/libcuda.map
link vgpu_cudart libcudart.so.12 shim/libcudart/libcudart.map
# What the libraries were built from, so that tests can tell stale libraries from current
# ones (shim/libcudart/tests/stack.rs computes the same digest).
find os/src proto/src shim/src shim/libcuda/src shim/libcudart/src -name '*.rs' | LC_ALL=C sort |
  xargs cat | sha256sum | cut -d' ' -f1 > "$out/SOURCES.sha256"
ln -sf libcuda.so.1 "$out/libcuda.so"
ln -sf libcudart.so.12 "$out/libcudart.so"
echo "shims in $out: $(cd "$out" && ls libcuda.so.1 libcudart.so.12 | tr '\n' ' ')"
