#!/usr/bin/env bash
# Benchmarks of the host stack against floors measured in the same run.
#   ci/bench.sh            full run (release build), writes bench-results.json
#   ci/bench.sh --quick    short run (CI uses it in a debug build, for breakage only)
set -euo pipefail
cd "$(dirname "$0")/.."
profile=release
for a in "$@"; do [ "$a" = "--debug" ] && profile=debug; done
args=()
for a in "$@"; do [ "$a" != "--debug" ] && args+=("$a"); done
if [ "$profile" = release ]; then
  cargo build --release --quiet -p vgpu-stub -p vgpu-driver -p vgpu-bench
else
  cargo build --quiet -p vgpu-stub -p vgpu-driver -p vgpu-bench
fi
exec "target/$profile/vgpu-bench" "${args[@]}"
