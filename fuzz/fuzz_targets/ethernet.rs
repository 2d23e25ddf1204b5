#![no_main]
//! Ethernet/802.1Q parsing and the switch's whole ingress decision.
use libfuzzer_sys::fuzz_target;
use std::time::Instant;
use vnet_core::switch::{Switch, SwitchConfig, VlanMode};

fuzz_target!(|data: &[u8]| {
    let _ = vnet_core::wire::Frame::parse(data);
    let mut sw = Switch::new(SwitchConfig::default());
    let a = sw.add_port(VlanMode::default()).unwrap();
    let _b = sw
        .add_port(VlanMode::Trunk {
            allowed: vec![1, 10],
            native: None,
        })
        .unwrap();
    if let vnet_core::switch::Verdict::Forward(fwd) = sw.ingress(Instant::now(), a, data) {
        for _ in sw.egress(&fwd) {}
    }
});
