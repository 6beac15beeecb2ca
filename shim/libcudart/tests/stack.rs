//! C programs linked against the shims (`target/shims`, from `ci/build-shims.sh`) run
//! against vgpu-stub (soft executor) and vgpu-driver, started in this process.

mod common;

use common::*;
use vgpu_test_stack::Stack;

#[test]
fn device_query_and_memory_samples() {
    let st = Stack::start(2 << 30, 16 << 20);
    let (code, out) = st.run_sample("device_query", &["cudart", "cuda"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("compute capability 9.0") && out.contains("agrees with the driver API"),
        "{out}"
    );
    let (code, out) = st.run_sample("memory", &["cudart"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("memory: all checks passed"), "{out}");
    assert!(
        out.contains("memory: registered host memory checked"),
        "{out}"
    );
    // A kernel through the CUDA 12 launch ABI: registration, lazy load by hash, parameter
    // packing from the device's layout, the CPU reference kernel, and the result.
    let fatbin = root().join("fatbin/tests/fixtures/kernels.fatbin");
    let (code, out) = st.run_sample_args("launch", &["cudart"], &[fatbin.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("launch: vecAdd over 1000 elements checked"),
        "{out}"
    );
    // The driver API beyond plain copies: cuGetProcAddress, CUDA_MEMCPY2D copies, 2-D
    // memsets, cuLaunchKernelEx with attributes, capture and graph replay.
    let (code, out) = st.run_sample_args("driver_api", &["cuda"], &[fatbin.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("driver_api: all checks passed"), "{out}");
    st.finish();
}

/// libnvidia-ml.so.1: NVML agrees with the driver API (name, UUID, PCI bus id, memory),
/// and answers what Ollama and pynvml-based tools ask (tests/samples/nvml.c).
#[test]
fn nvml_sample() {
    let st = Stack::start(2 << 30, 16 << 20);
    let (code, out) = st.run_sample("nvml", &["nvidia-ml", "cuda"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("agrees with the driver API, all checks passed"),
        "{out}"
    );
    st.finish();
}

/// pynvml (PyPI nvidia-ml-py, through which gpustat and nvitop call NVML) lists the device
/// through libnvidia-ml.so.1 (tests/samples/nvml_list.py). Needs the environment of
/// `ci/python-env.sh` (ci/test.sh makes it and sets VGPU_REQUIRE_PYNVML); skipped without.
#[test]
fn pynvml_lists_the_device() {
    let python = root().join("target/py/bin/python");
    if !python.exists() {
        assert!(
            std::env::var_os("VGPU_REQUIRE_PYNVML").is_none(),
            "target/py is missing: ci/python-env.sh"
        );
        eprintln!("skipped: run ci/python-env.sh for pynvml");
        return;
    }
    assert_shims_current();
    let st = Stack::start(2 << 30, 16 << 20);
    let script = root().join("tests/samples/nvml_list.py");
    let (code, text) = run_with_shims(&python, st.control(), &[script.to_str().unwrap()]);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("device 0: VGPU-STUB") && text.contains("memory 2048 MiB"),
        "{text}"
    );
    st.finish();
}

/// A client written with someone else's bindings: cudarc's safe API (primary context
/// retained and made current, allocations, copies both ways, a PTX module and a launch, a
/// cuBLAS GEMM), through vgpu's libcuda.so.1 and libcublas.so.12 (src/bin/cudarc_client.rs).
#[test]
fn cudarc_client() {
    assert_shims_current();
    let st = Stack::start(2 << 30, 16 << 20);
    let exe = std::path::Path::new(env!("CARGO_BIN_EXE_cudarc-client"));
    let (code, text) = run_with_shims(exe, st.control(), &[]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("cudarc: all checks passed"), "{text}");
    st.finish();
}

/// libcublas.so.12 and libcublasLt.so.12 on the device's BLAS commands: every forwarded
/// GEMM variant, batched TRSM, gemv, scal, axpy, dot and nrm2, and cuBLASLt matmuls (batched, epilogues)
/// against a float64 reference, and the statuses cuBLAS gives for bad arguments
/// (tests/samples/cublas.c).
#[test]
fn cublas_sample() {
    let st = Stack::start(2 << 30, 16 << 20);
    let (code, out) = st.run_sample("cublas", &["cublas", "cublasLt", "cudart", "m"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("cublas: 48 cases checked against float64, all checks passed"),
        "{out}"
    );
    st.finish();
}

/// Real CUDA programs (tests/cuda/), built by registry toolchains in both kernel-launch
/// ABIs by `ci/build-cuda-programs.sh`, run unchanged against the shims: vecAdd and a kernel
/// with a struct by value and mixed parameters, through the CPU reference kernels.
#[test]
fn real_cuda_programs_in_both_launch_abis() {
    if !cuda_programs_built() {
        return;
    }
    let st = Stack::start(2 << 30, 16 << 20);
    for p in ["kernels_app.cuda12", "kernels_app.cuda13"] {
        let (ok, text) = run_cuda_program(p, st.control(), &[]);
        assert!(ok, "{p}: {text}");
        for want in [
            "device 0 has compute capability 9.0",
            "vecAdd: 100000 elements checked",
            "odd_params: struct by value and mixed parameters checked",
            "cudaDeviceReset: the program ran again after it",
            "kernels_app: all checks passed",
        ] {
            assert!(text.contains(want), "{p}: no \"{want}\" in {text}");
        }
    }
    st.finish();
}

/// The runtime API beyond plain copies, from a real CUDA program in both launch ABIs: 2-D
/// copies and memsets, capture and graphs, cudaLaunchKernelExC, function attributes, peer
/// queries, error paths and a sticky error; then the same binary with no driver running.
#[test]
fn real_cuda_program_runtime_api_and_no_device() {
    if !cuda_programs_built() {
        return;
    }
    for p in ["runtime_app.cuda12", "runtime_app.cuda13"] {
        // A fresh stack each: the program ends by making its context's error sticky.
        let st = Stack::start(2 << 30, 16 << 20);
        let (ok, text) = run_cuda_program(p, st.control(), &[]);
        assert!(ok, "{p}: {text}");
        for want in [
            "2-D copies and memsets (pageable): checked",
            "2-D copies and memsets (pinned): checked",
            "graphs: capture, replay x3, update and its refusal checked",
            "cudaLaunchKernelExC, cooperative launch, occupancy, function attributes and peer queries: checked",
            "error paths: bad pointers, bad handles",
            "sticky error: cudaErrorIllegalAddress persists",
            "runtime_app: all checks passed",
        ] {
            assert!(text.contains(want), "{p}: no \"{want}\" in {text}");
        }
        st.finish();
    }
    let dir = tempfile::tempdir().unwrap();
    let (ok, text) = run_cuda_program(
        "runtime_app.cuda13",
        &dir.path().join("no-driver.sock"),
        &["no-device"],
    );
    assert!(ok, "{text}");
    assert!(
        text.contains("cudaErrorNoDevice, count 0: as expected"),
        "{text}"
    );
    assert_eq!(
        text.matches("cannot reach vgpu-driver").count(),
        1,
        "{text}"
    );
}
