//! What IPv4 and IPv6 share: the protocol number space (IPv4 "protocol", IPv6 "next
//! header"), which also names the IPv6 extension headers.

use std::fmt;

/// An IP protocol / next-header number. A newtype rather than an enum: every value
/// round-trips unchanged, known or not.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct IpProtocol(pub u8);

impl IpProtocol {
    pub const HOP_BY_HOP: IpProtocol = IpProtocol(0);
    pub const ICMP: IpProtocol = IpProtocol(1);
    pub const TCP: IpProtocol = IpProtocol(6);
    pub const UDP: IpProtocol = IpProtocol(17);
    pub const IPV6_ROUTING: IpProtocol = IpProtocol(43);
    pub const IPV6_FRAGMENT: IpProtocol = IpProtocol(44);
    pub const AUTH: IpProtocol = IpProtocol(51);
    pub const ICMPV6: IpProtocol = IpProtocol(58);
    pub const IPV6_NO_NEXT: IpProtocol = IpProtocol(59);
    pub const IPV6_DEST_OPTS: IpProtocol = IpProtocol(60);

    /// True for the IPv6 extension headers [`ipv6::ExtHeaders`](super::ipv6::ExtHeaders)
    /// walks through: hop-by-hop, routing, fragment, authentication, destination options.
    pub fn is_ipv6_extension(self) -> bool {
        matches!(
            self,
            Self::HOP_BY_HOP
                | Self::IPV6_ROUTING
                | Self::IPV6_FRAGMENT
                | Self::AUTH
                | Self::IPV6_DEST_OPTS
        )
    }
}

impl From<u8> for IpProtocol {
    fn from(v: u8) -> Self {
        IpProtocol(v)
    }
}

impl From<IpProtocol> for u8 {
    fn from(p: IpProtocol) -> u8 {
        p.0
    }
}

impl fmt::Debug for IpProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match *self {
            Self::HOP_BY_HOP => "HopByHop",
            Self::ICMP => "Icmp",
            Self::TCP => "Tcp",
            Self::UDP => "Udp",
            Self::IPV6_ROUTING => "Ipv6Routing",
            Self::IPV6_FRAGMENT => "Ipv6Fragment",
            Self::AUTH => "Auth",
            Self::ICMPV6 => "Icmpv6",
            Self::IPV6_NO_NEXT => "Ipv6NoNext",
            Self::IPV6_DEST_OPTS => "Ipv6DestOpts",
            _ => return write!(f, "IpProtocol({})", self.0),
        };
        f.write_str(name)
    }
}

impl fmt::Display for IpProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}
