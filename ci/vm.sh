#!/usr/bin/env bash
# The VM test: vgpu-stub (soft executor) on the host; QEMU 11.1 (trixie-backports, run from a
# debootstrap root under target/vm/qemu: bookworm's glibc is too old for it) with VGPU-STUB
# attached through vfio-user-pci, q35 with intel-iommu (caching mode, interrupt remapping)
# and memfd guest RAM, 2 vCPUs, TCG (KVM does not run guests on these machines); the guest
# a Debian trixie root (mmdebstrap: systemd, udev, its 6.12 kernel and initramfs) holding
# vgpu-driver, its udev rule and systemd unit, the drop-in libraries and the C samples.
# In the guest (tests/vm/run.sh): udev binds the device to vfio-pci, systemd starts
# vgpu-driver on kernel VFIO type1 behind the vIOMMU, and two processes run the samples,
# one killed mid-run. Prints the guest's console; passes on "VGPU-VM: PASS".
#   ci/vm.sh [--debug]      (the roots are cached in target/vm; delete it to start over)
set -euo pipefail
cd "$(dirname "$0")/.."
profile=release
flag=(--release)
if [ "${1:-}" = --debug ]; then profile=debug; flag=(); fi
vm=target/vm
mkdir -p "$vm"
mirror=http://deb.debian.org/debian
for tool in debootstrap mmdebstrap mke2fs; do
  command -v "$tool" >/dev/null || { echo "vm: $tool is missing: run ci/install-deps.sh" >&2; exit 1; }
done

if [ ! -x "$vm/qemu/usr/bin/qemu-system-x86_64" ]; then
  echo "== QEMU 11.1 from trixie-backports into $vm/qemu"
  rm -rf "$vm/qemu"
  debootstrap --variant=minbase trixie "$vm/qemu" "$mirror" > "$vm/qemu.log" 2>&1 ||
    { tail -n 20 "$vm/qemu.log"; exit 1; }
  echo "deb $mirror trixie-backports main" > "$vm/qemu/etc/apt/sources.list.d/backports.list"
  chroot "$vm/qemu" apt-get update -q >> "$vm/qemu.log" 2>&1
  chroot "$vm/qemu" apt-get install -y -q --no-install-recommends -t trixie-backports \
    qemu-system-x86 >> "$vm/qemu.log" 2>&1 || { tail -n 20 "$vm/qemu.log"; exit 1; }
fi
q=$vm/qemu
qemu() {
  QEMU_MODULE_DIR="$q/usr/lib/x86_64-linux-gnu/qemu" "$q/lib64/ld-linux-x86-64.so.2" \
    --library-path "$q/lib/x86_64-linux-gnu:$q/usr/lib/x86_64-linux-gnu" \
    "$q/usr/bin/qemu-system-x86_64" -L "$q/usr/share/qemu" -L "$q/usr/share/seabios" "$@"
}
qemu --version | head -n 1

if [ ! -f "$vm/guest-root/boot/vmlinuz-"* ] 2>/dev/null; then
  echo "== the guest root (Debian trixie: systemd, udev, kernel) into $vm/guest-root"
  rm -rf "$vm/guest-root"
  mmdebstrap --variant=apt \
    --include=systemd-sysv,udev,kmod,linux-image-amd64,initramfs-tools,procps \
    trixie "$vm/guest-root" "$mirror" > "$vm/guest.log" 2>&1 || { tail -n 20 "$vm/guest.log"; exit 1; }
fi
g=$vm/guest-root

echo "== vgpu into the guest root"
cargo build "${flag[@]}" --quiet -p vgpu-stub -p vgpu-driver -p vgpu-bench
ci/build-shims.sh "${flag[@]}" target/shims >/dev/null
install -m 0755 "target/$profile/vgpu-driver" "target/$profile/vgpu-smi" \
  "target/$profile/vgpu-bench" "$g/usr/local/bin/"
mkdir -p "$g/usr/local/lib/vgpu" "$g/usr/local/libexec/vgpu-vm"
cp -a target/shims/*.so* "$g/usr/local/lib/vgpu/"
for s in device_query memory launch driver_api; do
  cc -O1 -o "$g/usr/local/libexec/vgpu-vm/$s" "tests/samples/$s.c" -Ltarget/shims \
    -Wl,-rpath-link,target/shims -lcudart -lcuda
done
cp fatbin/tests/fixtures/kernels.fatbin tests/vm/run.sh "$g/usr/local/libexec/vgpu-vm/"
# The real CUDA programs (ci/build-cuda-programs.sh), when built: both launch ABIs.
rm -f "$g/usr/local/libexec/vgpu-vm/"kernels_app.*
for abi in 12 13; do
  p=target/cuda-programs/kernels_app.cuda$abi
  if [ -x "$p" ]; then
    cp "$p" "$g/usr/local/libexec/vgpu-vm/"
  elif [ -n "${VGPU_REQUIRE_CUDA_PROGRAMS:-}" ]; then
    echo "vm: $p is not built (ci/build-cuda-programs.sh)" >&2; exit 1
  fi
done
install -m 0644 udev/70-vgpu-stub.rules "$g/etc/udev/rules.d/"
install -m 0644 driver/vgpu-driver.service tests/vm/vgpu-vm-test.service "$g/etc/systemd/system/"
# Small first windows: behind the emulated IOMMU every 4 KiB page is a DMA mapping of its
# own, and TCG maps them slowly. Two MSI-X vectors, as a guest short of vectors would
# grant: the admin queue and the first client's queue get interrupts, the second
# client's queue a timer (both kinds run at once below).
mkdir -p "$g/etc/systemd/system/vgpu-driver.service.d"
printf '[Service]\nEnvironment=RUST_LOG=info,vgpu_driver=debug\nExecStart=\nExecStart=/usr/local/bin/vgpu-driver --device 1234:7667 --socket /run/vgpu/vgpu.sock --group vgpu --window-size 4194304 --max-vectors 2\n' \
  > "$g/etc/systemd/system/vgpu-driver.service.d/vm-test.conf"
grep -q '^vgpu:' "$g/etc/group" || echo 'vgpu:x:990:' >> "$g/etc/group"
chroot "$g" systemctl enable vgpu-driver.service vgpu-vm-test.service >/dev/null 2>&1
echo vgpu-vm > "$g/etc/hostname"
# No login prompts: a getty on the serial console would hang up the test's output.
ln -sf /dev/null "$g/etc/systemd/system/serial-getty@ttyS0.service"
ln -sf /dev/null "$g/etc/systemd/system/getty@.service"
rm -f "$vm/rootfs.img"
mke2fs -q -t ext4 -d "$g" "$vm/rootfs.img" 1G

. ci/stack-lib.sh
work=$(mktemp -d)
trap 'stop_stack; rm -rf "$work"' EXIT
RUST_LOG=${RUST_LOG:-warn} "target/$profile/vgpu-stub" --socket "$work/stub.sock" \
  --executor soft --memory 2G &
vgpu_pids+=($!)
wait_for "$work/stub.sock" vgpu-stub

echo "== booting the guest (TCG, 2 vCPUs, intel-iommu with caching mode)"
set +e
timeout 900 bash -c "$(declare -f qemu); q=$q; qemu \
  -M q35,memory-backend=mem,kernel-irqchip=split -accel tcg -cpu max -smp 2 -m 1G \
  -object memory-backend-memfd,id=mem,size=1G,share=on \
  -device intel-iommu,intremap=on,caching-mode=on \
  -device '{\"driver\":\"vfio-user-pci\",\"socket\":{\"path\":\"$work/stub.sock\",\"type\":\"unix\"}}' \
  -drive file=$vm/rootfs.img,if=virtio,format=raw \
  -kernel $g/boot/vmlinuz-* -initrd $g/boot/initrd.img-* \
  -append 'console=ttyS0 root=/dev/vda rw intel_iommu=on panic=-1' \
  -nographic -no-reboot" < /dev/null 2>&1 | tee "$work/console.txt"
set -e
if grep -q "VGPU-VM: PASS" "$work/console.txt"; then
  # The guest's benchmark table, for the README (target/vm/bench-guest.txt).
  grep "VGPU-VM-BENCH: " "$work/console.txt" | sed 's/^.*VGPU-VM-BENCH: //' | tr -d '\r' \
    > "$vm/bench-guest.txt" || true
  echo "vm: PASS (TCG): udev bound the device, systemd started vgpu-driver on kernel VFIO, the samples ran, vgpu-bench ran in the guest ($vm/bench-guest.txt)"
else
  # The console above ends in the guest's shutdown, and a log's tail may be all a reader
  # sees: what the failing step printed around its FAIL (its output, the driver's
  # journal), then the guest's markers again.
  echo "== the guest's failing step and its markers (the whole console is above)" >&2
  grep -a -B 20 -A 30 "VGPU-VM: FAIL" "$work/console.txt" | tr -d '\r' >&2 || true
  grep -a "VGPU-VM: " "$work/console.txt" | tr -d '\r' >&2 || true
  echo "vm: FAIL: no PASS marker from the guest" >&2
  exit 1
fi
