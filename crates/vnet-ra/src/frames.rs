//! The frames the router sends: Ethernet + IPv6 + one ICMPv6 message, and the options
//! of its router advertisements.

use std::net::Ipv6Addr;

use vnet_core::wire::ethernet::{self, write_header, EtherType, MacAddr};
use vnet_core::wire::icmpv6::{self, encode_domain_names, NdiscOption};
use vnet_core::wire::{ipv6, IpProtocol};

use super::{prefix_info, RouterConfig, IPV6_MIN_MTU};
use vnet_model::ipv6::{MAX_DNS, MAX_DOMAIN_BYTES};

/// The Ethernet group address of IPv6 multicast group `a` (RFC 2464 §7).
pub(crate) fn multicast_mac(a: &Ipv6Addr) -> MacAddr {
    let o = a.octets();
    MacAddr([0x33, 0x33, o[12], o[13], o[14], o[15]])
}

/// `msg` from `src` to `dst` in a frame from `src_mac` to `dst_mac`.
pub(crate) fn icmp(
    src_mac: MacAddr,
    dst_mac: MacAddr,
    src: Ipv6Addr,
    dst: Ipv6Addr,
    hop_limit: u8,
    msg: &icmpv6::Repr<'_>,
) -> Vec<u8> {
    let len = msg.buffer_len();
    let at = ethernet::HEADER_LEN + ipv6::HEADER_LEN;
    let mut frame = vec![0u8; at + len];
    write_header(&mut frame, dst_mac, src_mac, EtherType::IPV6);
    let header = ipv6::Repr {
        src_addr: src,
        dst_addr: dst,
        next_header: IpProtocol::ICMPV6,
        payload_len: len,
        hop_limit,
        traffic_class: 0,
        flow_label: 0,
    };
    header.emit(&mut ipv6::Packet::new_unchecked(
        &mut frame[ethernet::HEADER_LEN..at],
    ));
    msg.emit(
        &src,
        &dst,
        &mut icmpv6::Packet::new_unchecked(&mut frame[at..]),
    );
    frame
}

/// The options of every RA of `config`: source link-layer address, MTU, prefix,
/// RDNSS, DNSSL. The lifetimes of DNS options are three intervals (RFC 8106 §5.1).
pub(crate) fn ra_options(config: &RouterConfig) -> Vec<u8> {
    let dns_lifetime = u32::try_from(config.interval.as_secs() * 3).unwrap_or(u32::MAX);
    // Bounded as `vnet_model::RaSpec::check` bounds them, so an RA fits 1280 bytes.
    let dns: Vec<u8> = config
        .dns
        .iter()
        .take(MAX_DNS)
        .flat_map(|a| a.octets())
        .collect();
    let mut names = Vec::new();
    let domains: Vec<&str> = config.domains.iter().map(String::as_str).collect();
    if encode_domain_names(&domains, &mut names).is_err() || names.len() > MAX_DOMAIN_BYTES {
        names.clear();
    }
    let mut options = vec![NdiscOption::SourceLinkLayerAddr(config.mac)];
    if config.mtu >= IPV6_MIN_MTU {
        options.push(NdiscOption::Mtu(config.mtu));
    }
    options.push(NdiscOption::PrefixInformation(prefix_info(config)));
    if !dns.is_empty() {
        options.push(NdiscOption::Rdnss {
            lifetime: dns_lifetime,
            addresses: &dns,
        });
    }
    if !names.is_empty() {
        options.push(NdiscOption::Dnssl {
            lifetime: dns_lifetime,
            names: &names,
        });
    }
    let mut bytes = vec![0u8; options.iter().map(NdiscOption::buffer_len).sum()];
    let mut rest = &mut bytes[..];
    for o in &options {
        rest = o.emit(rest);
    }
    bytes
}
