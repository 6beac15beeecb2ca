#!/usr/bin/env bash
# Builds the real CUDA programs of tests/cuda/ with toolchains from the package registries
# (ci/cuda-toolchain.sh), once per kernel-launch ABI, all linked against libcudart.so.12:
#   OUTDIR/NAME.cuda12   clang 16's CUDA front end over CUDA 12.9: <<<>>> becomes
#                        __cudaPushCallConfiguration, __cudaPopCallConfiguration and
#                        cudaLaunchKernel
#   OUTDIR/NAME.cuda13   nvcc 13.5: __cudaGetKernel and __cudaLaunchKernel
#   ci/build-cuda-programs.sh [OUTDIR]          (default OUTDIR: target/cuda-programs)
# Each binary's undefined symbols are checked for the ABI it must use.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-target/cuda-programs}
eval "$(ci/cuda-toolchain.sh)"
clang=$(command -v clang++-16 || true)
[ -n "$clang" ] || { echo "ci: clang++-16 is missing (ci/install-deps.sh installs it)" >&2; exit 1; }
mkdir -p "$out"
archs=(80 90)
for src in tests/cuda/*.cu; do
  name=$(basename "$src" .cu)
  "$clang" -x cuda --cuda-path="$ROOT12" "${archs[@]/#/--cuda-gpu-arch=sm_}" \
    -Wno-unknown-cuda-version -O2 -o "$out/$name.cuda12" "$src" -L"$ROOT12/lib64" -lcudart
  gencode=()
  for a in "${archs[@]}"; do gencode+=("-gencode=arch=compute_$a,code=[sm_$a,compute_$a]"); done
  "$CU13/bin/nvcc" "${gencode[@]}" -cudart none -O2 -o "$out/$name.cuda13" "$src" \
    -L"$ROOT12/lib64" -l:libcudart.so.12
  # The launch ABI each toolchain must have used, and the library every reference binds to.
  undefined() { nm -D --undefined-only "$1" | awk '{print $2}'; }
  undefined "$out/$name.cuda12" | grep -qx 'cudaLaunchKernel@libcudart.so.12'
  ! undefined "$out/$name.cuda12" | grep -q '__cudaLaunchKernel'
  undefined "$out/$name.cuda13" | grep -qx '__cudaGetKernel@libcudart.so.12'
  undefined "$out/$name.cuda13" | grep -qx '__cudaLaunchKernel@libcudart.so.12'
  ! undefined "$out/$name.cuda13" | grep -q '^cudaLaunchKernel@'
  echo "built $out/$name.cuda12 (CUDA 12 launch ABI) and $out/$name.cuda13 (CUDA 13 launch ABI)"
done
