#![no_main]
//! Frames from guests to the vnet's IPv6 router (`vnet-ra`): the input split at 0xff
//! bytes into pieces, each given once as a whole frame and once as the ICMPv6 (or UDP)
//! body of a well-formed frame to one of the router's addresses with its checksum filled
//! in, so the fuzzer reaches the NDP and echo logic behind the checksum. The router
//! must never panic and never answer one frame with more than one.
use std::net::Ipv6Addr;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use vnet_core::wire::ethernet::{write_header, EtherType, MacAddr, HEADER_LEN};
use vnet_core::wire::{checksum, ipv6, IpProtocol};
use vnet_ra::{Router, RouterConfig};

const MAC: MacAddr = MacAddr([0x02, 0x76, 0x6e, 1, 2, 3]);
const GATEWAY: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2);

/// `body` from a guest to the destination `sel` picks, with hop limit 255 or 64.
fn framed(sel: u8, body: &[u8], router_ll: Ipv6Addr) -> Vec<u8> {
    let dst = match sel & 3 {
        0 => GATEWAY,
        1 => router_ll,
        2 => Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 2),
        _ => Ipv6Addr::new(0xff02, 0, 0, 0, 0, 1, 0xff00, 2),
    };
    let src = if sel & 4 == 0 {
        Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 7)
    } else {
        Ipv6Addr::UNSPECIFIED
    };
    let proto = if sel & 8 == 0 { IpProtocol::ICMPV6 } else { IpProtocol::UDP };
    let mut frame = vec![0u8; HEADER_LEN + ipv6::HEADER_LEN];
    write_header(&mut frame, MAC, MacAddr([0x52, 0x54, 0, 0, 0, 7]), EtherType::IPV6);
    ipv6::Repr {
        src_addr: src,
        dst_addr: dst,
        next_header: proto,
        payload_len: body.len().min(65535),
        hop_limit: if sel & 16 == 0 { 255 } else { 64 },
        traffic_class: 0,
        flow_label: 0,
    }
    .emit(&mut ipv6::Packet::new_unchecked(&mut frame[HEADER_LEN..]));
    let mut body = body[..body.len().min(65535)].to_vec();
    if proto == IpProtocol::ICMPV6 && body.len() >= 4 {
        body[2..4].fill(0);
        let pseudo = checksum::pseudo_header_v6(&src, &dst, proto, body.len() as u32);
        let c = checksum::checksum(checksum::sum(pseudo, &body));
        body[2..4].copy_from_slice(&c.to_be_bytes());
    }
    frame.extend_from_slice(&body);
    frame
}

fuzz_target!(|data: &[u8]| {
    let mut now = Instant::now();
    let config = RouterConfig {
        mac: MAC,
        prefix: Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0),
        address: Some(GATEWAY),
        advertise: true,
        default_router: true,
        slaac: true,
        managed: false,
        other: false,
        mtu: 1500,
        dns: vec![GATEWAY],
        domains: vec!["vnet.test".into()],
        interval: Duration::from_secs(4),
    };
    let mut router = Router::new(config, now, 1);
    let ll = router.link_local();
    let mut out = Vec::new();
    for piece in data.split(|&b| b == 0xff) {
        now += Duration::from_millis(300);
        router.receive(now, piece, &mut out);
        assert!(out.len() <= 1);
        out.clear();
        if let Some((&sel, body)) = piece.split_first() {
            router.receive(now, &framed(sel, body, ll), &mut out);
            assert!(out.len() <= 1);
            out.clear();
        }
        router.poll(now, &mut out);
        out.clear();
    }
});
