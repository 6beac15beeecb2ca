//! Measurements through the drop-in libraries themselves (the `vgpu-libcuda` and
//! `vgpu-libcudart` crates, linked in): pageable copies, start-up registration, and a
//! decode-shaped loop. `VGPU_SOCKET` must name the driver before the first call.

use crate::floors;
use crate::Row;
use std::ffi::{c_char, c_void, CString};
use std::time::{Duration, Instant};

/// The compiler-generated registration ABI of `vgpu-libcudart` (linked in), through its C
/// signatures, as a program's start-up code calls it.
#[allow(non_snake_case, clippy::too_many_arguments)]
mod rt {
    use std::ffi::{c_char, c_void};

    mod sys {
        use std::ffi::{c_char, c_void};
        extern "C" {
            pub fn __cudaRegisterFatBinary(wrapper: *mut c_void) -> *mut *mut c_void;
            pub fn __cudaRegisterFatBinaryEnd(handle: *mut *mut c_void);
            pub fn __cudaUnregisterFatBinary(handle: *mut *mut c_void);
            pub fn __cudaRegisterFunction(
                handle: *mut *mut c_void,
                host_fun: *const c_char,
                device_fun: *mut c_char,
                device_name: *const c_char,
                thread_limit: i32,
                tid: *mut c_void,
                bid: *mut c_void,
                block: *mut c_void,
                grid: *mut c_void,
                wsize: *mut i32,
            );
            pub fn __cudaRegisterVar(
                handle: *mut *mut c_void,
                host_var: *mut c_char,
                device_address: *mut c_char,
                device_name: *const c_char,
                ext: i32,
                size: usize,
                constant: i32,
                global: i32,
            );
        }
    }

    // SAFETY (every wrapper): the wrapper buffers, identities and NUL-terminated names are
    // the benchmark's own and outlive the registrations, as a program's do.
    pub fn __cudaRegisterFatBinary(wrapper: *mut c_void) -> *mut *mut c_void {
        // SAFETY: see above.
        unsafe { sys::__cudaRegisterFatBinary(wrapper) }
    }
    pub fn __cudaRegisterFatBinaryEnd(handle: *mut *mut c_void) {
        // SAFETY: see above.
        unsafe { sys::__cudaRegisterFatBinaryEnd(handle) }
    }
    pub fn __cudaUnregisterFatBinary(handle: *mut *mut c_void) {
        // SAFETY: see above.
        unsafe { sys::__cudaUnregisterFatBinary(handle) }
    }
    /// A function: `host` is its stub's identity, `name` its device name.
    pub fn __cudaRegisterFunction(
        handle: *mut *mut c_void,
        host: *const c_char,
        name: *const c_char,
    ) {
        let null = std::ptr::null_mut();
        // SAFETY: see above.
        unsafe {
            sys::__cudaRegisterFunction(
                handle,
                host,
                name.cast_mut(),
                name,
                -1,
                null,
                null,
                null,
                null,
                null.cast(),
            )
        }
    }
    /// A variable of 4 bytes: `host` is its shadow's identity, `name` its device name.
    pub fn __cudaRegisterVar(handle: *mut *mut c_void, host: *mut c_char, name: *const c_char) {
        // SAFETY: see above.
        unsafe { sys::__cudaRegisterVar(handle, host, name.cast_mut(), name, 0, 4, 0, 0) }
    }
}

/// The driver API of `vgpu-libcuda` (linked in) through its C signatures, as an application
/// calls it. Each wrapper forwards the benchmark's own live buffers and handles.
#[allow(non_snake_case, clippy::too_many_arguments)]
mod cu {
    use std::ffi::{c_char, c_void};

    mod sys {
        use std::ffi::{c_char, c_void};
        extern "C" {
            pub fn cuInit(flags: u32) -> u32;
            pub fn cuMemAlloc_v2(p: *mut u64, n: usize) -> u32;
            pub fn cuMemFree_v2(p: u64) -> u32;
            pub fn cuMemAllocHost_v2(p: *mut *mut c_void, n: usize) -> u32;
            pub fn cuMemFreeHost(p: *mut c_void) -> u32;
            pub fn cuMemHostRegister_v2(p: *mut c_void, n: usize, flags: u32) -> u32;
            pub fn cuMemHostUnregister(p: *mut c_void) -> u32;
            pub fn cuMemcpyHtoD_v2(d: u64, s: *const c_void, n: usize) -> u32;
            pub fn cuMemcpyDtoH_v2(d: *mut c_void, s: u64, n: usize) -> u32;
            pub fn cuMemcpyHtoDAsync_v2(d: u64, s: *const c_void, n: usize, st: usize) -> u32;
            pub fn cuMemcpyDtoHAsync_v2(d: *mut c_void, s: u64, n: usize, st: usize) -> u32;
            pub fn cuModuleLoadData(m: *mut usize, image: *const c_void) -> u32;
            pub fn cuModuleGetFunction(f: *mut usize, m: usize, name: *const c_char) -> u32;
            pub fn cuStreamCreate(s: *mut usize, flags: u32) -> u32;
            pub fn cuStreamDestroy_v2(s: usize) -> u32;
            pub fn cuStreamSynchronize(s: usize) -> u32;
            pub fn cuStreamBeginCapture_v2(s: usize, mode: u32) -> u32;
            pub fn cuStreamEndCapture(s: usize, g: *mut usize) -> u32;
            pub fn cuGraphInstantiateWithFlags(e: *mut usize, g: usize, flags: u64) -> u32;
            pub fn cuGraphLaunch(e: usize, s: usize) -> u32;
            pub fn cuGraphExecDestroy(e: usize) -> u32;
            pub fn cuGraphDestroy(g: usize) -> u32;
            pub fn cuEventCreate(e: *mut usize, flags: u32) -> u32;
            pub fn cuEventDestroy_v2(e: usize) -> u32;
            pub fn cuEventRecord(e: usize, s: usize) -> u32;
            pub fn cuEventElapsedTime(ms: *mut f32, start: usize, end: usize) -> u32;
            pub fn cuLaunchKernel(
                f: usize,
                gx: u32,
                gy: u32,
                gz: u32,
                bx: u32,
                by: u32,
                bz: u32,
                shared: u32,
                stream: usize,
                params: *const *const c_void,
                extra: *const *const c_void,
            ) -> u32;
        }
    }

    // SAFETY (every wrapper): the arguments are the benchmark's own out-variables, live host
    // buffers of at least the lengths passed, NUL-terminated names, and handles and device
    // addresses the library returned; that is the C API's contract.
    pub fn cuInit(flags: u32) -> u32 {
        // SAFETY: see above.
        unsafe { sys::cuInit(flags) }
    }
    pub fn cuMemAlloc_v2(p: &mut u64, n: usize) -> u32 {
        // SAFETY: see above.
        unsafe { sys::cuMemAlloc_v2(p, n) }
    }
    pub fn cuMemFree_v2(p: u64) -> u32 {
        // SAFETY: see above.
        unsafe { sys::cuMemFree_v2(p) }
    }
    pub fn cuMemAllocHost_v2(p: &mut *mut c_void, n: usize) -> u32 {
        // SAFETY: see above.
        unsafe { sys::cuMemAllocHost_v2(p, n) }
    }
    pub fn cuMemFreeHost(p: *mut c_void) -> u32 {
        // SAFETY: see above.
        unsafe { sys::cuMemFreeHost(p) }
    }
    /// `p` is `n` bytes of host memory this benchmark mapped.
    pub fn cuMemHostRegister_v2(p: *mut u8, n: usize) -> u32 {
        // SAFETY: see above.
        unsafe { sys::cuMemHostRegister_v2(p.cast(), n, 0) }
    }
    pub fn cuMemHostUnregister(p: *mut u8) -> u32 {
        // SAFETY: see above.
        unsafe { sys::cuMemHostUnregister(p.cast()) }
    }
    /// `s` is `n` bytes of host memory (pageable or pinned) this benchmark allocated.
    pub fn cuMemcpyHtoD_raw(d: u64, s: *const u8, n: usize) -> u32 {
        // SAFETY: see above.
        unsafe { sys::cuMemcpyHtoD_v2(d, s.cast(), n) }
    }
    /// `d` is `n` bytes of host memory (pageable or pinned) this benchmark allocated.
    pub fn cuMemcpyDtoH_raw(d: *mut u8, s: u64, n: usize) -> u32 {
        // SAFETY: see above.
        unsafe { sys::cuMemcpyDtoH_v2(d.cast(), s, n) }
    }
    /// What a program does with the pinned buffer `p` (`buf.len()` bytes this benchmark
    /// allocated) around a copy: fills it before one to the device (`write`), else reads it
    /// into `buf` after one from the device.
    pub fn touch(p: *mut u8, buf: &mut [u8], write: bool) {
        // SAFETY: see above; `buf` is the benchmark's own buffer, distinct from `p`.
        unsafe {
            if write {
                std::ptr::write_bytes(p, 0x5A, buf.len());
            } else {
                std::ptr::copy_nonoverlapping(p, buf.as_mut_ptr(), buf.len());
            }
        }
        std::hint::black_box(buf);
    }
    /// `s` is `n` bytes of pinned memory this benchmark allocated.
    pub fn cuMemcpyHtoDAsync_v2(d: u64, s: *const c_void, n: usize, st: usize) -> u32 {
        // SAFETY: see above.
        unsafe { sys::cuMemcpyHtoDAsync_v2(d, s, n, st) }
    }
    /// `d` is `n` bytes of pinned memory this benchmark allocated.
    pub fn cuMemcpyDtoHAsync_v2(d: *mut c_void, s: u64, n: usize, st: usize) -> u32 {
        // SAFETY: see above.
        unsafe { sys::cuMemcpyDtoHAsync_v2(d, s, n, st) }
    }
    pub fn cuModuleLoadData(m: &mut usize, image: &[u8]) -> u32 {
        // SAFETY: see above.
        unsafe { sys::cuModuleLoadData(m, image.as_ptr().cast()) }
    }
    pub fn cuModuleGetFunction(f: &mut usize, m: usize, name: *const c_char) -> u32 {
        // SAFETY: see above.
        unsafe { sys::cuModuleGetFunction(f, m, name) }
    }
    pub fn cuStreamCreate(s: &mut usize, flags: u32) -> u32 {
        // SAFETY: see above.
        unsafe { sys::cuStreamCreate(s, flags) }
    }
    pub fn cuStreamDestroy_v2(s: usize) -> u32 {
        // SAFETY: see above.
        unsafe { sys::cuStreamDestroy_v2(s) }
    }
    pub fn cuStreamSynchronize(s: usize) -> u32 {
        // SAFETY: see above.
        unsafe { sys::cuStreamSynchronize(s) }
    }
    pub fn cuStreamBeginCapture_v2(s: usize, mode: u32) -> u32 {
        // SAFETY: see above.
        unsafe { sys::cuStreamBeginCapture_v2(s, mode) }
    }
    pub fn cuStreamEndCapture(s: usize, g: &mut usize) -> u32 {
        // SAFETY: see above.
        unsafe { sys::cuStreamEndCapture(s, g) }
    }
    pub fn cuGraphInstantiateWithFlags(e: &mut usize, g: usize) -> u32 {
        // SAFETY: see above.
        unsafe { sys::cuGraphInstantiateWithFlags(e, g, 0) }
    }
    pub fn cuGraphLaunch(e: usize, s: usize) -> u32 {
        // SAFETY: see above.
        unsafe { sys::cuGraphLaunch(e, s) }
    }
    pub fn cuGraphExecDestroy(e: usize) -> u32 {
        // SAFETY: see above.
        unsafe { sys::cuGraphExecDestroy(e) }
    }
    pub fn cuGraphDestroy(g: usize) -> u32 {
        // SAFETY: see above.
        unsafe { sys::cuGraphDestroy(g) }
    }
    pub fn cuEventCreate(e: &mut usize) -> u32 {
        // SAFETY: see above.
        unsafe { sys::cuEventCreate(e, 0) }
    }
    pub fn cuEventDestroy_v2(e: usize) -> u32 {
        // SAFETY: see above.
        unsafe { sys::cuEventDestroy_v2(e) }
    }
    pub fn cuEventRecord(e: usize, s: usize) -> u32 {
        // SAFETY: see above.
        unsafe { sys::cuEventRecord(e, s) }
    }
    pub fn cuEventElapsedTime(ms: &mut f32, start: usize, end: usize) -> u32 {
        // SAFETY: see above.
        unsafe { sys::cuEventElapsedTime(ms, start, end) }
    }
    /// A launch of a kernel without parameters.
    pub fn cuLaunchKernel(f: usize, grid: [u32; 3], block: [u32; 3], stream: usize) -> u32 {
        let [gx, gy, gz] = grid;
        let [bx, by, bz] = block;
        // SAFETY: see above; the kernel takes no parameters.
        unsafe {
            sys::cuLaunchKernel(
                f,
                gx,
                gy,
                gz,
                bx,
                by,
                bz,
                0,
                stream,
                std::ptr::null(),
                std::ptr::null(),
            )
        }
    }
}

fn check(what: &str, r: u32) {
    assert_eq!(r, 0, "{what} failed with CUDA error {r}");
}

/// Host-to-device and device-to-host copies from and to pageable memory (staged through
/// the window by libcuda), against memcpy of the same size.
pub fn pageable(sizes: &[u64], min_time: Duration) -> Vec<Row> {
    let max = *sizes.iter().max().unwrap_or(&(4 << 20)) as usize;
    // Touched first, so that page faults are not part of the copies.
    let mut host = vec![1u8; max];
    // Pageable memory is ordinary heap memory on both ends: heap-to-heap memcpy.
    copy_rows("pageable", host.as_mut_ptr(), sizes, min_time, |size| {
        (size >= 4 << 20).then_some(0.7)
    })
}

/// Host-to-device and device-to-host copies from and to memory the program mapped itself
/// and registered with `cuMemHostRegister` (a memfd mapping, which becomes a window: the
/// copies go straight, as from `cuMemAllocHost` memory), against memcpy of the same size.
pub fn registered(sizes: &[u64], min_time: Duration) -> Vec<Row> {
    check("cuInit", cu::cuInit(0));
    let max = *sizes.iter().max().unwrap_or(&(4 << 20)) as usize;
    let mem = vgpu_os::shm::SharedMemory::new("vgpu-bench-registered", max).expect("a memfd");
    mem.fill(0, mem.len(), 1).expect("touched");
    let p = mem.as_ptr();
    check("cuMemHostRegister", cu::cuMemHostRegister_v2(p, mem.len()));
    let rows = copy_rows("registered", p, sizes, min_time, |_| None);
    check("cuMemHostUnregister", cu::cuMemHostUnregister(p));
    rows
}

/// One row per size and direction: synchronous copies between `host` (at least the
/// largest size, this benchmark's own memory) and the device, as bandwidth against memcpy
/// of the same size; rows named after `kind`, with `target(size)`.
fn copy_rows(
    kind: &str,
    host: *mut u8,
    sizes: &[u64],
    min_time: Duration,
    target: impl Fn(usize) -> Option<f64>,
) -> Vec<Row> {
    check("cuInit", cu::cuInit(0));
    let max = *sizes.iter().max().unwrap_or(&(4 << 20)) as usize;
    let mut dev = 0u64;
    check("cuMemAlloc", cu::cuMemAlloc_v2(&mut dev, max));
    let mut rows = Vec::new();
    for &size in sizes {
        let size = size as usize;
        let mc = floors::memcpy_bandwidth(size, min_time) / 1e9;
        for htod in [true, false] {
            let copy = || {
                let r = if htod {
                    cu::cuMemcpyHtoD_raw(dev, host, size)
                } else {
                    cu::cuMemcpyDtoH_raw(host, dev, size)
                };
                check(kind, r);
            };
            // Each copy is complete on return: nothing to settle.
            let best = floors::best_rate(size, min_time, copy, || {});
            rows.push(Row {
                name: format!(
                    "{} {kind} {}",
                    if htod { "HtoD" } else { "DtoH" },
                    crate::human(size as u64)
                ),
                value: best / 1e9,
                unit: "GB/s",
                floor_name: format!("memcpy {}", crate::human(size as u64)),
                floor: mc,
                lower_is_better: false,
                target: target(size),
                p99: None,
            });
        }
    }
    check("cuMemFree", cu::cuMemFree_v2(dev));
    rows
}

/// Latencies in nanoseconds (sorted) of `rounds` runs of `op`, after a warm-up; `untimed`
/// runs before each, off the clock.
fn latencies(rounds: usize, mut untimed: impl FnMut(), mut op: impl FnMut()) -> Vec<u64> {
    for _ in 0..rounds.div_ceil(10) {
        untimed();
        op();
    }
    let mut lat: Vec<u64> = (0..rounds)
        .map(|_| {
            untimed();
            let t0 = Instant::now();
            op();
            t0.elapsed().as_nanos() as u64
        })
        .collect();
    lat.sort_unstable();
    lat
}

/// Sizes of the small synchronous copies.
pub const SMALL_SIZES: [usize; 4] = [4, 64, 4 << 10, 64 << 10];

/// Synchronous copies of 4 B to 64 KiB, pageable and pinned, both ways, as latencies (p50,
/// p99), each against a shared-memory round trip that carries the same bytes across
/// cores (p50; `handoff[i]` for `SMALL_SIZES[i]`, sorted nanoseconds). The program touches
/// its pinned buffer between copies (writes it before a host-to-device copy, reads it after
/// a device-to-host one), off the clock, as a program does with its data: otherwise the
/// bytes would never leave the caches of the device's core.
pub fn small_copies(handoff: &[Vec<u64>], rounds: usize) -> Vec<Row> {
    check("cuInit", cu::cuInit(0));
    let max = *SMALL_SIZES.iter().max().unwrap_or(&4096);
    let mut dev = 0u64;
    check("cuMemAlloc", cu::cuMemAlloc_v2(&mut dev, max));
    let mut pinned: *mut c_void = std::ptr::null_mut();
    check("cuMemAllocHost", cu::cuMemAllocHost_v2(&mut pinned, max));
    let pinned = pinned.cast::<u8>();
    let mut heap = vec![1u8; max];
    let mut sink = vec![0u8; max];
    let mut rows = Vec::new();
    let us = |ns: u64| ns as f64 / 1000.0;
    for (size, floor) in SMALL_SIZES.into_iter().zip(handoff) {
        let floor = us(crate::floors::percentile(floor, 0.5));
        for kind in ["pageable", "pinned"] {
            let host = if kind == "pinned" {
                pinned
            } else {
                heap.as_mut_ptr()
            };
            for htod in [true, false] {
                let touch = || {
                    if kind == "pinned" {
                        cu::touch(host, &mut sink[..size], htod);
                    }
                };
                let lat = latencies(rounds, touch, || {
                    let r = if htod {
                        cu::cuMemcpyHtoD_raw(dev, host, size)
                    } else {
                        cu::cuMemcpyDtoH_raw(host, dev, size)
                    };
                    check("small copy", r);
                });
                rows.push(Row {
                    name: format!(
                        "{} {kind} {}, p50",
                        if htod { "HtoD" } else { "DtoH" },
                        crate::human(size as u64)
                    ),
                    value: us(crate::floors::percentile(&lat, 0.5)),
                    unit: "µs",
                    floor_name: "shm round trip with the bytes".into(),
                    floor,
                    lower_is_better: true,
                    target: Some(2.0),
                    p99: Some(us(crate::floors::percentile(&lat, 0.99))),
                });
            }
        }
    }
    check("cuMemFreeHost", cu::cuMemFreeHost(pinned.cast()));
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
        let h = rt::__cudaRegisterFatBinary(w.as_mut_ptr().cast());
        let per = FUNCTIONS / FATBINS + usize::from(f < FUNCTIONS % FATBINS);
        let first = (0..f)
            .map(|i| FUNCTIONS / FATBINS + usize::from(i < FUNCTIONS % FATBINS))
            .sum::<usize>();
        for (i, name) in names.iter().enumerate().skip(first).take(per) {
            let name = name.as_ptr();
            rt::__cudaRegisterFunction(h, base.wrapping_add(i).cast::<c_char>(), name);
        }
        for i in (f..VARIABLES).step_by(FATBINS) {
            let name = names[FUNCTIONS + i].as_ptr();
            rt::__cudaRegisterVar(
                h,
                base.wrapping_add(FUNCTIONS + i).cast_mut().cast::<c_char>(),
                name,
            );
        }
        rt::__cudaRegisterFatBinaryEnd(h);
        handles.push(h);
    }
    let took = t0.elapsed();
    for h in handles {
        rt::__cudaUnregisterFatBinary(h);
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
        p99: None,
    }
}

/// Loads `fatbin` through libcuda and returns its kernel without parameters, or says why
/// `what` is not measured.
fn no_params_kernel(fatbin: &std::path::Path, what: &str) -> Option<usize> {
    check("cuInit", cu::cuInit(0));
    let image = match std::fs::read(fatbin) {
        Ok(mut v) => {
            v.resize(v.len().next_multiple_of(64), 0);
            v
        }
        Err(e) => {
            println!("{what}: not measured ({}: {e})", fatbin.display());
            return None;
        }
    };
    let mut module = 0usize;
    check(
        "cuModuleLoadData",
        cu::cuModuleLoadData(&mut module, &image),
    );
    let mut func = 0usize;
    check(
        "cuModuleGetFunction",
        cu::cuModuleGetFunction(&mut func, module, c"_Z9no_paramsv".as_ptr()),
    );
    Some(func)
}

/// Bytes of a token's logits in the graph decode loop (a 16k vocabulary in f32).
pub const LOGITS: usize = 64 << 10;

/// A decode step as ggml runs it with CUDA graphs on: per token, the token id and its
/// position copied in from pageable memory (asynchronously), one launch of a graph of
/// `launches` kernels captured once, the logits ([`LOGITS`] bytes) copied back into
/// pageable memory, and a stream synchronize. Events around the graph time the kernels on
/// the device; what is left of the token's wall time is the stack's overhead, against a
/// floor of two shared-memory round trips carrying the same bytes (`handoff_small` for the
/// inputs, `handoff_logits` for the logits; p50 nanoseconds).
pub fn decode_graph(
    fatbin: &std::path::Path,
    tokens: usize,
    launches: usize,
    handoff_small: f64,
    handoff_logits: f64,
) -> Vec<Row> {
    let Some(func) = no_params_kernel(fatbin, "decode loop with a graph") else {
        return Vec::new();
    };
    let mut stream = 0usize;
    check("cuStreamCreate", cu::cuStreamCreate(&mut stream, 1));
    // Capture the token's kernels once (relaxed mode), as ggml does.
    check(
        "cuStreamBeginCapture",
        cu::cuStreamBeginCapture_v2(stream, 2),
    );
    for _ in 0..launches {
        check(
            "cuLaunchKernel",
            cu::cuLaunchKernel(func, [1, 1, 1], [32, 1, 1], stream),
        );
    }
    let mut graph = 0usize;
    check(
        "cuStreamEndCapture",
        cu::cuStreamEndCapture(stream, &mut graph),
    );
    let mut exec = 0usize;
    check(
        "cuGraphInstantiate",
        cu::cuGraphInstantiateWithFlags(&mut exec, graph),
    );
    let (mut start, mut end) = (0usize, 0usize);
    check("cuEventCreate", cu::cuEventCreate(&mut start));
    check("cuEventCreate", cu::cuEventCreate(&mut end));
    let mut dev = 0u64;
    check("cuMemAlloc", cu::cuMemAlloc_v2(&mut dev, 8 + LOGITS));
    let inputs = [7u32, 0u32];
    let mut logits = vec![0u8; LOGITS];
    // One token: (wall, kernel time) in microseconds.
    // One token: (wall, kernel time, [posting, the logits' call, the synchronize]) in
    // microseconds.
    let mut token = |pos: u32| {
        let t0 = Instant::now();
        for (i, v) in [inputs[0], pos].iter().enumerate() {
            let r =
                cu::cuMemcpyHtoDAsync_v2(dev + 4 * i as u64, (v as *const u32).cast(), 4, stream);
            check("cuMemcpyHtoDAsync", r);
        }
        check("cuEventRecord", cu::cuEventRecord(start, stream));
        check("cuGraphLaunch", cu::cuGraphLaunch(exec, stream));
        check("cuEventRecord", cu::cuEventRecord(end, stream));
        let posted = t0.elapsed().as_secs_f64() * 1e6;
        let r = cu::cuMemcpyDtoHAsync_v2(logits.as_mut_ptr().cast(), dev + 8, LOGITS, stream);
        check("cuMemcpyDtoHAsync", r);
        let copied = t0.elapsed().as_secs_f64() * 1e6;
        check("cuStreamSynchronize", cu::cuStreamSynchronize(stream));
        let wall = t0.elapsed().as_secs_f64() * 1e6;
        let mut ms = 0f32;
        check(
            "cuEventElapsedTime",
            cu::cuEventElapsedTime(&mut ms, start, end),
        );
        let kernel = f64::from(ms) * 1000.0;
        (
            wall,
            kernel,
            [posted, copied - posted - kernel, wall - copied],
        )
    };
    for pos in 0..3 {
        token(pos);
    }
    let mut overhead: Vec<u64> = Vec::with_capacity(tokens);
    let (mut wall_sum, mut kernel_sum) = (0f64, 0f64);
    let mut parts = [0f64; 3];
    for pos in 0..tokens as u32 {
        let (wall, kernel, split) = token(pos);
        wall_sum += wall;
        kernel_sum += kernel;
        overhead.push(((wall - kernel).max(0.0) * 1000.0) as u64);
        for (sum, v) in parts.iter_mut().zip(split) {
            *sum += v / tokens as f64;
        }
    }
    overhead.sort_unstable();
    println!(
        "decode token with a graph, where the overhead goes (means): posting {:.1} µs; the logits' call beyond the kernels {:.1} µs (the graph's start on the stream, the copy, its completion); the synchronize {:.1} µs",
        parts[0], parts[1], parts[2]
    );
    check("cuMemFree", cu::cuMemFree_v2(dev));
    check("cuEventDestroy", cu::cuEventDestroy_v2(start));
    check("cuEventDestroy", cu::cuEventDestroy_v2(end));
    check("cuGraphExecDestroy", cu::cuGraphExecDestroy(exec));
    check("cuGraphDestroy", cu::cuGraphDestroy(graph));
    check("cuStreamDestroy", cu::cuStreamDestroy_v2(stream));
    let us = |ns: u64| ns as f64 / 1000.0;
    let floor = (handoff_small + handoff_logits) / 1000.0;
    let floor_name = "shm round trips with the bytes".to_string();
    vec![
        Row {
            name: format!("decode token, graph of {launches}: overhead"),
            value: us(crate::floors::percentile(&overhead, 0.5)),
            unit: "µs",
            floor_name: floor_name.clone(),
            floor,
            lower_is_better: true,
            target: None,
            p99: Some(us(crate::floors::percentile(&overhead, 0.99))),
        },
        Row {
            name: format!("decode token, graph of {launches}: wall"),
            value: wall_sum / tokens as f64,
            unit: "µs",
            floor_name: "of which kernels (events)".to_string(),
            floor: kernel_sum / tokens as f64,
            lower_is_better: true,
            target: None,
            p99: None,
        },
    ]
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
    let Some(func) = no_params_kernel(fatbin, "decode-shaped loop") else {
        return Vec::new();
    };
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
            let r = cu::cuLaunchKernel(func, [1, 1, 1], [32, 1, 1], stream);
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
            p99: None,
        },
        Row {
            name: format!("decode token ({launches} launches), wall"),
            value: wall,
            unit: "µs",
            floor_name,
            floor,
            lower_is_better: true,
            target: None,
            p99: None,
        },
    ]
}
