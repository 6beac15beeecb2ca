//! # vgpu-install: `vgpu install` and `vgpu uninstall`
//!
//! Installing puts vgpu's drop-in libraries where a guest's programs find them:
//!
//! * `libcuda.so.1` and `libnvidia-ml.so.1` in the system library directory (found under the
//!   root: `usr/lib/x86_64-linux-gnu`, `usr/lib64` or `usr/lib`), where every program, and
//!   Ollama's native probe of both, loads them by bare name (`ldconfig` then runs when the
//!   root is `/`);
//! * in each Ollama installation found (`usr/local/lib/ollama`, `usr/lib/ollama`,
//!   `opt/ollama/lib/ollama`, or `--ollama`), `cuda_v12`'s runtime and BLAS libraries
//!   (`libcudart.so.12*`, `libcublas.so.12*`, `libcublasLt.so.12*`) replaced under the file
//!   names Ollama ships (the runtime minor in a name like `libcudart.so.12.8.90` is what
//!   Ollama v0.30+ reads), symbolic links left as they are;
//! * `cuda_v13` moved aside to `cuda_v13.vgpu-disabled`: vgpu serves the CUDA 12 libraries,
//!   and when both directories see a device Ollama prefers `cuda_v13`, whose own CUDA 13
//!   runtime cannot drive a vGPU;
//! * when an `ollama.service` unit exists, a drop-in that orders it after `vgpu-driver` and
//!   names the driver's socket; with root `/`, the driver's service is enabled.
//!
//! Every file replaced is first copied to `var/lib/vgpu/backup/` under the root, and every
//! action is recorded in `var/lib/vgpu/install.manifest`. Installing again updates the
//! libraries and records nothing twice; uninstalling undoes the manifest in reverse, restoring
//! every replaced file byte for byte, and removes what it added.

pub mod plan;

pub use plan::{install, uninstall, Options, Report};
