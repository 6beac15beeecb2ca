#!/usr/bin/env bash
# Real ggml ops on the vGPU: a registry build of ggml's CUDA backend (PyPI inferna-cuda12,
# ggml 0.27.0, CUDA 12.4) runs tests/ggml/ggml_ops.c's ops through the drop-in libraries on
# the soft device — its kernels from their own PTX — and each result is checked against
# ggml's CPU backend.
#   ci/ggml-ops.sh [--debug]
#
# The soft device reports compute capability 7.5 here: registry builds carry compute_75 PTX
# only, and ggml chooses its kernels by the device's capability (on 8.0 and later it picks
# variants that the compute_75 PTX holds only as stubs that trap). libcublas.so.12 and
# libcublasLt.so.12 are stand-ins that let the loader resolve ggml's imports and answer
# NOT_SUPPORTED (tests/ggml/cublas_standin.c); none of these ops calls cuBLAS.
set -euo pipefail
cd "$(dirname "$0")/.."
profile=release
flag=(--release)
if [ "${1:-}" = --debug ]; then profile=debug; flag=(); fi

wheel_pkg=inferna-cuda12==0.7.0
dir=target/ggml
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
if [ ! -f "$dir/installed" ] || [ "$(cat "$dir/installed")" != "$wheel_pkg" ]; then
  rm -rf "$dir/wheel" "$dir/lib" "$dir/venv"
  python3 -m venv "$dir/venv" >&2
  "$dir/venv/bin/pip" download --quiet --disable-pip-version-check --no-deps \
    --python-version 3.12 --only-binary=:all: -d "$dir/wheel" "$wheel_pkg" >&2
  python3 -m zipfile -e "$dir"/wheel/*.whl "$dir/wheel/x"
  mkdir -p "$dir/lib"
  cp "$dir"/wheel/x/inferna_cuda12.libs/libggml* "$dir/lib/"
  echo "$wheel_pkg" > "$dir/installed"
fi
lib=$dir/lib
base=$(basename "$(ls "$lib"/libggml-base-*.so*)")
cpu=$(basename "$(ls "$lib"/libggml-cpu-*.so)")
cuda=$(basename "$(ls "$lib"/libggml-cuda-*.so)")

# The cuBLAS stand-ins and the test program.
echo 'libcublas.so.12 { global: *; };' > "$dir/cublas.map"
cc -shared -fPIC -Wall -Werror -o "$dir/libcublas.so.12" -Wl,-soname,libcublas.so.12 \
  -Wl,--version-script="$dir/cublas.map" tests/ggml/cublas_standin.c
echo 'int vgpu_cublaslt_standin;' | cc -shared -fPIC -x c -o "$dir/libcublasLt.so.12" \
  -Wl,-soname,libcublasLt.so.12 -
cc -O1 -Wall -Werror -o "$dir/ggml_ops" tests/ggml/ggml_ops.c -L"$lib" -l:"$base" -l:"$cpu" \
  -l:"$cuda" -lm -Wl,--allow-shlib-undefined

cargo build "${flag[@]}" --quiet -p vgpu-stub -p vgpu-driver
ci/build-shims.sh "${flag[@]}" target/shims >/dev/null
. ci/stack-lib.sh
work=$(mktemp -d)
trap 'stop_stack; rm -rf "$work"' EXIT
start_stack "$profile" "$work" --memory 4G --compute-capability 7.5 --no-reference-kernels

VGPU_SOCKET=$work/vgpu.sock LD_LIBRARY_PATH="$dir:$PWD/target/shims:$lib" \
  timeout 600 "$dir/ggml_ops"
