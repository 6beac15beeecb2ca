//! Local bookkeeping of the compiler-generated ABI: fatbins and the functions and variables
//! registered from them, and the launch-configuration stack of `<<<...>>>`. Nothing here
//! talks to the device: modules are loaded on first use.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Mutex;

/// A registered fatbin: the wrapper pointer the compiler passed.
pub struct Fatbin {
    /// Address of the `__fatBinC_Wrapper_t`.
    pub wrapper: usize,
}

/// What has been registered in this process.
#[derive(Default)]
pub struct Registry {
    /// Handle → fatbin.
    pub fatbins: HashMap<usize, Fatbin>,
    /// Host stub address → (handle, device function name).
    pub functions: HashMap<usize, (usize, String)>,
    /// Host variable address → (handle, device variable name, size).
    pub variables: HashMap<usize, (usize, String, usize)>,
}

/// The registry.
pub static REGISTRY: Mutex<Option<Registry>> = Mutex::new(None);

/// Runs `f` on the registry.
pub fn with<R>(f: impl FnOnce(&mut Registry) -> R) -> R {
    let mut g = REGISTRY.lock().unwrap_or_else(|p| p.into_inner());
    f(g.get_or_insert_with(Registry::default))
}

/// A `<<<grid, block, shared, stream>>>` configuration.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LaunchConfig {
    /// Grid.
    pub grid: [u32; 3],
    /// Block.
    pub block: [u32; 3],
    /// Dynamic shared memory.
    pub shared: usize,
    /// Stream.
    pub stream: usize,
}

thread_local! {
    /// The per-thread configuration stack.
    pub static CONFIGS: RefCell<Vec<LaunchConfig>> = const { RefCell::new(Vec::new()) };
}
