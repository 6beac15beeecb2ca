#!/usr/bin/env bash
# Regenerates the PTX samples of the parser tests from the .cu files here and the CUDA
# programs of the repository, with the toolchains of ci/cuda-toolchain.sh plus the CCCL
# headers (<nv/target>, which cuda_fp16.h includes) from PyPI:
#   ptx/tests/data/gen.sh [TOOLCHAIN_DIR [CCCL_DIR]]
#   (defaults: target/cuda-toolchain, target/ptx-cccl)
# NAME.nvcc13.compute_XX.ptx: nvcc 13.5, -arch=compute_XX; NAME.clang16.sm_80.ptx: clang 16
# over CUDA 12.9; features.*.debug.ptx: the same with debug information (.file, .loc,
# .section), the largest sample. The outputs are committed, so the tests need no toolchain.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
toolchain=${1:-$root/target/cuda-toolchain}
cccl=${2:-$root/target/ptx-cccl}
eval "$("$root/ci/cuda-toolchain.sh" "$toolchain")"
pip=$toolchain/venv/bin/pip
[ -d "$cccl/13" ] || "$pip" install --quiet --no-deps --target "$cccl/13" nvidia-cuda-cccl==13.2.86
[ -d "$cccl/12" ] || "$pip" install --quiet --no-deps --target "$cccl/12" nvidia-cuda-cccl-cu12==12.9.27
# tests/cuda/*.cu include fatbin/tests/fixtures/kernels.cu: their device code is its.
sources=("$here"/*.cu "$root"/fatbin/tests/fixtures/*.cu)
for src in "${sources[@]}"; do
  name=$(basename "$src" .cu)
  for arch in 80 90; do
    "$CU13/bin/nvcc" -arch=compute_$arch -cudart none -O2 -ptx -I"$cccl/13/nvidia/cu13/include" \
      -o "$here/$name.nvcc13.compute_$arch.ptx" "$src"
  done
  clang++-16 -x cuda --cuda-path="$ROOT12" --cuda-gpu-arch=sm_80 --cuda-device-only \
    -I"$cccl/12/nvidia/cuda_cccl/include" -Wno-unknown-cuda-version -O2 -S \
    -o "$here/$name.clang16.sm_80.ptx" "$src"
done
"$CU13/bin/nvcc" -arch=compute_80 -cudart none -G -ptx -I"$cccl/13/nvidia/cu13/include" \
  -o "$here/features.nvcc13.debug.ptx" "$here/features.cu"
clang++-16 -x cuda --cuda-path="$ROOT12" --cuda-gpu-arch=sm_80 --cuda-device-only \
  -I"$cccl/12/nvidia/cuda_cccl/include" -Wno-unknown-cuda-version -O1 -g -S \
  -o "$here/features.clang16.debug.ptx" "$here/features.cu"
