//! The host threads a launch runs on: the launching thread runs a share of the blocks, and
//! helper threads it keeps from one launch to the next run the others (each launching
//! thread its own). A test of its own, so that no other test's launches add threads.

use std::time::{Duration, Instant};
use vgpu_ptx::exec::{run, Launch};
use vgpu_ptx::host::HostMemory;

const BASE: u64 = 0x7f00_0000_0000;

/// The thread ids of this process's launch helpers, once there are `n` (a new thread names
/// itself when it starts), or after 10 s.
fn helpers(n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut ids: Vec<String> = std::fs::read_dir("/proc/self/task")
            .expect("/proc/self/task")
            .filter_map(|t| {
                let t = t.ok()?;
                let name = std::fs::read_to_string(t.path().join("comm")).ok()?;
                name.starts_with("ptx-helper")
                    .then(|| t.file_name().to_string_lossy().into_owned())
            })
            .collect();
        ids.sort();
        if ids.len() == n || Instant::now() > deadline {
            return ids;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn helper_threads_are_kept_between_launches() {
    let ptx = ".version 8.0
.target sm_75
.address_size 64
.visible .entry count(.param .u64 ctr)
{
    .reg .b32 %r<2>;
    .reg .b64 %rd<2>;
    ld.param.u64 %rd1, [ctr];
    atom.global.add.u32 %r1, [%rd1], 1;
    ret;
}";
    let program = vgpu_ptx::load(ptx).expect("the module loads");
    let k = &program.kernels["count"];
    let mem = HostMemory::new(BASE, 8);
    let params = BASE.to_le_bytes();
    let launch = |threads| {
        let l = Launch {
            grid: [16, 1, 1],
            block: [64, 1, 1],
            dynamic_shared: 0,
            params: &params,
            globals: &[],
            mem: &mem,
            threads,
            deadline: Some(Instant::now() + Duration::from_secs(30)),
            cancel: None,
            native: None,
            pool: None,
        };
        run(k, &l).expect("the launch runs");
    };
    assert!(helpers(0).is_empty());
    launch(3);
    let first = helpers(2);
    assert_eq!(
        first.len(),
        2,
        "a launch on 3 threads: the caller and 2 helpers"
    );
    for _ in 0..5 {
        launch(3);
    }
    assert_eq!(helpers(2), first, "the same helpers ran the next launches");
    // Another launching thread has helpers of its own, which end with it.
    std::thread::scope(|s| {
        s.spawn(|| {
            launch(2);
            assert_eq!(helpers(3).len(), 3);
        });
    });
    assert_eq!(helpers(2), first, "the other thread's helper ended with it");
    assert_eq!(mem.u32s(0, 1)[0], 7 * 16 * 64, "every block ran once");
}
