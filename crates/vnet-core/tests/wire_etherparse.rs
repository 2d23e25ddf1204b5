//! The L3/L4 views of `vnet_core::wire` against an independent implementation
//! (etherparse): packets etherparse builds from random values parse to the same fields
//! with our views, what we emit parses in etherparse, and arbitrary bytes never panic.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use etherparse::{
    icmpv4, ArpHardwareId, ArpOperation, ArpPacket, EtherType, IcmpEchoHeader, Icmpv4Header,
    Icmpv4Type, Icmpv6Header, Icmpv6Type, IpNumber, Ipv4Header, Ipv6Extensions, Ipv6Header,
    TcpHeader, TcpOptionElement, UdpHeader,
};
use proptest::prelude::*;
use vnet_core::wire::MacAddr;
use vnet_core::wire::{arp, icmpv4 as our_icmpv4, icmpv6, ipv4, ipv6, tcp, udp, IpProtocol};

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..max)
}

proptest! {
    #[test]
    fn arp_matches(op in 1u16..=2, sha in any::<[u8; 6]>(), spa in any::<[u8; 4]>(), tha in any::<[u8; 6]>(), tpa in any::<[u8; 4]>()) {
        let theirs = ArpPacket::new(ArpHardwareId::ETHERNET, EtherType::IPV4, ArpOperation(op), &sha, &spa, &tha, &tpa).unwrap();
        let b = theirs.to_bytes();
        let r = arp::Repr::parse(&arp::Packet::new_checked(&b[..]).unwrap()).unwrap();
        prop_assert_eq!(u16::from(r.operation), op);
        prop_assert_eq!((r.source_hardware_addr, r.source_protocol_addr), (MacAddr(sha), Ipv4Addr::from(spa)));
        prop_assert_eq!((r.target_hardware_addr, r.target_protocol_addr), (MacAddr(tha), Ipv4Addr::from(tpa)));
        let mut out = [0u8; 28];
        r.emit(&mut arp::Packet::new_unchecked(&mut out[..]));
        prop_assert_eq!(ArpPacket::from_slice(&out).unwrap(), theirs);
    }

    #[test]
    fn ipv4_matches(payload_len in 0u16..2000, ttl in any::<u8>(), proto in any::<u8>(), src in any::<[u8; 4]>(), dst in any::<[u8; 4]>(),
                    ident in any::<u16>(), df in any::<bool>(), mf in any::<bool>(), off in 0u16..8192, opt_words in 0usize..=10, tos in any::<u8>()) {
        let mut h = Ipv4Header::new(payload_len, ttl, IpNumber(proto), src, dst).unwrap();
        h.identification = ident;
        h.dont_fragment = df;
        h.more_fragments = mf;
        h.fragment_offset = off.try_into().unwrap();
        h.dscp = (tos >> 2).try_into().unwrap();
        h.ecn = (tos & 3).try_into().unwrap();
        h.options = vec![1u8; opt_words * 4][..].try_into().unwrap();
        h.total_len = (h.header_len() + usize::from(payload_len)) as u16;
        h.header_checksum = h.calc_header_checksum();
        let mut b = h.to_bytes().to_vec();
        b.resize(b.len() + usize::from(payload_len), 0xab);
        let p = ipv4::Packet::new_checked(&b[..]).unwrap();
        prop_assert_eq!(p.options(), h.options.as_slice());
        prop_assert_eq!(usize::from(p.header_len()), h.header_len());
        let r = ipv4::Repr::parse(&p).unwrap();
        prop_assert_eq!((r.src_addr, r.dst_addr, r.next_header, r.hop_limit), (Ipv4Addr::from(src), Ipv4Addr::from(dst), IpProtocol(proto), ttl));
        prop_assert_eq!((r.ident, r.dont_frag, r.more_frags, r.frag_offset, r.dscp_ecn), (ident, df, mf, off * 8, tos));
        prop_assert_eq!(r.payload_len, usize::from(payload_len));
        // Ours without options parses in etherparse with a valid checksum.
        let mut out = vec![0u8; r.buffer_len()];
        r.emit(&mut ipv4::Packet::new_unchecked(&mut out[..]));
        let (theirs, _) = Ipv4Header::from_slice(&out).unwrap();
        prop_assert_eq!(theirs.header_checksum, theirs.calc_header_checksum());
        let mut want = h.clone();
        want.options = Default::default();
        want.total_len = 20 + payload_len;
        want.header_checksum = want.calc_header_checksum();
        prop_assert_eq!(theirs, want);
    }

    #[test]
    fn udp_matches(sp in any::<u16>(), dp in any::<u16>(), payload in bytes(600), v6 in any::<bool>(), s in any::<[u8; 16]>(), d in any::<[u8; 16]>()) {
        let (src, dst, theirs) = if v6 {
            let ip = Ipv6Header { source: s, destination: d, next_header: IpNumber::UDP, hop_limit: 1, payload_length: (8 + payload.len()) as u16, ..Default::default() };
            (IpAddr::from(s), IpAddr::from(d), UdpHeader::with_ipv6_checksum(sp, dp, &ip, &payload).unwrap())
        } else {
            let (s4, d4) = ([s[0], s[1], s[2], s[3]], [d[0], d[1], d[2], d[3]]);
            let ip = Ipv4Header::new((8 + payload.len()) as u16, 1, IpNumber::UDP, s4, d4).unwrap();
            (IpAddr::from(s4), IpAddr::from(d4), UdpHeader::with_ipv4_checksum(sp, dp, &ip, &payload).unwrap())
        };
        let mut b = theirs.to_bytes().to_vec();
        b.extend_from_slice(&payload);
        let p = udp::Packet::new_checked(&b[..]).unwrap();
        prop_assert!(p.verify_checksum(&src, &dst));
        prop_assert_eq!(p.payload(), &payload[..]);
        let r = udp::Repr::parse(&p).unwrap();
        prop_assert_eq!((r.src_port, r.dst_port, r.payload_len), (sp, dp, payload.len()));
        let mut out = vec![0u8; r.buffer_len()];
        let mut q = udp::Packet::new_unchecked(&mut out[..]);
        r.emit(&mut q);
        q.payload_mut().copy_from_slice(&payload);
        q.fill_checksum(&src, &dst);
        prop_assert_eq!(out, b);
    }

    #[test]
    fn tcp_matches(sp in any::<u16>(), dp in any::<u16>(), seq in any::<u32>(), ack in any::<u32>(), flags in any::<u8>(), win in any::<u16>(),
                   mss in proptest::option::of(any::<u16>()), ws in proptest::option::of(any::<u8>()), sack_ok in any::<bool>(),
                   ts in proptest::option::of(any::<(u32, u32)>()), sacks in proptest::collection::vec(any::<(u32, u32)>(), 0..=2),
                   payload in bytes(300), s in any::<[u8; 4]>(), d in any::<[u8; 4]>()) {
        let mut h = TcpHeader::new(sp, dp, seq, win);
        h.acknowledgment_number = ack;
        h.fin = flags & 1 != 0; h.syn = flags & 2 != 0; h.rst = flags & 4 != 0; h.psh = flags & 8 != 0;
        h.ack = flags & 16 != 0; h.urg = flags & 32 != 0; h.ece = flags & 64 != 0; h.cwr = flags & 128 != 0;
        let mut opts = Vec::new();
        if let Some(v) = mss { opts.push(TcpOptionElement::MaximumSegmentSize(v)); }
        if let Some(v) = ws { opts.push(TcpOptionElement::Noop); opts.push(TcpOptionElement::WindowScale(v)); }
        if sack_ok { opts.push(TcpOptionElement::SelectiveAcknowledgementPermitted); }
        if let Some((a, b)) = ts { opts.push(TcpOptionElement::Timestamp(a, b)); }
        if let Some((first, rest)) = sacks.split_first() {
            let mut more = [None; 3];
            for (m, r) in more.iter_mut().zip(rest) { *m = Some(*r); }
            opts.push(TcpOptionElement::SelectiveAcknowledgement(*first, more));
        }
        h.set_options(&opts).unwrap();
        let ip = Ipv4Header::new((h.header_len() + payload.len()) as u16, 1, IpNumber::TCP, s, d).unwrap();
        h.checksum = h.calc_checksum_ipv4(&ip, &payload).unwrap();
        let mut b = h.to_bytes().to_vec();
        b.extend_from_slice(&payload);
        let (src, dst) = (IpAddr::from(s), IpAddr::from(d));
        let p = tcp::Packet::new_checked(&b[..]).unwrap();
        prop_assert!(p.verify_checksum(&src, &dst));
        prop_assert_eq!(p.payload(), &payload[..]);
        // The options iterator agrees with etherparse's, option by option.
        let ours: Vec<_> = tcp::Options::new(p.options()).map(Result::unwrap)
            .filter(|o| !matches!(o, tcp::TcpOption::EndOfList | tcp::TcpOption::NoOperation)).collect();
        let theirs: Vec<_> = h.options_iterator().map(Result::unwrap)
            .filter(|o| !matches!(o, TcpOptionElement::Noop)).collect();
        prop_assert_eq!(ours.len(), theirs.len());
        for (o, t) in ours.iter().zip(&theirs) {
            let same = match (o, t) {
                (tcp::TcpOption::MaxSegmentSize(a), TcpOptionElement::MaximumSegmentSize(b)) => a == b,
                (tcp::TcpOption::WindowScale(a), TcpOptionElement::WindowScale(b)) => a == b,
                (tcp::TcpOption::SackPermitted, TcpOptionElement::SelectiveAcknowledgementPermitted) => true,
                (tcp::TcpOption::Timestamp { tsval, tsecr }, TcpOptionElement::Timestamp(a, b)) => (tsval, tsecr) == (a, b),
                (tcp::TcpOption::SackRange(r), TcpOptionElement::SelectiveAcknowledgement(first, more)) =>
                    r[0] == Some(*first) && r[1..] == more[..] ,
                _ => false,
            };
            prop_assert!(same, "{:?} vs {:?}", o, t);
        }
        let r = tcp::Repr::parse(&p).unwrap();
        prop_assert_eq!((r.seq_number, r.ack_number, r.flags.0, r.window_len), (seq, ack, flags, win));
        prop_assert_eq!((r.max_seg_size, r.window_scale, r.sack_permitted, r.timestamp), (mss, ws, sack_ok, ts));
        // Ours parses in etherparse with a valid checksum and the same options.
        let mut out = vec![0u8; r.buffer_len()];
        let mut q = tcp::Packet::new_unchecked(&mut out[..]);
        r.emit(&mut q);
        q.payload_mut().copy_from_slice(&payload);
        q.fill_checksum(&src, &dst);
        let (back, rest) = TcpHeader::from_slice(&out).unwrap();
        prop_assert_eq!(rest, &payload[..]);
        prop_assert_eq!(back.calc_checksum_ipv4(&ip, rest).unwrap(), back.checksum);
        let back_opts: Vec<_> = back.options_iterator().map(Result::unwrap).filter(|o| !matches!(o, TcpOptionElement::Noop)).collect();
        prop_assert_eq!(back_opts.len(), theirs.len());
        prop_assert_eq!((back.source_port, back.destination_port, back.sequence_number), (sp, dp, seq));
    }

    #[test]
    fn icmpv4_matches(kind in 0u8..4, id in any::<u16>(), seq in any::<u16>(), mtu in any::<u16>(), data in bytes(100)) {
        let t = match kind {
            0 => Icmpv4Type::EchoRequest(IcmpEchoHeader { id, seq }),
            1 => Icmpv4Type::EchoReply(IcmpEchoHeader { id, seq }),
            2 => Icmpv4Type::DestinationUnreachable(icmpv4::DestUnreachableHeader::FragmentationNeeded { next_hop_mtu: mtu }),
            _ => Icmpv4Type::TimeExceeded(icmpv4::TimeExceededCode::TtlExceededInTransit),
        };
        let h = Icmpv4Header::with_checksum(t, &data);
        let mut b = h.to_bytes().to_vec();
        b.extend_from_slice(&data);
        let p = our_icmpv4::Packet::new_checked(&b[..]).unwrap();
        prop_assert!(p.verify_checksum());
        let r = our_icmpv4::Repr::parse(&p).unwrap();
        let want = match kind {
            0 => our_icmpv4::Repr::EchoRequest { ident: id, seq_no: seq, data: &data },
            1 => our_icmpv4::Repr::EchoReply { ident: id, seq_no: seq, data: &data },
            2 => our_icmpv4::Repr::DstUnreachable { code: 4, next_hop_mtu: mtu, invoking: &data },
            _ => our_icmpv4::Repr::TimeExceeded { code: 0, invoking: &data },
        };
        prop_assert_eq!(r, want);
        let mut out = vec![0u8; r.buffer_len()];
        r.emit(&mut our_icmpv4::Packet::new_unchecked(&mut out[..]));
        prop_assert_eq!(out, b);
    }

    #[test]
    fn ipv6_and_extensions_match(hbh in proptest::option::of(0u8..3), dest in proptest::option::of(0u8..3), routing in proptest::option::of(0u8..3),
                                 frag in proptest::option::of((0u16..8192, any::<bool>(), any::<u32>())), upper in prop_oneof![Just(6u8), Just(17), Just(58), Just(59)],
                                 tail in bytes(64), tc in any::<u8>(), flow in 0u32..(1 << 20), hop in any::<u8>(), s in any::<[u8; 16]>(), d in any::<[u8; 16]>()) {
        // A chain in the order etherparse models (RFC 8200 §4.1), each header zero-filled.
        let mut chain: Vec<(u8, Vec<u8>)> = Vec::new();
        if let Some(n) = hbh { chain.push((0, vec![0; (usize::from(n) + 1) * 8])); }
        if let Some(n) = dest { chain.push((60, vec![0; (usize::from(n) + 1) * 8])); }
        if let Some(n) = routing { let mut r = vec![0; (usize::from(n) + 1) * 8]; r[2] = 4; chain.push((43, r)); }
        if let Some((off, m, id)) = frag {
            let mut f = vec![0; 8];
            f[2..4].copy_from_slice(&((off << 3) | u16::from(m)).to_be_bytes());
            f[4..8].copy_from_slice(&id.to_be_bytes());
            chain.push((44, f));
        }
        let first = chain.first().map_or(upper, |c| c.0);
        let mut payload = Vec::new();
        for (i, (_, h)) in chain.iter().enumerate() {
            let mut h = h.clone();
            h[0] = chain.get(i + 1).map_or(upper, |c| c.0);
            h[1] = if chain[i].0 == 44 { 0 } else { (h.len() / 8 - 1) as u8 };
            payload.extend_from_slice(&h);
        }
        let ext_len = payload.len();
        payload.extend_from_slice(&tail);
        let ip = Ipv6Header { traffic_class: tc, flow_label: flow.try_into().unwrap(), payload_length: payload.len() as u16,
                              next_header: IpNumber(first), hop_limit: hop, source: s, destination: d };
        let mut b = ip.to_bytes().to_vec();
        b.extend_from_slice(&payload);
        let p = ipv6::Packet::new_checked(&b[..]).unwrap();
        let r = ipv6::Repr::parse(&p).unwrap();
        prop_assert_eq!((r.src_addr, r.dst_addr, r.hop_limit, r.traffic_class, r.flow_label), (Ipv6Addr::from(s), Ipv6Addr::from(d), hop, tc, flow));
        let mut out = [0u8; 40];
        r.emit(&mut ipv6::Packet::new_unchecked(&mut out[..]));
        prop_assert_eq!(&out[..], &b[..40]);
        let (exts, next, rest) = Ipv6Extensions::from_slice(IpNumber(first), &payload).unwrap();
        let up = ipv6::upper_layer(&p).unwrap();
        prop_assert_eq!(up.protocol, IpProtocol(next.0));
        prop_assert_eq!(up.offset, payload.len() - rest.len());
        prop_assert_eq!(up.offset, ext_len);
        prop_assert_eq!(up.fragment.map(|f| (f.frag_offset / 8, f.more_frags, f.ident)),
                        exts.fragment.map(|f| (f.fragment_offset.value(), f.more_fragments, f.identification)));
    }

    #[test]
    fn icmpv6_matches(kind in 0u8..3, id in any::<u16>(), seq in any::<u16>(), hop in any::<u8>(), m in any::<bool>(), o in any::<bool>(),
                      life in any::<u16>(), reach in any::<u32>(), retrans in any::<u32>(), s in any::<[u8; 16]>(), d in any::<[u8; 16]>(), data in bytes(64)) {
        let t = match kind {
            0 => Icmpv6Type::EchoRequest(IcmpEchoHeader { id, seq }),
            1 => Icmpv6Type::EchoReply(IcmpEchoHeader { id, seq }),
            _ => Icmpv6Type::RouterAdvertisement(etherparse::icmpv6::RouterAdvertisementHeader {
                cur_hop_limit: hop, managed_address_config: m, other_config: o, router_lifetime: life }),
        };
        // RA options: one source link-layer address (valid for both).
        // (etherparse counts the RA's reachable time and retransmit timer as payload.)
        let lla = [1u8, 1, 2, 0, 0, 0, 0, 9];
        let tail = if kind == 2 { [&reach.to_be_bytes()[..], &retrans.to_be_bytes(), &lla].concat() } else { data.clone() };
        let h = Icmpv6Header::with_checksum(t, s, d, &tail).unwrap();
        let mut b = h.to_bytes().to_vec();
        b.extend_from_slice(&tail);
        let (src, dst) = (Ipv6Addr::from(s), Ipv6Addr::from(d));
        let p = icmpv6::Packet::new_checked(&b[..]).unwrap();
        prop_assert!(p.verify_checksum(&src, &dst));
        let r = icmpv6::Repr::parse(&p).unwrap();
        let want = match kind {
            0 => icmpv6::Repr::EchoRequest { ident: id, seq_no: seq, data: &tail },
            1 => icmpv6::Repr::EchoReply { ident: id, seq_no: seq, data: &tail },
            _ => icmpv6::Repr::Ndisc(icmpv6::NdiscRepr::RouterAdvert { hop_limit: hop, managed: m, other: o, router_lifetime: life,
                                                                   reachable_time: reach, retrans_time: retrans, options: &lla }),
        };
        prop_assert_eq!(r, want);
        let mut out = vec![0u8; r.buffer_len()];
        r.emit(&src, &dst, &mut icmpv6::Packet::new_unchecked(&mut out[..]));
        prop_assert_eq!(out, b);
    }

    /// Arbitrary bytes through every view, Repr and iterator: errors, never panics.
    #[test]
    fn arbitrary_bytes_never_panic(b in bytes(200)) {
        let (s4, d4) = (IpAddr::V4(Ipv4Addr::LOCALHOST), IpAddr::V4(Ipv4Addr::LOCALHOST));
        if let Ok(p) = arp::Packet::new_checked(&b[..]) { let _ = arp::Repr::parse(&p); }
        if let Ok(p) = ipv4::Packet::new_checked(&b[..]) { let _ = (ipv4::Repr::parse(&p), p.payload(), p.options()); }
        if let Ok(p) = ipv6::Packet::new_checked(&b[..]) { let _ = (ipv6::Repr::parse(&p), ipv6::upper_layer(&p)); for _ in p.ext_headers() {} }
        if let Ok(p) = our_icmpv4::Packet::new_checked(&b[..]) { let _ = our_icmpv4::Repr::parse(&p); }
        if let Ok(p) = icmpv6::Packet::new_checked(&b[..]) { let _ = icmpv6::Repr::parse(&p); }
        if let Ok(p) = udp::Packet::new_checked(&b[..]) { let _ = (udp::Repr::parse(&p), p.verify_checksum(&s4, &d4)); }
        if let Ok(p) = tcp::Packet::new_checked(&b[..]) { let _ = (tcp::Repr::parse(&p), p.verify_checksum(&s4, &d4)); }
        for _ in tcp::Options::new(&b) {}
        for _ in icmpv6::NdiscOptions::new(&b) {}
        for _ in icmpv6::DomainNames::new(&b) {}
    }
}
