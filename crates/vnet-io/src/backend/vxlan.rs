//! VXLAN uplinks: a vnet as one VXLAN segment (RFC 7348) across hosts, over UDP.
//!
//! # Theory of operation
//!
//! One [`TunnelSocket`] per local address and port and data-plane thread, shared by
//! every vnet on it, as a NIC's AF_PACKET socket is shared by the vnets on its VLANs:
//! the thread reads it in batches (`recvmmsg`), checks each datagram's header, and
//! hands the inner frame to the [`VxlanPort`] of the vnet whose VNI it carries, whose
//! `recv` gives it to the switch. What cannot be taken is dropped and counted on the
//! socket by cause (`short`, `flags`, `unknown_vni`, `unknown_remote`, `oversize`),
//! or per remote once its sender is known.
//!
//! Each vnet's [`Tunnel`] holds its forwarding database ([`vnet_core::fdb`]): the
//! remotes, which MAC lives behind which VTEP (learned from the inner source of what
//! arrives, aging like the switch's table, or pinned), and the per-remote counters.
//! Leaving, a frame for a known MAC goes to its VTEP; broadcast, multicast and unknown
//! unicast go to every remote (head-end replication) or to the multicast group. Frames
//! leave in batches (`sendmmsg`), the 8-byte header gathered in front of the frame,
//! which is never copied.
//!
//! Bulk TCP is where the system calls went (issue 17: a tenth of the kernel's
//! throughput), so both ends use the kernel's UDP offloads where it has them (Linux 5.0):
//!
//! - **Sending** a GSO super-frame (a VM's 64 KiB TSO frame), the port cuts it into
//!   segments laid out back to back in its scratch buffer, each behind its own VXLAN
//!   header, and hands the lot to the kernel as one message with `UDP_SEGMENT`: one
//!   system call and one trip down the stack for up to [`TRAIN_SEGMENTS`] datagrams,
//!   which the kernel (or the NIC) cuts at the last moment.
//! - **Receiving**, the socket has `UDP_GRO`: the kernel hands over a train of one
//!   sender's same-size datagrams as one message (a `UDP_SEGMENT` train stays whole from
//!   the sender's socket to ours). The reader splits it into datagrams and merges the
//!   inner TCP segments of one flow back into a super-frame ([`vnet_core::wire::gro`]):
//!   one pass through the switch and one TAP write instead of forty, and a port that
//!   takes offloads gets the super-frame whole.
//!
//! ECMP entropy: the outer UDP source port follows the inner flow (RFC 7348 §5). A UDP
//! socket sends from the port it is bound to, and picking any port per datagram would
//! take a raw socket (and `CAP_NET_RAW`); so each tunnel socket sends from
//! [`SOURCE_SOCKETS`] sockets bound to ports of the range, and the flow's hash picks
//! one: one flow keeps one port, flows spread over 16. No privilege is needed.
//!
//! Never fragmented: the vnet's MTU plus the outer headers (50 bytes over IPv4, 70
//! over IPv6) must fit the MTU of the interface that holds the local address, or the
//! uplink is refused. The port takes offloads: a GSO super-frame from a TAP or
//! vhost-user port waits in the egress queue as one entry and is segmented (and
//! partial checksums completed) into the port's scratch buffer as it is encapsulated,
//! so the queue's bound counts what the VM sent, not forty times that.

use std::cell::{Cell, RefCell};
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsFd;
use std::rc::Rc;
use std::time::{Duration, Instant};

use tracing::warn;
use vnet_core::fdb::{Destination, Fdb, Refusal};
use vnet_core::switch::{DropCause, PortId};
use vnet_core::wire::offload::{self, OffloadError, Segmenter, VirtioNetHdr};
use vnet_core::wire::vxlan::{self, flow_entropy};
use vnet_core::wire::MacAddr;
use vnet_model::{PortKind, RemoteInfo, VxlanInfo, VxlanSpec};

use super::inbox::Inbox;
use super::uplink::{Incoming, Polled, SharedSocket};
use super::{Backend, Received, Sent};
use crate::frame::FrameBuf;
use crate::sys::udp::{self, Outgoing, RecvBatch, SendBatch};
use vnet_core::wire::gro::Coalescer;

/// Sockets each tunnel socket sends from, one per outer source port.
pub const SOURCE_SOCKETS: usize = 16;
/// Datagrams one `recvmmsg` takes.
const RECV_BATCH: usize = 8;
/// Messages one `sendmmsg` sends (32 frames, some to several remotes).
const SEND_BATCH: usize = 64;
/// Most datagrams one `UDP_SEGMENT` message carries (the kernel's `UDP_MAX_SEGMENTS`
/// was 64 until Linux 6.10).
pub const TRAIN_SEGMENTS: usize = 64;
/// Most bytes one `UDP_SEGMENT` message carries: its datagrams must fit one IP packet's
/// 16-bit length, headers included, over IPv4 and IPv6.
const TRAIN_BYTES: usize = 65000;
// A train refused by the kernel is sent one datagram per slot of one `sendmmsg`.
const _: () = assert!(TRAIN_SEGMENTS <= SEND_BATCH);

/// Why a VXLAN uplink or a change to it was refused.
#[derive(Debug, thiserror::Error)]
pub enum VxlanError {
    #[error(
        "the vnet's MTU {mtu} + {overhead} bytes of VXLAN headers is {} but {interface} (holding {local}) has MTU {underlay}: lower the vnet's MTU to {} or raise the underlay's",
        .mtu + .overhead, .underlay.saturating_sub(*.overhead)
    )]
    Mtu {
        mtu: u32,
        overhead: u32,
        underlay: u32,
        interface: String,
        local: IpAddr,
    },
    #[error("no interface of this host has the address {0}: \"local\" must be one of its own")]
    NotLocal(IpAddr),
    #[error("cannot find the interface holding the local address")]
    Interfaces(#[source] crate::sys::netif::NetifError),
    #[error("cannot open the VXLAN socket on {addr}")]
    Open {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("cannot join multicast group {group}")]
    Join {
        group: IpAddr,
        #[source]
        source: io::Error,
    },
    #[error("VNI {vni} on {addr} is vnet {vnet:?}'s already")]
    VniTaken {
        vni: u32,
        addr: SocketAddr,
        vnet: String,
    },
    #[error(
        "the VXLAN socket {addr} is on the data-plane thread of vnet {vnet:?}, and this vnet runs on another: give it the uplink when it is created (in the config, or in `POST /v1/networks`) so that it is placed with {vnet:?}"
    )]
    OtherThread { addr: SocketAddr, vnet: String },
    #[error("vnet {0:?} has no VXLAN uplink (set one with `vnet uplink set {0} --vxlan VNI ...`)")]
    NotVxlan(String),
    #[error("vnet {vnet:?} has no remote {remote} (see `vnet port ls {vnet}`)")]
    NoRemote { vnet: String, remote: IpAddr },
    #[error("remote {0} is not of the family of the tunnel's local address")]
    Family(IpAddr),
    #[error("vnet {vnet:?} has no forwarding entry for {mac} (see `vnet fdb ls {vnet}`)")]
    NoEntry { vnet: String, mac: MacAddr },
    #[error(transparent)]
    Pin(#[from] vnet_core::fdb::PinError),
}

/// Datagrams a tunnel socket dropped before any vnet took them, by cause.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocketDrop {
    /// Shorter than the VXLAN header.
    Short,
    /// The I flag missing, or another flag set.
    Flags,
    /// No vnet on this socket has the VNI.
    UnknownVni,
    /// From an address that is not a remote of the VNI's tunnel.
    UnknownRemote,
    /// Longer than the receive buffer.
    Oversize,
}

impl SocketDrop {
    pub const ALL: [SocketDrop; 5] = [
        SocketDrop::Short,
        SocketDrop::Flags,
        SocketDrop::UnknownVni,
        SocketDrop::UnknownRemote,
        SocketDrop::Oversize,
    ];

    pub fn name(self) -> &'static str {
        match self {
            SocketDrop::Short => "short",
            SocketDrop::Flags => "flags",
            SocketDrop::UnknownVni => "unknown_vni",
            SocketDrop::UnknownRemote => "unknown_remote",
            SocketDrop::Oversize => "oversize",
        }
    }
}

/// The UDP sockets of one local address and port: one to receive (and to send
/// flooded and multicast frames), [`SOURCE_SOCKETS`] to send from, and the drop counts
/// the vnets on it share.
pub struct Sockets {
    pub local: SocketAddr,
    pub rx: UdpSocket,
    tx: Vec<UdpSocket>,
    drops: [Cell<u64>; SocketDrop::ALL.len()],
    /// Whether GSO super-frames leave as `UDP_SEGMENT` trains: where the kernel takes
    /// the option, until a train is refused.
    trains: Cell<bool>,
}

impl Sockets {
    fn count(&self, cause: SocketDrop) {
        let c = &self.drops[cause as usize];
        c.set(c.get() + 1);
    }

    /// Binds `local` and the send sockets on ports of `range` (inclusive).
    fn open(local: SocketAddr, range: [u16; 2]) -> io::Result<Sockets> {
        let rx = UdpSocket::bind(local)?;
        rx.set_nonblocking(true)?;
        size_buffer(&rx, libc::SO_RCVBUF, libc::SO_RCVBUFFORCE);
        receive_trains(&rx);
        let mut tx = Vec::with_capacity(SOURCE_SOCKETS);
        let span = u32::from(range[1] - range[0]) + 1;
        let mut candidate = 0u32;
        while tx.len() < SOURCE_SOCKETS && candidate < span {
            // Spread over the range; skip ports in use.
            let step = (span / SOURCE_SOCKETS as u32).max(1);
            let at = (tx.len() as u32 * step + candidate % step.max(1)) % span;
            candidate += 1;
            let port = range[0] + at as u16;
            if let Ok(s) = UdpSocket::bind(SocketAddr::new(local.ip(), port)) {
                s.set_nonblocking(true)?;
                size_buffer(&s, libc::SO_SNDBUF, libc::SO_SNDBUFFORCE);
                tx.push(s);
                candidate = 0;
            }
        }
        if tx.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("every source port {}-{} is in use", range[0], range[1]),
            ));
        }
        let trains = udp::segmentation_works(tx[0].as_fd());
        Ok(Sockets {
            local,
            rx,
            tx,
            drops: Default::default(),
            trains: Cell::new(trains),
        })
    }
}

/// Turns `UDP_GRO` on for a receiving socket. Best effort: without it (before Linux
/// 5.0) every datagram comes on its own, as it always did.
fn receive_trains(sock: &UdpSocket) {
    if let Err(e) = udp::enable_gro(sock.as_fd()) {
        tracing::debug!("VXLAN socket without UDP_GRO: {e}");
    }
}

/// What a tunnel socket's buffer should hold: a burst of a few thousand full-size
/// datagrams. The default (`net.core.rmem_default`, ~200 KiB) holds about a hundred:
/// one TSO super-frame from a VM is 45, and a receiver that falls that far behind
/// drops datagrams (`RcvbufErrors`), which TCP inside pays for dearly.
const BUFFER_BYTES: libc::c_int = 8 << 20;

/// Sizes `sock`'s buffer `option` to [`BUFFER_BYTES`]: with `force` past the
/// system's maximum where vnetd holds `CAP_NET_ADMIN` now, else as far as the maximum
/// (`net.core.rmem_max`, `wmem_max`) lets an ordinary process. Best effort: a smaller
/// buffer only drops sooner.
fn size_buffer(sock: &UdpSocket, option: libc::c_int, force: libc::c_int) {
    let fd = sock.as_fd();
    let set = |name| crate::sys::sockopt::set(fd, libc::SOL_SOCKET, name, &BUFFER_BYTES);
    if set(force).is_err() {
        let _ = set(option);
    }
}

/// A vnet's VXLAN segment: its VNI, its forwarding database and remotes.
pub struct Tunnel {
    pub vni: u32,
    pub fdb: Fdb,
    pub group: Option<IpAddr>,
    /// The UDP port datagrams go to.
    pub port: u16,
}

impl Tunnel {
    /// The tunnel `spec` describes; learned entries age after `aging`, at most `max`.
    pub fn new(
        spec: &VxlanSpec,
        aging: Duration,
        max: usize,
        now: Instant,
    ) -> Result<Self, VxlanError> {
        let mut fdb = Fdb::new(aging, max, spec.group.is_some());
        for r in &spec.remotes {
            fdb.add_remote(*r);
        }
        for f in &spec.fdb {
            fdb.pin(now, f.mac, f.remote)?;
        }
        Ok(Tunnel {
            vni: spec.vni,
            fdb,
            group: spec.group,
            port: spec.port,
        })
    }
}

/// A vnet's share of a [`TunnelSocket`].
pub struct Member {
    pub net: usize,
    pub port: PortId,
    pub tunnel: Rc<RefCell<Tunnel>>,
    /// The vnet's largest untagged frame: longer inner segments are never merged.
    pub max_frame: usize,
}

/// One local address and port's sockets and the vnets on them.
pub struct TunnelSocket {
    pub sockets: Rc<Sockets>,
    pub members: Vec<Member>,
    /// Multicast sockets of members on a group (bound to it), read like `sockets.rx`.
    pub groups: Vec<(IpAddr, UdpSocket)>,
    /// The receive socket's poll token, once watched.
    pub token: Option<mio::Token>,
    batch: Box<RecvBatch<RECV_BATCH>>,
    /// The batch's messages: `count`, and the next datagram not handed out yet.
    count: usize,
    cursor: Cursor,
    failed: bool,
    /// Where a train's TCP segments are merged back into super-frames.
    gro: Coalescer,
}

/// A datagram's place in a receive batch: message `msg` (a datagram or a `UDP_GRO`
/// train), byte `at` of it.
#[derive(Debug, Clone, Copy, Default)]
struct Cursor {
    msg: usize,
    at: usize,
}

/// The datagram at `c` among the first `count` messages of `batch` (its message and
/// byte range), and the cursor after it; `None` past the last.
fn datagram_at<const N: usize>(
    batch: &RecvBatch<N>,
    count: usize,
    mut c: Cursor,
) -> Option<(usize, std::ops::Range<usize>, Cursor)> {
    while c.msg < count {
        let len = batch.datagram(c.msg).0.len();
        // An empty datagram is one too (a short one, counted as such).
        if c.at < len || (len == 0 && c.at == 0) {
            let size = batch.segment_size(c.msg).unwrap_or(len);
            let range = c.at..(c.at + size).min(len);
            let after = Cursor {
                msg: c.msg,
                at: range.end.max(c.at + 1),
            };
            return Some((c.msg, range, after));
        }
        c = Cursor {
            msg: c.msg + 1,
            at: 0,
        };
    }
    None
}

impl SharedSocket for TunnelSocket {
    fn next_frame(&mut self, now: Instant) -> Polled<'_> {
        self.poll(now)
    }
}

impl TunnelSocket {
    /// Opens the sockets of `local` (sending from ports of `source_ports`).
    pub fn open(local: SocketAddr, source_ports: [u16; 2]) -> Result<Self, VxlanError> {
        let sockets = Sockets::open(local, source_ports).map_err(|source| VxlanError::Open {
            addr: local,
            source,
        })?;
        Ok(TunnelSocket {
            sockets: Rc::new(sockets),
            members: Vec::new(),
            groups: Vec::new(),
            token: None,
            batch: RecvBatch::new(),
            count: 0,
            cursor: Cursor::default(),
            failed: false,
            gro: Coalescer::default(),
        })
    }

    /// Reads the next datagram and decides which vnet takes its frame, learning its
    /// inner source behind its sender; merges the TCP segments that follow it from the
    /// same sender into one super-frame.
    pub fn poll(&mut self, now: Instant) -> Polled<'_> {
        if datagram_at(&self.batch, self.count, self.cursor).is_none() {
            let rx = std::iter::once(&self.sockets.rx).chain(self.groups.iter().map(|(_, g)| g));
            let mut result = Err(io::ErrorKind::WouldBlock.into());
            for sock in rx {
                result = self.batch.recv(sock.as_fd());
                if !matches!(&result, Err(e) if e.kind() == io::ErrorKind::WouldBlock) {
                    break;
                }
            }
            match result {
                Ok(n) => {
                    self.failed = false;
                    (self.count, self.cursor) = (n, Cursor::default());
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Polled::WouldBlock,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => return Polled::Skipped,
                Err(e) => {
                    if !self.failed {
                        self.failed = true;
                        warn!(local = %self.sockets.local, "VXLAN socket: {e}");
                    }
                    return Polled::WouldBlock;
                }
            }
        }
        let Some((i, range, after)) = datagram_at(&self.batch, self.count, self.cursor) else {
            return Polled::Skipped;
        };
        self.cursor = after;
        let Some(from) = self.batch.sender(i).map(|a| a.ip()) else {
            return Polled::Skipped;
        };
        let (message, truncated) = self.batch.datagram(i);
        let datagram = &message[range.clone()];
        let cause = match vxlan::Packet::new_checked(datagram) {
            _ if truncated => SocketDrop::Oversize,
            Err(_) => SocketDrop::Short,
            Ok(p) => match vxlan::Repr::parse(&p) {
                Err(_) => SocketDrop::Flags,
                Ok(repr) => match self
                    .members
                    .iter()
                    .position(|m| m.tunnel.borrow().vni == repr.vni)
                {
                    None => SocketDrop::UnknownVni,
                    Some(member) => {
                        let inner = p.inner();
                        let m = &self.members[member];
                        let mut t = m.tunnel.borrow_mut();
                        match t.fdb.hear(from, inner.len()) {
                            Err(Refusal::UnknownRemote) => SocketDrop::UnknownRemote,
                            Ok(()) => {
                                if let Some(src) = inner.get(6..12) {
                                    let src = MacAddr(src.try_into().expect("6 bytes"));
                                    t.fdb.learn(now, src, from);
                                }
                                let (net, port) = (m.net, m.port);
                                drop(t);
                                let inner = range.start + vxlan::HEADER_LEN..range.end;
                                // Runts and oversize frames are the switch's to judge
                                // and count, as for any port.
                                let (frame, offload) =
                                    match self.coalesce(i, inner.clone(), member, from) {
                                        Some(offload) => (self.gro.super_frame(), offload),
                                        None => (
                                            &self.batch.datagram(i).0[inner],
                                            VirtioNetHdr::default(),
                                        ),
                                    };
                                return Polled::Frame(Incoming {
                                    net,
                                    port,
                                    frame,
                                    strip: false,
                                    offload,
                                });
                            }
                        }
                    }
                },
            },
        };
        self.sockets.count(cause);
        for m in &self.members {
            m.tunnel.borrow_mut().fdb.count_drop(from);
        }
        Polled::Skipped
    }

    /// Merges into one super-frame the inner TCP segment at `inner` of message `i` and
    /// the segments of the same flow that follow it in the batch: datagrams from the
    /// same sender with the same VXLAN header, counted on `member`'s remote as they are
    /// taken. `None` (nothing taken) unless at least one followed.
    fn coalesce(
        &mut self,
        i: usize,
        inner: std::ops::Range<usize>,
        member: usize,
        from: IpAddr,
    ) -> Option<VirtioNetHdr> {
        let first = &self.batch.datagram(i).0[inner.start - vxlan::HEADER_LEN..inner.end];
        let (header, first) = first.split_at(vxlan::HEADER_LEN);
        let sender = self.batch.sender(i);
        let mut started = false;
        while let Some((j, range, after)) = datagram_at(&self.batch, self.count, self.cursor) {
            let (message, truncated) = self.batch.datagram(j);
            let next = &message[range];
            if truncated
                || self.batch.sender(j) != sender
                || next.get(..vxlan::HEADER_LEN) != Some(header)
            {
                break;
            }
            let max_frame = self.members[member].max_frame;
            if !started && !self.gro.start(first, max_frame) {
                return None;
            }
            started = true;
            let inner = &next[vxlan::HEADER_LEN..];
            if !self.gro.append(inner) {
                break;
            }
            self.cursor = after;
            let _ = self.members[member]
                .tunnel
                .borrow_mut()
                .fdb
                .hear(from, inner.len());
        }
        if !started {
            return None;
        }
        self.gro.finish()
    }
}

/// A socket that receives multicast `group` on the tunnel's port, joined on the
/// interface holding the tunnel's local address; and the tunnel's send sockets set to
/// send the group's copies from there, without looping them back.
pub fn join_group(
    sockets: &Sockets,
    vx: &VxlanSpec,
    group: IpAddr,
) -> Result<UdpSocket, VxlanError> {
    let join = |source| VxlanError::Join { group, source };
    let sock = UdpSocket::bind(SocketAddr::new(group, vx.port)).map_err(join)?;
    sock.set_nonblocking(true).map_err(join)?;
    receive_trains(&sock);
    match (group, vx.local) {
        (IpAddr::V4(g), IpAddr::V4(local)) => {
            sock.join_multicast_v4(&g, &local).map_err(join)?;
            for tx in &sockets.tx {
                tx.set_multicast_loop_v4(false).map_err(join)?;
                crate::sys::sockopt::set_multicast_if_v4(tx.as_fd(), local).map_err(join)?;
            }
        }
        (IpAddr::V6(g), local) => {
            let (ifname, _) = crate::sys::netif::holder_of(local)
                .map_err(VxlanError::Interfaces)?
                .ok_or(VxlanError::NotLocal(local))?;
            let index =
                nix::net::if_::if_nametoindex(ifname.as_str()).map_err(|e| join(e.into()))?;
            sock.join_multicast_v6(&g, index).map_err(join)?;
            for tx in &sockets.tx {
                tx.set_multicast_loop_v6(false).map_err(join)?;
                crate::sys::sockopt::set(
                    tx.as_fd(),
                    libc::IPPROTO_IPV6,
                    libc::IPV6_MULTICAST_IF,
                    &(index as libc::c_int),
                )
                .map_err(join)?;
            }
        }
        (_, local) => return Err(VxlanError::Family(local)),
    }
    Ok(sock)
}

/// A vnet's port on its VXLAN tunnel: sends frames to the remotes.
pub struct VxlanPort {
    sockets: Rc<Sockets>,
    tunnel: Rc<RefCell<Tunnel>>,
    inbox: Inbox,
    header: [u8; vxlan::HEADER_LEN],
    batch: Box<SendBatch<SEND_BATCH>>,
    /// The datagrams of the frames being sent, as [`Piece`]s (reused: no allocation
    /// per batch once grown).
    pieces: Vec<Piece>,
    /// Segments of GSO frames and copies with their checksums completed.
    scratch: Vec<u8>,
    /// One frame's destinations (reused).
    dsts: Vec<IpAddr>,
    description: String,
}

/// One message to send: for frame `frame` of the batch, from source socket `sock`, to
/// `to`, carrying the frame itself or bytes `scratch[range]` behind the VXLAN header;
/// or, with a `train` size, datagrams of that size laid out in `scratch[range]`, each
/// with its header, for the kernel to cut (`UDP_SEGMENT`).
#[derive(Debug, Clone)]
struct Piece {
    frame: usize,
    sock: usize,
    to: SocketAddr,
    bytes: Option<std::ops::Range<usize>>,
    train: u16,
}

impl VxlanPort {
    pub fn new(shared: &TunnelSocket, tunnel: Rc<RefCell<Tunnel>>) -> Self {
        let (vni, group) = {
            let t = tunnel.borrow();
            (t.vni, t.group)
        };
        let local = shared.sockets.local;
        let description = match group {
            Some(g) => format!("vxlan {vni} {local} group {g}"),
            None => format!("vxlan {vni} {local}"),
        };
        VxlanPort {
            sockets: Rc::clone(&shared.sockets),
            tunnel,
            inbox: Inbox::default(),
            header: vxlan::Repr { vni }.to_bytes(),
            batch: SendBatch::new(),
            pieces: Vec::new(),
            scratch: Vec::new(),
            dsts: Vec::new(),
            description,
        }
    }

    /// Turns `frame` (index `i`) into pieces for each of `dsts`: the frame itself, a
    /// copy with its checksum completed, or its GSO segments. On error nothing of the
    /// frame is left to send.
    fn cut(
        &mut self,
        i: usize,
        frame: &FrameBuf,
        dsts: &[IpAddr],
        port: u16,
    ) -> Result<(), OffloadError> {
        let f = frame.frame();
        let sock = usize::from(flow_entropy(f, [0, (self.sockets.tx.len() - 1) as u16]));
        let hdr = frame.offload;
        let (pieces, scratch) = (self.pieces.len(), self.scratch.len());
        let push = |this: &mut Self, bytes: Option<std::ops::Range<usize>>, train: u16| {
            for ip in dsts {
                this.pieces.push(Piece {
                    frame: i,
                    sock,
                    to: SocketAddr::new(*ip, port),
                    bytes: bytes.clone(),
                    train,
                });
            }
        };
        let result = if hdr.is_gso() && self.sockets.trains.get() {
            Segmenter::new(f, &hdr).and_then(|seg| {
                // Trains of whole datagrams: the first segment is the longest.
                let size = vxlan::HEADER_LEN + seg.max_segment_len();
                let per_train = (TRAIN_BYTES / size).clamp(1, TRAIN_SEGMENTS);
                for first in (0..seg.count()).step_by(per_train) {
                    let at = self.scratch.len();
                    for k in first..seg.count().min(first + per_train) {
                        let start = self.scratch.len();
                        self.scratch.extend_from_slice(&self.header);
                        self.scratch.resize(start + size, 0);
                        let n = seg.write(k, &mut self.scratch[start + vxlan::HEADER_LEN..])?;
                        self.scratch.truncate(start + vxlan::HEADER_LEN + n);
                    }
                    push(self, Some(at..self.scratch.len()), size as u16);
                }
                Ok(())
            })
        } else if hdr.is_gso() {
            Segmenter::new(f, &hdr).and_then(|seg| {
                for k in 0..seg.count() {
                    let at = self.scratch.len();
                    self.scratch.resize(at + seg.segment_len(k), 0);
                    let n = seg.write(k, &mut self.scratch[at..])?;
                    self.scratch.truncate(at + n);
                    push(self, Some(at..at + n), 0);
                }
                Ok(())
            })
        } else if hdr.needs_csum() {
            let at = self.scratch.len();
            self.scratch.extend_from_slice(f);
            offload::complete_checksum(&mut self.scratch[at..], &hdr)
                .map(|()| push(self, Some(at..self.scratch.len()), 0))
        } else {
            push(self, None, 0);
            Ok(())
        };
        if result.is_err() {
            self.pieces.truncate(pieces);
            self.scratch.truncate(scratch);
        }
        result
    }

    /// Sends the pieces: runs that leave from one source socket go in one `sendmmsg`
    /// each. Returns the index of the frame the socket could not take now, if any. A
    /// train the kernel refuses goes again datagram by datagram.
    fn flush(&mut self, frames: &[FrameBuf], tunnel: &mut Tunnel) -> Option<usize> {
        let mut at = 0;
        let pieces = std::mem::take(&mut self.pieces);
        let mut blocked = None;
        while at < pieces.len() {
            let sock = pieces[at].sock;
            let run_end = pieces[at..]
                .iter()
                .take(SEND_BATCH)
                .position(|m| m.sock != sock)
                .map_or((at + SEND_BATCH).min(pieces.len()), |n| at + n);
            let mut out = [Outgoing {
                to: self.sockets.local,
                header: &[],
                payload: &[],
                segment: 0,
            }; SEND_BATCH];
            for (o, p) in out.iter_mut().zip(&pieces[at..run_end]) {
                *o = Outgoing {
                    to: p.to,
                    header: if p.train == 0 { &self.header } else { &[] },
                    payload: match &p.bytes {
                        Some(r) => &self.scratch[r.clone()],
                        None => frames[p.frame].frame(),
                    },
                    segment: p.train,
                };
            }
            let run = &out[..run_end - at];
            let (sent, result) = self.batch.send(self.sockets.tx[sock].as_fd(), run);
            for o in &run[..sent] {
                match o.segment {
                    0 => tunnel
                        .fdb
                        .count_tx(o.to.ip(), o.header.len() + o.payload.len(), true),
                    size => {
                        for d in o.payload.chunks(usize::from(size)) {
                            tunnel.fdb.count_tx(o.to.ip(), d.len(), true);
                        }
                    }
                }
            }
            at += sent;
            if let Err(e) = result {
                if e.kind() == io::ErrorKind::WouldBlock {
                    blocked = Some(pieces[at].frame);
                    break;
                }
                let p = &pieces[at];
                let refused = [libc::EIO, libc::EINVAL, libc::EMSGSIZE].map(Some);
                if p.train != 0 && refused.contains(&e.raw_os_error()) {
                    // Refused as a train (a path without UDP GSO, such as IPsec, says
                    // EIO; a size the route cannot take, EINVAL): its datagrams go one
                    // by one, and after EIO so does everything that follows.
                    if e.raw_os_error() == Some(libc::EIO) && self.sockets.trains.replace(false) {
                        warn!(local = %self.sockets.local, "VXLAN: the path refuses UDP_SEGMENT trains ({e}); sending datagram by datagram");
                    }
                    let bytes = p.bytes.clone().unwrap_or_default();
                    let mut one_by_one = [Outgoing {
                        to: p.to,
                        header: &[],
                        payload: &[],
                        segment: 0,
                    }; SEND_BATCH];
                    let mut n = 0;
                    for (o, d) in one_by_one
                        .iter_mut()
                        .zip(self.scratch[bytes].chunks(usize::from(p.train)))
                    {
                        o.payload = d;
                        n += 1;
                    }
                    let (sent, _) = self
                        .batch
                        .send(self.sockets.tx[sock].as_fd(), &one_by_one[..n]);
                    for (k, o) in one_by_one[..n].iter().enumerate() {
                        tunnel.fdb.count_tx(p.to.ip(), o.payload.len(), k < sent);
                    }
                } else {
                    // Unreachable and the like: that remote misses this datagram.
                    tunnel.fdb.count_tx(p.to.ip(), 0, false);
                }
                at += 1;
            }
        }
        self.pieces = pieces;
        self.pieces.clear();
        self.scratch.clear();
        blocked
    }
}

impl Backend for VxlanPort {
    fn kind(&self) -> PortKind {
        PortKind::Uplink
    }

    fn description(&self) -> String {
        self.description.clone()
    }

    fn vxlan_info(&self) -> Option<VxlanInfo> {
        let t = self.tunnel.borrow();
        Some(VxlanInfo {
            vni: t.vni,
            socket: self.sockets.local.to_string(),
            remotes: t
                .fdb
                .remotes()
                .iter()
                .map(|r| RemoteInfo {
                    address: r.addr,
                    rx_frames: r.counters.rx_frames,
                    rx_bytes: r.counters.rx_bytes,
                    tx_frames: r.counters.tx_frames,
                    tx_bytes: r.counters.tx_bytes,
                    drops: r.counters.drops,
                })
                .collect(),
            socket_drops: SocketDrop::ALL
                .iter()
                .map(|c| (c.name().to_string(), self.sockets.drops[*c as usize].get()))
                .collect(),
        })
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

    /// GSO super-frames and partial checksums come as they are: the port segments
    /// and completes them as it encapsulates, so the egress queue holds a super-frame
    /// as one entry, not forty.
    fn offloads(&self) -> bool {
        true
    }

    fn send_batch(&mut self, frames: &[FrameBuf]) -> (usize, Sent) {
        let now = Instant::now();
        let tunnel = Rc::clone(&self.tunnel);
        let mut t = tunnel.borrow_mut();
        let mut dsts = std::mem::take(&mut self.dsts);
        let outcome = self.send_all(frames, &mut t, &mut dsts, now);
        self.dsts = dsts;
        outcome
    }
}

impl VxlanPort {
    /// [`Backend::send_batch`], with the tunnel borrowed and a list to reuse for each
    /// frame's destinations.
    fn send_all(
        &mut self,
        frames: &[FrameBuf],
        t: &mut Tunnel,
        dsts: &mut Vec<IpAddr>,
        now: Instant,
    ) -> (usize, Sent) {
        for (i, frame) in frames.iter().enumerate() {
            let Some(dst) = frame.frame().get(0..6) else {
                continue;
            };
            let dst = MacAddr(dst.try_into().expect("6 bytes"));
            dsts.clear();
            match (t.fdb.destination(now, dst), t.group) {
                (Destination::One(ip), _) | (Destination::Flood, Some(ip)) => dsts.push(ip),
                (Destination::Flood, None) => dsts.extend(t.fdb.remotes().iter().map(|r| r.addr)),
            }
            if let Err(e) = self.cut(i, frame, dsts, t.port) {
                tracing::debug!("VXLAN: cannot segment a frame: {e}");
                if let Some(blocked) = self.flush(frames, t) {
                    return (blocked, Sent::WouldBlock);
                }
                return (i, Sent::Dropped(DropCause::Malformed));
            }
            if self.pieces.len() >= SEND_BATCH {
                if let Some(blocked) = self.flush(frames, t) {
                    return (blocked, Sent::WouldBlock);
                }
            }
        }
        if let Some(blocked) = self.flush(frames, t) {
            return (blocked, Sent::WouldBlock);
        }
        (frames.len(), Sent::Done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::BufPool;

    /// A tunnel end on loopback address `127.0.0.N` and `port`, VNI 7, with `remotes`.
    fn end(n: u8, port: u16, remotes: &[u8]) -> (TunnelSocket, VxlanPort) {
        let ip = |n: u8| IpAddr::from([127, 0, 0, n]);
        let mut spec = VxlanSpec::new(7, ip(n));
        spec.port = port;
        spec.remotes = remotes.iter().map(|r| ip(*r)).collect();
        let mut sock = TunnelSocket::open(SocketAddr::new(ip(n), port), vxlan::SOURCE_PORTS)
            .expect("loopback socket");
        let now = Instant::now();
        let tunnel = Rc::new(RefCell::new(
            Tunnel::new(&spec, Duration::from_secs(300), 64, now).unwrap(),
        ));
        let vport = VxlanPort::new(&sock, Rc::clone(&tunnel));
        sock.members.push(Member {
            net: usize::from(n),
            port: PortId(u32::from(n)),
            tunnel,
            max_frame: 1514,
        });
        (sock, vport)
    }

    /// What `sock` takes next: (vnet, frame), waiting for loopback delivery.
    fn take(sock: &mut TunnelSocket) -> Option<(usize, Vec<u8>)> {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            match sock.poll(Instant::now()) {
                Polled::Frame(inc) => return Some((inc.net, inc.frame.to_vec())),
                Polled::Skipped => {}
                Polled::WouldBlock => std::thread::yield_now(),
            }
        }
        None
    }

    fn nothing(sock: &mut TunnelSocket) -> bool {
        // Loopback delivers at once; by the time a later datagram arrived, an
        // earlier one would have too.
        !matches!(sock.poll(Instant::now()), Polled::Frame(_))
    }

    fn frame(dst: [u8; 6], src: [u8; 6]) -> FrameBuf {
        let mut f = [0u8; 60];
        f[..6].copy_from_slice(&dst);
        f[6..12].copy_from_slice(&src);
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        let mut buf = BufPool::new(1514).get();
        buf.fill(&f);
        buf
    }

    fn free_port() -> u16 {
        UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    const VM_A: [u8; 6] = [2, 0, 0, 0, 0, 0xa];
    const VM_B: [u8; 6] = [2, 0, 0, 0, 0, 0xb];

    #[test]
    fn floods_reach_every_remote_and_learned_macs_only_theirs() {
        let port = free_port();
        let (mut a, mut pa) = end(11, port, &[12, 13]);
        let (mut b, mut pb) = end(12, port, &[11, 13]);
        let (mut c, _pc) = end(13, port, &[11, 12]);
        let bcast = frame([0xff; 6], VM_A);
        assert_eq!(pa.send_batch(std::slice::from_ref(&bcast)), (1, Sent::Done));
        assert_eq!(take(&mut b), Some((12, bcast.frame().to_vec())));
        assert_eq!(take(&mut c), Some((13, bcast.frame().to_vec())));
        // B learned VM_A behind A: its answer goes to A alone.
        let rows = pb.tunnel.borrow().fdb.rows(Instant::now());
        assert_eq!(
            (rows[0].mac, rows[0].remote),
            (MacAddr(VM_A), IpAddr::from([127, 0, 0, 11]))
        );
        let answer = frame(VM_A, VM_B);
        assert_eq!(
            pb.send_batch(std::slice::from_ref(&answer)),
            (1, Sent::Done)
        );
        assert_eq!(take(&mut a), Some((11, answer.frame().to_vec())));
        assert!(nothing(&mut c));
        // Counted per remote, both ways.
        let info = pa.vxlan_info().unwrap();
        let to_b = info
            .remotes
            .iter()
            .find(|r| r.address.to_string() == "127.0.0.12");
        let to_b = to_b.unwrap();
        assert_eq!((to_b.tx_frames, to_b.rx_frames), (1, 1));
        assert_eq!(to_b.tx_bytes, 68);
    }

    #[test]
    fn hostile_datagrams_are_counted_by_cause_and_never_delivered() {
        let port = free_port();
        let (mut a, pa) = end(21, port, &[22]);
        let remote = UdpSocket::bind("127.0.0.22:0").unwrap();
        let stranger = UdpSocket::bind("127.0.0.23:0").unwrap();
        let to = SocketAddr::new(IpAddr::from([127, 0, 0, 21]), port);
        let good = |vni: u32| {
            let mut d = vxlan::Repr { vni }.to_bytes().to_vec();
            d.extend_from_slice(frame([0xff; 6], VM_B).frame());
            d
        };
        let mut flagless = good(7);
        flagless[0] = 0;
        for d in [&[8u8, 0, 0][..], &flagless, &good(8)] {
            remote.send_to(d, to).unwrap();
        }
        stranger.send_to(&good(7), to).unwrap();
        remote.send_to(&good(7), to).unwrap();
        // Only the last one gets through.
        assert_eq!(take(&mut a).map(|(net, _)| net), Some(21));
        let drops = pa.vxlan_info().unwrap().socket_drops;
        for cause in ["short", "flags", "unknown_vni", "unknown_remote"] {
            assert_eq!(drops[cause], 1, "{cause}: {drops:?}");
        }
        assert_eq!(pa.vxlan_info().unwrap().remotes[0].drops, 3);
    }

    /// What `sock` takes next with its offload header, waiting for loopback delivery.
    fn take_offloaded(sock: &mut TunnelSocket) -> Option<(Vec<u8>, VirtioNetHdr)> {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            match sock.poll(Instant::now()) {
                Polled::Frame(inc) => return Some((inc.frame.to_vec(), inc.offload)),
                Polled::Skipped => {}
                Polled::WouldBlock => std::thread::yield_now(),
            }
        }
        None
    }

    /// A TCP/IPv4 super-frame from VM_A to VM_B of 3000 payload bytes, 1000 per
    /// segment, checksum left partial, as a TAP hands it over.
    fn super_frame() -> FrameBuf {
        let payload = 3000;
        let mut f = vec![0u8; 14 + 20 + 20 + payload];
        f[..12].copy_from_slice(&[VM_B, VM_A].concat());
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f[14] = 0x45;
        f[16..18].copy_from_slice(&((20 + 20 + payload) as u16).to_be_bytes());
        f[22] = 64;
        f[23] = 6;
        f[26..34].copy_from_slice(&[10, 0, 0, 1, 10, 0, 0, 2]);
        f[46] = 0x50; // data offset 5
        f[47] = 0x18;
        for (i, b) in f[54..].iter_mut().enumerate() {
            *b = i as u8;
        }
        let mut buf = BufPool::new(70000).get();
        buf.fill(&f);
        buf.offload = VirtioNetHdr {
            flags: VirtioNetHdr::F_NEEDS_CSUM,
            gso_type: VirtioNetHdr::GSO_TCPV4,
            hdr_len: 54,
            gso_size: 1000,
            csum_start: 34,
            csum_offset: 16,
        };
        buf
    }

    #[test]
    fn a_gso_super_frame_leaves_as_segments_and_a_vnet_merges_them_back() {
        for trains in [true, false] {
            let port = free_port();
            let (_a, mut pa) = end(31, port, &[32, 33]);
            pa.sockets.trains.set(pa.sockets.trains.get() && trains);
            // 127.0.0.32 is a plain UDP socket, as a kernel VTEP sees the wire;
            // 127.0.0.33 is vnet.
            let plain =
                UdpSocket::bind(SocketAddr::new(IpAddr::from([127, 0, 0, 32]), port)).unwrap();
            plain
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            let (mut b, pb) = end(33, port, &[31]);
            let buf = super_frame();
            // Unknown destination: flooded to both remotes.
            assert_eq!(pa.send_batch(std::slice::from_ref(&buf)), (1, Sent::Done));
            let mut segments = Vec::new();
            for k in 0..3 {
                let mut d = [0u8; 2048];
                let n = plain.recv(&mut d).expect("a datagram");
                assert_eq!(
                    &d[..8],
                    &vxlan::Repr { vni: 7 }.to_bytes(),
                    "trains {trains}"
                );
                let seg = &d[8..n];
                assert_eq!(seg.len(), 54 + 1000, "segment {k}, trains {trains}");
                assert_eq!(seg[54], (k * 1000) as u8);
                let ip = vnet_core::wire::ipv4::Packet::new_checked(&seg[14..]).unwrap();
                let tcp = vnet_core::wire::tcp::Packet::new_checked(ip.payload()).unwrap();
                assert!(
                    tcp.verify_checksum(&IpAddr::from(ip.src_addr()), &IpAddr::from(ip.dst_addr()))
                );
                segments.push(seg.to_vec());
            }
            // vnet takes them as one super-frame again, which cuts into the same.
            let (merged, hdr) = take_offloaded(&mut b).expect("a super-frame");
            assert_eq!(hdr.gso_type, VirtioNetHdr::GSO_TCPV4, "trains {trains}");
            assert_eq!(hdr.gso_size, 1000);
            let seg = Segmenter::new(&merged, &hdr).unwrap();
            let recut: Vec<Vec<u8>> = (0..seg.count())
                .map(|k| {
                    let mut out = vec![0; seg.max_segment_len()];
                    let n = seg.write(k, &mut out).unwrap();
                    out.truncate(n);
                    out
                })
                .collect();
            assert_eq!(recut, segments, "trains {trains}");
            assert!(nothing(&mut b));
            // Counted per datagram, on both ends.
            let tx = pa.vxlan_info().unwrap().remotes;
            assert!(tx
                .iter()
                .all(|r| r.tx_frames == 3 && r.tx_bytes == 3 * 1062));
            assert_eq!(pb.vxlan_info().unwrap().remotes[0].rx_frames, 3);
        }
    }
}
