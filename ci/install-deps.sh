#!/usr/bin/env bash
# Installs what the tests need on a fresh Debian 12 machine with a Rust toolchain.
# Safe to run again: it only installs what is missing.
set -euo pipefail

need_apt=()
# clang-16 and python3-venv: the real CUDA programs (ci/build-cuda-programs.sh); debootstrap,
# mmdebstrap and e2fsprogs: the VM test's QEMU and guest roots (ci/vm.sh).
for pkg in build-essential pkg-config clang-16 python3-venv binutils debootstrap mmdebstrap e2fsprogs; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "ci: installing ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
fi

for comp in rustfmt clippy; do
  if ! cargo "${comp/rustfmt/fmt}" --version >/dev/null 2>&1; then
    rustup component add "$comp"
  fi
done

if [ "${VGPU_FUZZ_SECONDS:-60}" != 0 ] && ! command -v cargo-fuzz >/dev/null 2>&1; then
  echo "ci: installing cargo-fuzz"
  cargo install cargo-fuzz --locked --quiet
fi
