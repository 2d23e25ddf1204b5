//! QEMU `-netdev dgram` over unix datagrams: every peer address that sends to
//! `RUN/NET/dgram.sock` is one port. All peers share the vnet's one socket, so the
//! vnet reads it (`recvmmsg`) and delivers each datagram to its peer's port (into its
//! `backend::inbox`), whose `recv` hands it to the switch.
//!
//! A datagram socket never reports a peer leaving: a peer is gone when sending to it
//! fails with `ECONNREFUSED` (its socket closed; the pinned inode outlives its path, so
//! a peer that binds the path anew gets a new port once the old one failed).
//!
//! Permissions: vnetd (often root) sends each peer's frames to the address it sent
//! from, so a peer must not choose where they go. Its address must be an absolute path
//! (unbound and relative senders get no port) naming a socket owned by the sending uid
//! (`SO_PASSCRED`), unless that uid is 0, as for VDE clients. The socket is checked and
//! pinned once, as the port is made (`O_PATH|O_NOFOLLOW`), and every frame goes to that
//! very inode (`/proc/self/fd/N`): replacing the path afterwards (with a symlink to
//! another user's socket, say) changes nothing.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use mio::net::UnixDatagram;
use vnet_model::PortKind;

use super::inbox::Inbox;
use super::{send_error, Backend, Received, Sent, TX_BATCH};
use crate::frame::FrameBuf;
use crate::sys::mmsg::SendBatch;

pub struct DgramPort {
    sock: Rc<UnixDatagram>,
    inbox: Inbox,
    peer: PathBuf,
    /// The uid that sent the first datagram (and owns the socket, unless it is 0).
    uid: u32,
    /// The peer's socket as checked: an `O_PATH` fd that frames are sent through.
    _pinned: File,
    /// `sendmmsg` headers addressed to `/proc/self/fd/N` of `_pinned`.
    batch: Box<SendBatch<TX_BATCH>>,
}

/// Why a dgram sender gets no port.
#[derive(Debug, thiserror::Error)]
pub enum DgramPeerError {
    #[error("an unbound (or abstract) socket has no path to answer")]
    Unbound,
    #[error("no sender credentials (SCM_CREDENTIALS)")]
    NoCredentials,
    #[error("{} is not an absolute path", .0.display())]
    Relative(PathBuf),
    #[error("cannot open {}", .0.display())]
    Open(PathBuf, #[source] io::Error),
    #[error("cannot stat {}", .0.display())]
    Stat(PathBuf, #[source] io::Error),
    #[error("{} is not a socket (a symlink, say)", .0.display())]
    NotASocket(PathBuf),
    #[error("{} belongs to uid {owner}, not to the sending uid {uid}", .path.display())]
    Foreign { path: PathBuf, owner: u32, uid: u32 },
    #[error("cannot address the pinned socket {}", .0.display())]
    Address(PathBuf, #[source] io::Error),
    #[error("the switch has no port for it")]
    NoPort,
}

impl DgramPeerError {
    /// The sender's path, when it has one.
    pub fn path(&self) -> Option<&Path> {
        match self {
            DgramPeerError::Unbound | DgramPeerError::NoCredentials | DgramPeerError::NoPort => {
                None
            }
            DgramPeerError::Relative(p)
            | DgramPeerError::Open(p, _)
            | DgramPeerError::Stat(p, _)
            | DgramPeerError::NotASocket(p)
            | DgramPeerError::Address(p, _)
            | DgramPeerError::Foreign { path: p, .. } => Some(p),
        }
    }
}

/// May a datagram from `uid` make the vnet send frames to a socket owned by `owner`?
/// Only its own, unless the sender is root.
pub fn may_send_to(uid: u32, owner: u32) -> bool {
    uid == 0 || uid == owner
}

impl DgramPort {
    /// A port for the peer bound at `peer` whose first datagram came from `uid`:
    /// checks that `peer` is an absolute path naming a socket (not a symlink) that
    /// `uid` may have frames sent to ([`may_send_to`]), and pins it.
    pub fn new(sock: Rc<UnixDatagram>, peer: PathBuf, uid: u32) -> Result<Self, DgramPeerError> {
        if !peer.is_absolute() {
            return Err(DgramPeerError::Relative(peer));
        }
        let pinned = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&peer)
            .map_err(|e| DgramPeerError::Open(peer.clone(), e))?;
        let meta = pinned
            .metadata()
            .map_err(|e| DgramPeerError::Stat(peer.clone(), e))?;
        if !meta.file_type().is_socket() {
            return Err(DgramPeerError::NotASocket(peer));
        }
        if !may_send_to(uid, meta.uid()) {
            return Err(DgramPeerError::Foreign {
                owner: meta.uid(),
                path: peer,
                uid,
            });
        }
        let through = PathBuf::from(format!("/proc/self/fd/{}", pinned.as_raw_fd()));
        let batch =
            SendBatch::new(Some(&through)).map_err(|e| DgramPeerError::Address(peer.clone(), e))?;
        Ok(DgramPort {
            sock,
            inbox: Inbox::default(),
            peer,
            uid,
            _pinned: pinned,
            batch,
        })
    }

    /// The uid whose datagrams this port takes.
    pub fn uid(&self) -> u32 {
        self.uid
    }

    pub fn peer(&self) -> &PathBuf {
        &self.peer
    }
}

impl Backend for DgramPort {
    fn kind(&self) -> PortKind {
        PortKind::Dgram
    }

    fn description(&self) -> String {
        format!("dgram {} (uid {})", self.peer.display(), self.uid)
    }

    fn source(&mut self) -> Option<&mut dyn mio::event::Source> {
        None
    }

    fn recv(&mut self, buf: &mut FrameBuf) -> Received {
        self.inbox.recv(buf)
    }

    fn deliver(&mut self, frame: FrameBuf) -> Result<Option<FrameBuf>, FrameBuf> {
        self.inbox.deliver(frame)
    }

    fn send_batch(&mut self, frames: &[FrameBuf]) -> (usize, Sent) {
        let (sent, result) = self
            .batch
            .send(self.sock.as_fd(), frames.iter().map(FrameBuf::frame));
        let outcome = match result {
            Ok(()) => Sent::Done,
            Err(e) if matches!(e.raw_os_error(), Some(libc::ECONNREFUSED | libc::ENOENT)) => {
                Sent::Closed(format!("peer {} is gone ({e})", self.peer.display()))
            }
            Err(e) => send_error(e),
        };
        (sent, outcome)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::BufPool;

    #[test]
    fn a_sender_may_have_frames_sent_to_its_own_sockets_only_unless_root() {
        assert!(may_send_to(1000, 1000));
        assert!(!may_send_to(1000, 0));
        assert!(!may_send_to(1000, 1001));
        assert!(may_send_to(0, 0));
        assert!(may_send_to(0, 1000));
    }

    #[test]
    fn relative_paths_symlinks_and_foreign_sockets_get_no_port() {
        let dir = std::env::temp_dir().join(format!("vnet-dgram-refuse-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let sock = Rc::new(UnixDatagram::unbound().unwrap());
        let _victim = std::os::unix::net::UnixDatagram::bind(dir.join("victim")).unwrap();
        std::os::unix::fs::symlink(dir.join("victim"), dir.join("link")).unwrap();
        std::fs::write(dir.join("file"), b"").unwrap();
        let me = nix::unistd::getuid().as_raw();
        let new = |p: PathBuf, uid| DgramPort::new(Rc::clone(&sock), p, uid).map(|_| ());
        assert!(matches!(
            new("victim".into(), me),
            Err(DgramPeerError::Relative(_))
        ));
        assert!(matches!(
            new(dir.join("link"), me),
            Err(DgramPeerError::NotASocket(_))
        ));
        assert!(matches!(
            new(dir.join("file"), me),
            Err(DgramPeerError::NotASocket(_))
        ));
        assert!(matches!(
            new(dir.join("none"), me),
            Err(DgramPeerError::Open(..))
        ));
        let other = me.wrapping_add(1).max(1);
        assert!(matches!(
            new(dir.join("victim"), other),
            Err(DgramPeerError::Foreign { .. })
        ));
        new(dir.join("victim"), me).unwrap();
        if me == 0 {
            // Root may have frames sent to anyone's socket; others only to their own.
            std::os::unix::fs::chown(dir.join("victim"), Some(64981), None).unwrap();
            new(dir.join("victim"), 0).unwrap();
            new(dir.join("victim"), 64981).unwrap();
            assert!(matches!(
                new(dir.join("victim"), 64980),
                Err(DgramPeerError::Foreign {
                    owner: 64981,
                    uid: 64980,
                    ..
                })
            ));
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_port_keeps_sending_to_the_socket_it_checked() {
        let dir = std::env::temp_dir().join(format!("vnet-dgram-pin-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let peer = std::os::unix::net::UnixDatagram::bind(dir.join("peer")).unwrap();
        let other = std::os::unix::net::UnixDatagram::bind(dir.join("other")).unwrap();
        let sock = Rc::new(UnixDatagram::unbound().unwrap());
        let me = nix::unistd::getuid().as_raw();
        let mut port = DgramPort::new(sock, dir.join("peer"), me).unwrap();
        std::fs::remove_file(dir.join("peer")).unwrap();
        std::os::unix::fs::symlink(dir.join("other"), dir.join("peer")).unwrap();
        let mut pool = BufPool::new(1514);
        let mut b = pool.get();
        b.fill(&[7; 60]);
        assert_eq!(port.send_batch(&[b]), (1, Sent::Done));
        peer.set_nonblocking(true).unwrap();
        other.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 100];
        assert_eq!(peer.recv(&mut buf).unwrap(), 60, "the pinned socket");
        assert!(
            other.recv(&mut buf).is_err(),
            "nothing through the swapped path"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_batch_reaches_the_peer_in_order_and_a_gone_peer_closes_the_port() {
        let dir = std::env::temp_dir().join(format!("vnet-dgram-port-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let peer = std::os::unix::net::UnixDatagram::bind(dir.join("peer")).unwrap();
        let sock = Rc::new(UnixDatagram::unbound().unwrap());
        let me = nix::unistd::getuid().as_raw();
        let mut port = DgramPort::new(sock, dir.join("peer"), me).unwrap();
        let mut pool = BufPool::new(1514);
        let frames: Vec<FrameBuf> = (0..3u8)
            .map(|i| {
                let mut b = pool.get();
                b.fill(&[i; 60]);
                b
            })
            .collect();
        assert_eq!(port.send_batch(&frames), (3, Sent::Done));
        let mut buf = [0u8; 100];
        for i in 0..3 {
            assert_eq!(peer.recv(&mut buf).unwrap(), 60);
            assert_eq!(buf[0], i);
        }

        drop(peer);
        assert!(matches!(port.send_batch(&frames), (0, Sent::Closed(_))));
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(
            matches!(port.send_batch(&frames[..1]), (0, Sent::Closed(_))),
            "path removed"
        );
    }
}
