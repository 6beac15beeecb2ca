//! Measurements through the drop-in libraries themselves (the `vgpu-libcuda` and
//! `vgpu-libcudart` crates, linked in): pageable copies, start-up registration, and a
//! decode-shaped loop. `VGPU_SOCKET` must name the driver before the first call.

use crate::floors;
use crate::Row;
use std::ffi::{c_char, c_void, CString};
use std::time::{Duration, Instant};
use vgpu_cuda::ffi as cu;

fn check(what: &str, r: u32) {
    assert_eq!(r, 0, "{what} failed with CUDA error {r}");
}

/// Host-to-device and device-to-host copies from and to pageable memory (staged through
/// the window by libcuda), against memcpy of the same size.
pub fn pageable(sizes: &[u64], min_time: Duration) -> Vec<Row> {
    check("cuInit", cu::cuInit(0));
    let max = *sizes.iter().max().unwrap_or(&(4 << 20)) as usize;
    let mut dev = 0u64;
    check("cuMemAlloc", cu::cuMemAlloc_v2(&mut dev, max));
    // Touched first, so that page faults are not part of the copies.
    let mut host = vec![1u8; max];
    let mut rows = Vec::new();
    for &size in sizes {
        let size = size as usize;
        // Pageable memory is ordinary heap memory on both ends: heap-to-heap memcpy.
        let mc = floors::memcpy_bandwidth(size, min_time) / 1e9;
        for htod in [true, false] {
            let copy = || {
                let r = if htod {
                    cu::cuMemcpyHtoD_v2(dev, host.as_ptr().cast(), size)
                } else {
                    cu::cuMemcpyDtoH_v2(host.as_mut_ptr().cast(), dev, size)
                };
                check("pageable copy", r);
            };
            // Each copy is complete on return: nothing to settle.
            let best = floors::best_rate(size, min_time, copy, || {});
            rows.push(Row {
                name: format!(
                    "{} pageable {}",
                    if htod { "HtoD" } else { "DtoH" },
                    crate::human(size as u64)
                ),
                value: best / 1e9,
                unit: "GB/s",
                floor_name: format!("memcpy {}", crate::human(size as u64)),
                floor: mc,
                lower_is_better: false,
                target: (size >= 4 << 20).then_some(0.7),
            });
        }
    }
    check("cuMemFree", cu::cuMemFree_v2(dev));
    rows
}

/// What ggml-cuda registers when it is loaded: 145 fatbins, 7,112 functions and 1,711
/// variables (ollama-and-ggml.md), through libcudart's registration entry points, against
/// inserting as many entries into a hash map.
pub fn registration() -> Row {
    const FATBINS: usize = 145;
    const FUNCTIONS: usize = 7112;
    const VARIABLES: usize = 1711;
    // Names like the mangled ones of a real build, made before the clock starts.
    let names: Vec<CString> = (0..FUNCTIONS + VARIABLES)
        .map(|i| {
            CString::new(format!(
                "_Z{}ggml_kernel_{i}_templated_on_things",
                20 + i % 10
            ))
            .unwrap()
        })
        .collect();
    // Host stubs and shadows are only identities: distinct addresses in one buffer.
    let identities = vec![0u8; FUNCTIONS + VARIABLES];
    let mut wrappers = vec![[0u64; 3]; FATBINS];
    let base = identities.as_ptr();
    let t0 = Instant::now();
    let mut handles = Vec::with_capacity(FATBINS);
    for (f, w) in wrappers.iter_mut().enumerate() {
        let h = vgpu_cudart::ffi::__cudaRegisterFatBinary(w.as_mut_ptr().cast());
        let per = FUNCTIONS / FATBINS + usize::from(f < FUNCTIONS % FATBINS);
        let first = (0..f)
            .map(|i| FUNCTIONS / FATBINS + usize::from(i < FUNCTIONS % FATBINS))
            .sum::<usize>();
        for (i, name) in names.iter().enumerate().skip(first).take(per) {
            let name = name.as_ptr();
            vgpu_cudart::ffi::__cudaRegisterFunction(
                h,
                base.wrapping_add(i).cast::<c_char>(),
                name.cast_mut(),
                name,
                -1,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            );
        }
        for i in (f..VARIABLES).step_by(FATBINS) {
            let name = names[FUNCTIONS + i].as_ptr();
            vgpu_cudart::ffi::__cudaRegisterVar(
                h,
                base.wrapping_add(FUNCTIONS + i).cast_mut().cast::<c_char>(),
                name.cast_mut(),
                name,
                0,
                4,
                0,
                0,
            );
        }
        vgpu_cudart::ffi::__cudaRegisterFatBinaryEnd(h);
        handles.push(h);
    }
    let took = t0.elapsed();
    for h in handles {
        vgpu_cudart::ffi::__cudaUnregisterFatBinary(h);
    }
    // The floor: the same number of (address → name) entries into a hash map.
    let t0 = Instant::now();
    let mut map = std::collections::HashMap::new();
    for (i, n) in names.iter().enumerate() {
        map.insert(base as usize + i, n.to_string_lossy().into_owned());
    }
    let floor = t0.elapsed();
    std::hint::black_box(&map);
    Row {
        name: format!("registration: {FATBINS} fatbins, {FUNCTIONS} functions, {VARIABLES} vars"),
        value: took.as_secs_f64() * 1e3,
        unit: "ms",
        floor_name: "as many hash-map inserts".into(),
        floor: floor.as_secs_f64() * 1e3,
        lower_is_better: true,
        target: None,
    }
}

/// A decode-shaped loop through libcuda: per token, `launches` small kernel launches on a
/// stream, two small host-to-device copies and one device-to-host copy from pinned memory,
/// then a stream synchronize. Returns rows of the guest CPU spent posting a token's work
/// (what the shims cost the application; the wait for the device is not counted) and the
/// wall time per token (on the soft executor mostly its CPU kernels), against a floor of
/// as many raw ring posts plus one spinning round trip of the floors.
pub fn decode_loop(
    fatbin: &std::path::Path,
    tokens: usize,
    launches: usize,
    ring_post_ns: f64,
    ping_pong_ns: f64,
) -> Vec<Row> {
    check("cuInit", cu::cuInit(0));
    let image = match std::fs::read(fatbin) {
        Ok(mut v) => {
            v.resize(v.len().next_multiple_of(64), 0);
            v
        }
        Err(e) => {
            println!(
                "decode-shaped loop: not measured ({}: {e})",
                fatbin.display()
            );
            return Vec::new();
        }
    };
    let mut module = 0usize;
    check(
        "cuModuleLoadData",
        cu::cuModuleLoadData(&mut module, image.as_ptr().cast()),
    );
    let mut func = 0usize;
    check(
        "cuModuleGetFunction",
        cu::cuModuleGetFunction(&mut func, module, c"_Z9no_paramsv".as_ptr()),
    );
    let mut stream = 0usize;
    check("cuStreamCreate", cu::cuStreamCreate(&mut stream, 1));
    let mut pinned: *mut c_void = std::ptr::null_mut();
    check(
        "cuMemAllocHost",
        cu::cuMemAllocHost_v2(&mut pinned, 3 * 4096),
    );
    let mut dev = 0u64;
    check("cuMemAlloc", cu::cuMemAlloc_v2(&mut dev, 3 * 4096));
    let p = pinned.cast::<u8>();
    // One token; returns the thread CPU time spent posting its work (not waiting for it).
    let token = || {
        let t0 = floors::thread_cpu_ns();
        for _ in 0..launches {
            let r = cu::cuLaunchKernel(
                func,
                1,
                1,
                1,
                32,
                1,
                1,
                0,
                stream,
                std::ptr::null(),
                std::ptr::null(),
            );
            check("cuLaunchKernel", r);
        }
        check(
            "cuMemcpyHtoDAsync",
            cu::cuMemcpyHtoDAsync_v2(dev, p.cast(), 4096, stream),
        );
        check(
            "cuMemcpyHtoDAsync",
            cu::cuMemcpyHtoDAsync_v2(dev + 4096, p.wrapping_add(4096).cast(), 4096, stream),
        );
        check(
            "cuMemcpyDtoHAsync",
            cu::cuMemcpyDtoHAsync_v2(p.wrapping_add(8192).cast(), dev + 8192, 4096, stream),
        );
        let posting = floors::thread_cpu_ns() - t0;
        check("cuStreamSynchronize", cu::cuStreamSynchronize(stream));
        posting
    };
    for _ in 0..3 {
        token();
    }
    let t0 = Instant::now();
    let posting: u64 = (0..tokens).map(|_| token()).sum();
    let cpu = posting as f64 / tokens as f64 / 1000.0;
    let wall = t0.elapsed().as_secs_f64() * 1e6 / tokens as f64;
    let floor = ((launches + 3) as f64 * ring_post_ns + ping_pong_ns) / 1000.0;
    let floor_name = format!("{} ring posts + 1 ping-pong", launches + 3);
    check("cuStreamDestroy", cu::cuStreamDestroy_v2(stream));
    check("cuMemFree", cu::cuMemFree_v2(dev));
    check("cuMemFreeHost", cu::cuMemFreeHost(pinned));
    vec![
        Row {
            name: format!("decode token ({launches} launches), posting CPU"),
            value: cpu,
            unit: "µs",
            floor_name: floor_name.clone(),
            floor,
            lower_is_better: true,
            target: None,
        },
        Row {
            name: format!("decode token ({launches} launches), wall"),
            value: wall,
            unit: "µs",
            floor_name,
            floor,
            lower_is_better: true,
            target: None,
        },
    ]
}
