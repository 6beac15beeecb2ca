#!/usr/bin/env bash
# LLM generation through the vGPU: a registry build of llama.cpp (libllama and ggml's CUDA
# backend from PyPI inferna-cuda12, ci/ggml-wheel.sh) runs a tiny llama model fully
# offloaded to the vGPU — vgpu-stub's soft device running ggml's kernels from their PTX,
# its GEMMs through vgpu's libcublas — and greedy-decodes 32 tokens. The model has random
# weights, written by tests/llm/make_model.py (PyPI gguf), in f16 and q8_0.
#   ci/llm.sh [--debug]          for each model: a run on ggml's CPU backend, a run on the
#                                vGPU; the tokens must be the same and the logits agree
#                                (tests/llm/generate.c --compare); where a near-tie sends the
#                                runs different ways, the vGPU run is repeated fed the CPU's
#                                tokens and compared step by step
#   ci/llm.sh [--debug] --main   one generation on the vGPU (f16): the device, the text and
#                                the speed (the end of the main job)
#   ci/llm.sh [--debug] --loopback   the f16 comparison through the cuda executor on vgpu's
#                                own libraries over the soft device (ci/stack-lib.sh
#                                start_loopback)
# The soft device reports compute capability 8.0: ggml turns CUDA graphs off below it, and
# with it decode runs as on an Ampere GPU, each token one graph launch (checked below). The
# kernels still come from the compute_75 PTX registry builds carry (the highest not above
# the device's), and ggml picks its kernels by the architecture it was compiled for.
set -euo pipefail
cd "$(dirname "$0")/.."
profile=release
flag=(--release)
main=0
loopback=0
kinds=(f16 q8_0)
for a in "$@"; do
  case $a in
    --debug) profile=debug; flag=() ;;
    --main) main=1 ;;
    --loopback) loopback=1; kinds=(f16) ;;
    *) echo "usage: ci/llm.sh [--debug] [--main | --loopback]" >&2; exit 2 ;;
  esac
done

. ci/ggml-wheel.sh
ci/python-env.sh >/dev/null
out=target/llm
mkdir -p "$out"
for kind in "${kinds[@]}"; do
  if [ ! -f "$out/tiny-$kind.gguf" ] || [ tests/llm/make_model.py -nt "$out/tiny-$kind.gguf" ]; then
    target/py/bin/python tests/llm/make_model.py "$out/tiny-$kind.gguf" "$kind"
  fi
done
cc -O1 -Wall -Werror -o "$out/generate" tests/llm/generate.c -L"$ggml_lib" -l:"$llama" -l:"$ggml" \
  -l:"$base" -lm -Wl,--allow-shlib-undefined

cargo build "${flag[@]}" --quiet -p vgpu-stub -p vgpu-driver
ci/build-shims.sh "${flag[@]}" target/shims >/dev/null
. ci/stack-lib.sh
work=$(mktemp -d)
trap 'stop_stack; rm -rf "$work"' EXIT
if [ "$loopback" = 1 ]; then
  start_loopback "$profile" "$work" --memory 2G --compute-capability 8.0 --no-reference-kernels
else
  start_stack "$profile" "$work" --memory 2G --compute-capability 8.0 --no-reference-kernels
fi

# More than 16 tokens, so that ggml hands the f16 prompt's products to cuBLAS (its own mma
# kernels take up to 16 columns) and the q8_0 ones to its MMQ kernels (int8 mma).
prompt="the old man and the sea was a story of a great fish that the old man found in the deep
blue water far from the village where his family had lived for many years"
prompt=${prompt//$'\n'/ }
export GENERATE_BACKENDS="$ggml_lib/$cpu:$ggml_lib/$cuda" LD_LIBRARY_PATH="$PWD/target/shims:$ggml_lib"
on_vgpu() { # model logits [env...]
  local m=$1 l=$2
  shift 2
  env VGPU_SOCKET="$work/vgpu.sock" VGPU_LOG=warn,vgpu_cublas=debug,vgpu_cuda::graph=debug "$@" \
    timeout 900 "$out/generate" "$m" 32 "$l" "$prompt" > "$work/run.txt" 2> "$work/stderr.txt" ||
    { cat "$work/run.txt" "$work/stderr.txt"; exit 1; }
  cat "$work/run.txt"
  grep -v 'vgpu_cublas\|vgpu_cuda::graph' "$work/stderr.txt" >&2 || true
  echo "(libcublas: $(grep -c 'libcublas: ' "$work/stderr.txt" || true) GEMMs posted to the device)"
  local graphs
  graphs=$(grep -c 'vgpu: graph launch' "$work/stderr.txt" || true)
  echo "(CUDA graphs: $(grep -c 'vgpu: graph .* instantiated' "$work/stderr.txt" || true) instantiated, $graphs launched)"
  [ "$graphs" -gt 0 ] || { echo "llm: decode launched no CUDA graph" >&2; exit 1; }
  grep -q "CUDA0 (VGPU-STUB" "$work/run.txt" ||
    { echo "llm: ggml did not find the vGPU" >&2; exit 1; }
}

if [ "$main" = 1 ]; then
  echo "== LLM generation on the vGPU: a tiny llama (random weights, f16) through llama.cpp"
  on_vgpu "$out/tiny-f16.gguf" "$work/gpu.bin"
  exit 0
fi

for kind in "${kinds[@]}"; do
  # f16: both backends compute in f32 from the same f16 weights. q8_0: the CPU quantizes the
  # activations to q8_0 and the CUDA backend to q8_1, so their logits differ by more.
  tol=1e-2
  [ "$kind" = q8_0 ] && tol=5e-2
  m=$out/tiny-$kind.gguf
  echo "== $kind: ggml's CPU backend"
  VGPU_SOCKET="$work/absent.sock" VGPU_LOG=error "$out/generate" "$m" 32 "$work/cpu.bin" "$prompt" \
    > "$work/cpu.txt"
  cat "$work/cpu.txt"
  if grep -q CUDA0 "$work/cpu.txt"; then echo "llm: the CPU run found a CUDA device" >&2; exit 1; fi
  echo "== $kind: the vGPU"
  on_vgpu "$m" "$work/gpu.bin"
  if [ "$kind" = f16 ] && ! grep -q 'libcublas: ' "$work/stderr.txt"; then
    echo "llm: the f16 prompt did not go through libcublas" >&2
    exit 1
  fi
  if ! "$out/generate" --compare "$work/cpu.bin" "$work/gpu.bin" "$tol"; then
    echo "== $kind: the vGPU again, fed the CPU run's tokens"
    on_vgpu "$m" "$work/forced.bin" GENERATE_FORCE="$work/cpu.bin"
    "$out/generate" --compare "$work/cpu.bin" "$work/forced.bin" "$tol"
  fi
done
if [ "$loopback" = 1 ]; then
  check_loopback_pins "$work"
  echo "llm: through the cuda executor (loop-back), the vGPU generated what ggml's CPU backend generates (f16)"
else
  echo "llm: the vGPU generated what ggml's CPU backend generates, f16 and q8_0"
fi
