//! Descriptor helpers: waiting until one of several descriptors is readable, and adopting
//! descriptors received with `SCM_RIGHTS`.

use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

/// Waits until one of `fds` is readable (or hung up) or `timeout` passes; returns the index
/// of the first ready one (`None` on timeout, or when `poll` fails or is interrupted).
pub fn wait_readable(fds: &[RawFd], timeout: Duration) -> Option<usize> {
    let mut pfds: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: `pfds` is a valid array of `pfds.len()` pollfd for the duration of the call.
    let n = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, ms) };
    if n <= 0 {
        return None;
    }
    pfds.iter().position(|p| p.revents != 0)
}

/// Takes ownership of descriptors the kernel just installed in this process: those of an
/// `SCM_RIGHTS` message, or one `accept` returned.
pub fn own_fds(raw: Vec<RawFd>) -> Vec<OwnedFd> {
    raw.into_iter()
        // SAFETY: the kernel installed these descriptors in this process for this message;
        // nothing else knows their numbers yet, so each is adopted exactly once here and
        // closed when its OwnedFd drops.
        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::fd::{AsRawFd, IntoRawFd};
    use std::os::unix::net::UnixStream;

    #[test]
    fn waits_for_the_first_readable_descriptor() {
        let (a, mut a_peer) = UnixStream::pair().unwrap();
        let (b, mut b_peer) = UnixStream::pair().unwrap();
        let fds = [a.as_raw_fd(), b.as_raw_fd()];
        assert_eq!(wait_readable(&fds, Duration::ZERO), None);
        b_peer.write_all(b"x").unwrap();
        assert_eq!(wait_readable(&fds, Duration::from_secs(5)), Some(1));
        a_peer.write_all(b"x").unwrap();
        assert_eq!(wait_readable(&fds, Duration::from_secs(5)), Some(0));
    }

    #[test]
    fn adopted_descriptors_close_on_drop() {
        let (a, mut peer) = UnixStream::pair().unwrap();
        let owned = own_fds(vec![a.into_raw_fd()]);
        assert_eq!(owned.len(), 1);
        drop(owned);
        let mut buf = [0u8; 1];
        assert_eq!(peer.read(&mut buf).unwrap(), 0, "the peer sees the close");
    }
}
