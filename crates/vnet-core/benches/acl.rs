//! The cost of an ACL's decision per frame, with 0, 10, 100 and 1000 rules: the
//! compiled classifier (`policy::acl::Classifier`, a tuple-space search) against the
//! linear scan that defines the rules' meaning (`first_match`), and the whole per-frame
//! check a port does (`Acl::check`: parse the headers, classify, count).
//!
//! The rules are of four shapes in turn (TCP destination port, UDP destination port,
//! an IPv4 source /24, an ICMP type), none of which matches the frame (TCP from
//! 192.168.0.1 to port 22): the frame gets the default, after the scan looked at
//! every rule. Run with `cargo bench -p vnet-core --bench acl`.

use std::net::Ipv4Addr;
use std::time::Instant;

use divan::counter::ItemsCount;
use divan::{black_box, Bencher};
use vnet_core::policy::acl::fields::addr_v4;
use vnet_core::policy::acl::{
    first_match, Acl, AclConfig, Action, Chain, Classifier, Direction, Fields, Match, PortRange,
    Prefix, Rule,
};
use vnet_core::wire::ethernet::write_header;
use vnet_core::wire::{ipv4, EtherType, IpProtocol, MacAddr};

const COUNTS: [usize; 4] = [0, 10, 100, 1000];

fn main() {
    divan::main();
}

fn rules(n: usize) -> Vec<Rule> {
    (0..n)
        .map(|i| {
            let port = PortRange {
                lo: 1000 + i as u16,
                hi: 1000 + i as u16,
            };
            let matches = match i % 4 {
                0 => Match {
                    proto: Some(IpProtocol::TCP.0),
                    dst_port: Some(port),
                    ..Match::default()
                },
                1 => Match {
                    proto: Some(IpProtocol::UDP.0),
                    dst_port: Some(port),
                    ..Match::default()
                },
                2 => Match {
                    src: Some(Prefix::new(
                        false,
                        addr_v4(Ipv4Addr::new(10, (i >> 8) as u8, i as u8, 0)),
                        24,
                    )),
                    ..Match::default()
                },
                _ => Match {
                    proto: Some(IpProtocol::ICMP.0),
                    icmp_type: Some((i % 256) as u8),
                    ..Match::default()
                },
            };
            Rule {
                action: Action::Drop,
                matches,
            }
        })
        .collect()
}

/// A 60-byte TCP SYN from 192.168.0.1:40000 to 192.168.0.2:22.
fn frame() -> Vec<u8> {
    let mut f = vec![0u8; 60];
    write_header(&mut f, MacAddr([2; 6]), MacAddr([4; 6]), EtherType::IPV4);
    let ip = ipv4::Repr {
        src_addr: Ipv4Addr::new(192, 168, 0, 1),
        dst_addr: Ipv4Addr::new(192, 168, 0, 2),
        next_header: IpProtocol::TCP,
        payload_len: 20,
        hop_limit: 64,
        dscp_ecn: 0,
        ident: 0,
        dont_frag: true,
        more_frags: false,
        frag_offset: 0,
    };
    ip.emit(&mut ipv4::Packet::new_unchecked(&mut f[14..34]));
    f[34..36].copy_from_slice(&40000u16.to_be_bytes());
    f[36..38].copy_from_slice(&22u16.to_be_bytes());
    f[46] = 5 << 4;
    f[47] = 0x02;
    f
}

/// The linear scan over the rules.
#[divan::bench(args = COUNTS)]
fn naive(bencher: Bencher, n: usize) {
    let rules = rules(n);
    let f = Fields::parse(&frame(), None);
    assert_eq!(first_match(&rules, &f, false), None);
    bencher
        .counter(ItemsCount::new(1usize))
        .bench_local(|| first_match(black_box(&rules), black_box(&f), false));
}

/// The compiled classifier.
#[divan::bench(args = COUNTS)]
fn compiled(bencher: Bencher, n: usize) {
    let c = Classifier::new(rules(n));
    let f = Fields::parse(&frame(), None);
    assert_eq!(c.classify(&f, false), None);
    bencher
        .counter(ItemsCount::new(1usize))
        .bench_local(|| c.classify(black_box(&f), false));
}

/// What a port does per frame: parse, classify (compiled), count.
#[divan::bench(args = COUNTS)]
fn check(bencher: Bencher, n: usize) {
    let config = AclConfig {
        inbound: Chain {
            rules: rules(n),
            default: Action::Allow,
        },
        ..AclConfig::default()
    };
    let mut acl = Acl::new(&config, 1024);
    let frame = frame();
    let now = Instant::now();
    bencher
        .counter(ItemsCount::new(1usize))
        .bench_local(|| acl.check(now, Direction::In, black_box(&frame), None));
}
