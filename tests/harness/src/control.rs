//! A client of vgpu-driver that speaks the protocol itself, without the shim libraries:
//! HELLO/WELCOME on the control socket (spec §9), then its queue through [`QueueClient`]
//! with the doorbell and interrupt eventfds the driver handed it.

use crate::queue::QueueClient;
use std::collections::HashMap;
use std::os::fd::{OwnedFd, RawFd};
use std::path::Path;
use std::sync::Arc;
use vgpu_os::shm::SharedMemory;
use vgpu_proto::cmd::{CopyDtoHArgs, CopyHtoDArgs, HandleArgs, MemAllocArgs};
use vgpu_proto::control::{HelloBody, Message, WelcomeBody};
use vgpu_proto::queue::QueueLayout;
use vgpu_proto::{Command, Cqe};

/// A HELLO for a client called `name` with a 256-entry queue and a 4 MiB first window.
pub fn hello_body(name: &str) -> HelloBody {
    let mut h: HelloBody = bytemuck::Zeroable::zeroed();
    h.version = 1;
    h.pid = std::process::id();
    h.queue_depth_log2 = 8;
    h.window_bytes = 4 << 20;
    h.name[..name.len()].copy_from_slice(name.as_bytes());
    h
}

/// A connected client: its control connection, queue and windows.
pub struct DriverClient {
    /// The control connection.
    pub fd: OwnedFd,
    /// What WELCOME granted.
    pub welcome: WelcomeBody,
    /// The queue.
    pub queue: QueueClient,
    /// The queue memfd's mapping.
    pub queue_mem: Arc<SharedMemory>,
    /// Windows by id.
    pub windows: HashMap<u32, SharedMemory>,
    seq: u32,
}

impl DriverClient {
    /// Connects with [`hello_body`]`(name)`.
    pub fn connect(control: &Path, name: &str) -> Result<DriverClient, String> {
        Self::connect_hello(control, hello_body(name))
    }

    /// Connects with `hello`; the refusal as text when the driver refuses.
    pub fn connect_hello(control: &Path, hello: HelloBody) -> Result<DriverClient, String> {
        let fd = vgpu_driver::client::connect(control).map_err(|e| e.to_string())?;
        let (reply, fds) = vgpu_driver::client::request(&fd, &Message::Hello(hello), 1, &[])
            .map_err(|e| e.to_string())?;
        let w = match reply {
            Message::Welcome(w) => *w,
            Message::Error { code, message } => return Err(format!("refused ({code}): {message}")),
            other => return Err(format!("unexpected {:?}", other.kind())),
        };
        let [queue, window, irq, bell]: [OwnedFd; 4] = fds
            .try_into()
            .map_err(|f: Vec<OwnedFd>| format!("WELCOME carried {} descriptors", f.len()))?;
        let map = |fd: OwnedFd| {
            SharedMemory::from_file(std::fs::File::from(fd)).map_err(|e| e.to_string())
        };
        let queue_mem = Arc::new(map(queue)?);
        let layout = QueueLayout::new(w.queue_depth_log2 as u8, 15).ok_or("bad queue depth")?;
        let doorbell = Box::new(move |_tail: u32| {
            // The doorbell eventfd: one write, one doorbell.
            let _ = nix::unistd::write(&bell, &1u64.to_ne_bytes());
        });
        let queue = QueueClient::new(queue_mem.clone(), 0, w.qid, layout, doorbell, Some(irq));
        let mut windows = HashMap::new();
        windows.insert(w.window, map(window)?);
        Ok(DriverClient {
            fd,
            welcome: w,
            queue,
            queue_mem,
            windows,
            seq: 1,
        })
    }

    /// Submits a command on the queue; returns its cid.
    pub fn submit(&mut self, command: Command, stream: u64, inline: &[u8], notify: bool) -> u32 {
        self.queue.submit(command, stream, inline, notify)
    }

    /// Runs a command and waits for its completion.
    pub fn call(&mut self, command: Command, stream: u64, inline: &[u8]) -> Cqe {
        self.queue.call(command, stream, inline)
    }

    /// Sends a control message and returns the reply.
    pub fn control(&mut self, msg: &Message) -> (Message, Vec<OwnedFd>) {
        self.control_with(msg, &[])
    }

    /// Sends a control message with descriptors and returns the reply.
    pub fn control_with(&mut self, msg: &Message, fds: &[RawFd]) -> (Message, Vec<OwnedFd>) {
        self.seq += 1;
        vgpu_driver::client::request(&self.fd, msg, self.seq, fds).expect("control request")
    }

    /// Allocates device memory, fills it from the first window, reads it back into the
    /// window and checks it; frees it again.
    pub fn round_trip(&mut self, len: u64, pattern: u8) -> bool {
        self.round_trip_in(self.welcome.window, len, pattern)
    }

    /// [`round_trip`](Self::round_trip) through window `w` (of at least `2 * len` bytes,
    /// mapped in [`windows`](Self::windows)): written at 0, read back at `len`.
    pub fn round_trip_in(&mut self, w: u32, len: u64, pattern: u8) -> bool {
        use bytemuck::Zeroable;
        let a = self.call(
            Command::MEM_ALLOC(MemAllocArgs {
                size: len,
                ..Zeroable::zeroed()
            }),
            0,
            &[],
        );
        if !a.status().is_ok() {
            return false;
        }
        let data: Vec<u8> = (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(pattern))
            .collect();
        let wrote = self.windows[&w].write_bytes(0, &data).is_ok();
        self.submit(
            Command::MEMCPY_HTOD(CopyHtoDArgs {
                dst: a.result0,
                len,
                src_window: w,
                rsv0: 0,
                src_offset: 0,
            }),
            0,
            &[],
            false,
        );
        self.submit(
            Command::MEMCPY_DTOH(CopyDtoHArgs {
                src: a.result0,
                len,
                dst_window: w,
                rsv0: 0,
                dst_offset: len,
            }),
            0,
            &[],
            false,
        );
        let s = self.call(Command::STREAM_SYNCHRONIZE(Zeroable::zeroed()), 0, &[]);
        let mut back = vec![0u8; len as usize];
        let read = self.windows[&w].read_bytes(len as usize, &mut back).is_ok();
        self.call(
            Command::MEM_FREE(HandleArgs {
                handle: a.result0,
                ..Zeroable::zeroed()
            }),
            0,
            &[],
        );
        wrote && read && s.status().is_ok() && back == data
    }
}
