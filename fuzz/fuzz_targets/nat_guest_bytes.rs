#![no_main]
//! Bytes from guests that the NAT device takes apart itself: DNS questions about the
//! vnet's DHCP names (one with addresses of both families), and IPv4 fragments to put back together (the input split at 0xff
//! bytes into packets, so one run can build and break a datagram).
use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use vnet_nat::fragments::Reassembler;
use vnet_nat::LocalNames;

fuzz_target!(|data: &[u8]| {
    let mut names = LocalNames::new(Some("vnet.test"));
    names.insert("alpha", Ipv4Addr::new(10, 0, 0, 5));
    names.insert("alpha", Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 5));
    let _ = names.answer(data);
    let mut fragments = Reassembler::default();
    let mut now = Instant::now();
    for packet in data.split(|&b| b == 0xff) {
        now += Duration::from_millis(1);
        let _ = fragments.add(now, packet);
    }
    fragments.expire(now + vnet_nat::fragments::TIMEOUT);
    assert!(fragments.is_empty(), "everything times out");
});
