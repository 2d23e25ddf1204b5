//! AF_PACKET sockets on a host NIC: the bridged uplink's wire.
//!
//! The socket is bound to one interface, takes every protocol (`ETH_P_ALL`), puts the
//! NIC in promiscuous mode (`PACKET_MR_PROMISC`, undone by the kernel when the socket
//! closes) and asks for `PACKET_AUXDATA`, because the kernel strips 802.1Q tags into
//! metadata on receive: [`PacketSocket::recv`] reports them so the caller can put them
//! back. With `PACKET_VNET_HDR` every frame carries a `virtio_net_hdr` (10 bytes, no
//! `num_buffers`) both ways: frames from a veth or a local sender often have partial
//! checksums or are GSO super-frames, and the header says so. [`FrameBatch`] sends many
//! frames per `sendmmsg`; an uplink receives through a ring ([`super::ring`]).

use std::io;
use std::mem::{size_of, zeroed};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};

use super::privilege::{self, Capability};

/// Bytes of the `virtio_net_hdr` in front of each frame (`PACKET_VNET_HDR`).
pub const PACKET_VNET_HDR_LEN: usize = 10;

/// `PACKET_OUTGOING` in `sll_pkttype`: a frame the host (or this socket) sent.
const PACKET_OUTGOING: u8 = 4;

/// One received frame's metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecvMeta {
    /// Bytes of the frame (as the kernel has it: a stripped tag is not included).
    pub len: usize,
    /// The frame was larger than the buffer and was cut.
    pub truncated: bool,
    /// The frame went out through the interface (sent by the host or by us).
    pub outgoing: bool,
    /// A tag the kernel stripped: (TPID, TCI).
    pub stripped_tag: Option<(u16, u16)>,
    /// Frames the socket dropped for want of buffer space since it was opened, as the
    /// kernel counted them when this frame was queued (`SO_RXQ_OVFL`); 0 until then.
    pub dropped: u32,
}

/// Why an AF_PACKET socket could not be opened: the step that failed.
#[derive(Debug, thiserror::Error)]
pub enum PacketError {
    #[error("no interface named {0}")]
    NoInterface(String),
    #[error("cannot create an AF_PACKET socket")]
    OpenSocket(#[source] io::Error),
    #[error("cannot bind the AF_PACKET socket to {0}")]
    Bind(String, #[source] io::Error),
    #[error("cannot put {0} in promiscuous mode (PACKET_ADD_MEMBERSHIP)")]
    SetPromiscuous(String, #[source] io::Error),
    #[error("cannot ask for VLAN tags (PACKET_AUXDATA)")]
    SetAuxData(#[source] io::Error),
    #[error("cannot ask for offload headers (PACKET_VNET_HDR)")]
    SetVnetHdr(#[source] io::Error),
}

impl PacketError {
    /// The system's refusal under the failed step, if the kernel said no.
    pub fn os_error(&self) -> Option<&io::Error> {
        match self {
            PacketError::NoInterface(_) => None,
            PacketError::OpenSocket(e)
            | PacketError::Bind(_, e)
            | PacketError::SetPromiscuous(_, e)
            | PacketError::SetAuxData(e)
            | PacketError::SetVnetHdr(e) => Some(e),
        }
    }
}

/// An AF_PACKET socket bound to one interface, non-blocking.
#[derive(Debug)]
pub struct PacketSocket {
    fd: OwnedFd,
    ifindex: i32,
}

impl PacketSocket {
    /// Opens a promiscuous raw socket on `ifname` (needs `CAP_NET_RAW`, raised for the
    /// `socket(2)` call: [`privilege`]).
    pub fn open(ifname: &str) -> Result<PacketSocket, PacketError> {
        let mut sock = PacketSocket::unbound()?;
        sock.bind(ifname)?;
        Ok(sock)
    }

    /// A socket that reports stripped tags and carries offload headers, bound to no
    /// interface yet: it takes nothing until [`PacketSocket::bind`].
    pub fn unbound() -> Result<PacketSocket, PacketError> {
        let fd = packet_socket().map_err(PacketError::OpenSocket)?;
        let sock = PacketSocket { fd, ifindex: 0 };
        sock.setsockopt(libc::PACKET_AUXDATA, &1i32)
            .map_err(PacketError::SetAuxData)?;
        sock.setsockopt(libc::PACKET_VNET_HDR, &1i32)
            .map_err(PacketError::SetVnetHdr)?;
        Ok(sock)
    }

    /// Binds the socket to the interface named `ifname` now, taking every protocol,
    /// and puts it in promiscuous mode. Called again when the interface it was bound to
    /// went away and one of that name came back (a new ifindex): the kernel unbinds a
    /// packet socket from an interface that is deleted, and never rebinds it by itself.
    pub fn bind(&mut self, ifname: &str) -> Result<(), PacketError> {
        let ifindex =
            interface_index(ifname).ok_or_else(|| PacketError::NoInterface(ifname.into()))?;
        // SAFETY: an all-zero sockaddr_ll is a valid value; fields are set below.
        let mut addr: libc::sockaddr_ll = unsafe { zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
        addr.sll_ifindex = ifindex;
        // SAFETY: addr is a valid sockaddr_ll and the length says so.
        let rc = unsafe {
            libc::bind(
                self.fd.as_raw_fd(),
                &addr as *const libc::sockaddr_ll as *const libc::sockaddr,
                size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            let e = io::Error::last_os_error();
            return Err(PacketError::Bind(ifname.to_string(), e));
        }
        // SAFETY: an all-zero packet_mreq is valid; fields are set below.
        let mut mreq: libc::packet_mreq = unsafe { zeroed() };
        mreq.mr_ifindex = ifindex;
        mreq.mr_type = libc::PACKET_MR_PROMISC as u16;
        self.setsockopt(libc::PACKET_ADD_MEMBERSHIP, &mreq)
            .map_err(|e| PacketError::SetPromiscuous(ifname.to_string(), e))?;
        self.ifindex = ifindex;
        Ok(())
    }

    /// The index of the interface the socket was last bound to.
    pub fn ifindex(&self) -> i32 {
        self.ifindex
    }

    pub(super) fn setsockopt<T>(&self, name: libc::c_int, value: &T) -> io::Result<()> {
        super::sockopt::set(self.fd.as_fd(), libc::SOL_PACKET, name, value)
    }

    /// Receives one frame, after its [`PACKET_VNET_HDR_LEN`]-byte header, into `buf`;
    /// `WouldBlock` when there is none.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<RecvMeta> {
        // SAFETY: all-zero is a valid sockaddr_ll.
        let mut addr: libc::sockaddr_ll = unsafe { zeroed() };
        let mut control = Control::default();
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr() as *mut libc::c_void,
            iov_len: buf.len(),
        };
        // SAFETY: all-zero is a valid msghdr; the pointers are set below.
        let mut msg: libc::msghdr = unsafe { zeroed() };
        point(&mut msg, &mut addr, &mut iov, &mut control);
        // SAFETY: msg points to live buffers of the sizes it states; MSG_TRUNC makes the
        // kernel return the real length of a longer frame.
        let n = unsafe { libc::recvmsg(self.fd.as_raw_fd(), &mut msg, libc::MSG_TRUNC) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(meta_of(&msg, &addr, n as usize, buf.len()))
    }

    /// Has the kernel tell with each frame how many it dropped so far for want of
    /// buffer space ([`RecvMeta::dropped`], `SO_RXQ_OVFL`).
    pub fn count_drops(&self) -> io::Result<()> {
        super::sockopt::set(self.fd.as_fd(), libc::SOL_SOCKET, libc::SO_RXQ_OVFL, &1i32)
    }

    /// Leaves out of this socket's input the frames the interface sends (the host's
    /// and ours), so they take no room in a ring (`PACKET_IGNORE_OUTGOING`, Linux
    /// 4.20). Without it they arrive marked [`RecvMeta::outgoing`].
    pub fn ignore_outgoing(&self) -> io::Result<()> {
        self.setsockopt(libc::PACKET_IGNORE_OUTGOING, &1i32)
    }
}

/// Room for a `PACKET_AUXDATA` message, aligned for `cmsghdr`.
#[derive(Clone, Copy)]
#[repr(C, align(8))]
struct Control([u8; 128]);

impl Default for Control {
    fn default() -> Self {
        Control([0; 128])
    }
}

/// Points `msg` at a sender address slot, one iovec and a control buffer.
fn point(
    msg: &mut libc::msghdr,
    addr: &mut libc::sockaddr_ll,
    iov: &mut libc::iovec,
    control: &mut Control,
) {
    msg.msg_name = (addr as *mut libc::sockaddr_ll).cast();
    msg.msg_namelen = size_of::<libc::sockaddr_ll>() as libc::socklen_t;
    msg.msg_iov = iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.0.as_mut_ptr().cast();
    msg.msg_controllen = size_of::<Control>() as _;
    msg.msg_flags = 0;
}

/// What `msg`, just filled by the kernel with a frame of `n` bytes (its real length,
/// `MSG_TRUNC`) from `addr` into a buffer of `cap` bytes, says of it.
fn meta_of(msg: &libc::msghdr, addr: &libc::sockaddr_ll, n: usize, cap: usize) -> RecvMeta {
    let mut stripped_tag = None;
    let mut dropped = 0;
    // SAFETY: msg was filled by the kernel and its control pointer and length describe
    // a live Control buffer; CMSG_FIRSTHDR/NXTHDR walk only within msg_controllen, and
    // each PACKET_AUXDATA payload is a tpacket_auxdata, each SO_RXQ_OVFL one a u32,
    // read unaligned.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SO_RXQ_OVFL {
                dropped = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg) as *const u32);
            }
            if (*cmsg).cmsg_level == libc::SOL_PACKET && (*cmsg).cmsg_type == libc::PACKET_AUXDATA {
                let aux =
                    std::ptr::read_unaligned(libc::CMSG_DATA(cmsg) as *const libc::tpacket_auxdata);
                let valid = aux.tp_vlan_tci != 0 || aux.tp_status & libc::TP_STATUS_VLAN_VALID != 0;
                if valid {
                    let tpid = if aux.tp_status & libc::TP_STATUS_VLAN_TPID_VALID != 0 {
                        aux.tp_vlan_tpid
                    } else {
                        0x8100
                    };
                    stripped_tag = Some((tpid, aux.tp_vlan_tci));
                }
            }
            cmsg = libc::CMSG_NXTHDR(msg, cmsg);
        }
    }
    RecvMeta {
        len: n.min(cap),
        truncated: n > cap,
        outgoing: addr.sll_pkttype == PACKET_OUTGOING,
        stripped_tag,
        dropped,
    }
}

/// Headers for receiving up to `N` frames with one `recvmmsg`, each into a buffer of
/// its own with its address and `PACKET_AUXDATA`, kept so that no batch allocates.
pub struct RecvFrames<const N: usize> {
    headers: [libc::mmsghdr; N],
    iovs: [libc::iovec; N],
    addrs: [libc::sockaddr_ll; N],
    controls: [Control; N],
}

impl<const N: usize> RecvFrames<N> {
    pub fn new() -> Box<Self> {
        // SAFETY: plain C structs and bytes, for which all-zero bytes are valid.
        Box::new(unsafe { zeroed() })
    }

    /// Receives up to `N` frames without blocking, frame `i` (after its
    /// [`PACKET_VNET_HDR_LEN`]-byte header) into the `i`th of `bufs`. Returns how many
    /// came; `WouldBlock` if none.
    pub fn recv<'a>(
        &mut self,
        sock: &PacketSocket,
        bufs: impl IntoIterator<Item = &'a mut [u8]>,
    ) -> io::Result<usize> {
        let mut count = 0;
        for (i, buf) in bufs.into_iter().take(N).enumerate() {
            self.iovs[i] = libc::iovec {
                iov_base: buf.as_mut_ptr().cast(),
                iov_len: buf.len(),
            };
            point(
                &mut self.headers[i].msg_hdr,
                &mut self.addrs[i],
                &mut self.iovs[i],
                &mut self.controls[i],
            );
            count = i + 1;
        }
        // SAFETY: headers `..count` were pointed above at live address, iovec and
        // control slots of `self` and at buffers borrowed for `'a`, all of the sizes
        // they state, which outlive the call.
        let n = unsafe {
            libc::recvmmsg(
                sock.fd.as_raw_fd(),
                self.headers.as_mut_ptr(),
                count as libc::c_uint,
                libc::MSG_DONTWAIT | libc::MSG_TRUNC,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    /// What frame `i` of the last [`RecvFrames::recv`] is, its buffer `cap` bytes long.
    pub fn meta(&self, i: usize, cap: usize) -> RecvMeta {
        let h = &self.headers[i];
        meta_of(&h.msg_hdr, &self.addrs[i], h.msg_len as usize, cap)
    }
}

/// A frame to send in up to four parts, in order: the offload header, then the frame
/// in pieces (addresses, a tag to insert, the rest). Empty parts add nothing.
pub type Parts<'a> = [&'a [u8]; 4];

/// Message headers for sending up to `N` frames with one `sendmmsg`, kept so that no
/// batch allocates.
pub struct FrameBatch<const N: usize> {
    headers: [libc::mmsghdr; N],
    iovs: [[libc::iovec; 4]; N],
    to: libc::sockaddr_ll,
}

impl<const N: usize> FrameBatch<N> {
    pub fn new() -> Box<Self> {
        // SAFETY: plain C structs for which all-zero bytes are valid.
        Box::new(unsafe { zeroed() })
    }

    /// Sends the first `N` (at most) of `frames` out of `sock`'s interface in order,
    /// without blocking, until all are sent or one fails. Returns how many were sent
    /// and, if not all, why the next one failed (`sendmmsg` reports an error only when
    /// it sent nothing, so after a partial send the rest is tried again to learn why).
    pub fn send<'a>(
        &mut self,
        sock: &PacketSocket,
        frames: impl IntoIterator<Item = Parts<'a>>,
    ) -> (usize, io::Result<()>) {
        self.to.sll_family = libc::AF_PACKET as u16;
        self.to.sll_ifindex = sock.ifindex;
        let mut count = 0;
        for (i, parts) in frames.into_iter().take(N).enumerate() {
            for (iov, part) in self.iovs[i].iter_mut().zip(parts) {
                *iov = libc::iovec {
                    iov_base: part.as_ptr().cast_mut().cast(),
                    iov_len: part.len(),
                };
            }
            let h = &mut self.headers[i].msg_hdr;
            h.msg_name = (&mut self.to as *mut libc::sockaddr_ll).cast();
            h.msg_namelen = size_of::<libc::sockaddr_ll>() as libc::socklen_t;
            h.msg_iov = self.iovs[i].as_mut_ptr();
            h.msg_iovlen = 4;
            h.msg_control = std::ptr::null_mut();
            h.msg_controllen = 0;
            h.msg_flags = 0;
            count = i + 1;
        }
        // SAFETY: headers `..count` were filled above: each points at `self.to`
        // and at four iovecs for parts borrowed for `'a`, so all outlive the call.
        // The kernel only reads names and data on send; it writes `msg_len`, inside
        // the headers.
        unsafe { super::mmsg::send_all(sock.fd.as_fd(), &mut self.headers[..count]) }
    }
}

/// Creates a non-blocking AF_PACKET socket that takes nothing until it is bound
/// (protocol 0: a socket made with `ETH_P_ALL` would see every interface's frames until
/// `bind`). The one place vnetd makes one: it needs `CAP_NET_RAW`.
fn packet_socket() -> io::Result<OwnedFd> {
    let _raw = privilege::raise(Capability::CAP_NET_RAW)?;
    // SAFETY: socket(2) with constant arguments; the result is checked below.
    let fd = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just returned by socket(2) and is owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The index of the interface named `name` now; `None` if there is none (or the name
/// cannot be one).
pub fn interface_index(name: &str) -> Option<i32> {
    let cname = std::ffi::CString::new(name).ok()?;
    // SAFETY: cname is a valid NUL-terminated string for the duration of the call.
    let index = unsafe { libc::if_nametoindex(cname.as_ptr()) };
    i32::try_from(index).ok().filter(|i| *i > 0)
}

impl AsRawFd for PacketSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}
