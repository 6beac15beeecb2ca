//! Bounds-checked little-endian reads from byte slices, shared by the fatbin container and
//! cubin readers: every read returns `None` rather than panicking when it runs past the end.

pub(crate) fn read_u8(b: &[u8], off: usize) -> Option<u8> {
    b.get(off).copied()
}

pub(crate) fn read_u16(b: &[u8], off: usize) -> Option<u16> {
    let s: [u8; 2] = b.get(off..off.checked_add(2)?)?.try_into().ok()?;
    Some(u16::from_le_bytes(s))
}

pub(crate) fn read_u32(b: &[u8], off: usize) -> Option<u32> {
    let s: [u8; 4] = b.get(off..off.checked_add(4)?)?.try_into().ok()?;
    Some(u32::from_le_bytes(s))
}

pub(crate) fn read_u64(b: &[u8], off: usize) -> Option<u64> {
    let s: [u8; 8] = b.get(off..off.checked_add(8)?)?.try_into().ok()?;
    Some(u64::from_le_bytes(s))
}

pub(crate) fn slice_at(b: &[u8], off: usize, len: u64) -> Option<&[u8]> {
    let len = usize::try_from(len).ok()?;
    b.get(off..off.checked_add(len)?)
}

pub(crate) fn clamp_u32(v: u64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}
