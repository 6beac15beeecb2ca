#!/usr/bin/env bash
# Runs every test of the project. Installs what it needs first (ci/install-deps.sh).
#   VGPU_FUZZ_SECONDS=N   seconds of libFuzzer per fuzz target (default 60; 0 skips)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
# A from-scratch build gains nothing from incremental caches, which cost gigabytes of disk.
export CARGO_INCREMENTAL=${CARGO_INCREMENTAL:-0}

step() { printf '\n=== %s\n' "$*"; }

step "disk (a fresh run needs about 7 GiB)"
df -h . | tail -n 1
avail_kib=$(df -Pk . | awk 'NR == 2 {print $4}')
if [ "$avail_kib" -lt $((6 * 1024 * 1024)) ]; then
  echo "WARNING: less than 6 GiB free here; the builds below may fail with ENOSPC"
fi

step "dependencies"
ci/install-deps.sh

step "format"
cargo fmt --all --check

step "lint"
cargo clippy --workspace --all-targets --quiet -- -D warnings

step "drop-in libraries (ci/build-shims.sh)"
ci/build-shims.sh

step "real CUDA programs in both launch ABIs (ci/build-cuda-programs.sh)"
ci/build-cuda-programs.sh
export VGPU_REQUIRE_CUDA_PROGRAMS=1

step "python environment (ci/python-env.sh)"
ci/python-env.sh
export VGPU_REQUIRE_PYNVML=1

step "huge pages for the no-IOMMU memory test (returned at exit)"
hp=/proc/sys/vm/nr_hugepages
hp_before=$(cat "$hp" 2>/dev/null || echo 0)
restore_hugepages() { echo "$hp_before" > "$hp" 2>/dev/null || true; }
trap restore_hugepages EXIT
if echo $((hp_before + 128)) > "$hp" 2>/dev/null && \
   [ "$(awk '/HugePages_Free/ {print $2}' /proc/meminfo)" -ge 64 ]; then
  export VGPU_REQUIRE_HUGEPAGES=1
  grep -E 'HugePages_(Total|Free)' /proc/meminfo
else
  restore_hugepages
  echo "WARNING: could not reserve huge pages; the no-IOMMU memory test will be skipped"
fi

step "unit, property, spec, stack and fuzz-corpus tests"
cargo test --workspace 2>&1 | tee /tmp/vgpu-test.log
passed=$(grep -E '^test result:' /tmp/vgpu-test.log | awk '{s+=$4} END {print s+0}')
failed=$(grep -E '^test result:' /tmp/vgpu-test.log | awk '{s+=$6} END {print s+0}')

step "the main job (ci/run-stack.sh)"
ci/run-stack.sh --debug
passed=$((passed + 1))

step "real ggml ops on the vGPU against ggml's CPU backend (ci/ggml-ops.sh)"
ci/ggml-ops.sh --debug
passed=$((passed + 1))

step "the same ggml ops through the cuda executor by loop-back (ci/ggml-ops.sh --loopback)"
ci/ggml-ops.sh --debug --loopback
passed=$((passed + 1))

step "the GPU kit, checked without a GPU by loop-back (tests/gpu/kit.sh --loopback --debug --quick)"
tests/gpu/kit.sh --loopback --debug --quick
passed=$((passed + 1))

step "the VM test: QEMU with VGPU-STUB over vfio-user, udev, systemd and vgpu-driver on kernel VFIO in the guest (ci/vm.sh)"
ci/vm.sh --debug
passed=$((passed + 1))

step "LLM generation through the vGPU against ggml's CPU backend (ci/llm.sh)"
ci/llm.sh --debug
passed=$((passed + 1))

step "the same LLM generation (f16) through the cuda executor by loop-back (ci/llm.sh --loopback)"
ci/llm.sh --debug --loopback
passed=$((passed + 1))

step "vgpu install into an Ollama layout, found as Ollama loads it, uninstalled byte for byte (ci/install-check.sh)"
ci/install-check.sh --debug
passed=$((passed + 1))

step "benchmarks, short run (for breakage, not timing)"
ci/bench.sh --quick --debug --json /tmp/vgpu-bench-ci.json
passed=$((passed + 1))

secs=${VGPU_FUZZ_SECONDS:-60}
if [ "$secs" != 0 ]; then
  work=$(mktemp -d)
  trap 'rm -rf "$work"; restore_hugepages' EXIT
  # target:max_len:leaks — queue entries, payloads and control messages; module images;
  # sequences of commands executed by the device. The commands target runs without
  # libFuzzer's in-process leak checks: its device keeps stream worker threads alive
  # across inputs (CTX_RESET starts a fresh NULL-stream worker), and LeakSanitizer's check
  # between inputs reports the running worker's closure as leaked, now and then (seen in
  # about one 60 s run in two, at this commit and before; never when the input is rerun
  # alone; nor LeakSanitizer's check at exit, which reports the same). Crashes, aborts,
  # hangs and the memory limit still fail it.
  for spec in decode:4096:1 images:65536:1 commands:8192:0; do
    target=${spec%%:*}
    rest=${spec#*:}
    step "fuzz: $target for ${secs}s over the committed corpus"
    cp -r "fuzz/corpus/$target" "$work/$target"
    leaks=${rest#*:}
    (cd fuzz && ASAN_OPTIONS="detect_leaks=$leaks" RUSTC_BOOTSTRAP=1 \
      cargo fuzz run -O -a "$target" "$work/$target" -- \
        -max_total_time="$secs" -max_len="${rest%%:*}" -rss_limit_mb=4096 \
        -detect_leaks="$leaks" -print_final_stats=1 2>&1 | tail -n 15)
    passed=$((passed + 1))
  done
fi

echo
echo "${passed} passed, ${failed} failed"
[ "$failed" = 0 ]
