//! CUDA's occupancy calculation, shared by `cuOccupancyMaxActiveBlocksPerMultiprocessor`
//! and `cudaOccupancyMaxActiveBlocksPerMultiprocessorWithFlags`.

/// The device attributes the calculation reads (`CU_DEVICE_ATTRIBUTE_*`): warp size,
/// threads, blocks, shared memory and registers per multiprocessor, and the shared memory
/// reserved per block.
pub const DEVICE_ATTRIBUTES: [i32; 6] = [10, 39, 106, 81, 82, 111];

/// The function attributes it reads (`CU_FUNC_ATTRIBUTE_*`): static shared memory and
/// registers per thread.
pub const FUNCTION_ATTRIBUTES: [i32; 2] = [1, 4];

/// How many blocks of `block_size` threads and `dyn_shared` bytes of dynamic shared memory
/// fit on one multiprocessor, limited by threads (in whole warps), blocks, shared memory
/// (with the per-block reservation) and registers (per warp, in units of 256), as CUDA's
/// occupancy calculator does. `device` and `function` hold the attributes named by
/// [`DEVICE_ATTRIBUTES`] and [`FUNCTION_ATTRIBUTES`].
pub fn max_active_blocks(
    device: [i32; 6],
    function: [i32; 2],
    block_size: i32,
    dyn_shared: usize,
) -> i32 {
    let [warp, threads_sm, blocks_sm, shared_sm, regs_sm, reserved] = device.map(i64::from);
    let [static_shared, regs] = function.map(i64::from);
    let warp = warp.max(1);
    let warps = (i64::from(block_size.max(1)) + warp - 1) / warp;
    let by_threads = threads_sm / warp / warps;
    let shared = static_shared + dyn_shared as i64;
    let by_shared = if shared == 0 {
        i64::MAX
    } else {
        shared_sm / (shared + reserved)
    };
    let regs_per_warp = (regs * warp + 255) / 256 * 256;
    let by_regs = if regs_per_warp == 0 {
        i64::MAX
    } else {
        regs_sm / (regs_per_warp * warps)
    };
    by_threads
        .min(blocks_sm)
        .min(by_shared)
        .min(by_regs)
        .clamp(0, i64::from(i32::MAX)) as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits() {
        // An H100-like multiprocessor: 2048 threads, 32 blocks, 228 KiB shared, 64 K registers.
        let dev = [32, 2048, 32, 233_472, 65_536, 1024];
        assert_eq!(max_active_blocks(dev, [0, 32], 256, 0), 8); // threads
        assert_eq!(max_active_blocks(dev, [0, 128], 256, 0), 2); // registers
        assert_eq!(max_active_blocks(dev, [48 << 10, 16], 64, 0), 4); // shared memory
        assert_eq!(max_active_blocks(dev, [0, 16], 32, 0), 32); // blocks
    }
}
