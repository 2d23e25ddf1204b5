#![no_main]
//! VXLAN datagrams as a tunnel receives them: the header, the flow hash, and the
//! forwarding database's learning and lookup on the inner frame.
use libfuzzer_sys::fuzz_target;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};
use vnet_core::fdb::Fdb;
use vnet_core::wire::vxlan::{flow_entropy, Packet, Repr, SOURCE_PORTS};
use vnet_core::wire::MacAddr;

fuzz_target!(|data: &[u8]| {
    let Ok(p) = Packet::new_checked(data) else {
        return;
    };
    let _ = flow_entropy(p.inner(), SOURCE_PORTS);
    let Ok(_repr) = Repr::parse(&p) else {
        return;
    };
    let inner = p.inner();
    let remote = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
    let mut fdb = Fdb::new(Duration::from_secs(300), 64, false);
    fdb.add_remote(remote);
    if fdb.hear(remote, inner.len()).is_ok() && inner.len() >= 14 {
        let now = Instant::now();
        let mac = |b: &[u8]| MacAddr(b.try_into().unwrap());
        fdb.learn(now, mac(&inner[6..12]), remote);
        let _ = fdb.destination(now, mac(&inner[0..6]));
    }
});
