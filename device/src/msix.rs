//! MSI-X (spec §2.3): the table and pending-bit array in BAR2, and delivery of interrupts
//! through the eventfds the VMM registered for each vector.
//!
//! A vector fires only when MSI-X is enabled, the function is not masked, the vector is not
//! masked and bus mastering is on; otherwise its pending bit is set and it fires as soon as
//! all of that holds again.

use std::fs::File;
use std::io::Write;
use std::sync::Mutex;
use vgpu_proto::regs::pci;

const VECTORS: usize = pci::MSIX_VECTORS as usize;
const ENTRY: usize = 16;

#[derive(Default)]
struct State {
    table: Vec<[u32; 4]>,
    pending: Vec<bool>,
    fds: Vec<Option<File>>,
    enabled: bool,
    function_masked: bool,
    bus_master: bool,
}

/// MSI-X state, shared by the protocol thread and the queue workers.
pub struct Msix {
    state: Mutex<State>,
}

impl Default for Msix {
    fn default() -> Self {
        Self::new()
    }
}

impl Msix {
    /// Reset state: every vector masked, nothing pending, no eventfds.
    pub fn new() -> Self {
        let s = State {
            table: vec![[0, 0, 0, 1]; VECTORS],
            pending: vec![false; VECTORS],
            fds: (0..VECTORS).map(|_| None).collect(),
            ..State::default()
        };
        Msix {
            state: Mutex::new(s),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Back to the reset state; eventfds registered by the VMM are kept unless `drop_fds`.
    pub fn reset(&self, drop_fds: bool) {
        let mut s = self.lock();
        s.table.iter_mut().for_each(|e| *e = [0, 0, 0, 1]);
        s.pending.iter_mut().for_each(|p| *p = false);
        if drop_fds {
            s.fds.iter_mut().for_each(|f| *f = None);
        }
        s.enabled = false;
        s.function_masked = false;
    }

    /// Mirrors the MSI-X Message Control and Bus Master Enable bits of configuration space.
    pub fn set_control(&self, enabled: bool, function_masked: bool, bus_master: bool) {
        let mut s = self.lock();
        s.enabled = enabled;
        s.function_masked = function_masked;
        s.bus_master = bus_master;
        deliver_pending(&mut s);
    }

    /// Registers eventfds for vectors `start..start + fds.len()`.
    pub fn set_eventfds(&self, start: u32, fds: Vec<File>) {
        let mut s = self.lock();
        for (i, f) in fds.into_iter().enumerate() {
            if let Some(slot) = s.fds.get_mut(start as usize + i) {
                *slot = Some(f);
            }
        }
        deliver_pending(&mut s);
    }

    /// Forgets the eventfds of vectors `start..start + count` (count 0 = all).
    pub fn clear_eventfds(&self, start: u32, count: u32) {
        let mut s = self.lock();
        let end = if count == 0 {
            VECTORS
        } else {
            (start as usize).saturating_add(count as usize).min(VECTORS)
        };
        for f in s.fds.iter_mut().take(end).skip(start as usize) {
            *f = None;
        }
    }

    /// Raises `vector` (ignored when out of range).
    pub fn signal(&self, vector: u16) {
        let mut s = self.lock();
        let v = vector as usize;
        if v >= VECTORS {
            return;
        }
        if deliverable(&s, v) {
            fire(&s, v);
        } else {
            s.pending[v] = true;
        }
    }

    /// BAR2 read: the table (naturally aligned dwords) and the PBA; other bytes read 0.
    pub fn read_bar(&self, offset: u64, data: &mut [u8]) {
        let s = self.lock();
        for (i, b) in data.iter_mut().enumerate() {
            *b = byte_at(&s, offset.saturating_add(i as u64));
        }
    }

    /// BAR2 write: table entries are writable; the PBA is read-only.
    pub fn write_bar(&self, offset: u64, data: &[u8]) {
        let mut s = self.lock();
        let table_end = (VECTORS * ENTRY) as u64;
        for (i, b) in data.iter().enumerate() {
            let Some(at) = offset.checked_add(i as u64).filter(|a| *a < table_end) else {
                continue;
            };
            let (e, w, byte) = (
                (at as usize) / ENTRY,
                (at as usize % ENTRY) / 4,
                at as usize % 4,
            );
            let mut bytes = s.table[e][w].to_le_bytes();
            bytes[byte] = *b;
            s.table[e][w] = u32::from_le_bytes(bytes);
        }
        deliver_pending(&mut s);
    }
}

fn byte_at(s: &State, at: u64) -> u8 {
    let table_end = (VECTORS * ENTRY) as u64;
    let pba = u64::from(pci::MSIX_PBA_OFFSET);
    if at < table_end {
        let (e, w, byte) = (
            (at as usize) / ENTRY,
            (at as usize % ENTRY) / 4,
            at as usize % 4,
        );
        return s.table[e][w].to_le_bytes()[byte];
    }
    if at >= pba && at < pba + (VECTORS / 8) as u64 {
        let first = ((at - pba) * 8) as usize;
        return (0..8).fold(0u8, |acc, bit| {
            acc | (u8::from(s.pending[first + bit]) << bit)
        });
    }
    0
}

fn deliverable(s: &State, v: usize) -> bool {
    s.enabled && s.bus_master && !s.function_masked && s.table[v][3] & 1 == 0
}

fn fire(s: &State, v: usize) {
    match s.fds[v].as_ref() {
        Some(f) => {
            let mut f: &File = f;
            if let Err(e) = f.write_all(&1u64.to_ne_bytes()) {
                log::warn!("MSI-X vector {v}: signalling its eventfd failed: {e}");
            }
        }
        None => log::debug!("MSI-X vector {v} fired with no eventfd registered"),
    }
}

fn deliver_pending(s: &mut State) {
    for v in 0..VECTORS {
        if s.pending[v] && deliverable(s, v) {
            s.pending[v] = false;
            fire(s, v);
        }
    }
}

#[cfg(test)]
#[allow(unsafe_code, reason = "a test adopts a duplicated eventfd as a File")]
mod tests {
    use super::*;
    use std::io::Read;
    use vmm_sys_util::eventfd::EventFd;

    fn as_file(e: &EventFd) -> File {
        use std::os::fd::{FromRawFd, IntoRawFd};
        // SAFETY: into_raw_fd hands over ownership of a fresh duplicate of the eventfd.
        unsafe { File::from_raw_fd(e.try_clone().unwrap().into_raw_fd()) }
    }

    fn efd() -> (EventFd, File) {
        let e = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let f = as_file(&e);
        (e, f)
    }

    #[test]
    fn masked_vectors_are_held_pending() {
        let m = Msix::new();
        let (e, f) = efd();
        m.set_eventfds(3, vec![f]);
        m.set_control(true, false, true);
        m.signal(3);
        assert!(e.read().is_err(), "vector 3 is masked after reset");
        let mut pba = [0u8; 1];
        m.read_bar(u64::from(pci::MSIX_PBA_OFFSET), &mut pba);
        assert_eq!(pba[0], 1 << 3);
        m.write_bar(3 * 16 + 12, &0u32.to_le_bytes());
        assert_eq!(e.read().unwrap(), 1);
        m.read_bar(u64::from(pci::MSIX_PBA_OFFSET), &mut pba);
        assert_eq!(pba[0], 0);
        m.signal(3);
        assert_eq!(e.read().unwrap(), 1);
        m.set_control(true, false, false);
        m.signal(3);
        assert!(e.read().is_err(), "no interrupt without bus mastering");
        m.set_control(true, false, true);
        assert_eq!(e.read().unwrap(), 1);
        let mut f2 = as_file(&e);
        let mut buf = [0u8; 8];
        assert!(f2.read(&mut buf).is_err());
    }
}
