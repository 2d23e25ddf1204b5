#![no_main]
//! Port security's judgement of a frame a guest sent, with every guard on (MAC lock
//! learning one source, IP source guard with prefixes, DHCP leases and link-local, DHCP
//! server and RA guards): any bytes get pass or a drop cause, never a panic.
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use vnet_core::policy::guard::{
    DhcpBindings, Guard, GuardConfig, IpGuard, MacLock, Prefix, Violation,
};
use vnet_core::wire::MacAddr;

fuzz_target!(|data: &[u8]| {
    let mut guard = Guard::new(
        GuardConfig {
            mac_lock: Some(MacLock {
                macs: vec![MacAddr([0x52, 0x54, 0, 0, 0, 1])],
                learn: 1,
                violation: Violation::Shutdown,
            }),
            ip_guard: Some(IpGuard {
                prefixes: vec![
                    Prefix::new("10.0.0.0".parse().unwrap(), 24).unwrap(),
                    Prefix::new("fd00::".parse().unwrap(), 64).unwrap(),
                ],
                dhcp: true,
                ipv6_link_local: true,
            }),
            dhcp_guard: true,
            ra_guard: true,
        },
        4,
    );
    guard.set_dhcp_bindings(Arc::new(DhcpBindings::new([(
        MacAddr([0x52, 0x54, 0, 0, 0, 1]),
        "10.0.1.5".parse().unwrap(),
    )])));
    // The same bytes twice: the second time against what the first one taught it.
    let _ = guard.ingress(data);
    let _ = guard.ingress(data);
    let _ = guard.egress();
});
