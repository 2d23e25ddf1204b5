#![no_main]
//! Every L3/L4 parser of `vnet_core::wire` over the same bytes: the checked views, their
//! Reprs, the option iterators and the checksums must never panic, and a parsed Repr
//! must emit into a buffer of its `buffer_len` without panicking either.
use libfuzzer_sys::fuzz_target;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use vnet_core::wire::{arp, icmpv4, icmpv6, ipv4, ipv6, tcp, udp};

fuzz_target!(|data: &[u8]| {
    let v4 = (
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V4(Ipv4Addr::BROADCAST),
    );
    let v6 = (Ipv6Addr::LOCALHOST, Ipv6Addr::UNSPECIFIED);

    if let Ok(p) = arp::Packet::new_checked(data) {
        if let Ok(r) = arp::Repr::parse(&p) {
            r.emit(&mut arp::Packet::new_unchecked(vec![0; r.buffer_len()]));
        }
    }
    if let Ok(p) = ipv4::Packet::new_checked(data) {
        let _ = (
            p.options(),
            p.payload(),
            p.verify_checksum(),
            p.frag_offset(),
        );
        if let Ok(r) = ipv4::Repr::parse(&p) {
            r.emit(&mut ipv4::Packet::new_unchecked(vec![0; r.buffer_len()]));
        }
    }
    if let Ok(p) = ipv6::Packet::new_checked(data) {
        let _ = ipv6::Repr::parse(&p);
        for h in p.ext_headers() {
            if let Ok(h) = h {
                let _ = (h.fragment(), h.routing());
            }
        }
        let _ = ipv6::upper_layer(&p);
    }
    if let Ok(p) = icmpv4::Packet::new_checked(data) {
        let _ = p.verify_checksum();
        if let Ok(r) = icmpv4::Repr::parse(&p) {
            r.emit(&mut icmpv4::Packet::new_unchecked(vec![0; r.buffer_len()]));
        }
    }
    if let Ok(p) = icmpv6::Packet::new_checked(data) {
        let _ = p.verify_checksum(&v6.0, &v6.1);
        for o in icmpv6::NdiscOptions::new(p.options()).flatten() {
            let _ = o.rdnss_addresses().count();
            if let icmpv6::NdiscOption::Dnssl { names, .. } = o {
                let _ = icmpv6::DomainNames::new(names).count();
            }
            let mut b = vec![0; o.buffer_len()];
            o.emit(&mut b);
        }
        if let Ok(r) = icmpv6::Repr::parse(&p) {
            let mut b = vec![0; r.buffer_len()];
            r.emit(&v6.0, &v6.1, &mut icmpv6::Packet::new_unchecked(&mut b[..]));
        }
    }
    if let Ok(p) = udp::Packet::new_checked(data) {
        let _ = (p.verify_checksum(&v4.0, &v4.1), p.payload());
        let _ = udp::Repr::parse(&p);
    }
    if let Ok(p) = tcp::Packet::new_checked(data) {
        let _ = (p.verify_checksum(&v4.0, &v4.1), p.payload());
        for _ in tcp::Options::new(p.options()) {}
        if let Ok(r) = tcp::Repr::parse(&p) {
            // A parsed header may carry more options than `emit` can fit (all of them
            // and four SACK blocks); emit only what fits the 40 option bytes.
            if r.header_len() <= 60 {
                r.emit(&mut tcp::Packet::new_unchecked(vec![0; r.buffer_len()]));
            }
        }
    }
    for _ in tcp::Options::new(data) {}
    for _ in icmpv6::NdiscOptions::new(data) {}
    for _ in icmpv6::DomainNames::new(data) {}
    let _ = vnet_core::wire::checksum::internet_checksum(&[data, data]);
});
