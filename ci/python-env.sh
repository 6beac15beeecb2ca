#!/usr/bin/env bash
# The Python environment the tests use, in target/py (made once; remade when the pins
# change): PyPI's nvidia-ml-py (pynvml, what gpustat and nvitop call NVML through) and gguf
# (the tiny LLM of ci/llm.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
pins="nvidia-ml-py==13.615.71 gguf==0.19.0"
dir=target/py
if [ ! -x "$dir/bin/python" ] || [ "$(cat "$dir/pins" 2>/dev/null)" != "$pins" ]; then
  rm -rf "$dir"
  python3 -m venv "$dir"
  # shellcheck disable=SC2086
  "$dir/bin/pip" install --quiet --disable-pip-version-check $pins
  echo "$pins" > "$dir/pins"
fi
echo "python environment in $dir: $pins"
