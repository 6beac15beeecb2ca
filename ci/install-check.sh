#!/usr/bin/env bash
# `vgpu install` into a tree laid out like an Ollama installation, checked the way Ollama
# uses it: a registry ggml CUDA backend (ci/ggml-wheel.sh), loaded as Ollama's runner loads
# it (dlopen RTLD_NOW|RTLD_LOCAL, Ollama's library path), finds no device before installing,
# finds the vGPU after; with the shims given through LD_PRELOAD instead it finds it too; and
# `vgpu uninstall` leaves the tree byte for byte as it was.
#   ci/install-check.sh [--debug]
# The tree's cuda_v12 holds NVIDIA's real libcudart.so.12 (from the CUDA toolchain wheels of
# ci/cuda-toolchain.sh); its cuBLAS files are placeholders (NVIDIA's cuBLAS wheel is about
# 600 MB, and installing replaces them anyway).
set -euo pipefail
cd "$(dirname "$0")/.."
profile=release
flag=(--release)
if [ "${1:-}" = --debug ]; then profile=debug; flag=(); fi

. ci/ggml-wheel.sh
ci/cuda-toolchain.sh >/dev/null
cudart=$(ls target/cuda-toolchain/venv/lib/python3*/site-packages/nvidia/cuda_runtime/lib/libcudart.so.12)
cargo build "${flag[@]}" --quiet -p vgpu-stub -p vgpu-driver -p vgpu-install
ci/build-shims.sh "${flag[@]}" target/shims >/dev/null
. ci/stack-lib.sh
work=$(mktemp -d)
trap 'stop_stack; rm -rf "$work"' EXIT
cc -O1 -Wall -Werror -o "$work/discover" tests/install/discover.c -ldl

# The guest: Ollama v0.30+'s layout.
root=$work/root
ollama=$root/usr/local/lib/ollama
mkdir -p "$root/usr/lib/x86_64-linux-gnu" "$ollama/cuda_v12" "$ollama/cuda_v13" "$root/etc/systemd/system"
cp "$ggml_lib/$base" "$ggml_lib/$ggml" "$ollama/"
cp "$ggml_lib/$cuda" "$ollama/cuda_v12/libggml-cuda.so"
cp "$cudart" "$ollama/cuda_v12/libcudart.so.12.9.79"
ln -s libcudart.so.12.9.79 "$ollama/cuda_v12/libcudart.so.12"
for l in libcublas libcublasLt; do
  echo "placeholder for NVIDIA's $l" > "$ollama/cuda_v12/$l.so.12.9.1.4"
  ln -s "$l.so.12.9.1.4" "$ollama/cuda_v12/$l.so.12"
done
cp "$cudart" "$ollama/cuda_v13/libcudart.so.13.0.48"
printf '[Service]\nExecStart=/usr/local/bin/ollama serve\n' > "$root/etc/systemd/system/ollama.service"
snapshot() { (cd "$root" && find . -printf '%p %y %m %l\n' | LC_ALL=C sort && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum); }
snapshot > "$work/before"

start_stack "$profile" "$work" --memory 2G
export VGPU_SOCKET=$work/vgpu.sock VGPU_LOG=error
# Ollama's runner: LD_LIBRARY_PATH=lib/ollama:lib/ollama/cuda_v12; the system folder stands
# for the loader's cache of the installed system.
path="$ollama:$ollama/cuda_v12:$root/usr/lib/x86_64-linux-gnu"
echo "== before installing (no libcuda.so.1, placeholder cuBLAS: the backend cannot load)"
if LD_LIBRARY_PATH=$path "$work/discover" "$ollama/cuda_v12/libggml-cuda.so"; then
  echo "install-check: the backend found a device before vgpu was installed" >&2; exit 1
fi
echo "== vgpu install (twice)"
"target/$profile/vgpu" install --root "$root" --shims target/shims
"target/$profile/vgpu" install --root "$root" --shims target/shims >/dev/null
LD_LIBRARY_PATH=$path "$work/discover" "$ollama/cuda_v12/libggml-cuda.so" | tee "$work/after"
grep -q "1 CUDA device(s); 0: VGPU-STUB" "$work/after"
echo "== vgpu uninstall"
"target/$profile/vgpu" uninstall --root "$root" --shims target/shims
snapshot > "$work/restored"
diff "$work/before" "$work/restored" || { echo "install-check: the tree is not as it was" >&2; exit 1; }
echo "== the shims through LD_PRELOAD, NVIDIA's runtime still on the path"
preload=$(printf "$PWD/target/shims/%s:" libcuda.so.1 libcudart.so.12 libcublasLt.so.12 libcublas.so.12 libnvidia-ml.so.1)
LD_PRELOAD=${preload%:} LD_LIBRARY_PATH=$path "$work/discover" "$ollama/cuda_v12/libggml-cuda.so" | tee "$work/preload"
grep -q "1 CUDA device(s); 0: VGPU-STUB" "$work/preload"
echo "install-check: installed, found by the backend as Ollama loads it, uninstalled byte for byte; LD_PRELOAD works too"
