//! The specification and the crate agree: every table in `docs/vgpu-stub-spec.md` that is
//! marked `<!-- check: NAME -->` is parsed and compared with the crate's constants and
//! layouts, and every layout the crate defines has a table in the spec.
//!
//! `VGPU_PRINT_SPEC_TABLES=1 cargo test -p vgpu-proto --test spec_tables -- --nocapture`
//! prints the layout tables as the crate has them (to write the spec when a layout changes).

use std::collections::BTreeMap;
use vgpu_proto::cmd::*;
use vgpu_proto::control::*;
use vgpu_proto::info::*;
use vgpu_proto::opcode::{Completion, PayloadRule, QueueKind, StreamRule};
use vgpu_proto::payload::*;
use vgpu_proto::queue::{qcb, Cqe, Sqe};
use vgpu_proto::{regs, Opcode, Status};

const SPEC: &str = include_str!("../../docs/vgpu-stub-spec.md");

type Fields = &'static [(&'static str, usize, usize)];

fn layouts() -> Vec<(&'static str, usize, Fields)> {
    macro_rules! l {
        ($($t:ty),* $(,)?) => { vec![ $( (stringify!($t), core::mem::size_of::<$t>(), <$t>::FIELDS) ),* ] };
    }
    l![
        Sqe,
        Cqe,
        OutRef,
        NoArgs,
        HandleArgs,
        OutArgs,
        IdentifyArgs,
        PdCreateArgs,
        PdArgs,
        PdQuotaArgs,
        PdStatsArgs,
        WindowRegisterArgs,
        WindowArgs,
        QueueCreateArgs,
        QueueDeleteArgs,
        LimitArgs,
        MemAllocArgs,
        CopyHtoDArgs,
        CopyDtoHArgs,
        CopyDtoDArgs,
        MemsetArgs,
        ModuleLoadArgs,
        FuncAttrArgs,
        LaunchArgs,
        StreamCreateArgs,
        StreamWaitEventArgs,
        CaptureArgs,
        EventCreateArgs,
        EventElapsedArgs,
        GraphInstantiateArgs,
        GraphExecUpdateArgs,
        LaunchAttr,
        Copy2D,
        Memset2D,
        ModuleImageHeader,
        GemmDesc,
        TrsmBatchedDesc,
        MatrixLayout,
        LtMatmulDesc,
        DeviceInfo,
        ObjectCounts,
        MgmtInfo,
        ModuleInfo,
        FuncRecord,
        ParamInfo,
        MsgHeader,
        HelloBody,
        WelcomeBody,
        WindowAllocBody,
        WindowGrantedBody,
        WindowFreeBody,
        HostRegisterBody,
        ErrorBody,
    ]
}

/// Tables of the spec, by the name in their `<!-- check: NAME -->` marker: rows of cells.
fn spec_tables() -> BTreeMap<String, Vec<Vec<String>>> {
    let mut out = BTreeMap::new();
    let mut lines = SPEC.lines().peekable();
    while let Some(line) = lines.next() {
        let Some(name) = line
            .trim()
            .strip_prefix("<!-- check: ")
            .and_then(|r| r.strip_suffix(" -->"))
        else {
            continue;
        };
        while lines
            .peek()
            .is_some_and(|l| !l.trim_start().starts_with('|'))
        {
            lines.next();
        }
        let mut rows = Vec::new();
        while let Some(l) = lines.peek().filter(|l| l.trim_start().starts_with('|')) {
            let cells: Vec<String> = l
                .trim()
                .trim_matches('|')
                .split('|')
                .map(|c| c.trim().trim_matches('`').to_string())
                .collect();
            lines.next();
            rows.push(cells);
        }
        // Drop the header and separator rows.
        assert!(rows.len() >= 2, "table {name} is empty");
        assert!(
            out.insert(name.to_string(), rows.split_off(2)).is_none(),
            "table {name} appears twice"
        );
    }
    out
}

fn num(s: &str) -> u64 {
    let s = s.replace('_', "");
    match s.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16),
        None => s.parse(),
    }
    .unwrap_or_else(|_| panic!("not a number: {s}"))
}

#[test]
fn print_tables_when_asked() {
    if std::env::var_os("VGPU_PRINT_SPEC_TABLES").is_none() {
        return;
    }
    for (name, size, fields) in layouts() {
        println!("<!-- check: {name} -->\n{name} ({size} bytes):\n\n| Offset | Size | Field | Meaning |\n|---|---|---|---|");
        for (f, off, len) in fields {
            println!("| 0x{off:02X} | {len} | `{f}` | |");
        }
        println!();
    }
}

#[test]
fn layouts_match() {
    let tables = spec_tables();
    for (name, size, fields) in layouts() {
        let rows = tables
            .get(name)
            .unwrap_or_else(|| panic!("spec has no table for {name}"));
        let spec: Vec<(String, usize, usize)> = rows
            .iter()
            .map(|r| (r[2].clone(), num(&r[0]) as usize, num(&r[1]) as usize))
            .collect();
        let code: Vec<(String, usize, usize)> = fields
            .iter()
            .map(|&(f, o, l)| (f.to_string(), o, l))
            .collect();
        assert_eq!(
            spec, code,
            "layout of {name} differs between spec and crate"
        );
        let end = code.last().map_or(0, |(_, o, l)| o + l);
        assert_eq!(end, size, "{name}: fields do not cover the structure");
    }
}

#[test]
fn registers_match() {
    let rows = &spec_tables()["registers"];
    assert_eq!(rows.len(), regs::REGISTERS.len(), "register count");
    for (row, reg) in rows.iter().zip(regs::REGISTERS) {
        assert_eq!(num(&row[0]), reg.offset, "{}", reg.name);
        assert_eq!(row[1], reg.name);
        assert_eq!(
            num(&row[2]) as u8,
            reg.width * 8,
            "{} width in bits",
            reg.name
        );
        assert_eq!(
            row[3],
            if reg.writable { "RW" } else { "RO" },
            "{}",
            reg.name
        );
        if row[4] != "varies" {
            assert_eq!(num(&row[4]), reg.reset, "{} reset value", reg.name);
        }
    }
}

#[test]
fn qcb_matches() {
    let rows = &spec_tables()["qcb"];
    let spec: Vec<(String, usize, bool)> = rows
        .iter()
        .map(|r| (r[1].clone(), num(&r[0]) as usize, r[2] == "client"))
        .collect();
    let code: Vec<(String, usize, bool)> = qcb::FIELDS
        .iter()
        .map(|&(n, o, c)| (n.to_string(), o, c))
        .collect();
    assert_eq!(spec, code);
}

#[test]
fn opcodes_match() {
    let rows = &spec_tables()["opcodes"];
    assert_eq!(rows.len(), Opcode::ALL.len(), "opcode count");
    for (row, &op) in rows.iter().zip(Opcode::ALL) {
        let i = op.info();
        assert_eq!(num(&row[0]), op as u64, "{}", i.name);
        assert_eq!(row[1], i.name);
        let queue = match i.queue {
            QueueKind::Admin => "admin",
            QueueKind::Io => "I/O",
        };
        let completion = match i.completion {
            Completion::Sync => "sync",
            Completion::Async => "async",
        };
        let stream = match i.stream {
            StreamRule::None => "-",
            StreamRule::Ordered => "ordered",
            StreamRule::Target => "target",
        };
        let payload = match i.payload {
            PayloadRule::None => "-".to_string(),
            PayloadRule::Optional => "optional".to_string(),
            PayloadRule::Required(n) => format!("≥ {n}"),
        };
        let feature = match i.feature {
            0 => "-",
            regs::features::GRAPHS => "GRAPHS",
            regs::features::HOST_FUNC => "HOST_FUNC",
            regs::features::BLAS => "BLAS",
            regs::features::BLASLT => "BLASLT",
            f => panic!("unnamed feature {f:#x}"),
        };
        let args = op.args_type();
        assert_eq!(
            (
                row[2].as_str(),
                row[3].as_str(),
                row[4].as_str(),
                row[5].as_str(),
                row[6].as_str(),
                row[7].as_str()
            ),
            (queue, completion, stream, payload.as_str(), feature, args),
            "row of {}",
            i.name
        );
    }
}

#[test]
fn statuses_match() {
    let rows = &spec_tables()["statuses"];
    let spec: Vec<(u64, String)> = rows.iter().map(|r| (num(&r[0]), r[1].clone())).collect();
    let code: Vec<(u64, String)> = Status::NAMED
        .iter()
        .map(|(n, s)| (u64::from(s.0), n.to_string()))
        .collect();
    assert_eq!(spec, code);
}

#[test]
fn pci_identity_matches() {
    let rows = &spec_tables()["pci"];
    let get = |k: &str| {
        let r = rows
            .iter()
            .find(|r| r[0] == k)
            .unwrap_or_else(|| panic!("pci table lacks {k}"));
        num(&r[1])
    };
    use regs::pci;
    assert_eq!(get("Vendor ID"), u64::from(pci::VENDOR_ID));
    assert_eq!(get("Device ID"), u64::from(pci::DEVICE_ID));
    assert_eq!(
        get("Subsystem vendor ID"),
        u64::from(pci::SUBSYSTEM_VENDOR_ID)
    );
    assert_eq!(get("Subsystem ID"), u64::from(pci::SUBSYSTEM_ID));
    assert_eq!(get("Revision ID"), u64::from(pci::REVISION));
    assert_eq!(get("Class code"), u64::from(pci::CLASS_CODE));
    assert_eq!(get("BAR0 size"), pci::REG_BAR_SIZE);
    assert_eq!(get("BAR2 size"), pci::MSIX_BAR_SIZE);
    assert_eq!(
        get("MSI-X capability offset"),
        u64::from(pci::MSIX_CAP_OFFSET)
    );
    assert_eq!(get("MSI-X vectors"), u64::from(pci::MSIX_VECTORS));
    assert_eq!(
        get("MSI-X table offset (BAR2)"),
        u64::from(pci::MSIX_TABLE_OFFSET)
    );
    assert_eq!(
        get("MSI-X PBA offset (BAR2)"),
        u64::from(pci::MSIX_PBA_OFFSET)
    );
}

#[test]
fn control_kinds_match() {
    let rows = &spec_tables()["control-kinds"];
    let code: Vec<(u64, u64)> = (1u16..=12)
        .map(|k| {
            (
                u64::from(k),
                vgpu_proto::control::Message::fds_for(k) as u64,
            )
        })
        .collect();
    let spec: Vec<(u64, u64)> = rows.iter().map(|r| (num(&r[0]), num(&r[3]))).collect();
    assert_eq!(spec, code);
}
