#!/usr/bin/env bash
# Real ggml ops on the vGPU: a registry build of ggml's CUDA backend (PyPI inferna-cuda12,
# ggml 0.27.0, CUDA 12.4) runs tests/ggml/ggml_ops.c's ops through the drop-in libraries on
# the soft device — its kernels from their own PTX — and each result is checked against
# ggml's CPU backend.
#   ci/ggml-ops.sh [--debug] [--loopback]
# --loopback runs the ops (only) through the cuda executor on vgpu's own libraries on top of
# the soft device (ci/stack-lib.sh start_loopback): every GEMM, copy and launch ggml makes
# passes through the cuda executor's checks and CUDA calls.
#
# The soft device reports compute capability 7.5 here: registry builds carry compute_75 PTX
# only, and ggml chooses its kernels by the device's capability (on 8.0 and later it picks
# variants that the compute_75 PTX holds only as stubs that trap). The products with more
# columns than ggml's own kernels take go through vgpu's libcublas.so.12 (GEMM, and the
# strided-batched GEMM of an attention K·Q product): no NVIDIA library is on the path.
set -euo pipefail
cd "$(dirname "$0")/.."
profile=release
flag=(--release)
loopback=0
for a in "$@"; do
  case $a in
    --debug) profile=debug; flag=() ;;
    --loopback) loopback=1 ;;
    *) echo "usage: ci/ggml-ops.sh [--debug] [--loopback]" >&2; exit 2 ;;
  esac
done

. ci/ggml-wheel.sh
ci/python-env.sh >/dev/null
lib=$ggml_lib
dir=$ggml_dir

# The test program.
rm -f "$dir/libcublas.so.12" "$dir/libcublasLt.so.12" "$dir/cublas.map"
cc -O1 -Wall -Werror -o "$dir/ggml_ops" tests/ggml/ggml_ops.c -L"$lib" -l:"$base" -l:"$cpu" \
  -l:"$cuda" -lm -Wl,--allow-shlib-undefined

cargo build "${flag[@]}" --quiet -p vgpu-stub -p vgpu-driver
ci/build-shims.sh "${flag[@]}" target/shims >/dev/null
. ci/stack-lib.sh
work=$(mktemp -d)
trap 'stop_stack; rm -rf "$work"' EXIT
if [ $loopback = 1 ]; then
  start_loopback "$profile" "$work" --memory 4G --compute-capability 7.5 --no-reference-kernels
else
  start_stack "$profile" "$work" --memory 4G --compute-capability 7.5 --no-reference-kernels
fi

# libcublas logs each GEMM it posts at debug level: the products meant for cuBLAS must
# have reached it (a newer ggml could pick its own kernels for them instead).
VGPU_SOCKET=$work/vgpu.sock LD_LIBRARY_PATH="$PWD/target/shims:$lib" \
  VGPU_LOG=warn,vgpu_cublas=debug timeout 600 "$dir/ggml_ops" 2> "$work/stderr" ||
  { cat "$work/stderr" >&2; exit 1; }
grep -v 'vgpu_cublas' "$work/stderr" >&2 || true
for f in cublasSgemm_v2 cublasGemmEx 'cublasGemm(Strided)?BatchedEx'; do
  n=$(grep -cE "libcublas: $f:" "$work/stderr" || true)
  echo "libcublas: $f called $n times"
  [ "$n" -gt 0 ] || { echo "ggml-ops: ggml never called $f" >&2; exit 1; }
done
if [ $loopback = 1 ]; then
  check_loopback_pins "$work"
  echo "ggml-ops: the ops above ran through the cuda executor (loop-back)"
  exit 0
fi

# Discovery under CUDA_VISIBLE_DEVICES, in the forms CUDA accepts: an index, the device's
# UUID as GPU-<uuid> (here from vgpu's NVML, which agrees with cuDeviceGetUuid), a unique
# prefix of it; and an index that names no device.
uuid=$(LD_LIBRARY_PATH="$PWD/target/shims" VGPU_SOCKET=$work/vgpu.sock target/py/bin/python -c \
  'import pynvml; pynvml.nvmlInit(); print(pynvml.nvmlDeviceGetUUID(pynvml.nvmlDeviceGetHandleByIndex(0)))')
for v in 0 "$uuid" "${uuid:0:12}" 1; do
  line=$(CUDA_VISIBLE_DEVICES=$v VGPU_SOCKET=$work/vgpu.sock LD_LIBRARY_PATH="$PWD/target/shims:$lib" \
    VGPU_LOG=error "$dir/ggml_ops" --discover 2>/dev/null)
  echo "CUDA_VISIBLE_DEVICES=$v: $line"
  want="1 CUDA device(s); 0: VGPU-STUB"
  [ "$v" = 1 ] && want="0 CUDA device(s)"
  case $line in *"$want"*) ;; *) echo "ggml-ops: CUDA_VISIBLE_DEVICES=$v: expected \"$want\"" >&2; exit 1 ;; esac
done

# Three ops of a decode step timed on the vGPU against ggml's CPU backend, same run.
VGPU_SOCKET=$work/vgpu.sock LD_LIBRARY_PATH="$PWD/target/shims:$lib" VGPU_LOG=error \
  timeout 600 "$dir/ggml_ops" --bench
