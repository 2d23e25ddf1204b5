//! The switch's per-frame forwarding decision: `Switch::ingress` plus walking
//! `Switch::egress`, as the data plane does for every frame. No I/O, no copies: this is
//! the ceiling the switch logic puts on packet rate.
//!
//! Run with `cargo bench -p vnet-core` (`-- known_unicast` to filter). Each benchmark
//! counts one frame per iteration, so divan also prints frames per second.

use std::time::Instant;

use divan::counter::ItemsCount;
use divan::{black_box, Bencher};
use vnet_core::switch::{PortId, Switch, SwitchConfig, Verdict, VlanMode};
use vnet_core::wire::ethernet::write_header;
use vnet_core::wire::{EtherType, MacAddr};

fn main() {
    divan::main();
}

fn mac(n: u8) -> MacAddr {
    MacAddr([0x52, 0x54, 0, 0, 0, n])
}

/// A minimum-size (60 bytes without FCS) untagged IPv4 frame.
fn frame(dst: MacAddr, src: MacAddr) -> Vec<u8> {
    let mut f = vec![0u8; 60];
    write_header(&mut f, dst, src, EtherType::IPV4);
    f
}

fn switch_with(n: usize) -> (Switch, Vec<PortId>) {
    let mut sw = Switch::new(SwitchConfig::default());
    let ports = (0..n)
        .map(|_| {
            sw.add_port(VlanMode::default())
                .expect("default mode is valid")
        })
        .collect();
    (sw, ports)
}

/// What the data plane does per received frame: decide, then visit each destination.
/// Returns how many ports the frame goes out of.
fn forward(sw: &mut Switch, now: Instant, from: PortId, bytes: &[u8]) -> usize {
    match sw.ingress(now, from, bytes) {
        Verdict::Forward(fwd) => {
            let mut n = 0;
            for out in sw.egress(&fwd) {
                black_box(out);
                n += 1;
            }
            n
        }
        Verdict::Drop(cause) => panic!("benchmark frame dropped: {cause:?}"),
    }
}

/// `ports` ports on the default VLAN; the first two have learned `mac(1)` and `mac(2)`.
/// Benchmarks a frame from the first port to the second.
fn bench_known_unicast(bencher: Bencher, ports: usize) {
    let (mut sw, p) = switch_with(ports);
    let now = Instant::now();
    let to_b = frame(mac(2), mac(1));
    let to_a = frame(mac(1), mac(2));
    forward(&mut sw, now, p[0], &to_b);
    forward(&mut sw, now, p[1], &to_a);
    assert_eq!(forward(&mut sw, now, p[0], &to_b), 1, "not known unicast");
    bencher
        .counter(ItemsCount::new(1usize))
        .bench_local(|| forward(&mut sw, now, p[0], black_box(&to_b)));
}

/// Known unicast between the two ports of a 2-port switch.
#[divan::bench]
fn known_unicast_2_ports(bencher: Bencher) {
    bench_known_unicast(bencher, 2);
}

/// Known unicast between two ports with 254 more, idle, on the same VLAN.
#[divan::bench]
fn known_unicast_256_ports(bencher: Bencher) {
    bench_known_unicast(bencher, 256);
}

/// A broadcast from one port of 17, flooded to the other 16.
#[divan::bench]
fn broadcast_flood_16(bencher: Bencher) {
    let (mut sw, p) = switch_with(17);
    let now = Instant::now();
    let bcast = frame(MacAddr::BROADCAST, mac(1));
    assert_eq!(forward(&mut sw, now, p[0], &bcast), 16);
    bencher
        .counter(ItemsCount::new(1usize))
        .bench_local(|| forward(&mut sw, now, p[0], black_box(&bcast)));
}
