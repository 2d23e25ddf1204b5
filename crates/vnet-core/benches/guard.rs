//! Port security's per-frame cost: `Guard::ingress` on the frames a guarded VM sends
//! most (IPv4 UDP, an ARP request, an IPv6 neighbour advertisement), with every guard
//! on as the `strict` profile turns them on plus listed prefixes, against a vnet's DHCP
//! bindings of 250 leases.
//!
//! Run with `cargo bench -p vnet-core --bench guard`.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use divan::counter::ItemsCount;
use divan::{black_box, Bencher};
use vnet_core::policy::guard::{
    eui64_link_local, DhcpBindings, Guard, GuardConfig, IpGuard, MacLock, Prefix, Violation,
};
use vnet_core::wire::ethernet::write_header;
use vnet_core::wire::{arp, EtherType, MacAddr};

fn main() {
    divan::main();
}

const VM: MacAddr = MacAddr([0x52, 0x54, 0, 0, 0, 10]);
const VM_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 10);

fn guard() -> Guard {
    let mut g = Guard::new(
        GuardConfig {
            mac_lock: Some(MacLock {
                macs: vec![],
                learn: 1,
                violation: Violation::Drop,
            }),
            ip_guard: Some(IpGuard {
                prefixes: vec![Prefix::new("fd00::".parse().unwrap(), 64).unwrap()],
                dhcp: true,
                ipv6_link_local: true,
            }),
            dhcp_guard: true,
            ra_guard: true,
        },
        64,
    );
    g.set_dhcp_bindings(Arc::new(DhcpBindings::new((1..=250u8).map(|n| {
        (
            MacAddr([0x52, 0x54, 0, 0, 0, n]),
            Ipv4Addr::new(10, 0, 0, n),
        )
    }))));
    g
}

fn udp4() -> Vec<u8> {
    let mut f = vec![0u8; 60];
    write_header(
        &mut f,
        MacAddr([0x52, 0x54, 0, 0, 0, 20]),
        VM,
        EtherType::IPV4,
    );
    let ip = &mut f[14..];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&46u16.to_be_bytes());
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&VM_IP.octets());
    ip[16..20].copy_from_slice(&[10, 0, 0, 20]);
    ip[20..22].copy_from_slice(&5000u16.to_be_bytes());
    ip[22..24].copy_from_slice(&53u16.to_be_bytes());
    ip[24..26].copy_from_slice(&26u16.to_be_bytes());
    f
}

fn arp_request() -> Vec<u8> {
    let mut f = vec![0u8; 60];
    write_header(&mut f, MacAddr::BROADCAST, VM, EtherType::ARP);
    arp::Repr {
        operation: arp::Operation::Request,
        source_hardware_addr: VM,
        source_protocol_addr: VM_IP,
        target_hardware_addr: MacAddr([0; 6]),
        target_protocol_addr: Ipv4Addr::new(10, 0, 0, 20),
    }
    .emit(&mut arp::Packet::new_unchecked(&mut f[14..]));
    f
}

fn neighbour_advert() -> Vec<u8> {
    let mut f = vec![0u8; 14 + 40 + 32];
    write_header(&mut f, MacAddr::BROADCAST, VM, EtherType::IPV6);
    let ll: Ipv6Addr = eui64_link_local(VM);
    let ip = &mut f[14..];
    ip[0] = 0x60;
    ip[4..6].copy_from_slice(&32u16.to_be_bytes());
    ip[6] = 58;
    ip[7] = 255;
    ip[8..24].copy_from_slice(&ll.octets());
    ip[24..40].copy_from_slice(&"ff02::1".parse::<Ipv6Addr>().unwrap().octets());
    let na = &mut ip[40..];
    na[0] = 136;
    na[8..24].copy_from_slice(&ll.octets());
    na[24] = 2;
    na[25] = 1;
    na[26..32].copy_from_slice(&VM.0);
    f
}

fn bench(bencher: Bencher, frame: Vec<u8>) {
    let mut g = guard();
    assert_eq!(g.ingress(&frame), Ok(()), "the benchmark frame passes");
    bencher
        .counter(ItemsCount::new(1usize))
        .bench_local(|| black_box(g.ingress(black_box(&frame))));
}

#[divan::bench]
fn ipv4_udp(bencher: Bencher) {
    bench(bencher, udp4());
}

#[divan::bench]
fn arp_request_frame(bencher: Bencher) {
    bench(bencher, arp_request());
}

#[divan::bench]
fn ipv6_neighbour_advert(bencher: Bencher) {
    bench(bencher, neighbour_advert());
}
