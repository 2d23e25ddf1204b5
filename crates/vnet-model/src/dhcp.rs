//! What a vnet's DHCP service (DHCPv4 and DHCPv6) has done: `dhcp_counters` in
//! `GET /v1/networks/{net}`, `vnet_dhcp_*_total` in `/metrics`.

use serde::{Deserialize, Serialize};

/// Declares the counters once, with their meaning: the struct, and `fields()` for the
/// CLI and `/metrics`, so neither forgets one.
macro_rules! dhcp_counters {
    ($($(#[doc = $doc:literal])+ $name:ident,)+) => {
        /// A vnet's DHCP service since the vnet started (IPv6 ones end in `6`).
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
        pub struct DhcpCounters {
            $($(#[doc = $doc])+ #[serde(default)] pub $name: u64,)+
        }

        impl DhcpCounters {
            /// Every counter with its name and meaning, in declaration order.
            pub fn fields(&self) -> Vec<(&'static str, &'static str, u64)> {
                vec![$((stringify!($name), concat!($($doc),+), self.$name),)+]
            }
        }
    };
}

dhcp_counters! {
    /// DHCPDISCOVERs received.
    discovers,
    /// DHCPREQUESTs received.
    requests,
    /// DHCPOFFERs sent.
    offers,
    /// DHCPACKs sent.
    acks,
    /// DHCPNAKs sent.
    naks,
    /// DHCPRELEASEs received.
    releases,
    /// DHCPDECLINEs received.
    declines,
    /// DHCPINFORMs received.
    informs,
    /// DISCOVERs left unanswered: no address free.
    pool_exhausted,
    /// IPv4 leases that ran out.
    leases_expired,
    /// Broken DHCP and DHCPv6 frames dropped (truncated, bad checksums or lengths).
    malformed,
    /// Frames not for the service (other protocols, relayed or other servers' messages).
    ignored,
    /// DHCPv6 SOLICITs received.
    solicits6,
    /// DHCPv6 REQUESTs received.
    requests6,
    /// DHCPv6 RENEWs received.
    renews6,
    /// DHCPv6 REBINDs received.
    rebinds6,
    /// DHCPv6 RELEASEs received.
    releases6,
    /// DHCPv6 DECLINEs received.
    declines6,
    /// DHCPv6 CONFIRMs received.
    confirms6,
    /// DHCPv6 INFORMATION-REQUESTs received.
    information_requests6,
    /// DHCPv6 ADVERTISEs sent.
    advertises6,
    /// DHCPv6 REPLYs sent.
    replies6,
    /// DHCPv6 identity associations that got no address: none free.
    pool_exhausted6,
    /// IPv6 leases that ran out.
    leases_expired6,
}
