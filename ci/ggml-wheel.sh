#!/usr/bin/env bash
# A registry build of llama.cpp with ggml's CUDA backend: PyPI inferna-cuda12 0.7.0 (ggml
# 0.27.0, built with CUDA 12.4; about 100 MB), downloaded once into target/ggml. Its
# libraries (libggml-base, libggml, libggml-cpu, libggml-cuda, libllama) are copied to
# target/ggml/lib. Sourced by ci/ggml-ops.sh and ci/llm.sh; sets
#   ggml_lib  the folder, and base, ggml, cpu, cuda, llama  the libraries' file names.
wheel_pkg=inferna-cuda12==0.7.0
ggml_dir=target/ggml
mkdir -p "$ggml_dir"
ggml_dir=$(cd "$ggml_dir" && pwd)
if [ ! -f "$ggml_dir/installed" ] || [ "$(cat "$ggml_dir/installed")" != "$wheel_pkg+llama" ]; then
  rm -rf "$ggml_dir/wheel" "$ggml_dir/lib" "$ggml_dir/venv"
  python3 -m venv "$ggml_dir/venv" >&2
  "$ggml_dir/venv/bin/pip" download --quiet --disable-pip-version-check --no-deps \
    --python-version 3.12 --only-binary=:all: -d "$ggml_dir/wheel" "$wheel_pkg" >&2
  python3 -m zipfile -e "$ggml_dir"/wheel/*.whl "$ggml_dir/wheel/x"
  mkdir -p "$ggml_dir/lib"
  cp "$ggml_dir"/wheel/x/inferna_cuda12.libs/libggml* "$ggml_dir"/wheel/x/inferna_cuda12.libs/libllama* \
    "$ggml_dir/lib/"
  echo "$wheel_pkg+llama" > "$ggml_dir/installed"
fi
ggml_lib=$ggml_dir/lib
base=$(basename "$(ls "$ggml_lib"/libggml-base-*.so*)")
ggml=$(basename "$(ls "$ggml_lib"/libggml-????????.so.*)")
cpu=$(basename "$(ls "$ggml_lib"/libggml-cpu-*.so)")
cuda=$(basename "$(ls "$ggml_lib"/libggml-cuda-*.so)")
llama=$(basename "$(ls "$ggml_lib"/libllama-*.so*)")
