#![no_main]
//! Any frame into the DHCP server (debug assertions on, as in tests).
use libfuzzer_sys::fuzz_target;
use vnet_core::wire::MacAddr;
use vnet_dhcp::{DhcpConfig, DhcpServer, LeaseDb, Timestamp};

fuzz_target!(|data: &[u8]| {
    let mac = MacAddr([0x02, 0, 0, 0, 0, 0xfe]);
    let config = DhcpConfig::for_subnet(mac, "10.0.0.0".parse().unwrap(), 24).unwrap();
    let mut server = DhcpServer::new(config, LeaseDb::new()).unwrap();
    let now = Timestamp::from_unix_millis(1_700_000_000_000);
    let _ = server.receive(now, data);
    let _ = server.poll(Timestamp::from_unix_millis(1_700_000_001_000));
});
