# Shell functions the scripts that run the stack share (source it; needs bash).
#   start_stack PROFILE WORK [vgpu-stub options...]
# starts target/PROFILE/vgpu-stub with the options and vgpu-driver on it, sockets in WORK
# (WORK/vgpu.sock is the driver's), and stops both when the calling shell exits.
#   start_loopback PROFILE WORK [vgpu-stub options of the soft stack...]
# starts a soft stack in WORK/level1 and on it a second one whose vgpu-stub runs the cuda
# executor on vgpu's own libcuda.so.1 (target/shims, loop-back allowed): WORK/vgpu.sock is
# the second driver's, so applications there exercise the cuda executor without a GPU.

vgpu_pids=()
stop_stack() {
  for p in "${vgpu_pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}

# A socket is ready when it listens, not when its file appears (that happens at bind, a
# moment before): the listening flag (__SO_ACCEPTCON) of /proc/net/unix says so without
# connecting, which would use up one of vgpu-stub's connections.
listening() {
  local _num _ref _proto flags _type _st _inode path
  while read -r _num _ref _proto flags _type _st _inode path; do
    [ "$path" = "$1" ] && [ $((16#$flags & 0x10000)) -ne 0 ] && return 0
  done < /proc/net/unix
  return 1
}

wait_for() {
  for _ in $(seq 400); do listening "$1" && return 0; sleep 0.05; done
  echo "vgpu: $2 did not start" >&2
  exit 1
}

start_driver() {
  local profile=$1 work=$2
  RUST_LOG=${RUST_LOG:-warn} "target/$profile/vgpu-driver" --vfio-user "$work/stub.sock" \
    --socket "$work/vgpu.sock" &
  vgpu_pids+=($!)
  wait_for "$work/vgpu.sock" vgpu-driver
}

start_stack() {
  local profile=$1 work=$2
  shift 2
  RUST_LOG=${RUST_LOG:-warn} "target/$profile/vgpu-stub" --socket "$work/stub.sock" "$@" &
  vgpu_pids+=($!)
  wait_for "$work/stub.sock" vgpu-stub
  start_driver "$profile" "$work"
}

start_loopback() {
  local profile=$1 work=$2
  shift 2
  mkdir -p "$work/level1"
  start_stack "$profile" "$work/level1" "$@"
  # The cuda executor's log also goes to $work/cuda-executor.log, for check_loopback_pins.
  LD_LIBRARY_PATH="$PWD/target/shims" VGPU_SOCKET="$work/level1/vgpu.sock" \
    RUST_LOG="${RUST_LOG:-warn},vgpu_stub::exec::cuda=info" "target/$profile/vgpu-stub" \
    --socket "$work/stub.sock" --executor cuda --allow-loopback \
    2> >(tee -a "$work/cuda-executor.log" >&2) &
  vgpu_pids+=($!)
  wait_for "$work/stub.sock" "vgpu-stub (cuda executor, loop-back)"
  start_driver "$profile" "$work"
}

# After a loop-back run: the cuda executor registered the guest memory it copied from and
# to with the GPU (cuMemHostRegister, here vgpu's own, which made it windows of the level
# below), and none of it failed.
check_loopback_pins() {
  local log=$1/cuda-executor.log n
  n=$(grep -c 'guest memory registered with the GPU' "$log" || true)
  if [ "$n" = 0 ] || grep -q 'of guest memory with the GPU failed' "$log"; then
    grep -i 'guest memory' "$log" >&2 || true
    echo "vgpu: the cuda executor did not register the guest memory it copies with the GPU" >&2
    exit 1
  fi
  echo "cuda executor: $n mappings of guest memory registered with the GPU (cuMemHostRegister); copies went straight"
}
