#!/usr/bin/env bash
# Installs the CUDA toolchains the tests build real CUDA programs with, all from PyPI (no
# GPU, no system CUDA), into one virtual environment, and prints where they are:
#   ci/cuda-toolchain.sh [DIR]            (default DIR: target/cuda-toolchain)
# prints shell assignments CU13=... (nvcc 13.5: nvcc, fatbinary, ptxas, cuobjdump) and
# ROOT12=... (a CUDA 12.9 root for clang: cu12 headers, libcudart.so.12, cu12 ptxas and
# libdevice, and a fatbinary wrapper around CUDA 13's). Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-target/cuda-toolchain}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
venv=$dir/venv
packages=(
  nvidia-cuda-nvcc==13.5.37 nvidia-cuda-crt==13.5.37 nvidia-nvvm==13.5.37
  nvidia-cuda-runtime==13.5.37 nvidia-cuda-cuobjdump==13.5.37
  nvidia-cuda-nvcc-cu12==12.9.86 nvidia-cuda-runtime-cu12==12.9.79
)
if [ ! -f "$dir/installed" ] || [ "$(cat "$dir/installed")" != "${packages[*]}" ]; then
  rm -rf "$venv"
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check "${packages[@]}" >&2
  echo "${packages[*]}" > "$dir/installed"
fi
site=$("$venv/bin/python3" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
cu13=$site/nvidia/cu13
c12=$site/nvidia

# The CUDA 12 root clang's CUDA front end expects (--cuda-path).
root=$dir/root12
if [ ! -f "$root/version.json" ]; then
  rm -rf "$root"
  mkdir -p "$root/bin" "$root/include" "$root/lib64" "$root/nvvm"
  cp -r "$c12/cuda_runtime/include/." "$c12/cuda_nvcc/include/." "$root/include/"
  # clang's CUDA wrapper includes this curand header unconditionally; curand is not used.
  echo "/* curand is not part of this root. */" > "$root/include/curand_mtgp32_kernel.h"
  cp "$c12/cuda_runtime/lib/libcudart.so.12" "$root/lib64/"
  ln -s libcudart.so.12 "$root/lib64/libcudart.so"
  cp "$c12/cuda_nvcc/bin/ptxas" "$root/bin/"
  cp -r "$c12/cuda_nvcc/nvvm/libdevice" "$root/nvvm/"
  # clang asks fatbinary for --image=profile=sm_XX,file=F (the CUDA 12 syntax); CUDA 13's
  # fatbinary (the cu12 wheels carry none) takes --image3=kind=elf,sm=XX,file=F.
  cat > "$root/bin/fatbinary" <<WRAPPER
#!/bin/sh
set --  "\$@" END
while [ "\$1" != END ]; do
  case "\$1" in
    --image=profile=sm_*,file=*) a=\${1#--image=profile=sm_}; set -- "\$@" "--image3=kind=elf,sm=\${a%%,*},file=\${a#*,file=}" ;;
    --image=profile=compute_*,file=*) a=\${1#--image=profile=compute_}; set -- "\$@" "--image3=kind=ptx,sm=\${a%%,*},file=\${a#*,file=}" ;;
    *) set -- "\$@" "\$1" ;;
  esac
  shift
done
shift
exec "$cu13/bin/fatbinary" --compress=false "\$@"
WRAPPER
  chmod +x "$root/bin/fatbinary"
  echo '{"cuda": {"name": "CUDA SDK", "version": "12.9.0"}}' > "$root/version.json"
fi
echo "CU13=$cu13"
echo "ROOT12=$root"
