//! `vnet dhcp set` changes only what it names, on vnetd's side (`PATCH`), so a
//! reservation added at the same moment by someone else is never lost: the two race here,
//! many times, through the real CLI and a real vnetd.

use std::thread;

use vnet_testbed::api::client;
use vnet_testbed::Daemon;

const ROUNDS: u32 = 40;

#[test]
fn dhcp_set_and_a_reservation_added_at_the_same_moment_both_hold() {
    let d = Daemon::start(Some(
        "[[network]]\nname = \"lab\"\nsubnet = \"10.7.0.0/24\"\ndhcp = {}\n",
    ));
    thread::scope(|s| {
        s.spawn(|| {
            for i in 0..ROUNDS {
                d.cli_ok(&["dhcp", "set", "lab", "--lease", &(600 + i).to_string()]);
            }
        });
        s.spawn(|| {
            for i in 0..ROUNDS {
                let mac = format!("52:54:00:00:07:{i:02x}");
                let ip = format!("10.7.0.{}", 10 + i);
                d.cli_ok(&["dhcp", "reserve", "lab", &mac, &ip]);
            }
        });
    });
    let dhcp = client(&d).network("lab").unwrap().dhcp.unwrap();
    assert_eq!(
        dhcp.reservations.len(),
        ROUNDS as usize,
        "reservations lost: {:?}",
        dhcp.reservations
    );
    assert_eq!(dhcp.lease_secs, u64::from(600 + ROUNDS - 1));
}

#[test]
fn dhcp_set_keeps_what_it_does_not_name() {
    let d = Daemon::start(Some(
        "[[network]]\nname = \"lab\"\nsubnet = \"10.7.0.0/24\"\n\
         dhcp = { dns = [\"10.7.0.1\"], domain = \"lab.test\", lease_secs = 900 }\n",
    ));
    d.cli_ok(&["dhcp", "set", "lab", "--range", "10.7.0.100-10.7.0.150"]);
    let dhcp = client(&d).network("lab").unwrap().dhcp.unwrap();
    assert_eq!(
        dhcp.range,
        Some(["10.7.0.100".parse().unwrap(), "10.7.0.150".parse().unwrap()])
    );
    assert_eq!(
        (dhcp.lease_secs, dhcp.domain.as_deref()),
        (900, Some("lab.test"))
    );
    assert_eq!(
        dhcp.dns,
        ["10.7.0.1".parse::<std::net::Ipv4Addr>().unwrap()]
    );
    // An empty domain announces none.
    d.cli_ok(&["dhcp", "set", "lab", "--domain", ""]);
    let dhcp = client(&d).network("lab").unwrap().dhcp.unwrap();
    assert_eq!((dhcp.domain, dhcp.lease_secs), (None, 900));
}
