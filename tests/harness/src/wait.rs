//! Bounded waiting: every wait in the tests ends, with a message that says what never
//! happened.

use std::fmt::Display;
use std::time::{Duration, Instant};

/// Calls `f` until it succeeds, for at most `timeout`; panics with `what` and the last error.
pub fn retry<T, E: Display>(
    what: &str,
    timeout: Duration,
    mut f: impl FnMut() -> Result<T, E>,
) -> T {
    let t0 = Instant::now();
    loop {
        match f() {
            Ok(v) => return v,
            Err(e) if t0.elapsed() >= timeout => {
                panic!("timed out after {timeout:?} waiting for {what}: {e}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

/// Waits until `f` holds, for at most 20 s.
pub fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    retry(what, Duration::from_secs(20), || {
        if f() {
            Ok(())
        } else {
            Err("condition not met")
        }
    })
}
