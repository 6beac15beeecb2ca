//! `cuGetExportTable` and the private export table it serves to vgpu's other libraries
//! (`vgpu_shim_abi::table`): the BLAS commands, the device info and MGMT_QUERY, on this
//! process's connection. Other ids
//! (NVIDIA's private tables, which NVIDIA's libraries and statically linked runtimes ask
//! for) are answered with CUDA_ERROR_NOT_SUPPORTED and a log line.

use crate::mem::{self, CuResult};
use bytemuck::Zeroable;
use std::ffi::c_void;
use vgpu_proto::cmd::{HandleArgs, OutArgs, OutRef};
use vgpu_proto::info::{DeviceInfo, MgmtInfo};
use vgpu_proto::Command;
use vgpu_shim_abi::exports;
use vgpu_shim_abi::ptr::{In, Out};
use vgpu_shim_abi::status::CuStatus;
use vgpu_shim_abi::table::{VgpuTable, TABLE_ID};

const SUCCESS: CuResult = 0;
const INVALID_VALUE: CuResult = 1;

fn status(r: Result<(), CuResult>) -> CuResult {
    r.err().unwrap_or(SUCCESS)
}

unsafe extern "C" fn blas_create(handle: Out<u64>) -> u32 {
    status((|| {
        let c = mem::call(Command::BLAS_CREATE(Zeroable::zeroed()), 0)?;
        handle.write(c.result0).map_err(|_| INVALID_VALUE)
    })())
}

unsafe extern "C" fn blas_destroy(handle: u64) -> u32 {
    let args = HandleArgs {
        handle,
        ..Zeroable::zeroed()
    };
    status(mem::call(Command::BLAS_DESTROY(args), 0).map(|_| ()))
}

/// Posts a BLAS command with its descriptor as the inline payload.
fn post<T: bytemuck::Pod>(command: Command, desc: In<T>, stream: usize) -> u32 {
    status((|| {
        let d = desc.read().map_err(|_| INVALID_VALUE)?;
        mem::post_inline(command, mem::stream(stream), bytemuck::bytes_of(&d))
    })())
}

unsafe extern "C" fn blas_gemm(desc: In<vgpu_proto::payload::GemmDesc>, stream: usize) -> u32 {
    post(Command::BLAS_GEMM(Zeroable::zeroed()), desc, stream)
}

unsafe extern "C" fn blas_gemm_batched(
    desc: In<vgpu_proto::payload::GemmDesc>,
    stream: usize,
) -> u32 {
    post(Command::BLAS_GEMM_BATCHED(Zeroable::zeroed()), desc, stream)
}

unsafe extern "C" fn blas_trsm_batched(
    desc: In<vgpu_proto::payload::TrsmBatchedDesc>,
    stream: usize,
) -> u32 {
    post(Command::BLAS_TRSM_BATCHED(Zeroable::zeroed()), desc, stream)
}

unsafe extern "C" fn blaslt_matmul(
    desc: In<vgpu_proto::payload::LtMatmulDesc>,
    stream: usize,
) -> u32 {
    post(Command::BLASLT_MATMUL(Zeroable::zeroed()), desc, stream)
}

unsafe extern "C" fn device_info(out: Out<DeviceInfo>) -> u32 {
    let s = crate::state::session();
    match &s.info {
        Some(info) => status(out.write(*info).map_err(|_| INVALID_VALUE)),
        None => s.status.to_cuda(),
    }
}

unsafe extern "C" fn mgmt_query(out: Out<MgmtInfo>) -> u32 {
    status((|| {
        let (c, _) = mem::conn()?;
        // The output goes to the start of the staging window, which this lock reserves.
        let _staging = mem::staging_lock();
        let conn = vgpu_os::lock(c);
        let window = conn.first_window();
        let w = conn.window(window).ok_or(INVALID_VALUE)?;
        let args = OutArgs {
            out: OutRef {
                window,
                offset: 0,
                len: std::mem::size_of::<MgmtInfo>() as u32,
            },
            ..Zeroable::zeroed()
        };
        mem::call(Command::MGMT_QUERY(args), 0)?;
        let mut info = MgmtInfo::zeroed();
        w.read(0, bytemuck::bytes_of_mut(&mut info))
            .map_err(|_| INVALID_VALUE)?;
        out.write(info).map_err(|_| INVALID_VALUE)
    })())
}

unsafe extern "C" fn mem_alloc(ptr: Out<u64>, size: usize) -> u32 {
    status((|| ptr.write(mem::alloc(size)?).map_err(|_| INVALID_VALUE))())
}

unsafe extern "C" fn mem_free(ptr: u64) -> u32 {
    status(mem::free(ptr))
}

unsafe extern "C" fn memcpy_htod(dst: u64, src: In<u8>, n: usize, stream: usize) -> u32 {
    if src.is_null() && n > 0 {
        return INVALID_VALUE;
    }
    status(mem::htod(dst, src.as_ptr(), n, mem::stream(stream), true))
}

unsafe extern "C" fn memcpy_dtoh(dst: Out<u8>, src: u64, n: usize, stream: usize) -> u32 {
    if dst.is_null() && n > 0 {
        return INVALID_VALUE;
    }
    status(mem::dtoh(dst.as_ptr(), src, n, mem::stream(stream), true))
}

static TABLE: VgpuTable = VgpuTable {
    size: std::mem::size_of::<VgpuTable>(),
    blas_create,
    blas_destroy,
    blas_gemm,
    blas_gemm_batched,
    blas_trsm_batched,
    blaslt_matmul,
    device_info,
    mgmt_query,
    mem_alloc,
    mem_free,
    memcpy_htod,
    memcpy_dtoh,
};

/// `cuGetExportTable`: vgpu's table for [`TABLE_ID`]; NOT_SUPPORTED for any other id.
fn get(table: Out<*const c_void>, id: In<[u8; 16]>) -> Result<(), CuStatus> {
    let id = id.read()?;
    if id != TABLE_ID {
        log::info!("vgpu: cuGetExportTable: no table {id:02x?}");
        return Err(CuStatus::NOT_SUPPORTED);
    }
    Ok(table.write(std::ptr::from_ref(&TABLE).cast())?)
}

exports! {
    library "libcuda.so.1", status CuStatus;
    implemented fn cuGetExportTable(table: Out<*const c_void>, id: In<[u8; 16]>) => get(table, id);
}
