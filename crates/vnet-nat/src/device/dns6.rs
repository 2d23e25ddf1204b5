//! The gateway's IPv6 address (`::2`, which the router's RDNSS announces) as the
//! guests' DNS server: UDP to its port 53 goes to the same relay and local names as
//! queries to the IPv4 gateway ([`NatDevice::dns_query`]), and the answers go back as
//! IPv6 frames from `[::2]:53`. The vnet's router (`vnet_ra`) sees each frame first and
//! leaves exactly this port of this address to the device.
//!
//! Answers are not fragmented: one too big for the vnet's MTU is truncated (TC), as
//! over IPv4, so the guest asks again over TCP.

use std::net::{IpAddr, SocketAddr, SocketAddrV6};
use std::time::Instant;

use vnet_core::wire::{ipv6, udp, IpProtocol, MacAddr};

use super::{NatDevice, Output};
use crate::frames::{self, Route6};

impl NatDevice {
    /// An IPv6 packet (`bytes`, an Ethernet payload) to the device's MAC: `Some` if it
    /// is UDP to the gateway's port 53 with DNS on, with whether it was well formed
    /// (a bad checksum is counted as `malformed`); `None`: not the DNS relay's.
    pub(crate) fn receive_dns6(
        &mut self,
        now: Instant,
        guest_mac: MacAddr,
        bytes: &[u8],
        checksum_offloaded: bool,
        out: &mut Vec<Output>,
    ) -> Option<bool> {
        let gateway = self.config.gateway6?;
        if self.dns.upstreams().is_empty() {
            return None;
        }
        let ip = ipv6::Packet::new_checked(bytes).ok()?;
        if ip.version() != 6 || ip.dst_addr() != gateway || ip.next_header() != IpProtocol::UDP {
            return None;
        }
        let udp = udp::Packet::new_checked(ip.payload()).ok()?;
        if udp.dst_port() != 53 {
            return None;
        }
        let src = ip.src_addr();
        let (from, to) = (IpAddr::V6(src), IpAddr::V6(gateway));
        if !checksum_offloaded && !udp.verify_checksum(&from, &to) {
            self.counters.malformed += 1;
            return Some(false);
        }
        // No answer to the unspecified or a group address.
        if src.is_unspecified() || src.is_multicast() {
            self.counters.ignored += 1;
            return Some(true);
        }
        let guest = SocketAddr::V6(SocketAddrV6::new(src, udp.src_port(), 0, 0));
        self.dns_query(now, guest_mac, guest, udp.payload(), out);
        Some(true)
    }

    /// `answer` to the guest at `guest` (`mac`), from `[::2]:53`.
    pub(crate) fn dns6_answer(
        &mut self,
        mac: MacAddr,
        guest: SocketAddrV6,
        answer: &[u8],
        out: &mut Vec<Output>,
    ) {
        let Some(gateway) = self.config.gateway6 else {
            return;
        };
        let route = Route6 {
            src_mac: self.config.mac,
            dst_mac: mac,
            src: gateway,
            dst: *guest.ip(),
        };
        let answer = self.dns_fit(ipv6::HEADER_LEN, answer);
        let datagram = frames::udp_datagram(&route, 53, guest.port(), &answer);
        match frames::ipv6_frame(&route, IpProtocol::UDP, &datagram) {
            Some(frame) => out.push(Output::Frame(frame)),
            None => self.counters.oversize += 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use vnet_core::wire::ethernet::{self, EtherType, Frame};

    use super::*;
    use crate::{LocalNames, NatConfig, NatSecrets, Proto};

    const NAT_MAC: MacAddr = MacAddr([0x02, 0x76, 0x64, 0, 0, 8]);
    const GUEST_MAC: MacAddr = MacAddr([0x52, 0x54, 0, 0, 0, 1]);
    const GW6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 8, 0, 0, 0, 2);
    const GUEST6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 8, 0, 0, 0, 0x100);
    const UP6: &str = "[fd00:53::53]:53";

    fn device(upstreams: &[&str]) -> NatDevice {
        let mut c = NatConfig::new(
            NAT_MAC,
            Ipv4Addr::new(192, 168, 8, 2),
            [192, 168, 8, 0].into(),
            24,
        );
        c.gateway6 = Some(GW6);
        c.dns_upstreams = upstreams.iter().map(|u| u.parse().unwrap()).collect();
        NatDevice::new(c, NatSecrets::from_bytes([0x5e; 32]))
    }

    fn query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
        let mut q = id.to_be_bytes().to_vec();
        q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
        for label in name.split('.') {
            q.push(label.len() as u8);
            q.extend_from_slice(label.as_bytes());
        }
        q.extend_from_slice(&[0, 0, qtype as u8, 0, 1]);
        q
    }

    /// A guest's UDP datagram to `[dst]:dport` from port 40000.
    fn udp6(dst: Ipv6Addr, dport: u16, data: &[u8]) -> Vec<u8> {
        let r = Route6 {
            src_mac: GUEST_MAC,
            dst_mac: NAT_MAC,
            src: GUEST6,
            dst,
        };
        let datagram = frames::udp_datagram(&r, 40000, dport, data);
        frames::ipv6_frame(&r, IpProtocol::UDP, &datagram).unwrap()
    }

    /// The UDP payload of an IPv6 frame for the guest from `[::2]:53`, checked.
    fn answer_in(frame: &[u8]) -> Vec<u8> {
        let eth = Frame::parse(frame).unwrap();
        assert_eq!(
            (eth.src(), eth.dst(), eth.ethertype()),
            (NAT_MAC, GUEST_MAC, EtherType::IPV6)
        );
        let ip = ipv6::Packet::new_checked(eth.payload()).unwrap();
        assert_eq!((ip.src_addr(), ip.dst_addr()), (GW6, GUEST6));
        let u = udp::Packet::new_checked(ip.payload()).unwrap();
        assert!(u.verify_checksum(&IpAddr::V6(GW6), &IpAddr::V6(GUEST6)));
        assert_eq!((u.src_port(), u.dst_port()), (53, 40000));
        u.payload().to_vec()
    }

    #[test]
    fn a_query_to_the_ipv6_gateway_is_relayed_and_answered_over_ipv6() {
        let t = Instant::now();
        let mut d = device(&[UP6, "127.0.0.1:53"]);
        let mut out = Vec::new();
        assert!(d.receive(
            t,
            &udp6(GW6, 53, &query(0x1234, "example.org", 28)),
            &mut out
        ));
        let [Output::Open {
            flow,
            proto: Proto::Udp,
            to,
        }, Output::Send { data, .. }] = &out[..]
        else {
            panic!("{out:?}");
        };
        assert_eq!(*to, UP6.parse::<SocketAddr>().unwrap());
        assert_ne!(data[..2], [0x12, 0x34], "a fresh ID upstream");
        let (flow, mut answer) = (*flow, data.clone());
        answer[2] |= 0x80;
        out.clear();
        d.socket_data(t, flow, &answer, &mut out);
        let [Output::Close { .. }, Output::Frame(frame)] = &out[..] else {
            panic!("{out:?}");
        };
        let relayed = answer_in(frame);
        assert_eq!(
            (&relayed[..2], &relayed[2..]),
            (&[0x12, 0x34][..], &answer[2..])
        );
        let c = d.counters();
        assert_eq!(
            (
                c.dns_queries,
                c.dns_queries_ipv6,
                c.dns_upstream_ipv6,
                c.dns_upstream_ipv4
            ),
            (1, 1, 1, 0)
        );
        assert_eq!((c.dns_answers, c.dns_answers_ipv6), (1, 1));
    }

    #[test]
    fn local_names_answer_aaaa_over_ipv6_and_nodata_for_a_missing_family() {
        let t = Instant::now();
        let mut d = device(&[UP6]);
        let mut names = LocalNames::new(Some("lab"));
        assert!(names.insert("web1", Ipv4Addr::new(192, 168, 8, 10)));
        assert!(names.insert("web1", Ipv6Addr::new(0xfd00, 0, 0, 8, 0, 0, 0, 0x10)));
        assert!(names.insert("v4only", Ipv4Addr::new(192, 168, 8, 11)));
        d.set_local_names(names);
        let mut out = Vec::new();
        d.receive(t, &udp6(GW6, 53, &query(7, "web1.lab", 28)), &mut out);
        let [Output::Frame(frame)] = &out[..] else {
            panic!("{out:?}");
        };
        let a = answer_in(frame);
        assert_eq!((a[3] & 0x0f, a[7]), (0, 1), "NOERROR, one record");
        assert_eq!(
            &a[a.len() - 16..],
            &Ipv6Addr::new(0xfd00, 0, 0, 8, 0, 0, 0, 0x10).octets()
        );
        out.clear();
        d.receive(t, &udp6(GW6, 53, &query(8, "v4only", 28)), &mut out);
        let [Output::Frame(frame)] = &out[..] else {
            panic!("{out:?}");
        };
        let a = answer_in(frame);
        assert_eq!(
            (a[3] & 0x0f, a[7]),
            (0, 0),
            "NOERROR, no record (not NXDOMAIN)"
        );
        assert_eq!(d.counters().dns_local, 2);
    }

    #[test]
    fn malformed_queries_are_dropped_and_counted_and_other_ports_are_not_dns() {
        let t = Instant::now();
        let mut d = device(&[UP6]);
        let mut out = Vec::new();
        // A runt and a response: no query.
        assert!(d.receive(t, &udp6(GW6, 53, &[1, 2, 3]), &mut out));
        let mut response = query(1, "x", 1);
        response[2] |= 0x80;
        assert!(d.receive(t, &udp6(GW6, 53, &response), &mut out));
        assert!(out.is_empty(), "{out:?}");
        assert_eq!(
            (d.counters().dns_malformed, d.counters().dns_queries),
            (2, 0)
        );
        // A bad checksum: a broken frame.
        let mut bad = udp6(GW6, 53, &query(1, "x", 1));
        let last = bad.len() - 1;
        bad[last] ^= 0xff;
        assert!(!d.receive(t, &bad, &mut out));
        assert_eq!(d.counters().malformed, 1);
        // Other ports and other addresses are not the relay's.
        d.receive(t, &udp6(GW6, 54, &query(1, "x", 1)), &mut out);
        let elsewhere = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
        d.receive(t, &udp6(elsewhere, 53, &query(1, "x", 1)), &mut out);
        assert!(out.is_empty(), "{out:?}");
        assert_eq!(d.counters().ignored, 2);
        // And it keeps serving.
        d.receive(t, &udp6(GW6, 53, &query(2, "x", 1)), &mut out);
        assert!(
            matches!(out[..], [Output::Open { .. }, Output::Send { .. }]),
            "{out:?}"
        );
    }

    #[test]
    fn without_upstreams_or_an_ipv6_gateway_nothing_is_relayed() {
        let t = Instant::now();
        let mut out = Vec::new();
        let mut d = device(&[]);
        d.receive(t, &udp6(GW6, 53, &query(1, "x", 1)), &mut out);
        let mut c = NatConfig::clone(d.config());
        c.gateway6 = None;
        c.dns_upstreams = vec![UP6.parse().unwrap()];
        let mut d = NatDevice::new(c, NatSecrets::from_bytes([1; 32]));
        d.receive(t, &udp6(GW6, 53, &query(1, "x", 1)), &mut out);
        assert!(out.is_empty(), "{out:?}");
        assert_eq!(d.counters().dns_queries, 0);
    }

    #[test]
    fn an_answer_over_the_mtu_is_truncated() {
        let t = Instant::now();
        let mut d = device(&[UP6]);
        let mut out = Vec::new();
        d.receive(t, &udp6(GW6, 53, &query(9, "big", 1)), &mut out);
        let [Output::Open { flow, .. }, Output::Send { data, .. }] = &out[..] else {
            panic!("{out:?}");
        };
        let (flow, mut answer) = (*flow, data.clone());
        answer[2] |= 0x80;
        answer[7] = 100;
        answer.resize(1500 - ipv6::HEADER_LEN - udp::HEADER_LEN + 1, 0);
        out.clear();
        d.socket_data(t, flow, &answer, &mut out);
        let [Output::Close { .. }, Output::Frame(frame)] = &out[..] else {
            panic!("{out:?}");
        };
        assert!(frame.len() <= ethernet::HEADER_LEN + 1500);
        let a = answer_in(frame);
        assert_eq!((a[2] & 0x02, a[7]), (0x02, 0), "TC, no answers");
        assert_eq!(d.counters().dns_truncated, 1);
    }
}
