//! The vnet API from the client's side: the hosted `/dev/vmnetN` model over a socket.
//!
//! ```no_run
//! # fn main() -> std::io::Result<()> {
//! let mut port = vnet_client::Port::open_at("/run/vnet/vmnet1/api.sock")?;
//! port.set_mac("52:54:00:12:34:56".parse().unwrap())?;
//! let mut frame = [0u8; 65536];
//! let n = port.recv(&mut frame)?;          // blocks for one whole frame
//! port.send(&frame[..n])?;                  // one whole frame
//! # Ok(()) }
//! ```
//!
//! Opening connects to `RUN/NET/api.sock` (a unix `SOCK_SEQPACKET` socket): that is a new
//! port on vnet `NET`. Closing (or dropping, or the process dying) removes the port.
#![forbid(unsafe_code)]

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::socket::{
    connect, recv, send, setsockopt, socket, sockopt, AddressFamily, MsgFlags, SockFlag, SockType,
    UnixAddr,
};
use nix::sys::time::TimeVal;
pub use vnet_core::wire::seqpacket::PortInfo;
use vnet_core::wire::seqpacket::{answers, decode_vnet, Request, VnetMessage, KIND_FRAME};
pub use vnet_core::wire::MacAddr;

/// One port on a vnet.
pub struct Port {
    sock: OwnedFd,
    /// Frames that arrived while a request waited for its reply.
    early: VecDeque<Vec<u8>>,
    msg: Vec<u8>,
}

/// `RUN/NET/api.sock` in the local daemon's runtime directory: `$VNET_RUN_DIR` if set,
/// else the rule vnetd and the CLI follow (`vnet_dirs`: `/run/vnet` as root, else
/// `$XDG_RUNTIME_DIR/vnet` or `/run/user/UID/vnet`). Fails (`NotFound`, saying what to
/// set) when none of those exists.
pub fn api_socket(net: &str) -> io::Result<PathBuf> {
    let given = std::env::var_os("VNET_RUN_DIR")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from);
    let run = vnet_dirs::run_dir(given).map_err(|e| io::Error::new(io::ErrorKind::NotFound, e))?;
    Ok(run.join(net).join("api.sock"))
}

impl Port {
    /// Opens a port on vnet `net` of the local daemon.
    pub fn open(net: &str) -> io::Result<Port> {
        Self::open_at(api_socket(net)?)
    }

    /// Opens a port through the API socket at `path`.
    pub fn open_at(path: impl AsRef<Path>) -> io::Result<Port> {
        let sock = socket(
            AddressFamily::Unix,
            SockType::SeqPacket,
            SockFlag::SOCK_CLOEXEC,
            None,
        )?;
        connect(sock.as_raw_fd(), &UnixAddr::new(path.as_ref())?).map_err(|e| {
            io::Error::new(
                io::Error::from(e).kind(),
                format!(
                    "cannot open vnet port at {}: {e} (is vnetd running?)",
                    path.as_ref().display()
                ),
            )
        })?;
        Ok(Port {
            sock,
            early: VecDeque::new(),
            msg: vec![0; 1 + 65536 + 4],
        })
    }

    /// Waits for one whole frame and copies it into `buf`; returns its length. A frame
    /// longer than `buf` is truncated to it (like `read` on the classic device).
    pub fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(frame) = self.early.pop_front() {
            let n = frame.len().min(buf.len());
            buf[..n].copy_from_slice(&frame[..n]);
            return Ok(n);
        }
        loop {
            let n = self.recv_message()?;
            match decode_vnet(&self.msg[..n]) {
                Ok(VnetMessage::Frame(f)) => {
                    let len = f.len().min(buf.len());
                    buf[..len].copy_from_slice(&f[..len]);
                    return Ok(len);
                }
                Ok(VnetMessage::Reply { .. }) | Err(_) => continue,
            }
        }
    }

    /// Sends one whole frame into the vnet.
    pub fn send(&mut self, frame: &[u8]) -> io::Result<()> {
        let mut msg = Vec::with_capacity(1 + frame.len());
        msg.push(KIND_FRAME);
        msg.extend_from_slice(frame);
        send(self.sock.as_raw_fd(), &msg, MsgFlags::MSG_NOSIGNAL)?;
        Ok(())
    }

    /// Declares the port's MAC address: unicast frames for other addresses stop arriving
    /// (unless promiscuous) and this one is known to the switch at once.
    pub fn set_mac(&mut self, mac: MacAddr) -> io::Result<()> {
        self.request(Request::SetMac(mac)).map(|_| ())
    }

    /// Receive every frame of the port's VLAN, whoever it is for.
    pub fn set_promiscuous(&mut self, on: bool) -> io::Result<()> {
        self.request(Request::SetPromiscuous(on)).map(|_| ())
    }

    /// The port's id, declared MAC, VLAN and the vnet's max frame.
    pub fn info(&mut self) -> io::Result<PortInfo> {
        self.request(Request::GetInfo)?.ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidData, "GET_INFO reply without data")
        })
    }

    /// Makes `recv` fail with `WouldBlock`/`TimedOut` after `timeout` (None: wait forever).
    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        let tv = TimeVal::new(
            timeout.map_or(0, |t| t.as_secs() as _),
            timeout.map_or(0, |t| t.subsec_micros() as _),
        );
        setsockopt(&self.sock, sockopt::ReceiveTimeout, &tv)?;
        Ok(())
    }

    /// Closes the port (dropping it does the same).
    pub fn close(self) {}

    fn request(&mut self, req: Request) -> io::Result<Option<PortInfo>> {
        send(self.sock.as_raw_fd(), &req.encode(), MsgFlags::MSG_NOSIGNAL)?;
        loop {
            let n = self.recv_message()?;
            match decode_vnet(&self.msg[..n]) {
                Ok(VnetMessage::Frame(f)) => self.early.push_back(f.to_vec()),
                Ok(VnetMessage::Reply { kind, reply }) if answers(kind, &req) => {
                    return reply.map_err(io::Error::from_raw_os_error);
                }
                Ok(VnetMessage::Reply { .. }) | Err(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "unexpected message from vnetd",
                    ));
                }
            }
        }
    }

    fn recv_message(&mut self) -> io::Result<usize> {
        let n = recv(self.sock.as_raw_fd(), &mut self.msg, MsgFlags::empty())?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "vnetd closed the port",
            ));
        }
        Ok(n)
    }
}

impl AsFd for Port {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }
}

impl AsRawFd for Port {
    fn as_raw_fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }
}
