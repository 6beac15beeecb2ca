#!/usr/bin/env bash
# The main job: run the whole stack locally (vgpu-stub on the soft executor, or the GPU
# when one is present, then vgpu-driver, then a sample CUDA program through the shims).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --workspace --release --quiet
cat <<'MSG'
vgpu: the stack cannot run yet.
  vgpu-proto  (the VGPU-STUB ABI)            built and tested
  vgpu-stub   (device model, soft executor)  built and tested (cargo run -p vgpu-stub -- --help)
  vgpu-driver (guest VFIO driver daemon)     built and tested over vfio-user (kernel VFIO not yet)
  shims       (libcuda.so.1, libcudart...)   client core only; the CUDA libraries are not implemented
See the status table in README.md.
MSG
exit 2
