//! Live migration over VXLAN, timed (run by `scripts/bench-migration`; root).
//!
//! Two hosts on an underlay with one vnet between them (`vnet_testbed::overlay`), a
//! namespace VM on host A pinging a QEMU guest (TCG, 128 MiB) every 10 ms while the
//! guest migrates from host A to host B, on a stream port and on a vhost-user port.
//! Per run it reports: QEMU's own downtime (the guest paused), the pings lost and the
//! longest gap between two answers, and the convergence: from `query-migrate`'s
//! `completed` (polled every 2 ms) to the first answered ping after it, and to host A's
//! MAC table showing the guest behind the tunnel (polled through the API).
//!
//! Environment: `BENCH_RUNS` (3), `BENCH_OUT` (where `migration.md` goes, else stdout
//! only).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use vnet_control::PortSpec;
use vnet_testbed::api::client;
use vnet_testbed::overlay::{port_of, uplink_port, Underlay, MTU};
use vnet_testbed::{is_root, wait_for, Daemon, Guest, Netdev};

const GUEST: &str = "52:54:00:79:00:01";
const GUEST_IP: &str = "192.168.79.1";
const NET: &str = "ovl";
const T: Duration = Duration::from_secs(60);

/// One migration's numbers.
struct Run {
    qemu_downtime_ms: f64,
    total_ms: f64,
    lost: u64,
    gap_ms: f64,
    first_answer_ms: f64,
    mac_moved_ms: f64,
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// `ping -D` answers as (timestamp, icmp_seq).
fn answers(log: &str) -> Vec<(f64, u64)> {
    log.lines()
        .filter_map(|l| {
            let ts = l.strip_prefix('[')?.split(']').next()?.parse().ok()?;
            let seq = l
                .split("icmp_seq=")
                .nth(1)?
                .split(' ')
                .next()?
                .parse()
                .ok()?;
            Some((ts, seq))
        })
        .collect()
}

fn vhost_user_port(d: &Daemon) -> Netdev {
    client(d)
        .add_port(
            NET,
            &PortSpec::VhostUser {
                name: "vm".into(),
                vlan: Default::default(),
                policy: Default::default(),
            },
        )
        .unwrap_or_else(|e| panic!("adding a vhost-user port: {e}"));
    Netdev::VhostUser {
        path: d.net_dir(NET).join("vhost-user").join("vm.sock"),
    }
}

fn stream_port(d: &Daemon) -> Netdev {
    Netdev::Stream {
        path: d.net_dir(NET).join("stream.sock"),
    }
}

fn run(vhost_user: bool) -> Run {
    let ul = Underlay::new();
    let (a, b) = (ul.host(1), ul.host(2));
    let (da, db) = (a.vnetd(NET, 79, &[&b]), b.vnetd(NET, 79, &[&a]));
    let (_, near) = a.vm(&da, NET, "52:54:00:79:00:03", "192.168.79.3/24");
    let port = if vhost_user {
        vhost_user_port
    } else {
        stream_port
    };
    let mut builder = Guest::builder().name("bench").memory_mb(128);
    if vhost_user {
        // QEMU 7.2 under TCG crashes starting a vhost-user NIC with MSI-X.
        builder = builder
            .qemu_arg("-global")
            .qemu_arg("virtio-net-pci.vectors=0");
    }
    let guest = builder
        .nic_with_mac(port(&da), GUEST)
        .static_ip(0, &format!("{GUEST_IP}/24"))
        .boot()
        .expect("the guest boots");
    guest.exec_ok(&format!("ip link set eth0 mtu {MTU}"), T);
    assert!(wait_for(T, || near.ping(GUEST_IP, 1)));
    let target = guest.incoming(vec![port(&db)]).expect("destination");

    let mut ping = near
        .ns()
        .spawn(&["ping", "-D", "-n", "-i", "0.01", "-W", "1", GUEST_IP]);
    assert!(wait_for(T, || answers(&ping.log()).len() >= 50));
    guest.start_migration(&target).expect("migrate");
    let status = loop {
        let s = guest.qmp("query-migrate", serde_json::Value::Null).unwrap();
        match s["status"].as_str() {
            Some("completed") => break s,
            Some("failed" | "cancelled") => panic!("migration failed: {s}"),
            _ => std::thread::sleep(Duration::from_millis(2)),
        }
    };
    let completed = now();
    let uplink_a = uplink_port(&da, NET);
    assert!(wait_for(T, || port_of(&da, NET, GUEST) == Some(uplink_a)));
    let mac_moved = now();
    drop(guest);
    // Half a second of answers from host B after it.
    assert!(wait_for(T, || answers(&ping.log())
        .iter()
        .any(|&(ts, _)| ts > completed + 0.5)));
    ping.terminate(Duration::from_secs(5));
    let got = answers(&ping.log());
    let (first, last) = (got[0].1, got[got.len() - 1].1);
    let lost = (last - first + 1) - got.len() as u64;
    let gap = got.windows(2).map(|w| w[1].0 - w[0].0).fold(0.0, f64::max);
    let first_answer = got
        .iter()
        .find(|&&(ts, _)| ts >= completed)
        .map_or(f64::NAN, |&(ts, _)| ts - completed);
    drop(target);
    Run {
        qemu_downtime_ms: status["downtime"].as_f64().unwrap_or(f64::NAN),
        total_ms: status["total-time"].as_f64().unwrap_or(f64::NAN),
        lost,
        gap_ms: gap * 1000.0,
        first_answer_ms: first_answer * 1000.0,
        mac_moved_ms: (mac_moved - completed) * 1000.0,
    }
}

fn main() {
    if !is_root() {
        eprintln!("bench-migration: needs root (namespaces, TAP devices)");
        std::process::exit(1);
    }
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let mut table = String::from(
        "| back-end | run | QEMU downtime ms | total ms | pings lost (10 ms) | longest gap ms | \
         completed → first answer ms | completed → A's MAC moved ms |\n\
         |---|---|---|---|---|---|---|---|\n",
    );
    for (name, vhost_user) in [("stream", false), ("vhost-user", true)] {
        for i in 1..=runs {
            let r = run(vhost_user);
            let row = format!(
                "| {name} | {i} | {:.0} | {:.0} | {} | {:.0} | {:.1} | {:.1} |\n",
                r.qemu_downtime_ms, r.total_ms, r.lost, r.gap_ms, r.first_answer_ms, r.mac_moved_ms
            );
            print!("{row}");
            table.push_str(&row);
        }
    }
    println!("\n{table}");
    if let Some(dir) = std::env::var_os("BENCH_OUT") {
        let dir = std::path::PathBuf::from(dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("migration.md"), &table).unwrap();
    }
}
