//! A minimal control-plane client: enough for `vgpu-driver status` and for tests that speak
//! the protocol directly. The shims' full client lives in the `vgpu-shim` crate.

use crate::server::send;
use nix::sys::socket::{self, ControlMessageOwned, MsgFlags, UnixAddr};
use std::io::IoSliceMut;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::Path;
use vgpu_os::fd::own_fds;
use vgpu_proto::control::{Message, MAX_FDS, MAX_MESSAGE};

/// Connects to the control socket.
pub fn connect(path: &Path) -> std::io::Result<OwnedFd> {
    let fd = socket::socket(
        socket::AddressFamily::Unix,
        socket::SockType::SeqPacket,
        socket::SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(std::io::Error::from)?;
    socket::connect(
        fd.as_raw_fd(),
        &UnixAddr::new(path).map_err(std::io::Error::from)?,
    )
    .map_err(std::io::Error::from)?;
    Ok(fd)
}

/// Sends `msg` (with `fds`) and waits for the reply and its descriptors.
pub fn request(
    fd: &OwnedFd,
    msg: &Message,
    seq: u32,
    fds: &[RawFd],
) -> std::io::Result<(Message, Vec<OwnedFd>)> {
    send(fd.as_raw_fd(), msg, seq, fds)?;
    receive(fd)
}

/// Receives one message.
pub fn receive(fd: &OwnedFd) -> std::io::Result<(Message, Vec<OwnedFd>)> {
    let mut buf = vec![0u8; MAX_MESSAGE];
    let mut cmsg = nix::cmsg_space!([RawFd; MAX_FDS]);
    let mut iov = [IoSliceMut::new(&mut buf)];
    let msg = socket::recvmsg::<()>(
        fd.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(std::io::Error::from)?;
    let mut fds = Vec::new();
    for c in msg.cmsgs().map_err(std::io::Error::from)? {
        if let ControlMessageOwned::ScmRights(raw) = c {
            fds.extend(own_fds(raw));
        }
    }
    let n = msg.bytes;
    if n == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "the driver closed the connection",
        ));
    }
    let (_, m) = Message::decode(&buf[..n], fds.len())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))?;
    Ok((m, fds))
}

/// The driver's status JSON.
pub fn status(path: &Path) -> std::io::Result<String> {
    let fd = connect(path)?;
    match request(&fd, &Message::StatusQuery, 1, &[])?.0 {
        Message::StatusReply(s) => Ok(s),
        Message::Error { message, .. } => Err(std::io::Error::other(message)),
        other => Err(std::io::Error::other(format!(
            "unexpected reply {:?}",
            other.kind()
        ))),
    }
}
