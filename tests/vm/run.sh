#!/bin/sh
# The VM test inside the guest (ci/vm.sh): checks that real udev applied vgpu's rule and
# systemd started vgpu-driver on kernel VFIO, then runs the C samples and the real CUDA
# programs (when ci/vm.sh found them built) in two processes at once, kills one mid-run,
# and checks that its PD is reclaimed while the other carries on; then runs vgpu-bench
# through the guest's driver. Markers on the serial console: "VGPU-VM: ..." lines, ending
# in PASS or FAIL, and the benchmark's table as "VGPU-VM-BENCH: ..." lines.
set -u
t=/usr/local/libexec/vgpu-vm
say() { echo "VGPU-VM: $*"; }
fail() {
  say "FAIL: $*"
  journalctl -b --no-pager -u vgpu-driver -u systemd-udevd | tail -n 80
  exit 1
}
# Every step is bounded: a hang shows up as a failure with the driver's journal.
run() { timeout 300 "$@"; }
say "guest up: $(uname -r), $(nproc) CPUs"
bdf=
for d in /sys/bus/pci/devices/*; do
  if [ "$(cat "$d/vendor")" = 0x1234 ] && [ "$(cat "$d/device")" = 0x7667 ]; then bdf=${d##*/}; fi
done
[ -n "$bdf" ] || fail "no VGPU-STUB (1234:7667) on the PCI bus"
drv=$(basename "$(readlink "/sys/bus/pci/devices/$bdf/driver")")
say "VGPU-STUB at $bdf, bound to $drv by udev"
[ "$drv" = vfio-pci ] || fail "VGPU-STUB is bound to '$drv', not vfio-pci"
grp=$(basename "$(readlink "/sys/bus/pci/devices/$bdf/iommu_group")")
node=$(stat -c '%G %a' "/dev/vfio/$grp") || fail "no /dev/vfio/$grp"
say "/dev/vfio/$grp: group and mode $node"
[ "$node" = "vgpu 660" ] || fail "the VFIO group node is '$node', not 'vgpu 660'"
for _ in $(seq 120); do [ -S /run/vgpu/vgpu.sock ] && break; sleep 1; done
systemctl is-active --quiet vgpu-driver || fail "vgpu-driver is not running"
say "vgpu-driver is active (systemd), socket /run/vgpu/vgpu.sock"
vec=$(vgpu-driver status | grep -o '"msix_vectors":[0-9]*' | cut -d: -f2)
say "MSI-X vectors in use: $vec (at most 2 asked for; the second client's queue wakes by timer)"
[ "$vec" = 2 ] || fail "vgpu-driver uses '$vec' MSI-X vectors, not 2"
export LD_LIBRARY_PATH=/usr/local/lib/vgpu VGPU_SOCKET=/run/vgpu/vgpu.sock
say "device_query (connects, gets a PD, a queue and a window through kernel VFIO)"
run "$t/device_query" || fail "device_query"
# Process B copies in a loop until it is killed; process A runs the samples meanwhile.
( while "$t/memory" > /dev/null 2>&1; do :; done; echo "B stopped on its own" ) &
b=$!
sleep 5
clients=$(vgpu-driver status | grep -o '"pid"' | wc -l)
say "vgpu-driver status: $clients client(s) while B runs"
run "$t/memory" > /tmp/memory.out 2>&1 || { cat /tmp/memory.out; fail "memory (A) next to B"; }
grep -q "registered host memory checked" /tmp/memory.out ||
  { cat /tmp/memory.out; fail "memory (A): cudaHostRegister of a memfd did not run"; }
say "memory (A): copies, and cudaHostRegister of a memfd mapping (the driver mapped it for DMA through the vIOMMU)"
for p in "$t"/kernels_app.cuda*; do
  [ -x "$p" ] || continue
  run "$p" || fail "$(basename "$p") (A) next to B"
done
kill -9 "$b" 2>/dev/null
pkill -9 -f "$t/memory"
say "killed process B mid-run"
run "$t/launch" "$t/kernels.fatbin" || fail "launch (A) after B was killed"
run "$t/driver_api" "$t/kernels.fatbin" || fail "driver_api (A) after B was killed"
for _ in $(seq 30); do
  left=$(vgpu-driver status | grep -o '"pid"' | wc -l)
  [ "$left" = 0 ] && break
  sleep 1
done
vgpu-driver status
[ "$left" = 0 ] || fail "$left client(s) left after every process ended"
timed=$(journalctl -b --no-pager -u vgpu-driver | grep -c "has no MSI-X vector")
say "sessions whose queue had no MSI-X vector (woken by timer): $timed"
[ "$timed" -gt 0 ] || fail "no session ran on a queue without an MSI-X vector"
say "B's PD and windows reclaimed; A carried on"
# The benchmark suite in the guest, through kernel VFIO (short run; TCG makes every figure
# the emulator's): its table goes to the console, each line marked.
say "vgpu-bench --quick in the guest"
run vgpu-bench --quick --driver /run/vgpu/vgpu.sock --fatbin "$t/kernels.fatbin" \
  --json /tmp/vgpu-bench.json > /tmp/vgpu-bench.txt 2>&1 ||
  { cat /tmp/vgpu-bench.txt; fail "vgpu-bench in the guest"; }
sed 's/^/VGPU-VM-BENCH: /' /tmp/vgpu-bench.txt
say PASS
