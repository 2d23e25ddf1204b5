//! What vnetd keeps across restarts (README, "State"): live changes saved before they
//! are answered and restored at the next start, transient vnets not; the config file
//! applied where it changed, the saved state everywhere else; a corrupt state file kept
//! aside, a newer one refused; `vnet config export` reproducing the running daemon.

use std::net::{SocketAddr, TcpListener, TcpStream};

use vnet_control::{NetworkInfo, PortInfo, PortKind, Reservation, VlanMode};
use vnet_testbed::api::{cli_json, ports};
use vnet_testbed::{skip_unless_root, unique_name, Daemon};

/// A loopback address with a port free right now, for a forward.
fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn names(d: &Daemon) -> Vec<String> {
    let nets: Vec<NetworkInfo> = cli_json(d, &["net", "ls"]);
    nets.into_iter().map(|n| n.name).collect()
}

fn reservations(d: &Daemon, net: &str) -> Vec<Reservation> {
    let info: NetworkInfo = cli_json(d, &["net", "show", net]);
    info.dhcp.map(|d| d.reservations).unwrap_or_default()
}

fn state_file(d: &Daemon) -> std::path::PathBuf {
    d.state_dir().join("state.json")
}

#[test]
fn a_live_vnet_with_its_forward_reservation_and_tap_port_survives_a_crash_and_a_restart() {
    skip_unless_root!();
    let mut d = Daemon::start(Some("[[network]]\nname = \"cfg\"\n"));
    let host = free_port();
    let tap = unique_name("st");
    d.cli_ok(&[
        "net",
        "create",
        "lab",
        "--subnet",
        "10.77.0.0/24",
        "--dhcp",
        "--nat",
    ]);
    d.cli_ok(&["forward", "add", "lab", &host.to_string(), "10.77.0.10:80"]);
    d.cli_ok(&["dhcp", "reserve", "lab", "52:54:00:00:77:10", "10.77.0.10"]);
    d.cli_ok(&["port", "add", "lab", "--tap", &tap, "--vlan", "10"]);
    d.cli_ok(&["net", "create", "scratch", "--transient"]);
    let listed = d.cli_ok(&["net", "ls"]);
    assert!(listed.contains("scratch (transient)"), "{listed}");
    let shown: NetworkInfo = cli_json(&d, &["net", "show", "scratch"]);
    assert!(shown.transient);
    let shown = d.cli_ok(&["net", "show", "scratch"]);
    assert!(
        shown.contains("no: transient, gone when vnetd restarts"),
        "{shown}"
    );

    // A crash right after the answers: everything answered OK is on disk.
    d.kill();
    d.restart();
    assert_eq!(names(&d), ["cfg", "lab"], "{}", d.log());
    assert!(d.log().contains("restoring 2 vnet(s)"), "{}", d.log());
    let lab: NetworkInfo = cli_json(&d, &["net", "show", "lab"]);
    assert_eq!(lab.subnet, Some("10.77.0.0/24".parse().unwrap()));
    assert!(lab.nat.is_some() && !lab.transient);
    let forwards = d.cli_ok(&["forward", "ls", "lab"]);
    assert!(forwards.contains(&host.to_string()), "{forwards}");
    // The restored forward listens again.
    TcpStream::connect(host).unwrap_or_else(|e| panic!("forward {host}: {e}\n{}", d.log()));
    assert_eq!(
        reservations(&d, "lab"),
        [Reservation {
            mac: "52:54:00:00:77:10".parse().unwrap(),
            ip: "10.77.0.10".parse().unwrap(),
            hostname: None,
            ip6: None,
            duid: None,
        }]
    );
    let taps: Vec<PortInfo> = ports(&d, "lab")
        .into_iter()
        .filter(|p| p.kind == PortKind::Tap)
        .collect();
    assert_eq!(taps.len(), 1, "{taps:?}");
    assert!(taps[0].description.contains(&tap), "{taps:?}");
    assert_eq!(taps[0].vlan, VlanMode::Access { vlan: 10 });
    assert!(std::path::Path::new("/sys/class/net").join(&tap).exists());

    // A change to a restored port is saved too; removals as well.
    d.cli_ok(&["port", "rm", "lab", &taps[0].id.to_string()]);
    d.cli_ok(&["forward", "rm", "lab", &host.to_string()]);
    d.restart();
    assert!(ports(&d, "lab").iter().all(|p| p.kind != PortKind::Tap));
    assert!(!d
        .cli_ok(&["forward", "ls", "lab"])
        .contains(&host.to_string()));
    assert_eq!(reservations(&d, "lab").len(), 1);
}

#[test]
fn the_config_file_wins_where_it_changed_and_the_saved_state_everywhere_else() {
    let net = |name: &str, extra: &str| {
        format!(
            "[[network]]\nname = \"{name}\"\nsubnet = \"10.78.{}.0/24\"\ndhcp = {{{extra}}}\n\n",
            name.as_bytes()[0]
        )
    };
    let first = format!("{}{}{}", net("a", ""), net("b", ""), net("c", ""));
    let mut d = Daemon::builder().config(&first).start();
    let config = d.config_path().unwrap().to_path_buf();
    // API changes: a reservation on a, b deleted, x created.
    d.cli_ok(&["dhcp", "reserve", "a", "52:54:00:00:78:01", "10.78.97.10"]);
    d.cli_ok(&["net", "rm", "b"]);
    d.cli_ok(&["net", "create", "x"]);

    // Same file: the API's changes stand, the deleted vnet stays deleted.
    d.restart();
    assert_eq!(names(&d), ["a", "c", "x"]);
    assert_eq!(reservations(&d, "a").len(), 1);
    let said = d.cli_ok(&["reload"]);
    assert!(said.contains("changes nothing"), "{said}");
    assert_eq!(reservations(&d, "a").len(), 1);

    // The file changed between runs: c edited, d added; a and b untouched in the file.
    let second = format!(
        "{}{}{}{}",
        net("a", ""),
        net("b", ""),
        net("c", " lease_secs = 600 "),
        net("d", "")
    );
    std::fs::write(&config, &second).unwrap();
    d.restart();
    assert_eq!(names(&d), ["a", "c", "d", "x"]);
    assert!(d.log().contains("vnet(s) c, d as it says"), "{}", d.log());
    let c: NetworkInfo = cli_json(&d, &["net", "show", "c"]);
    assert_eq!(c.dhcp.unwrap().lease_secs, 600);
    assert_eq!(reservations(&d, "a").len(), 1);

    // Reload after an API change: the file edits a, so a is what the file says.
    std::fs::write(
        &config,
        second.replacen("dhcp = {}", "dhcp = { lease_secs = 900 }", 1),
    )
    .unwrap();
    let said = d.cli_ok(&["reload"]);
    assert!(said.contains("vnet a: set DHCP"), "{said}");
    let a: NetworkInfo = cli_json(&d, &["net", "show", "a"]);
    let dhcp = a.dhcp.unwrap();
    assert_eq!((dhcp.lease_secs, dhcp.reservations.len()), (900, 0));
    // And that is what the next start runs.
    d.restart();
    assert_eq!(names(&d), ["a", "c", "d", "x"]);
    let a: NetworkInfo = cli_json(&d, &["net", "show", "a"]);
    assert_eq!(a.dhcp.unwrap().lease_secs, 900);
}

#[test]
fn a_corrupt_state_file_is_kept_aside_and_vnetd_starts_from_the_config() {
    let mut d = Daemon::start(Some("[[network]]\nname = \"cfg\"\n"));
    d.cli_ok(&["net", "create", "live"]);
    d.stop();
    let garbage = "{\"version\": 1, \"networks\": [{\"spec\":";
    std::fs::write(state_file(&d), garbage).unwrap();
    d.restart();
    assert_eq!(names(&d), ["cfg"]);
    let log = d.log();
    assert!(
        log.contains("is corrupt") && log.contains("state.json.corrupt-"),
        "{log}"
    );
    let aside: Vec<_> = std::fs::read_dir(d.state_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains("state.json.corrupt-"))
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert_eq!(std::fs::read_to_string(&aside[0]).unwrap(), garbage);
    // A fresh file was written from the configuration.
    let state = std::fs::read_to_string(state_file(&d)).unwrap();
    assert!(
        state.contains("\"cfg\"") && !state.contains("\"live\""),
        "{state}"
    );
}

#[test]
fn a_state_file_of_a_newer_schema_is_refused_and_left_untouched() {
    let mut d = Daemon::start(Some("[[network]]\nname = \"cfg\"\n"));
    d.stop();
    let newer = "{\"version\": 99, \"networks\": [], \"config\": []}";
    std::fs::write(state_file(&d), newer).unwrap();
    let e = d.try_restart().unwrap_err().to_string();
    assert!(
        e.contains("schema version 99 is newer than this vnetd's (1)"),
        "{e}"
    );
    assert_eq!(std::fs::read_to_string(state_file(&d)).unwrap(), newer);
}

#[test]
fn an_export_starts_a_second_vnetd_that_exports_the_same() {
    let host = free_port();
    let config = format!(
        "threads = 1\n[limits]\nvnets = 9\n\n[[network]]\nname = \"nat\"\nsubnet = \"10.79.0.0/24\"\n\
         allow_users = [4242]\nallow_groups = [0]\n\
         dhcp = {{ lease_secs = 600, reservations = [{{ mac = \"52:54:00:00:79:01\", ip = \"10.79.0.9\", hostname = \"db\" }}] }}\n\
         nat = {{ forward = [{{ host = \"{host}\", guest = \"10.79.0.9:22\" }}] }}\n\
         [[network.port]]\nvhost_user = \"vm1\"\ntrunk = [10, 20]\nnative = 1\n"
    );
    let mut first = Daemon::builder().config(&config).start();
    first.cli_ok(&["net", "create", "lab", "--mtu", "9000", "--transient"]);
    first.cli_ok(&["port", "add", "lab", "--vhost-user", "vm2", "--vlan", "7"]);
    first.cli_ok(&["dhcp", "reserve", "nat", "52:54:00:00:79:02", "10.79.0.10"]);
    let exported = first.cli_ok(&["config", "export"]);
    for line in [
        "threads = 1",
        "vnets = 9",
        "name = \"lab\"",
        "mtu = 9000",
        "vhost_user = \"vm2\"",
        "vlan = 7",
        "trunk = [10, 20]",
        "allow_users = [4242]",
        "10.79.0.10",
        &host.to_string(),
    ] {
        assert!(exported.contains(line), "{line:?} not in\n{exported}");
    }
    assert!(!exported.contains("transient"), "{exported}");
    // The forward's host port is the first daemon's until it stops.
    first.stop();
    let second = Daemon::builder().config(&exported).start();
    assert_eq!(second.cli_ok(&["config", "export"]), exported);
    assert_eq!(names(&second), ["lab", "nat"]);
}

#[test]
fn without_a_config_file_reload_changes_nothing_and_export_shows_the_built_in_vnets() {
    let d = Daemon::start(None);
    // No --config: reload re-reads the built-in configuration, which changes nothing.
    let said = d.cli_ok(&["reload"]);
    assert!(said.contains("changes nothing"), "{said}");
    let exported = d.cli_ok(&["config", "export"]);
    assert!(exported.contains("name = \"vmnet8\""), "{exported}");
}

#[test]
fn a_live_uplink_and_a_port_vlan_change_survive_a_restart() {
    skip_unless_root!();
    let veth = vnet_testbed::Veth::new();
    let mut d = Daemon::start(Some("[[network]]\nname = \"br\"\n"));
    let tap = unique_name("st");
    d.cli_ok(&[
        "uplink",
        "set",
        "br",
        "--interface",
        veth.a(),
        "--vlan",
        "30",
    ]);
    d.cli_ok(&["port", "add", "br", "--tap", &tap]);
    let id = ports(&d, "br")
        .into_iter()
        .find(|p| p.kind == PortKind::Tap)
        .unwrap()
        .id;
    d.cli_ok(&[
        "port",
        "set",
        "br",
        &id.to_string(),
        "--trunk",
        "5,6",
        "--native",
        "1",
    ]);
    d.restart();
    let br: NetworkInfo = cli_json(&d, &["net", "show", "br"]);
    let uplink = br
        .uplink
        .unwrap_or_else(|| panic!("no uplink after the restart:\n{}", d.log()));
    assert_eq!(
        (uplink.interface.as_str(), uplink.vlan),
        (veth.a(), Some(30))
    );
    let kinds: Vec<(PortKind, VlanMode)> = ports(&d, "br")
        .into_iter()
        .filter(|p| p.kind != PortKind::Service)
        .map(|p| (p.kind, p.vlan))
        .collect();
    assert!(
        kinds.contains(&(PortKind::Uplink, VlanMode::default())),
        "{kinds:?}"
    );
    assert!(
        kinds.contains(&(
            PortKind::Tap,
            VlanMode::Trunk {
                allowed: vec![5, 6],
                native: Some(1)
            }
        )),
        "{kinds:?}"
    );
}

#[test]
fn a_change_that_cannot_be_saved_is_answered_as_not_saved() {
    let d = Daemon::start(Some("[[network]]\nname = \"cfg\"\n"));
    // The temporary the save makes cannot be made: a directory holds its name.
    let tmp = d.state_dir().join("state.json.tmp");
    std::fs::create_dir(&tmp).unwrap();
    // (Whatever exit status the CLI gives a 500: it fails and says why.)
    let out = d.cli(&["net", "create", "x"]);
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{e}");
    assert!(
        e.contains("done, but not saved") && e.contains("state.json"),
        "{e}"
    );
    assert_eq!(names(&d), ["cfg", "x"], "the change stands");
    std::fs::remove_dir(&tmp).unwrap();
    d.cli_ok(&["net", "create", "y"]);
    let state = std::fs::read_to_string(state_file(&d)).unwrap();
    assert!(
        state.contains("\"x\"") && state.contains("\"y\""),
        "{state}"
    );
}

#[test]
fn a_saved_vnet_that_cannot_be_made_stops_the_start_and_names_the_state_file() {
    skip_unless_root!();
    let mut d = Daemon::start(Some("[[network]]\nname = \"cfg\"\n"));
    d.cli_ok(&["net", "create", "lab"]);
    d.stop();
    // Someone else made the vnet's directory meanwhile: vnetd will not use it.
    std::fs::create_dir(d.net_dir("lab")).unwrap();
    std::os::unix::fs::chown(d.net_dir("lab"), Some(64999), None).unwrap();
    let e = d.try_restart().unwrap_err().to_string();
    assert!(
        e.contains("state.json (a vnet saved there cannot be made? Move the file aside")
            && e.contains("cannot create vnet \"lab\""),
        "{e}"
    );
    assert!(std::fs::read_to_string(state_file(&d))
        .unwrap()
        .contains("\"lab\""));
}

#[test]
fn a_joined_interface_port_is_joined_again_after_a_restart() {
    skip_unless_root!();
    let veth = vnet_testbed::Veth::new();
    let mut d = Daemon::start(Some("[[network]]\nname = \"lab\"\n"));
    d.cli_ok(&["port", "add", "lab", "--interface", veth.a(), "--vlan", "5"]);
    d.restart();
    let joined: Vec<PortInfo> = ports(&d, "lab")
        .into_iter()
        .filter(|p| p.kind == PortKind::Interface)
        .collect();
    assert_eq!(joined.len(), 1, "{joined:?}\n{}", d.log());
    assert!(joined[0].description.contains(veth.a()), "{joined:?}");
    assert_eq!(joined[0].vlan, VlanMode::Access { vlan: 5 });
    let exported = d.cli_ok(&["config", "export"]);
    assert!(
        exported.contains(&format!("interface = \"{}\"", veth.a())),
        "{exported}"
    );
}
