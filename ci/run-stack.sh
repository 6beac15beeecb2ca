#!/usr/bin/env bash
# The main job: runs the whole stack locally — vgpu-stub (--executor auto: the cuda executor
# where there is a GPU, the soft executor here), vgpu-driver on a vfio-user connection to it, and sample CUDA programs
# through the drop-in libraries, reporting what they found — and ends with an LLM generating
# text through the vGPU (ci/llm.sh --main).
#   ci/run-stack.sh [--debug]
set -euo pipefail
cd "$(dirname "$0")/.."
profile=release
flag=(--release)
if [ "${1:-}" = --debug ]; then profile=debug; flag=(); fi
cargo build "${flag[@]}" --quiet -p vgpu-stub -p vgpu-driver
ci/build-shims.sh "${flag[@]}" target/shims >/dev/null

. ci/stack-lib.sh
work=$(mktemp -d)
trap 'stop_stack; rm -rf "$work"' EXIT
start_stack "$profile" "$work" --executor auto --memory 16G --no-reference-kernels

cc tests/samples/device_query.c -Ltarget/shims -lcudart -lcuda -o "$work/device_query"
cc tests/samples/memory.c -Ltarget/shims -lcudart -o "$work/memory"
cc tests/samples/launch.c -Ltarget/shims -lcudart -o "$work/launch"
cc tests/samples/driver_api.c -Ltarget/shims -lcuda -o "$work/driver_api"
export LD_LIBRARY_PATH=target/shims VGPU_SOCKET="$work/vgpu.sock"
echo "== device_query through libcudart.so.12 / libcuda.so.1 (target/shims)"
"$work/device_query"
echo "== memory: copies (pageable and pinned), memsets, streams and events, checked"
"$work/memory"
echo "== launch: vecAdd from an nvcc-built fatbin through the CUDA 12 launch ABI, checked"
"$work/launch" fatbin/tests/fixtures/kernels.fatbin
echo "== driver_api: cuGetProcAddress, 2-D copies, cuLaunchKernelEx, capture and graphs, checked"
"$work/driver_api" fatbin/tests/fixtures/kernels.fatbin
if [ -x target/cuda-programs/kernels_app.cuda12 ] && [ -x target/cuda-programs/runtime_app.cuda12 ]; then
  for abi in 12 13; do
    echo "== real CUDA programs built for the CUDA $abi launch ABI (ci/build-cuda-programs.sh)"
    "target/cuda-programs/kernels_app.cuda$abi"
  done
  echo "== runtime_app: 2-D copies, graphs, launch attributes, error paths, and last a sticky error"
  "target/cuda-programs/runtime_app.cuda12"
fi
stop_stack
llm_flag=()
[ "$profile" = debug ] && llm_flag=(--debug)
ci/llm.sh "${llm_flag[@]}" --main
echo "== done: the device was found, data moved both ways, kernels ran, all checked, and an LLM"
echo "   generated text through the vGPU. (The soft device ran every kernel from its PTX on the"
echo "   vgpu-ptx virtual machine, and the GEMMs of libcublas on its BLAS.)"
