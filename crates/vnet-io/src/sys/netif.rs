//! Configuring a host interface: IPv4 address, netmask, MTU, up, transmit queue length,
//! its IPv6 address, and whether the host routes for it or heeds router advertisements
//! on it. The classic `SIOCSIF*` ioctls on an `AF_INET` socket (`AF_INET6` for the IPv6
//! address, as net-tools' `ifconfig` does) are enough for a host adapter and need no
//! netlink stack.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::privilege::{self, Capability};

/// Why an interface could not be configured: the step that failed.
#[derive(Debug, thiserror::Error)]
pub enum NetifError {
    #[error("cannot open an AF_INET socket for interface ioctls")]
    OpenSocket(#[source] io::Error),
    #[error("cannot configure a host interface")]
    Privilege(#[source] io::Error),
    #[error("cannot set the address of {0} (SIOCSIFADDR)")]
    SetAddress(String, #[source] io::Error),
    #[error("cannot set the netmask of {0} (SIOCSIFNETMASK)")]
    SetNetmask(String, #[source] io::Error),
    #[error("cannot set the MTU of {0} (SIOCSIFMTU)")]
    SetMtu(String, #[source] io::Error),
    #[error("cannot list the host's addresses (getifaddrs)")]
    Addresses(#[source] io::Error),
    #[error("cannot read the MTU of {0} (SIOCGIFMTU)")]
    ReadMtu(String, #[source] io::Error),
    #[error("cannot read the flags of {0} (SIOCGIFFLAGS)")]
    ReadFlags(String, #[source] io::Error),
    #[error("cannot bring up {0} (SIOCSIFFLAGS)")]
    BringUp(String, #[source] io::Error),
    #[error("cannot read the queue length of {0} (SIOCGIFTXQLEN)")]
    ReadTxQueueLen(String, #[source] io::Error),
    #[error("cannot set the queue length of {0} (SIOCSIFTXQLEN)")]
    SetTxQueueLen(String, #[source] io::Error),
    #[error("cannot stop forwarding: cannot write {0}")]
    ForbidForwarding(String, #[source] io::Error),
    #[error("cannot ignore router advertisements: cannot write {0}")]
    IgnoreRouterAdverts(String, #[source] io::Error),
    #[error("cannot open an AF_INET6 socket for interface ioctls (is IPv6 disabled?)")]
    OpenSocket6(#[source] io::Error),
    #[error("cannot read the index of {0} (SIOCGIFINDEX)")]
    ReadIndex(String, #[source] io::Error),
    #[error("cannot add the IPv6 address {address}/{prefix_len} to {ifname} (SIOCSIFADDR)")]
    AddAddress6 {
        ifname: String,
        address: Ipv6Addr,
        prefix_len: u8,
        #[source]
        source: io::Error,
    },
}

/// Gives `ifname` the address `addr/prefix_len`, the MTU `mtu`, and brings it up.
pub fn configure(ifname: &str, addr: Ipv4Addr, prefix_len: u8, mtu: u32) -> Result<(), NetifError> {
    let _admin = raise_admin()?;
    let sock = inet_socket().map_err(NetifError::OpenSocket)?;
    let mask = Ipv4Addr::from(
        u32::MAX
            .checked_shl(32 - u32::from(prefix_len))
            .unwrap_or(0),
    );
    let mut req = ifreq(ifname);
    req.ifr_ifru.ifru_addr = sockaddr_in(addr);
    ioctl(&sock, libc::SIOCSIFADDR, &mut req, NetifError::SetAddress)?;
    let mut req = ifreq(ifname);
    req.ifr_ifru.ifru_netmask = sockaddr_in(mask);
    ioctl(
        &sock,
        libc::SIOCSIFNETMASK,
        &mut req,
        NetifError::SetNetmask,
    )?;
    let mut req = ifreq(ifname);
    req.ifr_ifru.ifru_mtu = mtu as libc::c_int;
    ioctl(&sock, libc::SIOCSIFMTU, &mut req, NetifError::SetMtu)?;
    set_up(&sock, ifname)
}

/// Brings `ifname` up (`IFF_UP`; needs `CAP_NET_ADMIN`).
pub fn bring_up(ifname: &str) -> Result<(), NetifError> {
    let sock = inet_socket().map_err(NetifError::OpenSocket)?;
    set_up(&sock, ifname)
}

fn set_up(sock: &OwnedFd, ifname: &str) -> Result<(), NetifError> {
    let mut req = ifreq(ifname);
    ioctl(sock, libc::SIOCGIFFLAGS, &mut req, NetifError::ReadFlags)?;
    // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
    let flags = unsafe { req.ifr_ifru.ifru_flags };
    req.ifr_ifru.ifru_flags = flags | libc::IFF_UP as libc::c_short;
    ioctl(sock, libc::SIOCSIFFLAGS, &mut req, NetifError::BringUp)
}

/// An interface's state flags, as far as a port that joins it cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkFlags {
    /// Administratively up (`IFF_UP`): the kernel passes it frames.
    pub up: bool,
    /// The loopback interface (`IFF_LOOPBACK`).
    pub loopback: bool,
}

/// The flags of `ifname` now (`SIOCGIFFLAGS`; no privilege needed).
pub fn link_flags(ifname: &str) -> Result<LinkFlags, NetifError> {
    let sock = inet_socket().map_err(NetifError::OpenSocket)?;
    let mut req = ifreq(ifname);
    ioctl(&sock, libc::SIOCGIFFLAGS, &mut req, NetifError::ReadFlags)?;
    // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
    let flags = libc::c_int::from(unsafe { req.ifr_ifru.ifru_flags });
    Ok(LinkFlags {
        up: flags & libc::IFF_UP != 0,
        loopback: flags & libc::IFF_LOOPBACK != 0,
    })
}

/// The interface that holds address `addr`, and its MTU (`getifaddrs`, then
/// `SIOCGIFMTU`; no privilege needed); `None` if no interface has it.
pub fn holder_of(addr: std::net::IpAddr) -> Result<Option<(String, u32)>, NetifError> {
    let found = nix::ifaddrs::getifaddrs()
        .map_err(|e| NetifError::Addresses(e.into()))?
        .find(|ifa| {
            ifa.address.as_ref().is_some_and(|a| {
                a.as_sockaddr_in().map(|s| std::net::IpAddr::V4(s.ip())) == Some(addr)
                    || a.as_sockaddr_in6().map(|s| std::net::IpAddr::V6(s.ip())) == Some(addr)
            })
        })
        .map(|ifa| ifa.interface_name);
    let Some(ifname) = found else {
        return Ok(None);
    };
    let sock = inet_socket().map_err(NetifError::OpenSocket)?;
    let mut req = ifreq(&ifname);
    ioctl(&sock, libc::SIOCGIFMTU, &mut req, NetifError::ReadMtu)?;
    // SAFETY: SIOCGIFMTU filled the MTU member of the union.
    let mtu = unsafe { req.ifr_ifru.ifru_mtu };
    Ok(Some((ifname, mtu.unsigned_abs())))
}

/// Makes the transmit queue of `ifname` at least `min` frames long and returns its length
/// afterwards; a longer queue is left as it is. For a TAP this is the ring of frames the
/// kernel holds for its reader (vnetd): when it is full the kernel drops the next frame
/// (the interface's TX `dropped`).
pub fn raise_txqueuelen(ifname: &str, min: u32) -> Result<u32, NetifError> {
    let _admin = raise_admin()?;
    let sock = inet_socket().map_err(NetifError::OpenSocket)?;
    let mut req = ifreq(ifname);
    ioctl(
        &sock,
        libc::SIOCGIFTXQLEN,
        &mut req,
        NetifError::ReadTxQueueLen,
    )?;
    // SAFETY: SIOCGIFTXQLEN filled `ifr_qlen`, an int that libc names `ifru_metric`.
    let current = unsafe { req.ifr_ifru.ifru_metric };
    let current = u32::try_from(current).unwrap_or(0);
    if current >= min {
        return Ok(current);
    }
    let want = libc::c_int::try_from(min).unwrap_or(libc::c_int::MAX);
    let mut req = ifreq(ifname);
    req.ifr_ifru.ifru_metric = want;
    ioctl(
        &sock,
        libc::SIOCSIFTXQLEN,
        &mut req,
        NetifError::SetTxQueueLen,
    )?;
    Ok(want.unsigned_abs())
}

/// Stops the host from forwarding what arrives on `ifname` (IPv4 and IPv6): a host-only
/// vnet reaches the host and nothing beyond it, whatever `ip_forward` says globally.
pub fn forbid_forwarding(ifname: &str) -> Result<(), NetifError> {
    // The kernel lets only CAP_NET_ADMIN write a network sysctl, whatever its mode.
    let _admin = raise_admin()?;
    for family in ["ipv4", "ipv6"] {
        let path = format!("/proc/sys/net/{family}/conf/{ifname}/forwarding");
        match std::fs::write(&path, "0") {
            Err(e) if e.kind() == io::ErrorKind::NotFound && family == "ipv6" => {}
            Err(e) => return Err(NetifError::ForbidForwarding(path, e)),
            Ok(()) => {}
        }
    }
    Ok(())
}

/// Adds `addr/prefix_len` to `ifname` (besides the link-local address the kernel gives
/// it when it comes up).
pub fn add_ipv6_address(ifname: &str, addr: Ipv6Addr, prefix_len: u8) -> Result<(), NetifError> {
    let _admin = raise_admin()?;
    let inet = inet_socket().map_err(NetifError::OpenSocket)?;
    let mut req = ifreq(ifname);
    ioctl(&inet, libc::SIOCGIFINDEX, &mut req, NetifError::ReadIndex)?;
    // SAFETY: SIOCGIFINDEX filled the ifindex member of the union.
    let index = unsafe { req.ifr_ifru.ifru_ifindex };
    let sock = socket(libc::AF_INET6).map_err(NetifError::OpenSocket6)?;
    let mut req6 = libc::in6_ifreq {
        ifr6_addr: libc::in6_addr {
            s6_addr: addr.octets(),
        },
        ifr6_prefixlen: u32::from(prefix_len),
        ifr6_ifindex: index,
    };
    // SAFETY: `req6` is a valid in6_ifreq that outlives the call; SIOCSIFADDR on an
    // AF_INET6 socket reads only that struct.
    let rc = unsafe {
        libc::ioctl(
            sock.as_raw_fd(),
            libc::SIOCSIFADDR,
            &mut req6 as *mut libc::in6_ifreq,
        )
    };
    if rc < 0 {
        return Err(NetifError::AddAddress6 {
            ifname: ifname.into(),
            address: addr,
            prefix_len,
            source: io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// Makes the host ignore router advertisements on `ifname` (`accept_ra = 0`): the
/// vnet's own router must not give the host a default route or addresses through its
/// host adapter. Nothing to do where the host has no IPv6.
pub fn ignore_router_advertisements(ifname: &str) -> Result<(), NetifError> {
    let _admin = raise_admin()?;
    let path = format!("/proc/sys/net/ipv6/conf/{ifname}/accept_ra");
    match std::fs::write(&path, "0") {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(NetifError::IgnoreRouterAdverts(path, e)),
        Ok(()) => Ok(()),
    }
}

/// Every change here needs `CAP_NET_ADMIN`, raised for the call ([`privilege`]).
fn raise_admin() -> Result<privilege::Raised, NetifError> {
    privilege::raise(Capability::CAP_NET_ADMIN).map_err(NetifError::Privilege)
}

fn inet_socket() -> io::Result<OwnedFd> {
    socket(libc::AF_INET)
}

/// A datagram socket of `family` for interface ioctls.
fn socket(family: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: socket(2) with plain integer arguments; the result is checked below.
    let fd = unsafe { libc::socket(family, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just returned by socket(2) and is owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn ifreq(ifname: &str) -> libc::ifreq {
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req
        .ifr_name
        .iter_mut()
        .zip(ifname.bytes().take(libc::IFNAMSIZ - 1))
    {
        *dst = src as libc::c_char;
    }
    req
}

fn sockaddr_in(addr: Ipv4Addr) -> libc::sockaddr {
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(addr).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in and sockaddr have the same size on Linux and both are plain
    // old data; the kernel reads the family field to interpret the rest.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
}

fn ioctl(
    sock: &OwnedFd,
    request: libc::c_ulong,
    req: &mut libc::ifreq,
    step: fn(String, io::Error) -> NetifError,
) -> Result<(), NetifError> {
    // SAFETY: `req` is a valid ifreq that outlives the call; these SIOC*IF* requests
    // read and write only that struct.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), request, req as *mut libc::ifreq) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        let name: String = req
            .ifr_name
            .iter()
            .take_while(|c| **c != 0)
            .map(|c| *c as u8 as char)
            .collect();
        return Err(step(name, e));
    }
    Ok(())
}
