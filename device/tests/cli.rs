//! The `vgpu-stub` command line: help, argument errors, the cuda executor's message, and a
//! real process serving one connection.

use std::process::Command;
use std::time::{Duration, Instant};
use vgpu_test_stack::stack::START_TIMEOUT;
use vgpu_test_stack::wait::retry;
use vgpu_test_stack::ProcessStack;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vgpu-stub"))
}

#[test]
fn help_and_bad_arguments() {
    let out = bin().arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--socket",
        "--executor",
        "--memory",
        "--ids",
        "--compute-capability",
    ] {
        assert!(text.contains(flag), "help lacks {flag}");
    }
    let out = bin()
        .args(["--socket", "/tmp/x.sock", "--memory", "12Q"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a size"));
    let out = bin()
        .args(["--socket", "/tmp/x.sock", "--ids", "1234"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("VENDOR:DEVICE"));
    let out = bin()
        .args(["--socket", "/tmp/x.sock", "--uuid", "12"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("UUID"));
    let out = bin()
        .args(["--socket", "/tmp/x.sock", "--pci-address", "0:1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("DOMAIN:BUS"));
    let out = bin().arg("--executor").arg("soft").output().unwrap();
    assert_eq!(out.status.code(), Some(2), "--socket is required");
}

/// `--executor cuda` where it cannot run exits 2 and says why: here no CUDA library (or,
/// on a machine with GPUs, no GPU 99).
#[test]
fn cuda_executor_is_refused_clearly() {
    let out = bin()
        .args([
            "--socket",
            "/tmp/never.sock",
            "--executor",
            "cuda",
            "--gpu",
            "99",
        ])
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("--executor cuda cannot run"), "{err}");
    assert!(
        err.contains("no CUDA driver library") || err.contains("no GPU 99"),
        "{err}"
    );
}

#[test]
fn serves_a_connection_as_a_process() {
    let mut st = ProcessStack::start(
        &["--connections", "1", "--memory", "2G", "--ids", "1234:7668"],
        None,
    );
    let sock = st.stub_socket();
    {
        // The socket file appears at bind, a moment before the server listens on it.
        let mut c = retry("vgpu-stub to accept", START_TIMEOUT, || {
            vfio_user::Client::new(&sock)
        });
        let mut b = [0u8; 4];
        c.region_read(7, 0, &mut b).unwrap();
        assert_eq!(u32::from_le_bytes(b), 0x7668_1234, "--ids is honoured");
        c.region_read(0, 0, &mut b).unwrap();
        assert_eq!(&b, b"VGPU");
    }
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = st.stub().try_wait().unwrap() {
            break s;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "vgpu-stub did not exit after its connection"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(status.success());
    assert!(!sock.exists(), "the socket is removed on exit");
}
