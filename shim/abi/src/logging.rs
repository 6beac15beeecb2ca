//! Logging of a drop-in library. Each shared object links its own copy of `log`, so each
//! starts its own logger: `VGPU_LOG` (default `warn`) filters it, as in `libcuda.so.1`.

use std::sync::Once;

/// Starts this library's logger (once; later calls do nothing).
pub fn init() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ =
            env_logger::Builder::from_env(env_logger::Env::default().filter_or("VGPU_LOG", "warn"))
                .try_init();
    });
}
