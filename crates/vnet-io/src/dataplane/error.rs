//! Why a control command failed.
//!
//! Each variant names what went wrong; [`ControlError::kind`] sorts them into the few
//! classes the control API answers with a status code. A variant's message says only
//! its own step; the failure under it is its [`std::error::Error::source`], and
//! [`ControlError::message`] joins them for the API's answer.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use vnet_core::switch::{InvalidVlan, SetPortError};
use vnet_model::{ForwardProto, MacAddr, SpecError};

use crate::backend::vhost_user::VhostUserError;
use crate::backend::vxlan::VxlanError;
use crate::services::dhcp::DhcpError;
use crate::services::nat::{ForwardError, NatError};
use crate::sys::netif::NetifError;
use crate::sys::packet::PacketError;
use crate::sys::tap::TapError;

/// Why a control command failed.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// What the command names does not exist.
    #[error(transparent)]
    NotFound(#[from] Missing),
    /// What the command would make exists already, or takes what another owns.
    #[error(transparent)]
    Conflict(#[from] Conflict),
    /// A bound of vnetd's `[limits]` is reached. Answered like a conflict (409): the
    /// request is fine but clashes with the daemon's state now, and succeeds once
    /// something is removed; 429 would say this client sends too fast, which a count
    /// of what all clients hold is not.
    #[error(transparent)]
    Limit(#[from] super::limits::LimitHit),
    /// The vnet's allow lists do not let the client in: 403, as for a role the
    /// client lacks.
    #[error(transparent)]
    NotAllowed(#[from] crate::admission::Refused),
    /// An allow list names a user or group the system does not know.
    #[error(transparent)]
    AllowList(#[from] crate::admission::AllowListError),
    /// The vnet's spec (as given, or as a live change would leave it) breaks a rule.
    #[error(transparent)]
    Invalid(#[from] SpecError),
    /// A change to a port's filters was refused (a rule position that is not there).
    #[error(transparent)]
    Acl(#[from] vnet_model::policy::acl::AclError),
    /// A VLAN id out of range for a new port.
    #[error(transparent)]
    Vlan(#[from] InvalidVlan),
    /// A port's setting (its VLAN mode) was refused.
    #[error(transparent)]
    PortSetting(#[from] SetPortError),
    #[error(
        "invalid vhost-user port name {0:?}: use 1-64 characters of A-Z a-z 0-9 - _ . (not starting with '.')"
    )]
    VhostUserName(String),
    #[error("{ip} is already reserved for {mac}")]
    AddressReserved { ip: Ipv4Addr, mac: MacAddr },
    /// The DHCP service refused its settings.
    #[error(transparent)]
    Dhcp(DhcpError),
    /// The NAT device could not start.
    #[error(transparent)]
    NatStart(NatError),
    /// The NAT device could not add a port forward.
    #[error(transparent)]
    Forward(ForwardError),
    /// Opening a TAP port failed.
    #[error(transparent)]
    Tap(TapError),
    /// Opening the host adapter's TAP failed.
    #[error(transparent)]
    HostAdapterTap(TapError),
    #[error("host adapter {ifname}")]
    ConfigureHostAdapter {
        ifname: String,
        #[source]
        source: NetifError,
    },
    #[error("cannot open uplink {interface}")]
    OpenUplink {
        interface: String,
        #[source]
        source: PacketError,
    },
    #[error("cannot open interface port {interface}")]
    OpenInterface {
        interface: String,
        #[source]
        source: PacketError,
    },
    #[error("invalid interface name {0:?}: use 1-15 characters, no '/', ':' or spaces")]
    InterfaceName(String),
    #[error(
        "{0} is the loopback interface, which carries only the host's own traffic: join a TAP or a veth end"
    )]
    Loopback(String),
    #[error("cannot create the sockets of vnet {vnet:?} in {}", .dir.display())]
    Bind {
        vnet: String,
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Creating a directory or a listening socket at `path` failed.
    #[error("{}", .path.display())]
    Listen {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Setting up a vhost-user port listening at `path` failed.
    #[error("vhost-user port {}", .path.display())]
    VhostUserListen {
        path: PathBuf,
        #[source]
        source: VhostUserError,
    },
    /// Registering fds with the thread's epoll failed.
    #[error("cannot watch {what}")]
    Watch {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot give the service port its MAC")]
    ServiceMac(#[source] SetPortError),
    #[error("cannot make a socket pair for the device")]
    SocketPair(#[source] io::Error),
    #[error("cannot wake the data-plane thread")]
    Wake(#[source] io::Error),
    #[error("the data plane has stopped")]
    Stopped,
    /// A VXLAN uplink, or a change to its remotes or forwarding entries, was refused.
    #[error(transparent)]
    Vxlan(#[from] VxlanError),
}

/// What a command named that does not exist.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Missing {
    #[error("no vnet named {0:?} (see `vnet net ls`)")]
    Vnet(String),
    #[error("vnet {vnet:?} has no port {port} (see `vnet port ls {vnet}`)")]
    Port { vnet: String, port: u32 },
    #[error("vnet {0:?} has no NAT device (give it `nat = {{}}` in its configuration)")]
    Nat(String),
    #[error("vnet {0:?} has no DHCP service (start one with `vnet dhcp set {0} --on`)")]
    Dhcp(String),
    #[error("vnet {vnet:?} has no reservation for {mac}")]
    Reservation { vnet: String, mac: MacAddr },
    #[error("vnet {vnet:?} forwards no {} on {host} (see `vnet forward ls {vnet}`)", .proto.as_str())]
    Forward {
        vnet: String,
        proto: ForwardProto,
        host: SocketAddr,
    },
    #[error("vnet {0:?} has no uplink")]
    Uplink(String),
    #[error("vnet {vnet:?} has no mirror {name:?} (see `vnet mirror ls {vnet}`)")]
    Mirror { vnet: String, name: String },
}

/// What a command would make that exists already, or takes what another owns.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Conflict {
    #[error("vnet {0:?} already exists")]
    Vnet(String),
    #[error("{interface} already carries that traffic for vnet {vnet:?} (choose another VLAN)")]
    NicTraffic { interface: String, vnet: String },
    #[error("TAP {ifname} is already port {port} of vnet {vnet} (see `vnet port ls {vnet}`)")]
    Tap {
        ifname: String,
        port: u32,
        vnet: String,
    },
    /// The kernel says the TAP is open (another thread's vnet or another program).
    #[error(
        "TAP {0} is open already: a port of another vnet (see `vnet port ls`) or another program's"
    )]
    TapBusy(String),
    #[error("vnet {vnet} already has vhost-user port {name} (see `vnet port ls {vnet}`)")]
    VhostUser { vnet: String, name: String },
    /// A host interface that a port or an uplink of this vnetd uses already.
    #[error("{interface} is already {what} of vnet {vnet} (see `vnet port ls {vnet}`)")]
    Interface {
        interface: String,
        what: String,
        vnet: String,
    },
    #[error("{mac} already has a reservation (remove it with `vnet dhcp unreserve {vnet} {mac}`)")]
    Reservation { vnet: String, mac: MacAddr },
    #[error("{} {host} is already forwarded (remove it first with `vnet forward rm {vnet} {host}{}`)",
        .proto.as_str(), if *.proto == ForwardProto::Udp { " --udp" } else { "" })]
    Forward {
        vnet: String,
        proto: ForwardProto,
        host: SocketAddr,
    },
}

/// The classes of failure the control API tells apart (by status code).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    NotFound,
    Conflict,
    /// The request itself is wrong.
    Invalid,
    /// The daemon lacks a privilege the request needs, or the client may not attach.
    Forbidden,
    /// The request was fine; carrying it out failed.
    Failed,
    /// The data plane is gone.
    Stopped,
}

impl ControlError {
    pub fn kind(&self) -> ErrorKind {
        let errno = |e: &io::Error| e.raw_os_error();
        match self {
            ControlError::NotFound(_) => ErrorKind::NotFound,
            ControlError::Conflict(_) | ControlError::Limit(_) => ErrorKind::Conflict,
            ControlError::Invalid(_)
            | ControlError::Acl(_)
            | ControlError::Vlan(_)
            | ControlError::PortSetting(_)
            | ControlError::VhostUserName(_)
            | ControlError::InterfaceName(_)
            | ControlError::Loopback(_)
            | ControlError::AllowList(_)
            | ControlError::AddressReserved { .. }
            | ControlError::Dhcp(_) => ErrorKind::Invalid,
            ControlError::Forward(ForwardError::Exists(..)) => ErrorKind::Conflict,
            ControlError::Tap(source) => match source {
                TapError::BadName(_) => ErrorKind::Invalid,
                TapError::SetIff { source, .. } if errno(source) == Some(libc::EPERM) => {
                    ErrorKind::Forbidden
                }
                TapError::Privilege(_) => ErrorKind::Forbidden,
                _ => ErrorKind::Failed,
            },
            ControlError::OpenUplink { source, .. }
            | ControlError::OpenInterface { source, .. } => match source.os_error() {
                None => ErrorKind::Invalid,
                // EPERM, EACCES, or a capability vnetd gave up (sys::privilege).
                Some(e) if e.kind() == io::ErrorKind::PermissionDenied => ErrorKind::Forbidden,
                Some(_) => ErrorKind::Failed,
            },
            ControlError::NotAllowed(_) => ErrorKind::Forbidden,
            ControlError::Vxlan(e) => match e {
                VxlanError::NoRemote { .. } | VxlanError::NoEntry { .. } => ErrorKind::NotFound,
                VxlanError::VniTaken { .. } | VxlanError::OtherThread { .. } => ErrorKind::Conflict,
                VxlanError::Open { source, .. } if source.kind() == io::ErrorKind::AddrInUse => {
                    ErrorKind::Conflict
                }
                VxlanError::Open { .. } | VxlanError::Join { .. } | VxlanError::Interfaces(_) => {
                    ErrorKind::Failed
                }
                VxlanError::Mtu { .. }
                | VxlanError::NotLocal(_)
                | VxlanError::NotVxlan(_)
                | VxlanError::Family(_)
                | VxlanError::Pin(_) => ErrorKind::Invalid,
            },
            ControlError::Stopped => ErrorKind::Stopped,
            ControlError::NatStart(_)
            | ControlError::Forward(_)
            | ControlError::HostAdapterTap(_)
            | ControlError::ConfigureHostAdapter { .. }
            | ControlError::Bind { .. }
            | ControlError::Listen { .. }
            | ControlError::VhostUserListen { .. }
            | ControlError::Watch { .. }
            | ControlError::ServiceMac(_)
            | ControlError::SocketPair(_)
            | ControlError::Wake(_) => ErrorKind::Failed,
        }
    }

    /// The error and the failures under it, `: `-separated: the control API's answer
    /// (see [`crate::error::Chain`]).
    pub fn message(&self) -> String {
        crate::error::chain(self)
    }
}

/// No port `id` in `vnet`.
pub(super) fn no_port(vnet: &str, id: u32) -> ControlError {
    Missing::Port {
        vnet: vnet.into(),
        port: id,
    }
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_api_message_names_the_step_then_its_cause_once() {
        let e = ControlError::OpenUplink {
            interface: "eth9".into(),
            source: PacketError::Bind("eth9".into(), io::Error::from_raw_os_error(libc::ENODEV)),
        };
        assert_eq!(e.to_string(), "cannot open uplink eth9");
        assert_eq!(
            e.message(),
            "cannot open uplink eth9: cannot bind the AF_PACKET socket to eth9: No such device (os error 19)"
        );
        assert_eq!(e.kind(), ErrorKind::Failed);
        // TapError's message names the step; its source follows, once.
        let e = ControlError::Tap(TapError::OpenTun(io::Error::from_raw_os_error(
            libc::ENOENT,
        )));
        assert_eq!(
            e.message().matches("No such file").count(),
            1,
            "{}",
            e.message()
        );
    }

    #[test]
    fn messages_users_see_stay_as_they_were() {
        let forward = Conflict::Forward {
            vnet: "lab".into(),
            proto: ForwardProto::Udp,
            host: "127.0.0.1:5353".parse().unwrap(),
        };
        assert_eq!(
            forward.to_string(),
            "udp 127.0.0.1:5353 is already forwarded (remove it first with `vnet forward rm lab 127.0.0.1:5353 --udp`)"
        );
        let port = ControlError::from(Missing::Port {
            vnet: "lab".into(),
            port: 42,
        });
        assert_eq!(
            port.message(),
            "vnet \"lab\" has no port 42 (see `vnet port ls lab`)"
        );
        assert_eq!(port.kind(), ErrorKind::NotFound);
        assert_eq!(
            Missing::Dhcp("lab".into()).to_string(),
            "vnet \"lab\" has no DHCP service (start one with `vnet dhcp set lab --on`)"
        );
    }
}
