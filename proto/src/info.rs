//! Structures the device writes into memory (spec §6.2): device info, module function
//! tables, object counts and management data. The guest decodes them with the same care
//! as the device decodes entries: nothing here trusts a length or an offset.

use crate::abi_struct;
use crate::cmd::{args_impl, Args};
use crate::error::{read_pod, DecodeError};

/// Number of attribute slots in [`DeviceInfo::attrs`], indexed by `CUdevice_attribute`.
pub const ATTR_SLOTS: usize = 256;
/// Version of the [`DeviceInfo`] layout.
pub const DEVICE_INFO_VERSION: u32 = 1;

/// Executor kinds reported in [`DeviceInfo::executor`].
pub mod executor {
    /// The software executor (CPU; no arbitrary kernels).
    pub const SOFT: u32 = 1;
    /// The CUDA executor (a real GPU).
    pub const CUDA: u32 = 2;
}

abi_struct! {
    /// Everything the guest needs to answer property and attribute queries locally
    /// (written by IDENTIFY and DEVICE_INFO). 4096 bytes.
    DeviceInfo [4096] {
        /// [`DEVICE_INFO_VERSION`].
        version: u32,
        /// CUDA driver version advertised to applications (e.g. 12080 for 12.8).
        cuda_version: u32,
        /// Device memory in bytes (the whole device; PDs see their quota via MEM_GET_INFO).
        total_mem: u64,
        /// Compute capability major.
        cc_major: u32,
        /// Compute capability minor.
        cc_minor: u32,
        /// PCI domain of the host GPU (or the configured value).
        pci_domain: u32,
        /// PCI bus.
        pci_bus: u8,
        /// PCI device.
        pci_device: u8,
        /// PCI function.
        pci_function: u8,
        rsv0: u8,
        /// Device UUID.
        uuid: [u8; 16],
        /// [`executor`] kind.
        executor: u32,
        /// Number of valid entries in `attrs` (≤ [`ATTR_SLOTS`]).
        attr_count: u32,
        /// Device features the executor implements (same bits as DEV_FEATURES).
        exec_features: u64,
        /// NVML-style driver version string, NUL-padded (e.g. "570.86.15").
        driver_version: [u8; 32],
        rsv1: [u8; 32],
        /// Device name, NUL-padded.
        name: [u8; 256],
        rsv2: [u8; 128],
        /// `cuDeviceGetAttribute` values, indexed by `CUdevice_attribute`; slot 0 unused.
        attrs: [i32; ATTR_SLOTS],
        /// Locally unique id (zero on Linux).
        luid: [u8; 8],
        rsv3: [u8; 2552],
    } reserved [rsv0, rsv1, rsv2, rsv3]
}
args_impl!(DeviceInfo, |s| {
    let bad = |f| Err(DecodeError::BadPayload(f));
    if s.version != DEVICE_INFO_VERSION {
        return bad("version");
    }
    if s.attr_count as usize > ATTR_SLOTS {
        return bad("attr_count");
    }
    if !s.name.contains(&0) {
        return bad("name");
    }
    if !s.driver_version.contains(&0) {
        return bad("driver_version");
    }
    Ok(())
});

impl DeviceInfo {
    /// The device name.
    pub fn name(&self) -> &str {
        c_str(&self.name)
    }

    /// The driver version string.
    /// The UUID in the canonical `8-4-4-4-12` form (lower case, without the `GPU-` prefix).
    pub fn uuid_string(&self) -> String {
        let h: Vec<String> = self.uuid.iter().map(|b| format!("{b:02x}")).collect();
        format!(
            "{}-{}-{}-{}-{}",
            h[0..4].concat(),
            h[4..6].concat(),
            h[6..8].concat(),
            h[8..10].concat(),
            h[10..16].concat()
        )
    }

    pub fn driver_version(&self) -> &str {
        c_str(&self.driver_version)
    }

    /// Attribute `attr`, or `None` if the device does not report it.
    pub fn attr(&self, attr: u32) -> Option<i32> {
        let i = attr as usize;
        (i > 0 && i < self.attr_count as usize).then(|| self.attrs[i])
    }

    /// Writes a NUL-padded string into a fixed field, truncating on a char boundary.
    pub fn set_str<const N: usize>(field: &mut [u8; N], s: &str) {
        *field = [0; N];
        let mut end = s.len().min(N - 1);
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        field[..end].copy_from_slice(&s.as_bytes()[..end]);
    }
}

fn c_str(b: &[u8]) -> &str {
    let end = b.iter().position(|c| *c == 0).unwrap_or(b.len());
    match core::str::from_utf8(&b[..end]) {
        Ok(s) => s,
        Err(e) => core::str::from_utf8(&b[..e.valid_up_to()]).unwrap_or(""),
    }
}

abi_struct! {
    /// Live object counts (PD_STATS): of one PD, or of the whole device when PD 0 was asked.
    ObjectCounts [96] {
        /// PD id (0 = device totals).
        pd: u32,
        /// Number of PDs (device totals) or 1.
        pds: u32,
        /// Bytes of device memory allocated.
        mem_bytes: u64,
        /// Device-memory quota (device totals: total memory).
        mem_quota: u64,
        allocations: u32,
        modules: u32,
        functions: u32,
        streams: u32,
        events: u32,
        graphs: u32,
        graph_execs: u32,
        blas_handles: u32,
        windows: u32,
        queues: u32,
        /// Commands accepted but not yet finished.
        pending: u32,
        /// GPU utilisation in percent over the last sample period (1 s): by this PD's
        /// kernels, or (device totals) by all of them.
        gpu_util: u32,
        rsv: [u64; 3],
    } reserved [rsv]
}
args_impl!(ObjectCounts);

impl ObjectCounts {
    /// Sum of the GPU object counts (everything a PD can leak).
    pub fn objects(&self) -> u64 {
        [
            self.allocations,
            self.modules,
            self.functions,
            self.streams,
            self.events,
            self.graphs,
            self.graph_execs,
            self.blas_handles,
        ]
        .iter()
        .map(|&v| u64::from(v))
        .sum()
    }
}

abi_struct! {
    /// MGMT_QUERY: what NVML reports. Memory figures are the PD's view (quota) so that
    /// NVML and `cuMemGetInfo` agree.
    MgmtInfo [128] {
        mem_total: u64,
        mem_used: u64,
        mem_free: u64,
        /// GPU utilisation in percent over the last sample period.
        gpu_util: u32,
        /// Memory-controller utilisation in percent.
        mem_util: u32,
        /// Temperature in °C (0 = unknown).
        temperature_c: u32,
        /// Power draw in milliwatts (0 = unknown).
        power_mw: u32,
        /// Power limit in milliwatts (0 = unknown).
        power_limit_mw: u32,
        /// SM clock in MHz (0 = unknown).
        sm_clock_mhz: u32,
        /// Memory clock in MHz (0 = unknown).
        mem_clock_mhz: u32,
        /// Number of PDs (processes) using the device.
        processes: u32,
        rsv: [u64; 9],
    } reserved [rsv]
}
args_impl!(MgmtInfo);

abi_struct! {
    /// Opens the MODULE_LOAD output: `func_count` [`FuncRecord`]s follow it, then the
    /// [`ParamInfo`] arrays and the names they point to. Offsets are from the start of
    /// the header; `total_len` is the length of the whole table.
    ModuleInfo [32] {
        module: u64,
        func_count: u32,
        global_count: u32,
        total_len: u32,
        rsv0: u32,
        rsv: u64,
    } reserved [rsv0, rsv]
}
args_impl!(ModuleInfo);

/// Flags of [`FuncRecord::flags`].
pub mod func_flags {
    /// The parameter layout is known (from `.nv.info` or `cuFuncGetParamInfo`). Without
    /// it the function cannot be launched through the runtime API.
    pub const LAYOUT_KNOWN: u32 = 1 << 0;
}

abi_struct! {
    /// One kernel of a loaded module: its handle, name, parameter layout and attributes.
    FuncRecord [64] {
        handle: u64,
        name_offset: u32,
        name_len: u32,
        params_offset: u32,
        param_count: u32,
        /// Size of the parameter buffer in bytes.
        param_bytes: u32,
        /// [`func_flags`].
        flags: u32,
        max_threads_per_block: i32,
        shared_size_bytes: i32,
        const_size_bytes: i32,
        local_size_bytes: i32,
        num_regs: i32,
        ptx_version: i32,
        binary_version: i32,
        max_dynamic_shared_size_bytes: i32,
    } reserved []
}
args_impl!(FuncRecord, |s| {
    if s.handle == 0 {
        return Err(DecodeError::BadPayload("func.handle"));
    }
    Ok(())
});

abi_struct! {
    /// One kernel parameter: its offset and size in the parameter buffer.
    ParamInfo [8] { offset: u32, size: u32 } reserved []
}
args_impl!(ParamInfo);

/// A decoded function of a module table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FunctionEntry {
    /// The record.
    pub record: FuncRecord,
    /// The mangled name.
    pub name: String,
    /// Parameters in ordinal order.
    pub params: Vec<ParamInfo>,
}

/// Builds a module table (the device side of MODULE_LOAD's output).
pub fn encode_module_info(module: u64, funcs: &[FunctionEntry]) -> Vec<u8> {
    let rec = core::mem::size_of::<FuncRecord>();
    let head = core::mem::size_of::<ModuleInfo>();
    let mut tail: Vec<u8> = Vec::new();
    let base = head + rec * funcs.len();
    let mut records = Vec::with_capacity(funcs.len());
    for f in funcs {
        let mut r = f.record;
        r.params_offset = (base + tail.len()) as u32;
        r.param_count = f.params.len() as u32;
        for p in &f.params {
            tail.extend_from_slice(bytemuck::bytes_of(p));
        }
        r.name_offset = (base + tail.len()) as u32;
        r.name_len = f.name.len() as u32;
        tail.extend_from_slice(f.name.as_bytes());
        while tail.len() % 8 != 0 {
            tail.push(0);
        }
        records.push(r);
    }
    let info = ModuleInfo {
        module,
        func_count: funcs.len() as u32,
        global_count: 0,
        total_len: (base + tail.len()) as u32,
        rsv0: 0,
        rsv: 0,
    };
    let mut out = bytemuck::bytes_of(&info).to_vec();
    for r in &records {
        out.extend_from_slice(bytemuck::bytes_of(r));
    }
    out.extend_from_slice(&tail);
    out
}

/// Decodes a module table, checking every offset and length against the buffer.
pub fn decode_module_info(bytes: &[u8]) -> Result<(ModuleInfo, Vec<FunctionEntry>), DecodeError> {
    let info: ModuleInfo = read_pod(bytes)?;
    info.check()?;
    let total = info.total_len as usize;
    let buf = bytes.get(..total).ok_or(DecodeError::Truncated {
        need: total,
        got: bytes.len(),
    })?;
    let rec = core::mem::size_of::<FuncRecord>();
    let head = core::mem::size_of::<ModuleInfo>();
    let mut funcs = Vec::new();
    for i in 0..info.func_count as usize {
        let at = i
            .checked_mul(rec)
            .and_then(|v| v.checked_add(head))
            .ok_or(DecodeError::BadPayload("func_count"))?;
        let r: FuncRecord = read_pod(buf.get(at..).unwrap_or(&[]))?;
        r.check()?;
        let name = slice(buf, r.name_offset, r.name_len as u64, "name")?;
        let name = core::str::from_utf8(name)
            .map_err(|_| DecodeError::BadPayload("name"))?
            .to_owned();
        let plen = u64::from(r.param_count) * core::mem::size_of::<ParamInfo>() as u64;
        let praw = slice(buf, r.params_offset, plen, "params")?;
        let params: Vec<ParamInfo> = praw
            .chunks_exact(8)
            .map(bytemuck::pod_read_unaligned)
            .collect();
        if params
            .iter()
            .any(|p| u64::from(p.offset) + u64::from(p.size) > u64::from(r.param_bytes))
        {
            return Err(DecodeError::BadPayload("params"));
        }
        funcs.push(FunctionEntry {
            record: r,
            name,
            params,
        });
    }
    Ok((info, funcs))
}

fn slice<'a>(
    buf: &'a [u8],
    off: u32,
    len: u64,
    what: &'static str,
) -> Result<&'a [u8], DecodeError> {
    let start = off as usize;
    let end = u64::from(off)
        .checked_add(len)
        .ok_or(DecodeError::BadPayload(what))?;
    buf.get(start..end as usize)
        .ok_or(DecodeError::BadPayload(what))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytemuck::Zeroable;

    #[test]
    fn device_info_strings() {
        let mut d = DeviceInfo::zeroed();
        d.version = DEVICE_INFO_VERSION;
        DeviceInfo::set_str(&mut d.name, "VGPU-STUB soft executor");
        DeviceInfo::set_str(&mut d.driver_version, "570.86.15");
        d.attr_count = 200;
        d.attrs[16] = 132;
        assert_eq!(d.check(), Ok(()));
        assert_eq!(d.name(), "VGPU-STUB soft executor");
        assert_eq!(d.attr(16), Some(132));
        assert_eq!(d.attr(0), None);
        assert_eq!(d.attr(200), None);
        d.name = [b'x'; 256];
        assert_eq!(d.check(), Err(DecodeError::BadPayload("name")));
    }

    #[test]
    fn module_info_round_trip_and_bounds() {
        let mut r = FuncRecord::zeroed();
        r.handle = 7;
        r.param_bytes = 0x40;
        let f = FunctionEntry {
            record: r,
            name: "_Z10odd_params6ParamsPKixsPi".into(),
            params: vec![
                ParamInfo {
                    offset: 0,
                    size: 0x20,
                },
                ParamInfo {
                    offset: 0x20,
                    size: 8,
                },
                ParamInfo {
                    offset: 0x28,
                    size: 8,
                },
                ParamInfo {
                    offset: 0x30,
                    size: 2,
                },
                ParamInfo {
                    offset: 0x38,
                    size: 8,
                },
            ],
        };
        let bytes = encode_module_info(3, std::slice::from_ref(&f));
        let (info, funcs) = decode_module_info(&bytes).unwrap();
        assert_eq!(info.module, 3);
        assert_eq!(funcs[0].name, f.name);
        assert_eq!(funcs[0].params, f.params);
        assert!(decode_module_info(&bytes[..bytes.len() - 1]).is_err());
        let mut bad = bytes.clone();
        bad[32 + 8] = 0xFF; // name_offset
        assert!(decode_module_info(&bad).is_err());
    }
}
