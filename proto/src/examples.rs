//! One valid request for every opcode, with its payload bytes. Used by the tests of this
//! crate and of the device, and to seed the fuzz corpus.

use crate::cmd::*;
use crate::opcode::{Opcode, QueueKind};
use crate::payload::*;
use crate::regs::features;
use bytemuck::Zeroable;

/// A decode context for `queue` with every feature accepted and a 256-entry ring.
pub fn context(queue: QueueKind) -> DecodeContext {
    DecodeContext {
        queue,
        features: features::ALL,
        max_inline: 255 * 64,
    }
}

fn out() -> OutRef {
    OutRef {
        offset: 0x100,
        window: 1,
        len: 4096,
    }
}

fn handle(h: u64) -> HandleArgs {
    HandleArgs {
        handle: h,
        ..Zeroable::zeroed()
    }
}

/// A valid GEMM descriptor (f32, 4×4×4).
pub fn gemm() -> GemmDesc {
    let mut g = GemmDesc::zeroed();
    g.handle = 0x51;
    g.m = 4;
    g.n = 4;
    g.k = 4;
    g.lda = 4;
    g.ldb = 4;
    g.ldc = 4;
    g.a = 0x1000;
    g.b = 0x2000;
    g.c = 0x3000;
    g.batch_count = 1;
    g.compute_type = 68;
    g.alpha[..4].copy_from_slice(&1f32.to_le_bytes());
    g
}

/// The payload bytes that go with [`request`]`(op)` (empty when it takes none).
pub fn payload(op: Opcode) -> Vec<u8> {
    match op {
        Opcode::MEMCPY_HTOD => vec![0xAB; 100],
        Opcode::MEMCPY_2D => bytemuck::bytes_of(&Copy2D {
            kind: copy_kind::DTOD,
            src_window: 0,
            src: 0x1000,
            src_pitch: 256,
            dst_window: 0,
            rsv0: 0,
            dst: 0x8000,
            dst_pitch: 512,
            width: 200,
            height: 8,
        })
        .to_vec(),
        Opcode::MEMSET_2D => bytemuck::bytes_of(&Memset2D {
            dst: 0x1000,
            pitch: 64,
            width: 16,
            height: 4,
            value: 7,
            elem_size: 4,
            rsv: 0,
        })
        .to_vec(),
        Opcode::MODULE_LOAD => {
            let image = b"\x7fELF-not-really-an-image".to_vec();
            let h = ModuleImageHeader {
                sha256: [0x11; 32],
                image_len: image.len() as u64,
                rsv: 0,
            };
            let mut v = bytemuck::bytes_of(&h).to_vec();
            v.extend_from_slice(&image);
            v
        }
        Opcode::MODULE_GET_GLOBAL => b"g_counter".to_vec(),
        Opcode::LAUNCH => {
            let attr = LaunchAttr {
                id: launch_attr::PROGRAMMATIC_STREAM_SERIALIZATION,
                v0: 1,
                v1: 0,
                v2: 0,
            };
            let mut v = bytemuck::bytes_of(&attr).to_vec();
            v.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16]);
            v
        }
        Opcode::BLAS_GEMM | Opcode::BLAS_GEMM_BATCHED => {
            let mut g = gemm();
            if op == Opcode::BLAS_GEMM_BATCHED {
                g.batch_count = 3;
            }
            bytemuck::bytes_of(&g).to_vec()
        }
        Opcode::BLAS_TRSM_BATCHED => {
            let mut t = TrsmBatchedDesc::zeroed();
            t.handle = 0x51;
            t.m = 4;
            t.n = 2;
            t.lda = 4;
            t.ldb = 4;
            t.batch_count = 2;
            bytemuck::bytes_of(&t).to_vec()
        }
        Opcode::BLASLT_MATMUL => {
            let mut l = LtMatmulDesc::zeroed();
            l.handle = 0x61;
            l.epilogue = 1;
            for lay in [
                &mut l.a_layout,
                &mut l.b_layout,
                &mut l.c_layout,
                &mut l.d_layout,
            ] {
                lay.rows = 8;
                lay.cols = 8;
                lay.ld = 8;
                lay.batch_count = 1;
            }
            bytemuck::bytes_of(&l).to_vec()
        }
        _ => Vec::new(),
    }
}

/// A valid request for `op` (payload inline when it has one).
pub fn request(op: Opcode) -> Request {
    use Command as C;
    let command = match op {
        Opcode::ADMIN_NOP => C::ADMIN_NOP(Zeroable::zeroed()),
        Opcode::IDENTIFY => C::IDENTIFY(IdentifyArgs {
            iova: 0x10_0000,
            len: 4096,
            ..Zeroable::zeroed()
        }),
        Opcode::PD_CREATE => C::PD_CREATE(PdCreateArgs {
            mem_quota: 1 << 30,
            max_objects: 0,
            max_windows: 16,
            ..Zeroable::zeroed()
        }),
        Opcode::PD_DESTROY => C::PD_DESTROY(PdArgs {
            pd: 1,
            ..Zeroable::zeroed()
        }),
        Opcode::PD_SET_QUOTA => C::PD_SET_QUOTA(PdQuotaArgs {
            pd: 1,
            mem_quota: 1 << 20,
            ..Zeroable::zeroed()
        }),
        Opcode::PD_STATS => C::PD_STATS(PdStatsArgs {
            pd: 0,
            len: 4096,
            iova: 0x20_0000,
            ..Zeroable::zeroed()
        }),
        Opcode::WINDOW_REGISTER => C::WINDOW_REGISTER(WindowRegisterArgs {
            pd: 1,
            window: 1,
            iova: 0x4000_0000,
            len: 1 << 24,
            access: window_access::READ | window_access::WRITE,
            rsv0: 0,
        }),
        Opcode::WINDOW_UNREGISTER => C::WINDOW_UNREGISTER(WindowArgs {
            pd: 1,
            window: 1,
            ..Zeroable::zeroed()
        }),
        Opcode::QUEUE_CREATE => C::QUEUE_CREATE(QueueCreateArgs {
            pd: 1,
            qid: 1,
            vector: 1,
            depth_log2: 8,
            base: 0x30_0000,
            ..Zeroable::zeroed()
        }),
        Opcode::QUEUE_DELETE => C::QUEUE_DELETE(QueueDeleteArgs {
            qid: 1,
            ..Zeroable::zeroed()
        }),
        Opcode::NOP => C::NOP(Zeroable::zeroed()),
        Opcode::DEVICE_INFO => C::DEVICE_INFO(OutArgs {
            out: out(),
            ..Zeroable::zeroed()
        }),
        Opcode::MEM_GET_INFO => C::MEM_GET_INFO(Zeroable::zeroed()),
        Opcode::CTX_SYNCHRONIZE => C::CTX_SYNCHRONIZE(Zeroable::zeroed()),
        Opcode::CTX_RESET => C::CTX_RESET(Zeroable::zeroed()),
        Opcode::CTX_GET_LIMIT => C::CTX_GET_LIMIT(LimitArgs {
            limit: 2,
            ..Zeroable::zeroed()
        }),
        Opcode::CTX_SET_LIMIT => C::CTX_SET_LIMIT(LimitArgs {
            limit: 2,
            value: 1 << 20,
            ..Zeroable::zeroed()
        }),
        Opcode::MGMT_QUERY => C::MGMT_QUERY(OutArgs {
            out: out(),
            ..Zeroable::zeroed()
        }),
        Opcode::MEM_ALLOC => C::MEM_ALLOC(MemAllocArgs {
            size: 1 << 20,
            ..Zeroable::zeroed()
        }),
        Opcode::MEM_FREE => C::MEM_FREE(handle(0x7f00_0000_0000)),
        Opcode::MEM_GET_RANGE => C::MEM_GET_RANGE(handle(0x7f00_0000_0010)),
        Opcode::MEMCPY_HTOD => C::MEMCPY_HTOD(CopyHtoDArgs {
            dst: 0x7f00_0000_0000,
            len: 100,
            ..Zeroable::zeroed()
        }),
        Opcode::MEMCPY_DTOH => C::MEMCPY_DTOH(CopyDtoHArgs {
            src: 0x7f00_0000_0000,
            len: 4096,
            dst_window: 1,
            rsv0: 0,
            dst_offset: 64,
        }),
        Opcode::MEMCPY_DTOD => C::MEMCPY_DTOD(CopyDtoDArgs {
            dst: 0x7f00_0001_0000,
            src: 0x7f00_0000_0000,
            len: 4096,
            rsv: 0,
        }),
        Opcode::MEMCPY_2D => C::MEMCPY_2D(Zeroable::zeroed()),
        Opcode::MEMSET => C::MEMSET(MemsetArgs {
            dst: 0x7f00_0000_0000,
            count: 1024,
            value: 0xAB,
            elem_size: 1,
            ..Zeroable::zeroed()
        }),
        Opcode::MEMSET_2D => C::MEMSET_2D(Zeroable::zeroed()),
        Opcode::MODULE_LOAD => C::MODULE_LOAD(ModuleLoadArgs {
            out: out(),
            ..Zeroable::zeroed()
        }),
        Opcode::MODULE_UNLOAD => C::MODULE_UNLOAD(handle(0x21)),
        Opcode::MODULE_GET_GLOBAL => C::MODULE_GET_GLOBAL(handle(0x21)),
        Opcode::FUNC_GET_ATTRIBUTE => C::FUNC_GET_ATTRIBUTE(FuncAttrArgs {
            func: 0x31,
            attr: 0,
            ..Zeroable::zeroed()
        }),
        Opcode::FUNC_SET_ATTRIBUTE => C::FUNC_SET_ATTRIBUTE(FuncAttrArgs {
            func: 0x31,
            attr: 8,
            value: 65536,
            ..Zeroable::zeroed()
        }),
        Opcode::LAUNCH => C::LAUNCH(LaunchArgs {
            func: 0x31,
            grid_x: 128,
            grid_y: 1,
            grid_z: 1,
            block_x: 256,
            block_y: 1,
            block_z: 1,
            attr_count: 1,
            shared_mem: 0,
            rsv0: 0,
        }),
        Opcode::STREAM_CREATE => C::STREAM_CREATE(StreamCreateArgs {
            flags: stream_flags::NON_BLOCKING,
            ..Zeroable::zeroed()
        }),
        Opcode::STREAM_DESTROY => C::STREAM_DESTROY(Zeroable::zeroed()),
        Opcode::STREAM_SYNCHRONIZE => C::STREAM_SYNCHRONIZE(Zeroable::zeroed()),
        Opcode::STREAM_QUERY => C::STREAM_QUERY(Zeroable::zeroed()),
        Opcode::STREAM_WAIT_EVENT => C::STREAM_WAIT_EVENT(StreamWaitEventArgs {
            event: 0x41,
            ..Zeroable::zeroed()
        }),
        Opcode::STREAM_BEGIN_CAPTURE => C::STREAM_BEGIN_CAPTURE(CaptureArgs {
            mode: 2,
            ..Zeroable::zeroed()
        }),
        Opcode::STREAM_END_CAPTURE => C::STREAM_END_CAPTURE(Zeroable::zeroed()),
        Opcode::HOST_FUNC => C::HOST_FUNC(handle(0xC0FFEE)),
        Opcode::HOST_FUNC_DONE => C::HOST_FUNC_DONE(handle(0xC0FFEE)),
        Opcode::EVENT_CREATE => C::EVENT_CREATE(EventCreateArgs {
            flags: event_flags::BLOCKING_SYNC,
            ..Zeroable::zeroed()
        }),
        Opcode::EVENT_DESTROY => C::EVENT_DESTROY(handle(0x41)),
        Opcode::EVENT_RECORD => C::EVENT_RECORD(handle(0x41)),
        Opcode::EVENT_SYNCHRONIZE => C::EVENT_SYNCHRONIZE(handle(0x41)),
        Opcode::EVENT_QUERY => C::EVENT_QUERY(handle(0x41)),
        Opcode::EVENT_ELAPSED => C::EVENT_ELAPSED(EventElapsedArgs {
            start: 0x41,
            end: 0x42,
            ..Zeroable::zeroed()
        }),
        Opcode::GRAPH_INSTANTIATE => C::GRAPH_INSTANTIATE(GraphInstantiateArgs {
            graph: 0x71,
            ..Zeroable::zeroed()
        }),
        Opcode::GRAPH_EXEC_UPDATE => C::GRAPH_EXEC_UPDATE(GraphExecUpdateArgs {
            exec: 0x72,
            graph: 0x71,
            ..Zeroable::zeroed()
        }),
        Opcode::GRAPH_LAUNCH => C::GRAPH_LAUNCH(handle(0x72)),
        Opcode::GRAPH_DESTROY => C::GRAPH_DESTROY(handle(0x71)),
        Opcode::GRAPH_EXEC_DESTROY => C::GRAPH_EXEC_DESTROY(handle(0x72)),
        Opcode::BLAS_CREATE => C::BLAS_CREATE(Zeroable::zeroed()),
        Opcode::BLAS_DESTROY => C::BLAS_DESTROY(handle(0x51)),
        Opcode::BLAS_GEMM => C::BLAS_GEMM(Zeroable::zeroed()),
        Opcode::BLAS_GEMM_BATCHED => C::BLAS_GEMM_BATCHED(Zeroable::zeroed()),
        Opcode::BLAS_TRSM_BATCHED => C::BLAS_TRSM_BATCHED(Zeroable::zeroed()),
        Opcode::BLASLT_MATMUL => C::BLASLT_MATMUL(Zeroable::zeroed()),
    };
    let info = op.info();
    let stream = match info.stream {
        crate::opcode::StreamRule::None => 0,
        _ => 0x11,
    };
    let len = payload(op).len() as u32;
    let payload = if len == 0 {
        Payload::None
    } else {
        Payload::Inline { len }
    };
    Request {
        cid: 0x100 + op as u32,
        notify: false,
        stream,
        payload,
        command,
    }
}
