//! Malformed WELCOMEs are refused without leaking a descriptor, and a normal session closes
//! everything it opened. One test (in its own process), so that no other test opens or
//! closes descriptors while the counts are taken.

mod common;

use bytemuck::Zeroable;
use common::{open_fds, DriverConfig, FakeDriver, WelcomeMode};
use vgpu_proto::cmd::{Payload, Request};
use vgpu_proto::Command;
use vgpu_shim::{ClientError, Connection};

fn attempt(mode: WelcomeMode) -> ClientError {
    let d = FakeDriver::start(DriverConfig {
        welcome: mode,
        ..DriverConfig::default()
    });
    let e = Connection::connect(&d.options()).unwrap_err();
    d.shutdown();
    e
}

#[test]
fn malformed_welcomes_leak_no_descriptors() {
    // Warm up anything that opens descriptors once per process (tempdir, thread spawning).
    drop(attempt(WelcomeMode::FdCount(3)));
    let before = open_fds();

    for n in [0, 1, 3, 5, 8] {
        let e = attempt(WelcomeMode::FdCount(n));
        assert!(
            matches!(&e, ClientError::Protocol(m) if m.contains("descriptor")),
            "{n} fds: {e}"
        );
        assert_eq!(open_fds(), before, "descriptors leaked with {n} fds");
    }

    let e = attempt(WelcomeMode::BadBody);
    assert!(
        matches!(&e, ClientError::Protocol(m) if m.contains("welcome")),
        "{e}"
    );
    assert_eq!(open_fds(), before, "descriptors leaked with a bad body");

    let e = attempt(WelcomeMode::ShortBody);
    assert!(matches!(&e, ClientError::Protocol(_)), "{e}");
    assert_eq!(open_fds(), before, "descriptors leaked with a short body");

    let e = attempt(WelcomeMode::ShortQueueMemfd);
    assert!(
        matches!(
            &e,
            ClientError::Map {
                what: "queue region",
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(open_fds(), before, "descriptors leaked with a short memfd");

    // A whole session, windows included, closes everything too.
    let d = FakeDriver::start(DriverConfig::default());
    {
        let mut c = Connection::connect(&d.options()).unwrap();
        let w = c.alloc_window(4096).unwrap();
        let nop = Request {
            cid: 0,
            notify: false,
            stream: 0,
            payload: Payload::None,
            command: Command::NOP(Zeroable::zeroed()),
        };
        c.queue().call(nop, &[]).unwrap();
        c.free_window(w).unwrap();
        c.alloc_window(8192).unwrap();
    }
    d.shutdown();
    assert_eq!(open_fds(), before, "descriptors leaked by a session");
}
