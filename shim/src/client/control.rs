//! The control socket (spec §9.1–9.2): connecting, and exchanging one message per
//! `SOCK_SEQPACKET` packet with its `SCM_RIGHTS` descriptors.
//!
//! Receiving is where descriptors enter the process, so it is careful about them: they
//! arrive close-on-exec (`MSG_CMSG_CLOEXEC`), are wrapped in [`OwnedFd`] before anything
//! else is looked at (so every error path closes them), and a message with a number of
//! descriptors other than its kind prescribes is refused by [`Message::decode`].

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{
    connect, recvmsg, sendmsg, socket, AddressFamily, ControlMessage, ControlMessageOwned,
    MsgFlags, SockFlag, SockType, UnixAddr,
};
use vgpu_proto::control::{kind, Message, MAX_MESSAGE};

use super::ClientError;

/// Most descriptors the kernel passes in one message (`SCM_MAX_FD`). The receive buffer
/// has room for this many so that the kernel never truncates the control data: with a
/// truncated `SCM_RIGHTS` the installed descriptors could not be found to be closed.
const SCM_MAX_FD: usize = 253;

/// Opens a `SOCK_SEQPACKET` connection to the driver at `path`.
pub(crate) fn connect_socket(path: &Path) -> Result<OwnedFd, ClientError> {
    let addr = UnixAddr::new(path).map_err(|source| ClientError::Connect {
        path: path.to_owned(),
        source,
    })?;
    let fd = socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|source| ClientError::Connect {
        path: path.to_owned(),
        source,
    })?;
    loop {
        match connect(fd.as_raw_fd(), &addr) {
            Ok(()) => return Ok(fd),
            Err(Errno::EINTR) => continue,
            Err(source @ (Errno::ENOENT | Errno::ECONNREFUSED | Errno::ENOTDIR)) => {
                return Err(ClientError::NoDriver {
                    path: path.to_owned(),
                    source,
                })
            }
            Err(source) => {
                return Err(ClientError::Connect {
                    path: path.to_owned(),
                    source,
                })
            }
        }
    }
}

/// The client end of the control connection: request/reply with sequence numbers.
#[derive(Debug)]
pub(crate) struct Control {
    fd: std::sync::Arc<OwnedFd>,
    seq: u32,
    timeout: Duration,
}

impl Control {
    pub(crate) fn new(fd: OwnedFd, timeout: Duration) -> Control {
        Control {
            fd: std::sync::Arc::new(fd),
            seq: 0,
            timeout,
        }
    }

    /// The socket, shared with the queue so that a waiting thread notices the driver
    /// hanging up.
    pub(crate) fn socket(&self) -> std::sync::Arc<OwnedFd> {
        self.fd.clone()
    }

    /// Sends `msg` and waits for its reply, which must be of kind `want` (or ERROR, which
    /// becomes [`ClientError::Refused`]). Returns the reply and its descriptors.
    pub(crate) fn request(
        &mut self,
        msg: &Message,
        want: u16,
    ) -> Result<(Message, Vec<OwnedFd>), ClientError> {
        self.request_with(msg, &[], want)
    }

    /// [`request`](Self::request) with descriptors sent along (as many as the kind
    /// prescribes).
    pub(crate) fn request_with(
        &mut self,
        msg: &Message,
        fds: &[RawFd],
        want: u16,
    ) -> Result<(Message, Vec<OwnedFd>), ClientError> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        self.send(msg, fds, seq)?;
        let (rseq, reply, fds) = self.recv()?;
        if rseq != seq {
            return Err(ClientError::Protocol(format!(
                "reply carries sequence number {rseq}, expected {seq}"
            )));
        }
        match reply {
            Message::Error { code, message } => Err(ClientError::Refused { code, message }),
            r if r.kind() == want => Ok((r, fds)),
            r => Err(ClientError::Protocol(format!(
                "expected a reply of kind {want}, got kind {}",
                r.kind()
            ))),
        }
    }

    /// Sends GOODBYE without waiting for anything (best effort; errors are logged).
    pub(crate) fn goodbye(&mut self) {
        self.seq = self.seq.wrapping_add(1);
        if let Err(e) = self.send(&Message::Goodbye, &[], self.seq) {
            log::debug!("GOODBYE not sent: {e}");
        }
    }

    fn send(&self, msg: &Message, fds: &[RawFd], seq: u32) -> Result<(), ClientError> {
        debug_assert_eq!(
            Message::fds_for(msg.kind()),
            fds.len(),
            "the descriptors a message kind carries"
        );
        let bytes = msg.encode(seq);
        if bytes.len() > MAX_MESSAGE {
            return Err(ClientError::BadRequest("control message too long"));
        }
        let iov = [IoSlice::new(&bytes)];
        let rights = [ControlMessage::ScmRights(fds)];
        let cmsgs: &[ControlMessage<'_>] = if fds.is_empty() { &[] } else { &rights };
        loop {
            // MSG_NOSIGNAL: a closed peer must give EPIPE, not kill the process with
            // SIGPIPE (the shims live inside applications).
            match sendmsg::<()>(
                self.fd.as_raw_fd(),
                &iov,
                cmsgs,
                MsgFlags::MSG_NOSIGNAL,
                None,
            ) {
                Ok(n) if n == bytes.len() => return Ok(()),
                Ok(n) => {
                    return Err(ClientError::Protocol(format!(
                        "sent {n} of {} bytes of a control message",
                        bytes.len()
                    )))
                }
                Err(Errno::EINTR) => continue,
                Err(Errno::EPIPE | Errno::ECONNRESET | Errno::ENOTCONN) => {
                    return Err(ClientError::Disconnected)
                }
                Err(source) => {
                    return Err(ClientError::Io {
                        op: "sendmsg on the control socket",
                        source,
                    })
                }
            }
        }
    }

    /// Receives one message, waiting at most the configured timeout.
    fn recv(&self) -> Result<(u32, Message, Vec<OwnedFd>), ClientError> {
        self.wait_readable()?;
        let mut buf = vec![0u8; MAX_MESSAGE];
        let mut cmsg = nix::cmsg_space!([RawFd; SCM_MAX_FD]);
        let (bytes, flags, fds) = loop {
            let mut iov = [IoSliceMut::new(&mut buf)];
            let r = recvmsg::<()>(
                self.fd.as_raw_fd(),
                &mut iov,
                Some(&mut cmsg),
                MsgFlags::MSG_CMSG_CLOEXEC,
            );
            match r {
                Ok(m) => {
                    // Take ownership of every descriptor first, so that any error below
                    // closes them.
                    let mut fds = Vec::new();
                    let cmsgs = m.cmsgs().map_err(|source| ClientError::Io {
                        op: "reading control data",
                        source,
                    })?;
                    for c in cmsgs {
                        if let ControlMessageOwned::ScmRights(raw) = c {
                            fds.extend(vgpu_os::fd::own_fds(raw));
                        }
                    }
                    break (m.bytes, m.flags, fds);
                }
                Err(Errno::EINTR) => continue,
                Err(Errno::ECONNRESET) => return Err(ClientError::Disconnected),
                Err(source) => {
                    return Err(ClientError::Io {
                        op: "recvmsg on the control socket",
                        source,
                    })
                }
            }
        };
        if bytes == 0 && fds.is_empty() {
            return Err(ClientError::Disconnected);
        }
        if flags.contains(MsgFlags::MSG_TRUNC) {
            return Err(ClientError::Protocol(format!(
                "control message longer than {MAX_MESSAGE} bytes"
            )));
        }
        if flags.contains(MsgFlags::MSG_CTRUNC) {
            return Err(ClientError::Protocol(
                "control message carried too many descriptors".into(),
            ));
        }
        let (seq, msg) = Message::decode(&buf[..bytes], fds.len()).map_err(|e| {
            ClientError::Protocol(format!(
                "malformed control message ({bytes} bytes, {} descriptors): {e}",
                fds.len()
            ))
        })?;
        if msg.kind() == kind::HELLO
            || msg.kind() == kind::WINDOW_ALLOC
            || msg.kind() == kind::WINDOW_FREE
            || msg.kind() == kind::STATUS_QUERY
            || msg.kind() == kind::GOODBYE
        {
            return Err(ClientError::Protocol(format!(
                "the driver sent a client message (kind {})",
                msg.kind()
            )));
        }
        Ok((seq, msg, fds))
    }

    fn wait_readable(&self) -> Result<(), ClientError> {
        let deadline = Instant::now().checked_add(self.timeout);
        loop {
            let left = match deadline {
                Some(d) => d.saturating_duration_since(Instant::now()),
                None => Duration::from_secs(3600),
            };
            if left.is_zero() {
                return Err(ClientError::Timeout {
                    what: "waiting for the vgpu driver's reply",
                    waited: self.timeout,
                });
            }
            let ms = left.as_millis().clamp(1, 60_000) as u16;
            let mut pfd = [PollFd::new(self.fd.as_fd(), PollFlags::POLLIN)];
            match poll(&mut pfd, PollTimeout::from(ms)) {
                Ok(0) => continue,
                Ok(_) => return Ok(()),
                Err(Errno::EINTR) => continue,
                Err(source) => {
                    return Err(ClientError::Io {
                        op: "poll on the control socket",
                        source,
                    })
                }
            }
        }
    }
}
