#!/usr/bin/env bash
# The GPU kit: on a machine with an NVIDIA GPU, its driver and a CUDA toolkit, runs the
# stack on the GPU (vgpu-stub --executor cuda, vgpu-driver over vfio-user) and the same
# programs natively on the same GPU, checks every result, and prints one table: each
# figure natively, on the vGPU, and their ratio. Unattended, bounded (about 8 minutes).
#   tests/gpu/kit.sh              on the GPU
#   tests/gpu/kit.sh --loopback   without a GPU, to check the kit itself: "native" is
#                                 vgpu's libraries on the soft device, and the vGPU is the
#                                 cuda executor on them (loop-back)
#   --debug   debug builds;  --quick   fewer repetitions and smaller copies (ci/test.sh
#             runs tests/gpu/kit.sh --loopback --debug --quick)
# Builds with cargo when it can (offline: the crates must already be fetched); otherwise it
# uses target/release/{vgpu-stub,vgpu-driver} and target/shims as they are (build them
# elsewhere and copy them over). The real CUDA programs (tests/cuda) are compiled with the
# toolkit's nvcc when there is one (-cudart shared, so that the vGPU run gets vgpu's
# libcudart.so.12); ggml's ops run when target/ggml holds the wheel (ci/ggml-wheel.sh).
set -uo pipefail
cd "$(dirname "$0")/../.."
mode=gpu
profile=release
flag=(--release)
quick=()
for a in "$@"; do
  case $a in
    --loopback) mode=loopback ;;
    --debug) profile=debug; flag=() ;;
    --quick) quick=(--quick) ;;
    *) echo "usage: tests/gpu/kit.sh [--loopback] [--debug] [--quick]" >&2; exit 2 ;;
  esac
done
out=target/gpu-kit
mkdir -p "$out"
fails=0
step() { printf '\n=== %s\n' "$*"; }
fail() { echo "KIT FAIL: $*"; fails=$((fails + 1)); }

step "build"
if cargo build "${flag[@]}" --offline --quiet -p vgpu-stub -p vgpu-driver 2>"$out/build.log" &&
   ci/build-shims.sh "${flag[@]}" target/shims >/dev/null 2>>"$out/build.log"; then
  echo "built vgpu-stub, vgpu-driver and the drop-in libraries"
elif [ -x "target/$profile/vgpu-stub" ] && [ -x "target/$profile/vgpu-driver" ] && [ -f target/shims/libcuda.so.1 ]; then
  echo "cargo could not build (see $out/build.log); using the binaries already in target/"
else
  cat "$out/build.log"; echo "KIT FAIL: nothing to run"; exit 1
fi
cc -O2 -Wall -o "$out/gpubench" tests/gpu/gpubench.c -ldl -lm || exit 1
for s in device_query memory launch driver_api cublas; do
  extra=(-lcudart -lcuda)
  [ $s = cublas ] && extra=(-lcublas -lcublasLt -lcudart -lm)
  cc -o "$out/$s" "tests/samples/$s.c" -Ltarget/shims -Wl,-rpath-link,target/shims "${extra[@]}" || exit 1
done

. ci/stack-lib.sh
work=$(mktemp -d)
trap 'stop_stack; rm -rf "$work"' EXIT
if [ $mode = gpu ]; then
  command -v nvidia-smi >/dev/null && nvidia-smi -L
  cuda_home=${CUDA_HOME:-$(dirname "$(dirname "$(command -v nvcc 2>/dev/null || echo /usr/local/cuda/bin/nvcc)")")}
  native_env=(LD_LIBRARY_PATH="$cuda_home/lib64:${LD_LIBRARY_PATH:-}")
  start_stack "$profile" "$work" --executor cuda
else
  start_loopback "$profile" "$work" --memory 8G --no-reference-kernels
  native_env=(LD_LIBRARY_PATH="$PWD/target/shims" VGPU_SOCKET="$work/level1/vgpu.sock")
fi
vgpu_env=(LD_LIBRARY_PATH="$PWD/target/shims" VGPU_SOCKET="$work/vgpu.sock" VGPU_LOG=error)

step "figures natively and on the vGPU (tests/gpu/gpubench.c)"
env "${native_env[@]}" timeout 180 "$out/gpubench" "${quick[@]}" > "$out/native.txt" || fail "gpubench natively"
env "${vgpu_env[@]}" timeout 180 "$out/gpubench" "${quick[@]}" > "$out/vgpu.txt" || fail "gpubench on the vGPU"

step "samples on the vGPU, each checking its results"
fatbin=fatbin/tests/fixtures/kernels.fatbin
for s in device_query memory "launch $fatbin" "driver_api $fatbin" cublas; do
  if env "${vgpu_env[@]}" timeout 120 "$out/"$s > "$out/sample.txt" 2>&1; then
    echo "ok: ${s%% *}: $(tail -n 1 "$out/sample.txt")"
  else
    cat "$out/sample.txt"; fail "sample ${s%% *}"
  fi
done

if [ $mode = loopback ]; then check_loopback_pins "$work"; fi

step "ggml ops (ggml's CUDA backend from the PyPI wheel) on the vGPU"
if [ -d target/ggml/lib ]; then
  . ci/ggml-wheel.sh
  cc -O1 -o "$out/ggml_ops" tests/ggml/ggml_ops.c -L"$ggml_lib" -l:"$base" -l:"$cpu" -l:"$cuda" \
    -lm -Wl,--allow-shlib-undefined || exit 1
  if env "${vgpu_env[@]}" LD_LIBRARY_PATH="$PWD/target/shims:$ggml_lib" timeout 300 "$out/ggml_ops" \
    > "$out/ggml.txt" 2>&1; then
    grep -E "every op agrees" "$out/ggml.txt"
  else
    tail -n 30 "$out/ggml.txt"; fail "ggml ops on the vGPU"
  fi
else
  echo "skipped: target/ggml is not here (ci/ggml-wheel.sh fetches it from PyPI)"
fi

step "real CUDA programs (tests/cuda), natively and on the vGPU"
progs=()
if [ $mode = gpu ] && command -v nvcc >/dev/null; then
  for p in kernels_app runtime_app; do
    nvcc -O2 -cudart shared -o "$out/$p" "tests/cuda/$p.cu" && progs+=("$out/$p")
  done
elif [ -x target/cuda-programs/kernels_app.cuda12 ]; then
  progs=(target/cuda-programs/kernels_app.cuda12 target/cuda-programs/runtime_app.cuda12)
else
  echo "skipped: no nvcc here (and no target/cuda-programs)"
fi
for p in "${progs[@]}"; do
  for side in native vgpu; do
    if [ $side = native ]; then e=("${native_env[@]}"); else e=("${vgpu_env[@]}"); fi
    # runtime_app ends on a sticky error by design, in its own context. (By loop-back every
    # context of the cuda executor shares one PD of the soft stack under it, so the error
    # reaches them all there: this step comes last.)
    if env "${e[@]}" timeout 120 "$p" > "$out/prog.txt" 2>&1; then
      echo "ok: $(basename "$p") $side: $(tail -n 1 "$out/prog.txt")"
    else
      cat "$out/prog.txt"; fail "$(basename "$p") $side"
    fi
  done
done

step "the table: natively, on the vGPU, and the vGPU's figure over the native one"
printf '%-24s %14s %14s %10s  %s\n' figure native vGPU ratio unit
while read -r name value unit; do
  v=$(awk -v n="$name" '$1 == n {print $2}' "$out/vgpu.txt")
  ratio=$(awk -v a="$value" -v b="${v:-0}" 'BEGIN { if (a > 0 && b > 0) printf "%.2f", b / a; else print "-" }')
  printf '%-24s %14s %14s %10s  %s\n' "$name" "$value" "${v:--}" "$ratio" "$unit"
done < "$out/native.txt"
echo "(times: a ratio above 1 is the vGPU's overhead; GB/s and GFLOP/s: below 1 is the share of native)"
echo
if [ $fails = 0 ]; then echo "KIT PASS ($mode)"; else echo "KIT FAIL ($mode): $fails failure(s)"; exit 1; fi
