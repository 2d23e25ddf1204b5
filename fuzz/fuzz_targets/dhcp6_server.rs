#![no_main]
//! Any DHCPv6 message into the DHCP server, wrapped in a well-formed frame to
//! ff02::1:2 so it reaches the parser (raw frames rarely pass the UDP checksum); the
//! data may hold several messages separated by 0xff 0xff 0xff.
use libfuzzer_sys::fuzz_target;
use vnet_core::wire::MacAddr;
use vnet_dhcp::wire::datagram6::udp6_frame;
use vnet_dhcp::{Dhcp6Config, DhcpConfig, DhcpServer, LeaseDb, Timestamp};

fuzz_target!(|data: &[u8]| {
    let mac = MacAddr([0x02, 0, 0, 0, 0, 0xfe]);
    let mut config = DhcpConfig::for_subnet(mac, "10.0.0.0".parse().unwrap(), 24).unwrap();
    let mut v6 = Dhcp6Config::for_prefix("fd00::".parse().unwrap());
    v6.pool = "fd00::1000".parse().unwrap()..="fd00::1003".parse().unwrap();
    config.v6 = Some(v6);
    let mut server = DhcpServer::new(config, LeaseDb::new()).unwrap();
    let client = MacAddr([0x52, 0x54, 0, 0, 0, 1]);
    let mut now = Timestamp::from_unix_millis(1_700_000_000_000);
    for payload in data.split(|b| *b == 0xff).filter(|p| !p.is_empty()) {
        let frame = udp6_frame(
            (client, MacAddr([0x33, 0x33, 0, 1, 0, 2])),
            ("fe80::5054:ff:fe00:1".parse().unwrap(), 546),
            ("ff02::1:2".parse().unwrap(), 547),
            payload,
        );
        let _ = server.receive(now, &frame);
        now = now + std::time::Duration::from_secs(60);
        let _ = server.poll(now);
    }
    let _ = vnet_dhcp::LeaseDb::from_json(&server.lease_db().to_json()).unwrap();
});
