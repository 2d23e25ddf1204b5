//! DHCPv6 (issue 16 item 3), end to end with real clients in namespace VMs: ISC
//! `dhclient -6` and `dhcpcd -6` get stateful leases from the vnet's range with DNS
//! servers and the domain list, reservations by MAC and by DUID get their addresses,
//! rapid commit binds in one exchange, `dhclient -6 -S` gets the settings alone, a
//! RELEASE ends the lease, leases survive a restart, DHCPv6 goes stateless live (the RA
//! follows), strict port security lets a guest send from its DHCPv6 address (and no
//! other), and broken datagrams are counted while the server goes on. A QEMU guest's
//! `dhcpcd` gets a lease too and pings the gateway from it.

use std::net::Ipv6Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use vnet_control::Lease;
use vnet_testbed::api::{client, tap_vm};
use vnet_testbed::{skip, skip_unless_root, unique_name, wait_for, Daemon, Guest, Netdev, NsVm};

const T: Duration = Duration::from_secs(60);

/// A third octet for this test's IPv4 subnet, so tests running at once do not collide.
fn octet(salt: u32) -> u32 {
    (std::process::id().wrapping_mul(13) + salt * 37) % 200 + 20
}

/// A NAT vnet with DHCP (domain `lab.test`) and `extra` in its `dhcp` table.
fn start(net: &str, salt: u32, extra: &str) -> Daemon {
    let n = octet(salt);
    Daemon::start(Some(&format!(
        "[[network]]\nname = \"{net}\"\nsubnet = \"10.213.{n}.0/24\"\n\
         dhcp = {{ domain = \"lab.test\"{extra} }}\nnat = {{}}\n"
    )))
}

/// Turns IPv6 on in `vm` (the test bed turns it off) with a link-local address usable at
/// once; the kernel itself takes no router advertisements.
fn enable_ipv6(vm: &NsVm) {
    let ifname = vm.ifname();
    for key in ["accept_ra=0", "accept_dad=0", "disable_ipv6=0"] {
        let kv = format!("net.ipv6.conf.{ifname}.{key}");
        vm.ns().exec_ok(&["sysctl", "-q", "-w", &kv]);
    }
    let ok = wait_for(T, || {
        let out = vm.ns().exec_ok(&[
            "ip", "-6", "-o", "addr", "show", "dev", ifname, "scope", "link",
        ]);
        out.contains("fe80::") && !out.contains("tentative")
    });
    assert!(ok, "no link-local address on {ifname}");
}

/// Runs ISC `dhclient -6` once in `vm` with `args`, its files in `dir` and a script that
/// puts a bound address on the interface and records each event's variables in
/// `dir/REASON.env`; returns the file of `reason`.
fn dhclient6(vm: &NsVm, dir: &Path, args: &[&str], conf: &str, reason: &str) -> String {
    let script = dir.join("script");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\ncase $reason in BOUND6|RENEW6|REBIND6)\n  \
             [ -n \"$new_ip6_address\" ] && ip -6 addr replace \"$new_ip6_address/128\" dev \"$interface\" nodad\n\
             ;; esac\nenv | grep -E '^(reason|new_|old_|cur_)' | sort > {}/$reason.env\nexit 0\n",
            dir.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(
        dir.join("dhclient.conf"),
        format!("request dhcp6.name-servers, dhcp6.domain-search;\n{conf}"),
    )
    .unwrap();
    let p = |f: &str| dir.join(f).to_string_lossy().into_owned();
    let (cf, sf, lf, pf) = (p("dhclient.conf"), p("script"), p("leases"), p("pid"));
    let mut argv = vec!["timeout", "60", "dhclient", "-6", "-1", "-v"];
    argv.extend_from_slice(args);
    argv.extend(["-cf", &cf, "-sf", &sf, "-lf", &lf, "-pf", &pf, vm.ifname()]);
    let out = vm.ns().command(&argv).output().unwrap();
    let file = dir.join(format!("{reason}.env"));
    std::fs::read_to_string(&file).unwrap_or_else(|_| {
        let seen: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        panic!(
            "dhclient -6 {args:?} reported no {reason} ({}), files {seen:?}:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// Stops the dhclient that `dhclient6` left running with `dir`'s pid file: `-r`
/// releases its lease first, `-x` only stops it.
fn dhclient6_stop(vm: &NsVm, dir: &Path, flag: &str) {
    let p = |f: &str| dir.join(f).to_string_lossy().into_owned();
    let (cf, sf, lf, pf) = (p("dhclient.conf"), p("script"), p("leases"), p("pid"));
    vm.ns().exec_ok(&[
        "timeout",
        "60",
        "dhclient",
        "-6",
        flag,
        "-cf",
        &cf,
        "-sf",
        &sf,
        "-lf",
        &lf,
        "-pf",
        &pf,
        vm.ifname(),
    ]);
}

fn var<'a>(env: &'a str, key: &str) -> &'a str {
    env.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("no {key} in\n{env}"))
        .trim_matches('\'')
}

fn leases6(d: &Daemon, net: &str) -> Vec<Lease> {
    let leases = client(d).leases(net).unwrap();
    leases.into_iter().filter(|l| l.ip.is_ipv6()).collect()
}

/// The value of `/metrics` sample `name{net="NET"}`.
fn metric(d: &Daemon, name: &str, net: &str) -> u64 {
    let text = client(d).metrics().unwrap();
    let key = format!("{name}{{net=\"{net}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&key))
        .unwrap_or_else(|| panic!("no {key} in\n{text}"))
        .parse()
        .unwrap()
}

fn range6(d: &Daemon, net: &str) -> [Ipv6Addr; 2] {
    let info = client(d).network(net).unwrap();
    info.dhcp
        .and_then(|d| d.range6)
        .unwrap_or_else(|| panic!("no DHCPv6 range: {:?}", info.ipv6))
}

#[test]
fn dhclient_gets_a_lease_with_dns_and_domains_the_ra_says_managed_and_release_ends_it() {
    skip_unless_root!();
    let net = unique_name("d6a");
    let d = start(&net, 1, "");
    let [first, last] = range6(&d, &net);
    let gateway = client(&d)
        .network(&net)
        .unwrap()
        .ipv6
        .unwrap()
        .router
        .unwrap();

    let (_, vm) = tap_vm(&d, &net, "52:54:00:16:00:01", "");
    enable_ipv6(&vm);
    // The router advertises M and O: addresses and settings come from DHCPv6.
    let ra = vm
        .ns()
        .exec_ok(&["rdisc6", "-1", "-r", "3", "-w", "1500", vm.ifname()]);
    let ra = ra.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(ra.contains("Stateful address conf. : Yes"), "{ra}");
    assert!(ra.contains("Stateful other conf. : Yes"), "{ra}");

    let dir = tempfile::tempdir().unwrap();
    let env = dhclient6(&vm, dir.path(), &[], "send fqdn.fqdn \"web6\";\n", "BOUND6");
    let ip: Ipv6Addr = var(&env, "new_ip6_address").parse().unwrap();
    assert!((first..=last).contains(&ip), "{ip} outside {first}-{last}");
    assert_eq!(var(&env, "new_dhcp6_name_servers"), gateway.to_string());
    assert_eq!(var(&env, "new_dhcp6_domain_search"), "lab.test.");

    let leases = leases6(&d, &net);
    let lease = leases
        .iter()
        .find(|l| l.ip == ip)
        .unwrap_or_else(|| panic!("{leases:?}"));
    assert_eq!(
        (lease.state.as_str(), lease.mac.to_string()),
        ("bound", "52:54:00:16:00:01".into())
    );
    assert_eq!(
        lease.hostname.as_deref(),
        Some("web6"),
        "the Client FQDN's name"
    );
    assert!(lease.duid.is_some());
    let table = d.cli_ok(&["lease", "ls", &net]);
    assert!(
        table.contains(&ip.to_string()) && table.contains("web6"),
        "{table}"
    );

    // Information-request from another VM: the settings, no address.
    let (_, vm2) = tap_vm(&d, &net, "52:54:00:16:00:02", "");
    enable_ipv6(&vm2);
    let dir2 = tempfile::tempdir().unwrap();
    // (dhclient 4.4 runs its script for the answer with reason RENEW6.)
    let info = dhclient6(&vm2, dir2.path(), &["-S"], "", "RENEW6");
    assert_eq!(var(&info, "new_dhcp6_name_servers"), gateway.to_string());
    assert!(!info.contains("new_ip6_address"), "{info}");
    assert_eq!(
        leases6(&d, &net).len(),
        1,
        "no lease for the stateless client"
    );
    assert!(metric(&d, "vnet_dhcp_information_requests6_total", &net) >= 1);

    // RELEASE: the lease ends (kept as released, so the client gets it back first).
    dhclient6_stop(&vm, dir.path(), "-r");
    let ok = wait_for(T, || {
        leases6(&d, &net)
            .iter()
            .any(|l| l.ip == ip && l.state == "released")
    });
    assert!(ok, "{:?}\n{}", leases6(&d, &net), d.log());
    assert!(metric(&d, "vnet_dhcp_releases6_total", &net) >= 1);
}

#[test]
fn a_reservation_gets_its_address_and_rapid_commit_binds_in_one_exchange() {
    skip_unless_root!();
    let net = unique_name("d6b");
    let d = start(&net, 2, "");
    let subnet = client(&d).network(&net).unwrap().ipv6.unwrap().subnet;
    let reserved = vnet_control::ipv6::nth6(subnet, 0x42);
    let ip4 = format!("10.213.{}.42", octet(2));
    d.cli_ok(&[
        "dhcp",
        "reserve",
        &net,
        "52:54:00:16:00:11",
        &ip4,
        "--ip6",
        &reserved.to_string(),
        "--hostname",
        "fixed",
    ]);

    let (_, vm) = tap_vm(&d, &net, "52:54:00:16:00:11", "");
    enable_ipv6(&vm);
    let advertises = metric(&d, "vnet_dhcp_advertises6_total", &net);
    let dir = tempfile::tempdir().unwrap();
    let env = dhclient6(&vm, dir.path(), &[], "send dhcp6.rapid-commit;\n", "BOUND6");
    assert_eq!(var(&env, "new_ip6_address"), reserved.to_string(), "{env}");
    assert_eq!(
        metric(&d, "vnet_dhcp_advertises6_total", &net),
        advertises,
        "rapid commit: REPLY to the SOLICIT, no ADVERTISE"
    );
    assert!(metric(&d, "vnet_dhcp_replies6_total", &net) >= 1);
    let leases = leases6(&d, &net);
    let lease = leases
        .iter()
        .find(|l| l.ip == reserved)
        .unwrap_or_else(|| panic!("{leases:?}"));
    assert_eq!(lease.hostname.as_deref(), Some("fixed"));
    dhclient6_stop(&vm, dir.path(), "-x");

    let shown = d.cli_ok(&["dhcp", "show", &net]);
    assert!(shown.contains(&reserved.to_string()), "{shown}");

    // By DUID: the reservation names another MAC, the client's DUID-LL decides.
    let by_duid = vnet_control::ipv6::nth6(subnet, 0x43);
    let ip4 = format!("10.213.{}.43", octet(2));
    d.cli_ok(&[
        "dhcp",
        "reserve",
        &net,
        "52:54:00:16:99:99",
        &ip4,
        "--ip6",
        &by_duid.to_string(),
        "--duid",
        "00:03:00:01:52:54:00:16:00:12",
    ]);
    let (_, vm2) = tap_vm(&d, &net, "52:54:00:16:00:12", "");
    enable_ipv6(&vm2);
    let dir2 = tempfile::tempdir().unwrap();
    let env = dhclient6(&vm2, dir2.path(), &["-D", "LL"], "", "BOUND6");
    assert_eq!(var(&env, "new_ip6_address"), by_duid.to_string(), "{env}");
    dhclient6_stop(&vm2, dir2.path(), "-x");

    // Live to stateless: the router's next RA says O but not M.
    d.cli_ok(&["dhcp", "set", &net, "--dhcp6", "stateless"]);
    let ok = wait_for(T, || {
        let ra = vm
            .ns()
            .exec_ok(&["rdisc6", "-1", "-r", "3", "-w", "1500", vm.ifname()]);
        let ra = ra.split_whitespace().collect::<Vec<_>>().join(" ");
        ra.contains("Stateful address conf. : No") && ra.contains("Stateful other conf. : Yes")
    });
    assert!(ok, "the RA still says M after DHCPv6 went stateless");
    let info = client(&d).network(&net).unwrap();
    assert_eq!(info.dhcp.unwrap().ipv6, vnet_control::Dhcp6Mode::Stateless);
}

#[test]
fn dhcpcd_follows_the_managed_flag_to_a_stateful_lease() {
    skip_unless_root!();
    if std::process::Command::new("dhcpcd")
        .arg("--version")
        .output()
        .is_err()
    {
        skip(
            "dhcpcd_follows_the_managed_flag_to_a_stateful_lease",
            "no dhcpcd (scripts/install-test-deps)",
        );
        return;
    }
    let net = unique_name("d6c");
    let d = start(&net, 3, "");
    let [first, last] = range6(&d, &net);
    let (_, vm) = tap_vm(&d, &net, "52:54:00:16:00:21", "");
    enable_ipv6(&vm);
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("script");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nenv | grep -E '^(reason|new_)' | sort > {}/$reason.env\nexit 0\n",
            dir.path().display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let conf = dir.path().join("dhcpcd.conf");
    std::fs::write(
        &conf,
        "ipv6only\noption rapid_commit\noption domain_name_servers, domain_search\nnohook resolv.conf\n",
    )
    .unwrap();
    let (conf, script) = (conf.to_string_lossy(), script.to_string_lossy());
    // dhcpcd solicits the router first and starts DHCPv6 because the RA says M.
    let mut dhcpcd = vm.ns().spawn(&[
        "dhcpcd",
        "-6",
        "-B",
        "-d",
        "-f",
        &conf,
        "-c",
        &script,
        vm.ifname(),
    ]);
    let bound = dir.path().join("BOUND6.env");
    let ok = wait_for(T, || bound.exists());
    dhcpcd.terminate(Duration::from_secs(10));
    assert!(
        ok,
        "dhcpcd got no DHCPv6 lease:\n{}\n{}",
        dhcpcd.log(),
        d.log()
    );
    let env = std::fs::read_to_string(&bound).unwrap();
    let ip: Ipv6Addr = var(&env, "new_dhcp6_ia_na1_ia_addr1").parse().unwrap();
    assert!((first..=last).contains(&ip), "{ip} outside {first}-{last}");
    assert!(
        var(&env, "new_dhcp6_domain_search").starts_with("lab.test"),
        "{env}"
    );
    assert!(leases6(&d, &net)
        .iter()
        .any(|l| l.ip == ip && l.state == "bound"));
}

/// Debian's busybox has no `udhcpc6`, so the guest runs the host's `dhcpcd`, which the
/// test bed copies into the initramfs with its libraries.
#[test]
fn a_qemu_guests_dhcpcd_gets_a_lease_and_pings_the_gateway_from_it() {
    skip_unless_root!();
    if !Path::new("/usr/sbin/dhcpcd").is_file() {
        skip(
            "a_qemu_guests_dhcpcd_gets_a_lease_and_pings_the_gateway_from_it",
            "no dhcpcd (scripts/install-test-deps)",
        );
        return;
    }
    let net = unique_name("d6q");
    let d = start(&net, 7, "");
    let [first, last] = range6(&d, &net);
    let gateway = client(&d)
        .network(&net)
        .unwrap()
        .ipv6
        .unwrap()
        .router
        .unwrap();
    let mac = "52:54:00:16:00:71";
    let guest = Guest::builder()
        .name("dhcpcd6")
        .ipv6(true)
        .nic_with_mac(
            Netdev::Stream {
                path: d.net_dir(&net).join("stream.sock"),
            },
            mac,
        )
        .boot()
        .expect("guest boots");

    // The hook records each event's variables; dhcpcd configures the address itself.
    guest.exec_ok(
        "printf '#!/bin/sh\nenv | grep -E \"^(reason|new_)\" | sort >/run/e.tmp && mv /run/e.tmp /run/$reason.env\n' >/tmp/hook
         chmod +x /tmp/hook
         printf 'ipv6only\noption rapid_commit\n' >/tmp/dhcpcd.conf
         dhcpcd -6 -B -d -f /tmp/dhcpcd.conf -c /tmp/hook eth0 >/tmp/dhcpcd.log 2>&1 &",
        T,
    );
    let bound = guest.exec(
        "while [ ! -e /run/BOUND6.env ]; do sleep 0.1; done; cat /run/BOUND6.env",
        T,
    );
    let env = match bound {
        Ok((0, env)) => env,
        other => panic!(
            "dhcpcd got no lease: {other:?}\n{}\n{}",
            guest.exec_ok("cat /tmp/dhcpcd.log", T),
            d.log()
        ),
    };
    let ip: Ipv6Addr = var(&env, "new_dhcp6_ia_na1_ia_addr1").parse().unwrap();
    assert!((first..=last).contains(&ip), "{ip} outside {first}-{last}");

    assert!(
        leases6(&d, &net)
            .iter()
            .any(|l| l.ip == ip && l.state == "bound" && l.mac.to_string() == mac),
        "{:?}",
        leases6(&d, &net)
    );
    let json: serde_json::Value =
        serde_json::from_str(&d.cli_ok(&["lease", "ls", &net, "--json"])).unwrap();
    assert!(
        json.as_array()
            .unwrap()
            .iter()
            .any(|l| { l["ip"] == ip.to_string() && l["mac"] == mac && l["state"] == "bound" }),
        "{json}"
    );

    // The address is usable once dhcpcd's duplicate address detection ends.
    guest.exec_ok(
        &format!(
            "for i in $(seq 30); do ping -c 1 -W 1 -I {ip} {gateway} >/dev/null && \
             exec ping -c 3 -W 3 -I {ip} {gateway}; done; exit 1"
        ),
        T,
    );
}

#[test]
fn leases_survive_a_restart_and_the_client_gets_its_address_again() {
    skip_unless_root!();
    let net = unique_name("d6d");
    let mut d = start(&net, 4, "");
    let (_, vm) = tap_vm(&d, &net, "52:54:00:16:00:31", "");
    enable_ipv6(&vm);
    let dir = tempfile::tempdir().unwrap();
    // DUID-LL: the same identity however often the client starts.
    let env = dhclient6(&vm, dir.path(), &["-D", "LL"], "", "BOUND6");
    let ip: Ipv6Addr = var(&env, "new_ip6_address").parse().unwrap();
    dhclient6_stop(&vm, dir.path(), "-x");
    let before = leases6(&d, &net);

    d.restart();
    let after = leases6(&d, &net);
    assert_eq!(after, before, "the lease file kept the IPv6 lease");
    // The VM's TAP went with the old daemon: attach it again.
    drop(vm);
    let (_, vm) = tap_vm(&d, &net, "52:54:00:16:00:31", "");
    enable_ipv6(&vm);
    let again = tempfile::tempdir().unwrap();
    let env = dhclient6(&vm, again.path(), &["-D", "LL"], "", "BOUND6");
    assert_eq!(
        var(&env, "new_ip6_address"),
        ip.to_string(),
        "same address after the restart"
    );
    dhclient6_stop(&vm, again.path(), "-x");
}

#[test]
fn broken_dhcpv6_datagrams_are_counted_and_the_server_goes_on() {
    skip_unless_root!();
    let net = unique_name("d6e");
    let d = start(&net, 5, "");
    let (_, vm) = tap_vm(&d, &net, "52:54:00:16:00:41", "");
    enable_ipv6(&vm);
    let (malformed, ignored) = (
        metric(&d, "vnet_dhcp_malformed_total", &net),
        metric(&d, "vnet_dhcp_ignored_total", &net),
    );
    // Short; an option longer than the message; a SOLICIT without client DUID; a
    // RELAY-FORW (not for a server on the link).
    let sender = format!(
        "import socket\ns = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)\n\
         s.bind(('::', 546))\n\
         for m in [b'\\x01\\x02', b'\\x01\\x00\\x00\\x01\\x00\\x01\\x00\\x40\\x00', b'\\x01\\x00\\x00\\x02', \
         b'\\x0c\\x00' + bytes(32)]:\n    s.sendto(m, ('ff02::1:2%{}', 547))\n",
        vm.ifname()
    );
    vm.ns().exec_ok(&["python3", "-c", &sender]);
    let ok = wait_for(T, || {
        metric(&d, "vnet_dhcp_malformed_total", &net) >= malformed + 3
            && metric(&d, "vnet_dhcp_ignored_total", &net) > ignored
    });
    assert!(
        ok,
        "malformed {} ignored {}",
        metric(&d, "vnet_dhcp_malformed_total", &net),
        metric(&d, "vnet_dhcp_ignored_total", &net)
    );
    // The server still serves.
    let dir = tempfile::tempdir().unwrap();
    let env = dhclient6(&vm, dir.path(), &[], "", "BOUND6");
    assert!(var(&env, "new_ip6_address").parse::<Ipv6Addr>().is_ok());
    dhclient6_stop(&vm, dir.path(), "-x");
}

#[test]
fn strict_port_security_lets_a_guest_send_from_its_dhcpv6_address_only() {
    skip_unless_root!();
    let net = unique_name("d6f");
    let n = octet(6);
    let d = Daemon::start(Some(&format!(
        "[[network]]\nname = \"{net}\"\nsubnet = \"10.213.{n}.0/24\"\ndhcp = {{}}\nnat = {{}}\n\
         [network.policy]\nsecurity = \"strict\"\n"
    )));
    let info = client(&d).network(&net).unwrap().ipv6.unwrap();
    let gateway = info.router.unwrap().to_string();
    let (_, vm) = tap_vm(&d, &net, "52:54:00:16:00:51", "");
    enable_ipv6(&vm);
    let dir = tempfile::tempdir().unwrap();
    let env = dhclient6(&vm, dir.path(), &[], "", "BOUND6");
    let leased = var(&env, "new_ip6_address").to_string();
    // The kernel takes no RA here: the /64 is on link by hand.
    let subnet = info.subnet.to_string();
    vm.ns()
        .exec_ok(&["ip", "-6", "route", "add", &subnet, "dev", vm.ifname()]);
    let ping_from = |from: &str| {
        vm.ns()
            .exec(&[
                "ping", "-6", "-n", "-q", "-c", "1", "-W", "2", "-I", from, &gateway,
            ])
            .status
            .success()
    };
    // The IP guard learns the lease: the guest's pings from it reach the router.
    assert!(wait_for(T, || ping_from(&leased)), "{}", d.log());
    // An address of its own choosing in the same /64 stays refused.
    let made_up = vnet_control::ipv6::nth6(info.subnet, 0x4444).to_string();
    vm.ns().exec_ok(&[
        "ip",
        "-6",
        "addr",
        "add",
        &format!("{made_up}/128"),
        "dev",
        vm.ifname(),
        "nodad",
    ]);
    assert!(
        !ping_from(&made_up),
        "a source DHCPv6 did not lease passed the guard"
    );
    dhclient6_stop(&vm, dir.path(), "-x");
}
