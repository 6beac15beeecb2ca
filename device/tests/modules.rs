//! Modules through the device: real nvcc-built fatbins load on the soft executor, report
//! their kernels' parameter layouts, and launch through the CPU reference kernels.

use bytemuck::Zeroable;
use std::time::Duration;
use vgpu_proto::cmd::*;
use vgpu_proto::info::decode_module_info;
use vgpu_proto::payload::ModuleImageHeader;
use vgpu_proto::{Command, Status};
use vgpu_test_stack::bare::*;
use vgpu_test_stack::POKE;

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/../fatbin/tests/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn sha256(b: &[u8]) -> [u8; 32] {
    vgpu_stub::engine::cache::sha256(b)
}

/// Sends MODULE_LOAD with the payload (header + image) in window 1 at 64 KiB, the table
/// going to window 1 at 0.
fn load(
    d: &mut BareDriver,
    c: &mut PdClient,
    image: &[u8],
    hash: [u8; 32],
    by_hash: bool,
) -> vgpu_proto::Cqe {
    let header = ModuleImageHeader {
        sha256: hash,
        image_len: if by_hash { 0 } else { image.len() as u64 },
        rsv: 0,
    };
    let mut payload = bytemuck::bytes_of(&header).to_vec();
    if !by_hash {
        payload.extend_from_slice(image);
    }
    d.write(c.window + 65536, &payload);
    let args = ModuleLoadArgs {
        out: OutRef {
            offset: 0,
            window: 1,
            len: 65536,
        },
        flags: u32::from(by_hash),
        ..Zeroable::zeroed()
    };
    let cid = c.q.cid();
    let req = Request {
        cid,
        notify: false,
        stream: 0,
        payload: Payload::Window {
            window: 1,
            offset: 65536,
            len: payload.len() as u32,
        },
        command: Command::MODULE_LOAD(args),
    };
    c.submit(&req, &[]);
    let r = c.next(Duration::from_secs(10)).unwrap();
    assert_eq!(r.cid, cid);
    r
}

fn launch(c: &mut PdClient, func: u64, grid: u32, block: u16, params: &[u8]) -> vgpu_proto::Cqe {
    let args = LaunchArgs {
        func,
        grid_x: grid,
        grid_y: 1,
        grid_z: 1,
        block_x: block,
        block_y: 1,
        block_z: 1,
        attr_count: 0,
        shared_mem: 0,
        rsv0: 0,
    };
    let cid = c.post(0, Command::LAUNCH(args), params, true);
    let r = c.next(Duration::from_secs(10)).unwrap();
    assert_eq!(r.cid, cid);
    r
}

#[test]
fn load_launch_and_unload_real_fatbins() {
    let stub = Stub::start(1, 1 << 30);
    let mut d = BareDriver::connect(&stub);
    let mut c = d.pd_client(1, 1 << 20, 0);
    let image = fixture("kernels.fatbin");
    let r = load(&mut d, &mut c, &image, sha256(&image), false);
    assert_eq!(r.status(), Status::SUCCESS, "{r:?}");
    let module = r.result0;
    let (info, funcs) = decode_module_info(&d.read(c.window, r.result1 as usize)).unwrap();
    assert_eq!(info.module, module);
    let f = |name: &str| {
        funcs
            .iter()
            .find(|f| f.name == name)
            .unwrap_or_else(|| panic!("{name} missing"))
    };
    let odd = f("_Z10odd_params6ParamsPKixsPi");
    let layout: Vec<(u32, u32)> = odd.params.iter().map(|p| (p.offset, p.size)).collect();
    assert_eq!(
        layout,
        vec![(0, 0x20), (0x20, 8), (0x28, 8), (0x30, 2), (0x38, 8)]
    );
    assert_eq!(odd.record.param_bytes, 0x40);
    let vec_add = f("_Z6vecAddPKfS0_Pfi");
    assert_eq!(vec_add.record.param_bytes, 0x1c);
    assert_eq!(
        f("_Z13shared_reducePKfPf").record.max_threads_per_block,
        256
    );

    // vecAdd over 100 elements: c = a + b + g_table[i % 37] (g_table = {1, 0, 0, ...}).
    let n = 100usize;
    let (a, b, out) = (c.mem_alloc(400), c.mem_alloc(400), c.mem_alloc(400));
    let av: Vec<u8> = (0..n).flat_map(|i| (i as f32).to_le_bytes()).collect();
    let bv: Vec<u8> = (0..n)
        .flat_map(|i| (2.0 * i as f32).to_le_bytes())
        .collect();
    c.post(
        0,
        Command::MEMCPY_HTOD(CopyHtoDArgs {
            dst: a,
            len: 400,
            ..Zeroable::zeroed()
        }),
        &av,
        false,
    );
    c.post(
        0,
        Command::MEMCPY_HTOD(CopyHtoDArgs {
            dst: b,
            len: 400,
            ..Zeroable::zeroed()
        }),
        &bv,
        false,
    );
    let mut params = Vec::new();
    for p in [a, b, out] {
        params.extend_from_slice(&p.to_le_bytes());
    }
    params.extend_from_slice(&(n as i32).to_le_bytes());
    assert_eq!(
        launch(&mut c, vec_add.record.handle, 4, 32, &params).status(),
        Status::SUCCESS
    );
    c.copy_to_window(0, out, 400, 8192);
    assert_eq!(c.synchronize(0), Status::SUCCESS);
    let got: Vec<f32> = d
        .read(c.window + 8192, 400)
        .chunks_exact(4)
        .map(|x| f32::from_le_bytes(x.try_into().unwrap()))
        .collect();
    for (i, v) in got.iter().enumerate() {
        let want = 3.0 * i as f32 + if i % 37 == 0 { 1.0 } else { 0.0 };
        assert_eq!(*v, want, "element {i}");
    }
    // Wrong parameter size, too many threads.
    assert_eq!(
        launch(&mut c, vec_add.record.handle, 1, 32, &params[..24]).status(),
        Status::INVALID_VALUE
    );
    // A kernel with no CPU reference runs from its PTX: shared memory, barriers, a
    // divergent tree reduction over two blocks (out[b] = sum of its 256 inputs + flags[3]).
    let reduce = f("_Z13shared_reducePKfPf");
    let (input, sums) = (c.mem_alloc(2048), c.mem_alloc(8));
    let iv: Vec<u8> = (0..512)
        .flat_map(|i| ((i % 7) as f32).to_le_bytes())
        .collect();
    for (k, chunk) in iv.chunks(1024).enumerate() {
        c.post(
            0,
            Command::MEMCPY_HTOD(CopyHtoDArgs {
                dst: input + 1024 * k as u64,
                len: 1024,
                ..Zeroable::zeroed()
            }),
            chunk,
            false,
        );
    }
    let mut rp = input.to_le_bytes().to_vec();
    rp.extend_from_slice(&sums.to_le_bytes());
    let r = launch(&mut c, reduce.record.handle, 2, 256, &rp);
    assert_eq!(r.status(), Status::SUCCESS);
    c.copy_to_window(0, sums, 8, 16384);
    assert_eq!(c.synchronize(0), Status::SUCCESS);
    let got: Vec<f32> = d
        .read(c.window + 16384, 8)
        .chunks_exact(4)
        .map(|x| f32::from_le_bytes(x.try_into().unwrap()))
        .collect();
    for (b, v) in got.iter().enumerate() {
        let want: f32 = (256 * b..256 * (b + 1))
            .map(|i| (i % 7) as f32)
            .sum::<f32>()
            + 3.0;
        assert_eq!(*v, want, "block {b}");
    }
    assert_eq!(
        launch(&mut c, reduce.record.handle, 1, 512, &[0; 16]).status(),
        Status::INVALID_VALUE
    );
    // Globals and attributes.
    let payload = b"g_counter";
    let g = c.io(
        0,
        Command::MODULE_GET_GLOBAL(HandleArgs {
            handle: module,
            ..Zeroable::zeroed()
        }),
        payload,
    );
    assert_eq!((g.status(), g.result1), (Status::SUCCESS, 4));
    let missing = c.io(
        0,
        Command::MODULE_GET_GLOBAL(HandleArgs {
            handle: module,
            ..Zeroable::zeroed()
        }),
        b"nope",
    );
    assert_eq!(missing.status(), Status::NOT_FOUND);
    let attr = |c: &mut PdClient, attr: u32| {
        c.io(
            0,
            Command::FUNC_GET_ATTRIBUTE(FuncAttrArgs {
                func: reduce.record.handle,
                attr,
                ..Zeroable::zeroed()
            }),
            &[],
        )
    };
    assert_eq!(attr(&mut c, 0).result0, 256);
    let set = c.io(
        0,
        Command::FUNC_SET_ATTRIBUTE(FuncAttrArgs {
            func: reduce.record.handle,
            attr: 8,
            value: 100 * 1024,
            ..Zeroable::zeroed()
        }),
        &[],
    );
    assert_eq!(set.status(), Status::SUCCESS);
    assert_eq!(attr(&mut c, 8).result0, 100 * 1024);
    let set = c.io(
        0,
        Command::FUNC_SET_ATTRIBUTE(FuncAttrArgs {
            func: reduce.record.handle,
            attr: 8,
            value: 1 << 20,
            ..Zeroable::zeroed()
        }),
        &[],
    );
    assert_eq!(set.status(), Status::INVALID_VALUE);
    // odd_params: the struct by value and mixed sizes reach the kernel intact.
    let (q, o) = (c.mem_alloc(4), c.mem_alloc(4));
    c.post(
        0,
        Command::MEMCPY_HTOD(CopyHtoDArgs {
            dst: q,
            len: 4,
            ..Zeroable::zeroed()
        }),
        &1000i32.to_le_bytes(),
        false,
    );
    let mut p = vec![0u8; 0x40];
    p[0..4].copy_from_slice(&5i32.to_le_bytes());
    p[8..16].copy_from_slice(&7.9f64.to_le_bytes());
    p[16 + 12] = 3;
    p[0x20..0x28].copy_from_slice(&q.to_le_bytes());
    p[0x28..0x30].copy_from_slice(&20000i64.to_le_bytes());
    p[0x30..0x32].copy_from_slice(&(-2i16).to_le_bytes());
    p[0x38..0x40].copy_from_slice(&o.to_le_bytes());
    assert_eq!(
        launch(&mut c, odd.record.handle, 1, 1, &p).status(),
        Status::SUCCESS
    );
    c.copy_to_window(0, o, 4, 8192);
    assert_eq!(c.synchronize(0), Status::SUCCESS);
    assert_eq!(
        i32::from_le_bytes(d.read(c.window + 8192, 4).try_into().unwrap()),
        5 + 7 + 3 + 1000 + 20000 - 2
    );
    // Unload: functions go, handles die.
    let st = d.stats(c.pd);
    assert_eq!((st.modules, st.functions), (1, 6));
    assert_eq!(
        c.io(
            0,
            Command::MODULE_UNLOAD(HandleArgs {
                handle: module,
                ..Zeroable::zeroed()
            }),
            &[]
        )
        .status(),
        Status::SUCCESS
    );
    let st = d.stats(c.pd);
    assert_eq!((st.modules, st.functions), (0, 0));
    assert_eq!(
        launch(&mut c, vec_add.record.handle, 1, 32, &params).status(),
        Status::INVALID_HANDLE
    );
    drop((c, d));
    stub.join();
}

#[test]
fn module_cache_by_hash_and_bad_images() {
    let stub = Stub::start(1, 1 << 30);
    let mut d = BareDriver::connect(&stub);
    let mut a = d.pd_client(1, 1 << 20, 0);
    let mut b = d.pd_client(2, 1 << 20, 0);
    let image = fixture("kernels.zstd.fatbin");
    let hash = sha256(&image);
    assert_eq!(
        load(&mut d, &mut b, &image, hash, true).status(),
        Status::NOT_FOUND,
        "not cached yet"
    );
    let wrong = load(&mut d, &mut a, &image, sha256(b"something else"), false);
    assert_eq!(wrong.status(), Status::HASH_MISMATCH);
    assert_eq!(
        load(&mut d, &mut b, &image, sha256(b"something else"), true).status(),
        Status::NOT_FOUND,
        "a refused image is not cached"
    );
    assert_eq!(
        load(&mut d, &mut a, &image, hash, false).status(),
        Status::SUCCESS,
        "zstd-compressed entries load"
    );
    let r = load(&mut d, &mut b, &image, hash, true);
    assert_eq!(r.status(), Status::SUCCESS, "another PD loads it by hash");
    let (_, funcs) = decode_module_info(&d.read(b.window, r.result1 as usize)).unwrap();
    assert!(funcs.iter().any(|f| f.name == "_Z6vecAddPKfS0_Pfi"));
    let junk = b"this is not a CUDA image".to_vec();
    assert_eq!(
        load(&mut d, &mut a, &junk, sha256(&junk), false).status(),
        Status::INVALID_IMAGE
    );
    let two = fixture("kernels.2containers.fatbin");
    assert_eq!(
        load(&mut d, &mut a, &two, sha256(&two), false).status(),
        Status::SUCCESS,
        "sm_90 lives in the second container"
    );
    // Another user's PD (another cache domain) cannot tell which images were loaded.
    let mut stranger = d.pd_client_in_domain(3, 1 << 20, 0, 1000);
    assert_eq!(
        load(&mut d, &mut stranger, &image, hash, true).status(),
        Status::NOT_FOUND,
        "another domain's image"
    );
    assert_eq!(
        load(&mut d, &mut stranger, &image, hash, false).status(),
        Status::SUCCESS
    );
    let mut neighbour = d.pd_client_in_domain(4, 1 << 20, 0, 1000);
    assert_eq!(
        load(&mut d, &mut neighbour, &image, hash, true).status(),
        Status::SUCCESS,
        "the same domain's image"
    );
    drop((a, b, stranger, neighbour, d));
    stub.join();
}

/// A kernel that never ends (`spin`) and [`POKE`]'s `poke`, which stores 1 through its
/// pointer: one module image.
fn spin_and_poke() -> Vec<u8> {
    let mut text = POKE
        .strip_suffix(b"\0")
        .expect("a NUL-terminated image")
        .to_vec();
    text.extend_from_slice(b".visible .entry spin()\n{\nLOOP:\n    bra LOOP;\n}\n\0");
    text
}

/// Kernels from PTX text fault as on a GPU: a kernel that never ends fails with
/// LAUNCH_TIMEOUT when the watchdog fires, an access outside every allocation with
/// ILLEGAL_ADDRESS; both are sticky for their PD only, and another PD carries on.
#[test]
fn ptx_faults_are_sticky_for_their_pd_only() {
    let cfg = vgpu_stub::exec::soft::SoftConfig {
        memory: 1 << 30,
        launch_timeout: Duration::from_millis(300),
        ..Default::default()
    };
    let stub = Stub::start_with(1, cfg);
    let mut d = BareDriver::connect(&stub);
    let text = &spin_and_poke()[..];
    let mut clients = Vec::new();
    for qid in 1..=3u16 {
        let mut c = d.pd_client(qid, 1 << 20, 0);
        let r = load(&mut d, &mut c, text, sha256(text), false);
        assert_eq!(r.status(), Status::SUCCESS, "{r:?}");
        let (_, funcs) = decode_module_info(&d.read(c.window, r.result1 as usize)).unwrap();
        let h = |name: &str| funcs.iter().find(|f| f.name == name).unwrap().record.handle;
        let (spin, poke) = (h("spin"), h("poke"));
        clients.push((c, spin, poke));
    }
    let [(a, spin, _), (b, _, poke_b), (ok, _, poke_ok)] = &mut clients[..] else {
        unreachable!()
    };
    assert_eq!(
        launch(a, *spin, 2, 32, &[]).status(),
        Status::LAUNCH_TIMEOUT
    );
    assert_eq!(a.synchronize(0), Status::LAUNCH_TIMEOUT, "sticky");
    let wild = 0x10u64.to_le_bytes();
    assert_eq!(
        launch(b, *poke_b, 1, 1, &wild).status(),
        Status::ILLEGAL_ADDRESS
    );
    assert_eq!(b.synchronize(0), Status::ILLEGAL_ADDRESS, "sticky");
    // The third PD is untouched and runs the same kernel on its own memory.
    let mine = ok.mem_alloc(4);
    assert_eq!(
        launch(ok, *poke_ok, 1, 1, &mine.to_le_bytes()).status(),
        Status::SUCCESS
    );
    assert_eq!(ok.synchronize(0), Status::SUCCESS);
    drop(clients);
    drop(d);
}

/// GPU utilisation (PD_STATS) is the share of the last complete second during which
/// kernels ran: a PD whose kernel spun for 1.5 s shows most of a second, the device too,
/// and a PD that ran nothing shows 0.
#[test]
fn utilisation_counts_the_time_kernels_run() {
    let cfg = vgpu_stub::exec::soft::SoftConfig {
        memory: 1 << 30,
        launch_timeout: Duration::from_millis(1500),
        ..Default::default()
    };
    let stub = Stub::start_with(1, cfg);
    let mut d = BareDriver::connect(&stub);
    let text = &spin_and_poke()[..];
    let mut busy = d.pd_client(1, 1 << 20, 0);
    let idle = d.pd_client(2, 1 << 20, 0);
    let r = load(&mut d, &mut busy, text, sha256(text), false);
    assert_eq!(r.status(), Status::SUCCESS, "{r:?}");
    let (_, funcs) = decode_module_info(&d.read(busy.window, r.result1 as usize)).unwrap();
    let spin = funcs
        .iter()
        .find(|f| f.name == "spin")
        .unwrap()
        .record
        .handle;
    assert_eq!(d.stats(busy.pd).gpu_util, 0, "nothing ran yet");
    assert_eq!(
        launch(&mut busy, spin, 2, 32, &[]).status(),
        Status::LAUNCH_TIMEOUT
    );
    let (mine, device, other) = (d.stats(busy.pd), d.stats(0), d.stats(idle.pd));
    assert!(mine.gpu_util >= 50, "the busy PD: {}%", mine.gpu_util);
    assert!(device.gpu_util >= 50, "the device: {}%", device.gpu_util);
    assert_eq!(other.gpu_util, 0, "the idle PD");
    drop((busy, idle));
    drop(d);
}

/// Teardown is bounded and never waits on a guest's kernel: PD_DESTROY and CONTROL.RESET
/// return promptly while kernels that never end run, and the device serves again.
#[test]
fn teardown_does_not_wait_for_kernels_that_never_end() {
    let cfg = vgpu_stub::exec::soft::SoftConfig {
        memory: 1 << 30,
        launch_timeout: Duration::from_secs(600),
        ..Default::default()
    };
    let stub = Stub::start_with(2, cfg);
    let mut d = BareDriver::connect(&stub);
    let text = &spin_and_poke()[..];
    let spinning = |d: &mut BareDriver, qid: u16| {
        let mut c = d.pd_client(qid, 1 << 20, 0);
        let r = load(d, &mut c, text, sha256(text), false);
        assert_eq!(r.status(), Status::SUCCESS, "{r:?}");
        let (_, funcs) = decode_module_info(&d.read(c.window, r.result1 as usize)).unwrap();
        let args = LaunchArgs {
            func: funcs
                .iter()
                .find(|f| f.name == "spin")
                .unwrap()
                .record
                .handle,
            grid_x: 2,
            grid_y: 1,
            grid_z: 1,
            block_x: 32,
            block_y: 1,
            block_z: 1,
            ..Zeroable::zeroed()
        };
        c.post(0, Command::LAUNCH(args), &[], false);
        std::thread::sleep(Duration::from_millis(100));
        c
    };
    let c = spinning(&mut d, 1);
    let t0 = std::time::Instant::now();
    d.admin_ok(Command::PD_DESTROY(PdArgs {
        pd: c.pd,
        ..Zeroable::zeroed()
    }));
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "PD_DESTROY took {:?}",
        t0.elapsed()
    );
    drop(c);
    let c2 = spinning(&mut d, 2);
    let c3 = spinning(&mut d, 3);
    let t0 = std::time::Instant::now();
    d.write_u32(
        0,
        vgpu_proto::regs::CONTROL,
        vgpu_proto::regs::control::RESET,
    );
    assert!(
        t0.elapsed() < Duration::from_secs(2),
        "the RESET write took {:?}",
        t0.elapsed()
    );
    drop((c2, c3, d));
    // A new driver brings the device up again and it serves.
    let mut d = BareDriver::connect(&stub);
    let mut c = d.pd_client(1, 1 << 20, 0);
    assert_eq!(c.synchronize(0), Status::SUCCESS);
    drop((c, d));
    stub.join();
}

/// A PD cannot name another PD's objects: graphs, executable graphs, modules, functions and
/// BLAS handles of one PD are unknown to another (streams, events, memory and windows:
/// `device.rs` `pds_are_isolated`), and the owner's objects still work afterwards.
#[test]
fn other_pds_objects_cannot_be_named() {
    let stub = Stub::start(1, 1 << 30);
    let mut d = BareDriver::connect(&stub);
    let mut a = d.pd_client(1, 1 << 20, 0);
    let mut b = d.pd_client(2, 1 << 20, 0);
    let text = POKE;
    let r = load(&mut d, &mut a, text, sha256(text), false);
    assert_eq!(r.status(), Status::SUCCESS, "{r:?}");
    let module = r.result0;
    let (_, funcs) = decode_module_info(&d.read(a.window, r.result1 as usize)).unwrap();
    let func = funcs[0].record.handle;
    let mem = a.mem_alloc(4096);
    let s = a
        .io(0, Command::STREAM_CREATE(Zeroable::zeroed()), &[])
        .result0;
    a.io(s, Command::STREAM_BEGIN_CAPTURE(Zeroable::zeroed()), &[]);
    let set = MemsetArgs {
        dst: mem,
        count: 4,
        value: 1,
        elem_size: 1,
        ..Zeroable::zeroed()
    };
    a.post(s, Command::MEMSET(set), &[], false);
    let graph = a
        .io(s, Command::STREAM_END_CAPTURE(Zeroable::zeroed()), &[])
        .result0;
    let inst = GraphInstantiateArgs {
        graph,
        ..Zeroable::zeroed()
    };
    let exec = a.io(0, Command::GRAPH_INSTANTIATE(inst), &[]).result0;
    let blas = a
        .io(0, Command::BLAS_CREATE(Zeroable::zeroed()), &[])
        .result0;
    let h = |handle: u64| HandleArgs {
        handle,
        ..Zeroable::zeroed()
    };
    // B names each of them.
    assert_eq!(
        b.io(0, Command::GRAPH_INSTANTIATE(inst), &[]).status(),
        Status::INVALID_HANDLE,
        "A's graph"
    );
    let cid = b.post(0, Command::GRAPH_LAUNCH(h(exec)), &[], true);
    let r = b.next(Duration::from_secs(5)).unwrap();
    assert_eq!(
        (r.cid, r.status()),
        (cid, Status::INVALID_HANDLE),
        "A's executable graph"
    );
    assert_eq!(
        launch(&mut b, func, 1, 1, &mem.to_le_bytes()).status(),
        Status::INVALID_HANDLE,
        "A's function"
    );
    for (cmd, what) in [
        (Command::GRAPH_DESTROY(h(graph)), "A's graph"),
        (Command::GRAPH_EXEC_DESTROY(h(exec)), "A's executable graph"),
        (Command::BLAS_DESTROY(h(blas)), "A's BLAS handle"),
    ] {
        assert_eq!(b.io(0, cmd, &[]).status(), Status::INVALID_HANDLE, "{what}");
    }
    let cid = b.post(0, Command::MODULE_UNLOAD(h(module)), &[], false);
    let r = b.next(Duration::from_secs(5)).unwrap();
    assert_eq!(
        (r.cid, r.status()),
        (cid, Status::INVALID_HANDLE),
        "A's module"
    );
    // A's objects are untouched.
    a.post(s, Command::GRAPH_LAUNCH(h(exec)), &[], false);
    assert_eq!(a.synchronize(s), Status::SUCCESS);
    assert_eq!(
        launch(&mut a, func, 1, 1, &mem.to_le_bytes()).status(),
        Status::SUCCESS
    );
    assert_eq!(
        a.io(0, Command::BLAS_DESTROY(h(blas)), &[]).status(),
        Status::SUCCESS
    );
    let st = d.stats(a.pd);
    assert_eq!((st.modules, st.graphs, st.graph_execs), (1, 1, 1));
    assert_eq!(d.stats(b.pd).objects(), 0, "B made nothing");
    drop((a, b, d));
    stub.join();
}

/// `poke`, a kernel with an instruction the checker does not support (`bad`) and one whose
/// body does not parse (`broken`).
const POKE_AND_REFUSED: &[u8] = b".version 8.0
.target sm_80
.address_size 64
.visible .entry bad(.param .u64 p)
{
    .reg .b32 %r<2>;
    bogus.op.u32 %r0, %r1;
    ret;
}
.visible .entry poke(.param .u64 p)
{
    .reg .b64 %rd<2>;
    ld.param.u64 %rd1, [p];
    st.global.u32 [%rd1], 1;
    ret;
}
.visible .entry broken(.param .u64 p)
{
    .reg .b32 %r<2>;
    add.s32 %r0, , %r1;
    ret;
}
\0";

/// Kernels are parsed and checked at their first launch: a module whose kernels the
/// checker refuses, or whose bodies do not parse, loads; each such kernel's launch fails
/// with NOT_SUPPORTED (at submission, not sticky, every time), and the module's other
/// kernels run.
#[test]
fn kernels_the_checker_refuses_fail_their_own_launches_only() {
    let stub = Stub::start(1, 1 << 30);
    let mut d = BareDriver::connect(&stub);
    let mut c = d.pd_client(1, 1 << 20, 0);
    let text = POKE_AND_REFUSED;
    let r = load(&mut d, &mut c, text, sha256(text), false);
    assert_eq!(r.status(), Status::SUCCESS, "{r:?}");
    let (_, funcs) = decode_module_info(&d.read(c.window, r.result1 as usize)).unwrap();
    let h = |name: &str| funcs.iter().find(|f| f.name == name).unwrap().record.handle;
    let (bad, poke, broken) = (h("bad"), h("poke"), h("broken"));
    let mine = c.mem_alloc(4);
    let p = mine.to_le_bytes();
    for _ in 0..2 {
        for f in [bad, broken] {
            assert_eq!(launch(&mut c, f, 1, 1, &p).status(), Status::NOT_SUPPORTED);
        }
    }
    assert_eq!(launch(&mut c, poke, 1, 1, &p).status(), Status::SUCCESS);
    assert_eq!(c.synchronize(0), Status::SUCCESS, "not sticky");
    drop(c);
    drop(d);
}
