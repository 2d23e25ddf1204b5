//! Port security end to end (README, "Port security"): namespace VMs on TAP ports of the
//! real vnetd that change their MAC, send from addresses they were not given, claim
//! another VM's address, serve DHCP or advertise themselves as routers; each is dropped
//! and counted by cause while the VMs' own traffic flows. Settings are live (`vnet port
//! set`, `[network.policy]`) and a named port keeps its own across a restart.

use std::time::Duration;

use std::net::Ipv6Addr;

use vnet_core::policy::guard::eui64_link_local;
use vnet_core::wire::ethernet::write_header;
use vnet_core::wire::icmpv6::{self, Message, NdiscOption, PrefixInfo};
use vnet_core::wire::{ipv6, EtherType, IpProtocol, MacAddr};
use vnet_model::policy::security::SecurityReport;
use vnet_testbed::api::{drops, port, tap_vm};
use vnet_testbed::{frames, skip_unless_root, unique_name, wait_for, Daemon, NsVm};

const T: Duration = Duration::from_secs(30);

/// `vnet port set NET PORT FLAGS...`, which must succeed.
fn set(d: &Daemon, net: &str, id: u32, flags: &[&str]) {
    let id = id.to_string();
    let mut args = vec!["port", "set", net, &id];
    args.extend_from_slice(flags);
    d.cli_ok(&args);
}

/// Waits until port `id` has dropped more than `n` frames as `cause`; returns the count.
fn wait_drops(d: &Daemon, net: &str, id: u32, cause: &str, n: u64) -> u64 {
    let mut seen = 0;
    assert!(
        wait_for(T, || {
            seen = drops(&port(d, net, id), cause);
            seen > n
        }),
        "port {id} of {net} dropped {seen} frame(s) as {cause}, expected more than {n}: {:?}\n{}",
        port(d, net, id),
        d.log()
    );
    seen
}

/// What port security holds for port `id` now.
fn security(d: &Daemon, net: &str, id: u32) -> SecurityReport {
    port(d, net, id)
        .policy_counters
        .and_then(|c| c.security)
        .unwrap_or_default()
}

fn set_mac(vm: &NsVm, mac: &str) {
    vm.ns()
        .exec_ok(&["ip", "link", "set", "dev", vm.ifname(), "address", mac]);
}

/// The MAC `vm` has in its neighbour table for `ip`, if any.
fn neighbour(vm: &NsVm, ip: &str) -> Option<String> {
    let out = vm.ns().exec_ok(&["ip", "neigh", "show", ip]);
    let words: Vec<&str> = out.split_whitespace().collect();
    let at = words.iter().position(|w| *w == "lladdr")?;
    words.get(at + 1).map(|m| m.to_string())
}

/// Sends `frames` out of `vm`'s interface as they are (an AF_PACKET socket).
fn send_raw(vm: &NsVm, frames: &[Vec<u8>]) {
    let script = "import socket, sys\n\
                  s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)\n\
                  s.bind((sys.argv[1], 0))\n\
                  for f in sys.argv[2:]:\n    s.send(bytes.fromhex(f))\n";
    let hex: Vec<String> = frames
        .iter()
        .map(|f| f.iter().map(|b| format!("{b:02x}")).collect())
        .collect();
    let mut argv = vec!["python3", "-c", script, vm.ifname()];
    argv.extend(hex.iter().map(String::as_str));
    vm.ns().exec_ok(&argv);
}

/// A gratuitous ARP from `vm` claiming `ip` for its own MAC, three times.
fn claim(vm: &NsVm, ip: &str) {
    let garp = frames::arp_request(frames::mac(vm.mac()), frames::ip(ip), frames::ip(ip));
    send_raw(vm, &[garp.clone(), garp.clone(), garp]);
}

/// Pings `to` from `vm` with `from` as the source address.
fn ping_from(vm: &NsVm, from: &str, to: &str) -> bool {
    vm.ns()
        .exec(&[
            "ping", "-n", "-q", "-c", "2", "-i", "0.2", "-W", "1", "-I", from, to,
        ])
        .status
        .success()
}

#[test]
fn a_vm_that_changes_its_mac_is_dropped_and_counted_while_its_own_mac_works() {
    skip_unless_root!();
    let d = Daemon::start(Some("[[network]]\nname = \"lab\"\n"));
    let (a_id, a) = tap_vm(&d, "lab", "02:00:00:15:00:01", "10.115.0.1/24");
    let (_, b) = tap_vm(&d, "lab", "02:00:00:15:00:02", "10.115.0.2/24");
    set(&d, "lab", a_id, &["--mac-limit", "1"]);
    assert!(a.ping(b.ip(), 2), "the first MAC is learned and passes");
    assert_eq!(drops(&port(&d, "lab", a_id), "mac_lock"), 0);

    set_mac(&a, "02:00:00:15:00:99");
    assert!(!a.ping(b.ip(), 2), "a second MAC is over the limit");
    wait_drops(&d, "lab", a_id, "mac_lock", 0);
    assert_eq!(
        neighbour(&b, a.ip()).as_deref(),
        Some("02:00:00:15:00:01"),
        "b never heard of the new MAC"
    );

    set_mac(&a, "02:00:00:15:00:01");
    assert!(
        a.ping(b.ip(), 2),
        "the learned MAC still passes:\n{}",
        d.log()
    );
    assert_eq!(
        security(&d, "lab", a_id).learned_macs,
        ["02:00:00:15:00:01".parse().unwrap()]
    );
}

#[test]
fn shutdown_mode_shuts_the_port_until_a_policy_change_enables_it() {
    skip_unless_root!();
    let d = Daemon::start(Some("[[network]]\nname = \"lab\"\n"));
    let (a_id, a) = tap_vm(&d, "lab", "02:00:00:16:00:01", "10.116.0.1/24");
    let (_, b) = tap_vm(&d, "lab", "02:00:00:16:00:02", "10.116.0.2/24");
    set(
        &d,
        "lab",
        a_id,
        &[
            "--mac-lock",
            "02:00:00:16:00:01",
            "--mac-violation",
            "shutdown",
        ],
    );
    assert!(a.ping(b.ip(), 2), "the listed MAC passes");

    set_mac(&a, "02:00:00:16:00:66");
    a.ping(b.ip(), 1);
    wait_drops(&d, "lab", a_id, "mac_lock", 0);
    assert_eq!(
        security(&d, "lab", a_id).shut_down_by,
        Some("02:00:00:16:00:66".parse().unwrap())
    );
    let shown = d.cli_ok(&["port", "show", "lab", &a_id.to_string()]);
    assert!(
        shown.contains("by 02:00:00:16:00:66: set its security again to enable it")
            && shown.contains("mac_violation=shutdown")
            && shown.contains("(port's own)"),
        "{shown}"
    );
    assert!(
        wait_for(T, || d.log().contains(
            "port security shut the port down: it sent from 02:00:00:16:00:66"
        )),
        "the log says why:\n{}",
        d.log()
    );

    // Shut down: even the listed MAC gets nothing through, either way.
    set_mac(&a, "02:00:00:16:00:01");
    assert!(!a.ping(b.ip(), 2), "a shut port forwards nothing");
    wait_drops(&d, "lab", a_id, "shutdown", 0);
    assert!(!b.ping(a.ip(), 1));

    // A policy change enables it again.
    set(&d, "lab", a_id, &["--mac-violation", "shutdown"]);
    assert!(
        wait_for(T, || a.ping(b.ip(), 1)),
        "re-enabled:\n{}",
        d.log()
    );
    assert_eq!(security(&d, "lab", a_id).shut_down_by, None);
}

const B_MAC: &str = "02:00:00:17:00:02";

#[test]
fn a_spoofed_source_or_an_arp_claim_for_another_vm_is_dropped_while_the_real_address_works() {
    skip_unless_root!();
    let d = Daemon::start(Some("[[network]]\nname = \"lab\"\n"));
    let (a_id, a) = tap_vm(&d, "lab", "02:00:00:17:00:01", "10.117.0.1/24");
    let (_, b) = tap_vm(&d, "lab", B_MAC, "10.117.0.2/24");
    let (_, c) = tap_vm(&d, "lab", "02:00:00:17:00:03", "10.117.0.3/24");
    set(&d, "lab", a_id, &["--ip-guard", "10.117.0.1"]);
    assert!(a.ping(b.ip(), 2), "the listed address works");
    assert_eq!(drops(&port(&d, "lab", a_id), "ip_guard"), 0);

    // a claims b's address: c, which knows b, must not believe it.
    assert!(c.ping(b.ip(), 1));
    assert_eq!(neighbour(&c, b.ip()).as_deref(), Some(B_MAC));
    claim(&a, b.ip());
    wait_drops(&d, "lab", a_id, "ip_guard", 2);
    assert_eq!(
        neighbour(&c, b.ip()).as_deref(),
        Some(B_MAC),
        "the claim did not reach c"
    );
    assert!(c.ping(b.ip(), 1));

    // a sends from an address it was not given.
    let claimed = drops(&port(&d, "lab", a_id), "ip_guard");
    a.ns()
        .exec_ok(&["ip", "addr", "add", "10.117.0.50/24", "dev", a.ifname()]);
    assert!(!ping_from(&a, "10.117.0.50", b.ip()), "a spoofed source");
    let dropped = wait_drops(&d, "lab", a_id, "ip_guard", claimed);
    let metrics = vnet_testbed::api::client(&d).metrics().unwrap();
    let series =
        format!("vnet_port_drops_total{{net=\"lab\",port=\"{a_id}\",cause=\"ip_guard\"}} ");
    assert!(
        metrics
            .lines()
            .filter_map(|l| l.strip_prefix(&series))
            .any(|n| n.parse::<u64>().unwrap() >= dropped),
        "{metrics}"
    );
    assert!(
        ping_from(&a, a.ip(), b.ip()),
        "the real address still works"
    );
}

/// A vnet on `p.0/24` with its DHCP service (pool .128–.253) and `policy` as its
/// `[network.policy]` table.
fn dhcp_vnet(net: &str, p: &str, policy: &str) -> String {
    format!(
        "[[network]]\nname = \"{net}\"\nsubnet = \"{p}.0/24\"\ndhcp = {{}}\n\n[network.policy]\n{policy}\n"
    )
}

#[test]
fn under_the_strict_profile_leased_vms_talk_and_a_static_spoof_cannot() {
    skip_unless_root!();
    let d = Daemon::start(Some(&dhcp_vnet("lab", "10.118.0", "security = \"strict\"")));
    let (a_id, a) = tap_vm(&d, "lab", "02:00:00:18:00:01", "");
    let (_, b) = tap_vm(&d, "lab", "02:00:00:18:00:02", "");
    let lease_a = a.dhcp(&[]).unwrap_or_else(|e| panic!("{e}\n{}", d.log()));
    let lease_b = b.dhcp(&[]).unwrap_or_else(|e| panic!("{e}\n{}", d.log()));
    let (ip_a, ip_b) = (lease_a.ip().unwrap(), lease_b.ip().unwrap());
    assert!(ip_a.starts_with("10.118.0.") && ip_b.starts_with("10.118.0."));
    assert!(
        ping_from(&a, ip_a, ip_b),
        "leased addresses talk:\n{}",
        d.log()
    );
    assert_eq!(drops(&port(&d, "lab", a_id), "ip_guard"), 0);

    a.ns()
        .exec_ok(&["ip", "addr", "add", "10.118.0.77/24", "dev", a.ifname()]);
    assert!(
        !ping_from(&a, "10.118.0.77", ip_b),
        "an address nobody leased"
    );
    wait_drops(&d, "lab", a_id, "ip_guard", 0);
    assert!(ping_from(&a, ip_a, ip_b), "the leased one still works");
}

/// Runs busybox `udhcpd` in `vm`, offering `p.100`–`p.110`.
fn rogue_dhcp_server(vm: &NsVm, p: &str) -> (tempfile::TempDir, vnet_testbed::ChildGuard) {
    let dir = tempfile::Builder::new()
        .prefix("vnet-rogue-")
        .tempdir()
        .unwrap();
    let conf = dir.path().join("udhcpd.conf");
    std::fs::write(
        &conf,
        format!(
            "start {p}.100\nend {p}.110\ninterface {}\nlease_file {}\noption subnet 255.255.255.0\n",
            vm.ifname(),
            dir.path().join("leases").display()
        ),
    )
    .unwrap();
    let server = vm
        .ns()
        .spawn(&["busybox", "udhcpd", "-f", conf.to_str().unwrap()]);
    (dir, server)
}

#[test]
fn a_rogue_dhcp_server_s_offers_never_reach_a_client_on_the_same_vnet() {
    skip_unless_root!();
    let d = Daemon::start(Some(&dhcp_vnet(
        "lab",
        "10.119.0",
        "security = { dhcp_server = false }",
    )));
    let (r_id, rogue) = tap_vm(&d, "lab", "02:00:00:19:00:01", "10.99.0.1/24");
    let (_, client) = tap_vm(&d, "lab", "02:00:00:19:00:02", "");
    let (_dir, _server) = rogue_dhcp_server(&rogue, "10.99.0");

    let lease = client
        .dhcp(&[])
        .unwrap_or_else(|e| panic!("{e}\n{}", d.log()));
    assert!(
        lease.ip().unwrap().starts_with("10.119.0."),
        "the vnet's own offer: {lease:?}"
    );
    let dropped = wait_drops(&d, "lab", r_id, "dhcp_guard", 0);

    // Without the vnet's DHCP the client gets nothing at all.
    d.cli_ok(&["dhcp", "set", "lab", "--off"]);
    client
        .ns()
        .exec(&["ip", "addr", "flush", "dev", client.ifname()]);
    let none = client.dhcp(&[]);
    assert!(none.is_err(), "no offer may reach the client: {none:?}");
    wait_drops(&d, "lab", r_id, "dhcp_guard", dropped);

    // The rogue allowed to serve: its offer arrives (the server was real all along).
    set(&d, "lab", r_id, &["--allow-dhcp-server"]);
    let lease = client
        .dhcp(&[])
        .unwrap_or_else(|e| panic!("{e}\n{}", d.log()));
    assert!(
        lease.ip().unwrap().starts_with("10.99.0."),
        "the allowed server's offer: {lease:?}"
    );
}

/// Sends, from `vm`'s interface, three router advertisements of `prefix`/64 for
/// SLAAC, from the EUI-64 link-local address of its MAC.
fn send_ra(vm: &NsVm, prefix: &str) {
    let mac = MacAddr(frames::mac(vm.mac()));
    let src = eui64_link_local(mac);
    let dst: Ipv6Addr = "ff02::1".parse().unwrap();
    let options = [
        NdiscOption::SourceLinkLayerAddr(mac),
        NdiscOption::PrefixInformation(PrefixInfo {
            prefix_len: 64,
            on_link: true,
            autonomous: true,
            valid_lifetime: 86400,
            preferred_lifetime: 14400,
            prefix: prefix.parse().unwrap(),
        }),
    ];
    let mut ra = vec![0u8; 16];
    ra[0] = Message::ROUTER_ADVERT;
    ra[4] = 64;
    ra[6..8].copy_from_slice(&1800u16.to_be_bytes());
    for o in options {
        let mut b = vec![0; o.buffer_len()];
        o.emit(&mut b);
        ra.extend_from_slice(&b);
    }
    icmpv6::Packet::new_unchecked(&mut ra[..]).fill_checksum(&src, &dst);
    let ip = ipv6::Repr {
        src_addr: src,
        dst_addr: dst,
        next_header: IpProtocol::ICMPV6,
        payload_len: ra.len(),
        hop_limit: 255,
        traffic_class: 0,
        flow_label: 0,
    };
    let mut frame = vec![0u8; 14 + ip.buffer_len()];
    write_header(
        &mut frame,
        MacAddr([0x33, 0x33, 0, 0, 0, 1]),
        mac,
        EtherType::IPV6,
    );
    ip.emit(&mut ipv6::Packet::new_unchecked(&mut frame[14..]));
    frame[14 + 40..].copy_from_slice(&ra);
    send_raw(vm, &[frame.clone(), frame.clone(), frame]);
}

/// Lets `vm` take router advertisements (IPv6 on, SLAAC).
fn listen_for_ras(vm: &NsVm) {
    for key in ["disable_ipv6=0", "accept_ra=2", "autoconf=1"] {
        let sysctl = format!("net.ipv6.conf.{}.{key}", vm.ifname());
        vm.ns().exec_ok(&["sysctl", "-q", "-w", &sysctl]);
    }
}

fn has_address_in(vm: &NsVm, prefix: &str) -> bool {
    vm.ns()
        .exec_ok(&["ip", "-6", "addr", "show", "dev", vm.ifname()])
        .contains(&format!("{prefix}:"))
}

#[test]
fn a_router_advertisement_from_a_vm_port_is_dropped_and_counted_unless_it_may_route() {
    skip_unless_root!();
    let d = Daemon::start(Some("[[network]]\nname = \"lab\"\n"));
    let (r_id, rogue) = tap_vm(&d, "lab", "02:00:00:20:00:01", "");
    let (_, victim) = tap_vm(&d, "lab", "02:00:00:20:00:02", "");
    listen_for_ras(&victim);
    // The vnet's policy: no client port may route.
    let policy = d.cli_ok(&["net", "policy", "lab", "--no-router"]);
    assert!(policy.contains("router=false"), "{policy}");

    send_ra(&rogue, "fd15:1:1:1::");
    wait_drops(&d, "lab", r_id, "ra_guard", 2);

    // This port allowed to route (its own section, from the vnet's), the same kind of
    // RA works (for another prefix): the victim configures that one, never the first.
    set(&d, "lab", r_id, &["--allow-router"]);
    let own = port(&d, "lab", r_id)
        .policy
        .security
        .expect("its own section");
    assert_eq!(own.router, Some(true));
    send_ra(&rogue, "fd15:2:2:2::");
    assert!(
        wait_for(T, || has_address_in(&victim, "fd15:2:2:2")),
        "the allowed RA configures an address:\n{}",
        victim
            .ns()
            .exec_ok(&["ip", "-6", "addr", "show", "dev", victim.ifname()])
    );
    assert!(
        !has_address_in(&victim, "fd15:1:1:1"),
        "the guarded RA never arrived"
    );
}

#[test]
fn a_named_port_keeps_its_security_across_a_restart() {
    skip_unless_root!();
    let mut d = Daemon::start(Some("[[network]]\nname = \"lab\"\n"));
    let tap = unique_name("ps");
    d.cli_ok(&["port", "add", "lab", "--tap", &tap]);
    let id = vnet_testbed::api::ports(&d, "lab")
        .into_iter()
        .find(|p| p.description.contains(&tap))
        .expect("the TAP port")
        .id;
    set(
        &d,
        "lab",
        id,
        &["--ip-guard", "10.120.0.1,fd00::/64", "--mac-limit", "2"],
    );
    d.restart();

    let p = vnet_testbed::api::ports(&d, "lab")
        .into_iter()
        .find(|p| p.description.contains(&tap))
        .unwrap_or_else(|| panic!("the TAP port is back:\n{}", d.log()));
    let own = p.policy.security.clone().expect("its own security section");
    assert_eq!(
        own.ip_guard
            .iter()
            .flatten()
            .map(|s| s.to_string())
            .collect::<Vec<_>>(),
        ["10.120.0.1", "fd00::/64"],
        "{own:?}"
    );
    assert_eq!(own.mac_limit, Some(2));
    assert_eq!(p.enforced.security, Some(own));

    // And it is enforced.
    let a = NsVm::attach(&tap, "02:00:00:20:01:01", "10.120.0.1/24");
    let (_, b) = tap_vm(&d, "lab", "02:00:00:20:01:02", "10.120.0.2/24");
    assert!(a.ping(b.ip(), 2), "{}", d.log());
    a.ns()
        .exec_ok(&["ip", "addr", "add", "10.120.0.9/24", "dev", a.ifname()]);
    assert!(!ping_from(&a, "10.120.0.9", b.ip()));
    wait_drops(&d, "lab", p.id, "ip_guard", 0);
}

/// Turns IPv6 on for `vm` and waits until its link-local address has passed duplicate
/// address detection; returns that address (EUI-64, as Linux makes it by default).
fn ipv6_up(vm: &NsVm) -> Ipv6Addr {
    let sysctl = format!("net.ipv6.conf.{}.disable_ipv6=0", vm.ifname());
    vm.ns().exec_ok(&["sysctl", "-q", "-w", &sysctl]);
    let ll = eui64_link_local(MacAddr(frames::mac(vm.mac())));
    let ready = wait_for(T, || {
        let shown = vm
            .ns()
            .exec_ok(&["ip", "-6", "addr", "show", "dev", vm.ifname()]);
        shown.contains(&ll.to_string()) && !shown.contains("tentative")
    });
    assert!(ready, "{} never got {ll}", vm.ifname());
    ll
}

fn ping6(vm: &NsVm, to: &str) -> bool {
    vm.ns()
        .exec(&[
            "ping", "-6", "-n", "-q", "-c", "2", "-i", "0.2", "-W", "1", to,
        ])
        .status
        .success()
}

#[test]
fn under_the_strict_profile_ipv6_link_local_works_and_an_unlisted_ipv6_source_does_not() {
    skip_unless_root!();
    let d = Daemon::start(Some(
        "[[network]]\nname = \"lab\"\n\n[network.policy]\nsecurity = \"strict\"\n",
    ));
    let (a_id, a) = tap_vm(&d, "lab", "02:00:00:21:00:01", "");
    let (_, b) = tap_vm(&d, "lab", "02:00:00:21:00:02", "");
    ipv6_up(&a);
    let b_ll = ipv6_up(&b);
    // Duplicate address detection, neighbour discovery, MLD and echo, all link-local.
    assert!(
        ping6(&a, &format!("{b_ll}%{}", a.ifname())),
        "link-local under strict:\n{}",
        d.log()
    );
    assert_eq!(drops(&port(&d, "lab", a_id), "ip_guard"), 0);

    for (vm, addr) in [(&a, "fd21::99/64"), (&b, "fd21::2/64")] {
        vm.ns()
            .exec_ok(&["ip", "addr", "add", addr, "dev", vm.ifname(), "nodad"]);
    }
    assert!(!ping6(&a, "fd21::2"), "a source strict does not list");
    wait_drops(&d, "lab", a_id, "ip_guard", 0);
}
