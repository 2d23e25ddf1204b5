//! Human output: plain tables in the style of `ip` and `docker ps`, no borders.
//!
//! Every function returns the text (ending in a newline) so tests can read it.

use comfy_table::{presets, Cell, CellAlignment, Table};
use vnet_control::policy::acl::{AclAction, AclReport, AclRule, AclSpec};
use vnet_control::{
    AccountInfo, Counters, DhcpSpec, Ipv6Info, Lease, LinkState, MacAddr, MacEntry, MirrorInfo,
    MirrorState, NatInfo, NetworkInfo, PortInfo, PortPolicy, Reservation, UplinkMode, VlanMode,
};

/// A table with a header row, columns separated by two spaces.
fn table(header: &[&str]) -> Table {
    let mut table = Table::new();
    table
        .load_preset(presets::NOTHING)
        .set_header(header.to_vec());
    for column in table.column_iter_mut() {
        column.set_padding((0, 2));
    }
    table
}

/// Settings as `key  value` lines.
fn details(rows: Vec<(&str, String)>) -> String {
    let mut table = Table::new();
    table.load_preset(presets::NOTHING);
    for (key, value) in rows {
        table.add_row(vec![key.to_string(), value]);
    }
    for column in table.column_iter_mut() {
        column.set_padding((0, 2));
    }
    render(&table)
}

fn right_align(table: &mut Table, columns: &[usize]) {
    for &i in columns {
        if let Some(column) = table.column_mut(i) {
            column.set_cell_alignment(CellAlignment::Right);
        }
    }
}

/// The table without the trailing blanks comfy-table pads the last column with.
fn render(table: &Table) -> String {
    let mut text = String::new();
    for line in table.lines() {
        text.push_str(line.trim_end());
        text.push('\n');
    }
    text
}

pub fn networks_table(networks: &[NetworkInfo]) -> String {
    let mut t = table(&["NAME", "MTU", "PORTS", "MACS", "MAC AGING"]);
    for n in networks {
        let name = match n.transient {
            true => format!("{} (transient)", n.name),
            false => n.name.clone(),
        };
        t.add_row(vec![
            Cell::new(name),
            Cell::new(n.mtu),
            Cell::new(n.ports),
            Cell::new(n.macs),
            Cell::new(format!("{} s", n.mac_aging_secs)),
        ]);
    }
    right_align(&mut t, &[1, 2, 3, 4]);
    render(&t)
}

/// `on: 3 groups, router ports 1 2; 12 joins, 1 leaves, 0 queries, ...` or `off`.
fn snooping_summary(s: &vnet_control::SnoopingInfo) -> String {
    if !s.enabled {
        return "off (multicast floods)".into();
    }
    let routers: Vec<String> = s.router_ports.iter().map(u32::to_string).collect();
    let routers = if routers.is_empty() {
        "-".to_string()
    } else {
        routers.join(" ")
    };
    format!(
        "on: {} groups, router ports {routers}; {} joins, {} leaves, {} queries, \
         {} group frames, {} unregistered (flooded), {} refused",
        s.groups.len(),
        s.joins,
        s.leaves,
        s.queries,
        s.group_frames,
        s.unregistered_frames,
        s.refused
    )
}

pub fn network_details(n: &NetworkInfo) -> String {
    let mut rows = vec![
        ("name", n.name.clone()),
        (
            "mtu",
            format!("{} (frames up to {} bytes)", n.mtu, n.max_frame),
        ),
        ("mac aging", format!("{} s", n.mac_aging_secs)),
        (
            "mac limit",
            format!("{} per port, {} in all", n.max_macs_per_port, n.max_macs),
        ),
        ("ports", n.ports.to_string()),
        ("macs", n.macs.to_string()),
        ("thread", n.thread.to_string()),
        ("snooping", snooping_summary(&n.snooping)),
    ];
    if n.transient {
        rows.push(("saved", "no: transient, gone when vnetd restarts".into()));
    }
    // Who may attach: `alice (1001), 1002`, `-` for an empty list.
    let accounts = |list: &[AccountInfo]| {
        let names: Vec<String> = list.iter().map(ToString::to_string).collect();
        if names.is_empty() {
            "-".to_string()
        } else {
            names.join(", ")
        }
    };
    if n.allow_users.is_empty() && n.allow_groups.is_empty() {
        rows.push(("attach", "anyone who can open its sockets".into()));
    } else {
        rows.push(("allow users", accounts(&n.allow_users)));
        rows.push(("allow groups", accounts(&n.allow_groups)));
    }
    if let Some(subnet) = n.subnet {
        rows.push(("subnet", subnet.to_string()));
    }
    let ra_counters = n.ipv6.as_ref().map(ra_counter_rows).unwrap_or_default();
    if let Some(v6) = &n.ipv6 {
        let how = if v6.derived { " (from the name)" } else { "" };
        rows.push(("subnet6", format!("{}{how}", v6.subnet)));
        rows.push(("ra", ra_summary(v6)));
        rows.extend(ra_counters.iter().map(|(k, v)| (k.as_str(), v.clone())));
    }
    if let Some(a) = &n.host_adapter {
        let v6 = a.address6.map_or(String::new(), |a| format!(" {a}"));
        rows.push((
            "host adapter",
            format!("{} {}{v6} (port {})", a.name, a.address, a.port),
        ));
    }
    if let Some(d) = &n.dhcp {
        rows.push(("dhcp", dhcp_summary(d)));
    }
    if let Some(u) = &n.uplink {
        let text = match (u.mode, u.vlan) {
            (UplinkMode::Trunk, _) => format!("{} trunk {}", u.interface, vlan_ranges(&u.vlans)),
            (_, Some(v)) => format!("{} vlan {v}", u.interface),
            (_, None) => u.interface.clone(),
        };
        rows.push(("uplink", text));
    }
    if let Some(nat) = &n.nat {
        rows.push(("nat", nat_summary(nat)));
    }
    let policy = policy_rows(&n.policy, None);
    rows.extend(policy.iter().map(|(k, v)| (k.as_str(), v.clone())));
    let nat_counters = n.nat.as_ref().map(nat_counter_rows).unwrap_or_default();
    rows.extend(nat_counters.iter().map(|(k, v)| (k.as_str(), v.clone())));
    rows.extend([
        ("stream socket", n.sockets.stream.display().to_string()),
        ("dgram socket", n.sockets.dgram.display().to_string()),
        ("api socket", n.sockets.api.display().to_string()),
    ]);
    details(rows)
}

/// `192.168.8.2, dns via 127.0.0.53:53, 3 flows`.
fn nat_summary(nat: &NatInfo) -> String {
    let dns = if nat.dns_upstreams.is_empty() {
        "dns off".to_string()
    } else {
        let upstreams: Vec<String> = nat.dns_upstreams.iter().map(ToString::to_string).collect();
        format!("dns via {}", upstreams.join(" "))
    };
    let flows = match nat.flows {
        1 => "1 flow".to_string(),
        n => format!("{n} flows"),
    };
    format!("{}, {dns}, {flows}", nat.gateway)
}

/// `on, slaac, router fd00::2 for 1800 s, dns fd00::2, domains lab`.
fn ra_summary(v6: &Ipv6Info) -> String {
    let ra = &v6.ra;
    if !ra.enabled {
        return "off".into();
    }
    let mut text = String::from("on");
    let flags = [
        (ra.slaac, "slaac"),
        (ra.managed.unwrap_or(false), "managed"),
        (ra.other.unwrap_or(false), "other"),
    ];
    for (_, flag) in flags.iter().filter(|(on, _)| *on) {
        text.push_str(&format!(", {flag}"));
    }
    match (v6.router, v6.router_lifetime_secs) {
        (Some(r), s) if s > 0 => text.push_str(&format!(", router {r} for {s} s")),
        _ => text.push_str(", no default router"),
    }
    let list = |l: Vec<String>| l.join(" ");
    if !ra.dns.is_empty() {
        let dns = list(ra.dns.iter().map(ToString::to_string).collect());
        text.push_str(&format!(", dns {dns}"));
    }
    if !ra.domains.is_empty() {
        text.push_str(&format!(", domains {}", list(ra.domains.clone())));
    }
    text.push_str(&format!(", every {} s at most", ra.interval_secs));
    text
}

/// The router's counters that moved, indented under the `ra` row.
fn ra_counter_rows(v6: &Ipv6Info) -> Vec<(String, String)> {
    let fields = v6.counters.map(|c| c.fields()).unwrap_or_default();
    fields
        .into_iter()
        .filter(|(_, _, n)| *n > 0)
        .map(|(name, _, n)| (format!("  {name}"), n.to_string()))
        .collect()
}

/// The counters that moved, indented under the `nat` row (like a port's drops).
fn nat_counter_rows(nat: &NatInfo) -> Vec<(String, String)> {
    nat.counters
        .fields()
        .into_iter()
        .filter(|(_, _, n)| *n > 0)
        .map(|(name, _, n)| (format!("  {name}"), n.to_string()))
        .collect()
}

/// `on, 192.168.1.128-192.168.1.253, leases of 30m, 2 reservations`.
fn dhcp_summary(d: &DhcpSpec) -> String {
    let mut text = String::from(if d.enabled { "on" } else { "off" });
    if let Some([first, last]) = d.range {
        text.push_str(&format!(", {first}-{last}"));
    }
    if let Some([first, last]) = d.range6 {
        text.push_str(&format!(", {first}-{last}"));
    }
    text.push_str(&format!(", leases of {}", span(d.lease_secs)));
    match d.reservations.len() {
        0 => {}
        1 => text.push_str(", 1 reservation"),
        n => text.push_str(&format!(", {n} reservations")),
    }
    text
}

/// The settings of a DHCP service, then its reservations.
pub fn dhcp_details(d: &DhcpSpec) -> String {
    let or_dash = |text: String| if text.is_empty() { "-".into() } else { text };
    let mut rows = vec![
        ("dhcp", if d.enabled { "on" } else { "off" }.into()),
        ("server", d.server.map_or("-".into(), |ip| ip.to_string())),
        (
            "range",
            d.range
                .map_or("-".into(), |[first, last]| format!("{first}-{last}")),
        ),
        (
            "lease time",
            format!("{} s ({})", d.lease_secs, span(d.lease_secs)),
        ),
        (
            "dns",
            or_dash(
                d.dns
                    .iter()
                    .map(|ip| ip.to_string())
                    .collect::<Vec<_>>()
                    .join(" "),
            ),
        ),
        ("domain", or_dash(d.domain.clone().unwrap_or_default())),
    ];
    // DHCPv6 rows on vnets with IPv6 (where vnetd fills in the range).
    if let Some([first, last]) = d.range6 {
        let dns6: Vec<String> = d.dns6.iter().map(ToString::to_string).collect();
        rows.extend([
            ("dhcpv6", d.ipv6.as_str().into()),
            ("range6", format!("{first}-{last}")),
            ("dns6", or_dash(dns6.join(" "))),
        ]);
    }
    rows.push(("reservations", d.reservations.len().to_string()));
    let mut text = details(rows);
    if !d.reservations.is_empty() {
        text.push('\n');
        text.push_str(&reservations_table(&d.reservations));
    }
    text
}

pub fn reservations_table(reservations: &[Reservation]) -> String {
    let mut sorted: Vec<&Reservation> = reservations.iter().collect();
    sorted.sort_by_key(|r| (r.ip, r.mac));
    // The IPv6 columns only where a reservation has an IPv6 address.
    let v6 = sorted.iter().any(|r| r.ip6.is_some());
    let mut t = table(if v6 {
        &["MAC", "IP", "IP6", "DUID", "HOSTNAME"][..]
    } else {
        &["MAC", "IP", "HOSTNAME"][..]
    });
    for r in sorted {
        let mut row = vec![Cell::new(r.mac), Cell::new(r.ip)];
        if v6 {
            row.push(Cell::new(r.ip6.map_or("-".into(), |a| a.to_string())));
            row.push(Cell::new(r.duid.as_deref().unwrap_or("-")));
        }
        row.push(Cell::new(r.hostname.as_deref().unwrap_or("-")));
        t.add_row(row);
    }
    render(&t)
}

/// Leases by address; `now` is the Unix time expiries are told relative to.
pub fn leases_table(leases: &[Lease], now: u64) -> String {
    let mut sorted: Vec<&Lease> = leases.iter().collect();
    sorted.sort_by_key(|l| (l.ip, l.mac));
    let mut t = table(&["MAC", "IP", "HOSTNAME", "EXPIRES", "STATE"]);
    for l in sorted {
        t.add_row(vec![
            Cell::new(l.mac),
            Cell::new(l.ip),
            Cell::new(l.hostname.as_deref().unwrap_or("-")),
            Cell::new(expiry(l.expires, now)),
            Cell::new(&l.state),
        ]);
    }
    render(&t)
}

/// A Unix time relative to `now`: `in 29m`, `3h 5m ago`, `now`; `-` for 0 (none) and
/// `never` for times beyond a century.
pub fn expiry(when: u64, now: u64) -> String {
    const CENTURY: u64 = 100 * 365 * 86400;
    if when == 0 {
        "-".into()
    } else if when.saturating_sub(now) > CENTURY {
        "never".into()
    } else if when > now {
        format!("in {}", span(when - now))
    } else if when == now {
        "now".into()
    } else {
        format!("{} ago", span(now - when))
    }
}

/// A duration in its two largest units, rounded down: `45s`, `29m`, `2h 5m`, `3d 4h`.
pub fn span(secs: u64) -> String {
    let (d, h, m, s) = (
        secs / 86400,
        secs % 86400 / 3600,
        secs % 3600 / 60,
        secs % 60,
    );
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m"),
        (0, _, 0) => format!("{h}h"),
        (0, _, _) => format!("{h}h {m}m"),
        (_, 0, _) => format!("{d}d"),
        _ => format!("{d}d {h}h"),
    }
}

pub fn ports_table(ports: &[PortInfo]) -> String {
    let mut t = table(&[
        "ID",
        "KIND",
        "UID",
        "DESCRIPTION",
        "VLAN",
        "MACS",
        "RX FRAMES/BYTES",
        "TX FRAMES/BYTES",
        "DROPS",
    ]);
    for p in ports {
        let c = &p.counters;
        t.add_row(vec![
            Cell::new(p.id),
            Cell::new(p.kind.as_str()),
            Cell::new(p.uid.map_or("-".into(), |u| u.to_string())),
            Cell::new(described(p)),
            Cell::new(vlan_mode(&p.vlan)),
            Cell::new(mac_summary(&p.macs)),
            Cell::new(traffic(c.rx_frames, c.rx_bytes)),
            Cell::new(traffic(c.tx_frames, c.tx_bytes)),
            Cell::new(total_drops(c)),
        ]);
    }
    right_align(&mut t, &[0, 2, 6, 7, 8]);
    render(&t)
}

/// The port's description, with its link state when its link is down and its role
/// when it is a mirror destination.
fn described(p: &PortInfo) -> String {
    let mut text = p.description.clone();
    if p.state == Some(LinkState::Down) {
        text.push_str(" (down)");
    }
    if !p.mirror_destination.is_empty() {
        text.push_str(" (mirror destination)");
    }
    text
}

pub fn port_details(p: &PortInfo) -> String {
    let c = &p.counters;
    let mut rows = vec![
        ("id", p.id.to_string()),
        ("kind", p.kind.as_str().to_string()),
        ("description", p.description.clone()),
    ];
    if let Some(uid) = p.uid {
        rows.push(("uid", uid.to_string()));
    }
    if let Some(state) = p.state {
        rows.push(("state", state.as_str().to_string()));
    }
    if let Some(pid) = p.pid {
        rows.push(("pid", pid.to_string()));
    }
    rows.extend([
        ("vlan", vlan_mode(&p.vlan)),
        (
            "mac",
            p.mac.map_or("-".into(), |m| format!("{m} (declared)")),
        ),
        (
            "promiscuous",
            if p.promiscuous { "yes" } else { "no" }.into(),
        ),
        ("macs learned", mac_list(&p.macs)),
        (
            "rx",
            format!("{} frames, {}", c.rx_frames, bytes(c.rx_bytes)),
        ),
        (
            "tx",
            format!("{} frames, {}", c.tx_frames, bytes(c.tx_bytes)),
        ),
        ("drops", total_drops(c).to_string()),
    ]);
    let causes: Vec<(String, String)> = c
        .drops
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(cause, n)| (format!("  {cause}"), n.to_string()))
        .collect();
    rows.extend(causes.iter().map(|(k, v)| (k.as_str(), v.clone())));
    rows.push((
        "egress queue",
        format!("{} of {} frames", p.queue_len, p.queue_capacity),
    ));
    if !p.mirror_destination.is_empty() {
        rows.push((
            "mirror destination",
            format!(
                "of {}: takes their copies only, its own frames dropped",
                p.mirror_destination.join(", ")
            ),
        ));
    }
    let mut policy = policy_rows(&p.enforced, Some(&p.policy));
    if let Some(rate) = p.policy_counters.as_ref().and_then(|c| c.rate.as_ref()) {
        let held = format!("{} frames, {}", rate.held_frames, bytes(rate.held_bytes));
        policy.push(("  shaper holds".into(), held));
    }
    if let Some(imp) = p.policy_counters.as_ref().and_then(|c| c.impair.as_ref()) {
        let did = format!(
            "{} frames held; {} duplicated, {} corrupted, {} reordered",
            imp.held_frames, imp.duplicated, imp.corrupted, imp.reordered
        );
        policy.push(("  impairment".into(), did));
    }
    rows.extend(policy.iter().map(|(k, v)| (k.as_str(), v.clone())));
    if let Some(security) = p.policy_counters.as_ref().and_then(|c| c.security.as_ref()) {
        rows.push(("  MAC lock learned", mac_list(&security.learned_macs)));
        if let Some(mac) = security.shut_down_by {
            rows.push((
                "  shut down",
                format!("by {mac}: set its security again to enable it"),
            ));
        }
    }
    let tunnel = p.vxlan.as_ref().map(vxlan_rows).unwrap_or_default();
    rows.extend(tunnel.iter().map(|(k, v)| (k.as_str(), v.clone())));
    details(rows)
}

/// A VXLAN uplink's VNI, socket, remotes and the socket's drops, as detail rows.
fn vxlan_rows(vx: &vnet_control::VxlanInfo) -> Vec<(String, String)> {
    let mut rows = vec![
        ("vni".to_string(), vx.vni.to_string()),
        ("socket".to_string(), vx.socket.clone()),
    ];
    for r in &vx.remotes {
        rows.push((
            format!("remote {}", r.address),
            format!(
                "rx {} frames, {}; tx {} frames, {}; {} dropped",
                r.rx_frames,
                bytes(r.rx_bytes),
                r.tx_frames,
                bytes(r.tx_bytes),
                r.drops
            ),
        ));
    }
    let dropped: Vec<String> = vx
        .socket_drops
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(cause, n)| format!("{cause} {n}"))
        .collect();
    if !dropped.is_empty() {
        rows.push(("socket drops".to_string(), dropped.join(", ")));
    }
    rows
}

/// A policy's sections as `key  value` rows under a `policy` row; with `own` (a port's
/// own policy), each says whether it is the port's own or its vnet's.
fn policy_rows(policy: &PortPolicy, own: Option<&PortPolicy>) -> Vec<(String, String)> {
    if policy.is_empty() {
        return vec![("policy".into(), "none".into())];
    }
    let own = own.map(|o| serde_json::to_value(o).expect("a policy serializes"));
    let sections = serde_json::to_value(policy).expect("a policy serializes");
    let mut rows = vec![("policy".to_string(), String::new())];
    for (name, spec) in sections.as_object().into_iter().flatten() {
        let from = match &own {
            Some(o) if o.get(name) == Some(spec) => " (port's own)",
            Some(_) => " (the vnet's)",
            None => "",
        };
        let settings = match (name.as_str(), &policy.acl) {
            ("acl", Some(acl)) => acl_summary(acl),
            _ => compact(spec),
        };
        rows.push((format!("  {name}"), format!("{settings}{from}")));
    }
    rows
}

/// Filters on one line: `in: 2 rules, out: 1 rule (default drop), conntrack`; the
/// rules themselves are `vnet acl ls`'s.
fn acl_summary(acl: &AclSpec) -> String {
    let dir = |rules: &[AclRule], default: AclAction| {
        let n = match rules.len() {
            1 => "1 rule".to_string(),
            n => format!("{n} rules"),
        };
        match default {
            AclAction::Allow => n,
            AclAction::Drop => format!("{n} (default drop)"),
        }
    };
    let mut text = format!(
        "in: {}, out: {}",
        dir(&acl.inbound, acl.default_in),
        dir(&acl.outbound, acl.default_out)
    );
    if acl.conntrack {
        text.push_str(", conntrack");
    }
    text
}

/// A section's settings on one line: `out=10mbit burst=64k`, `{}` as `on`.
fn compact(value: &serde_json::Value) -> String {
    use serde_json::Value;
    match value {
        Value::Object(map) if map.is_empty() => "on".into(),
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| match v {
                Value::Object(_) => format!("{k}=({})", compact(v)),
                _ => format!("{k}={}", compact(v)),
            })
            .collect::<Vec<_>>()
            .join(" "),
        Value::Array(items) => items.iter().map(compact).collect::<Vec<_>>().join(","),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A policy as `vnet net policy` and `vnet port set` print it.
pub fn policy(policy: &PortPolicy) -> String {
    let rows = policy_rows(policy, None);
    details(rows.iter().map(|(k, v)| (k.as_str(), v.clone())).collect())
}

/// `vnet mirror ls`.
pub fn mirrors_table(mirrors: &[MirrorInfo]) -> String {
    let mut t = table(&[
        "NAME",
        "SOURCES",
        "DIRECTION",
        "DESTINATION",
        "STATE",
        "COPIED FRAMES/BYTES",
        "DROPS",
    ]);
    for m in mirrors {
        let sources: Vec<String> = m.sources.iter().map(ToString::to_string).collect();
        let state = match (&m.state, &m.reason) {
            (MirrorState::Waiting, Some(why)) => format!("waiting: {why}"),
            (MirrorState::Waiting, None) => "waiting".into(),
            (MirrorState::Active, _) => "active".into(),
        };
        let c = &m.counters;
        t.add_row(vec![
            Cell::new(&m.name),
            Cell::new(sources.join(",")),
            Cell::new(m.direction.as_str()),
            Cell::new(&m.destination),
            Cell::new(state),
            Cell::new(traffic(c.frames, c.bytes)),
            Cell::new(c.drops),
        ]);
    }
    right_align(&mut t, &[5, 6]);
    render(&t)
}

pub fn macs_table(entries: &[MacEntry]) -> String {
    let mut entries: Vec<&MacEntry> = entries.iter().collect();
    entries.sort_by_key(|e| (e.vlan, e.mac));
    let mut t = table(&["VLAN", "MAC", "PORT", "AGE", "TYPE"]);
    for e in entries {
        t.add_row(vec![
            Cell::new(e.vlan),
            Cell::new(e.mac),
            Cell::new(e.port),
            Cell::new(format!("{} s", e.age_secs)),
            Cell::new(if e.fixed { "fixed" } else { "learned" }),
        ]);
    }
    right_align(&mut t, &[0, 2, 3]);
    render(&t)
}

/// A port's filters: per direction, the rules numbered as `vnet acl rm` takes them with
/// what each decided, then the default's; the connection table if one is kept.
pub fn acl_report(acl: &AclReport) -> String {
    let mut text = String::new();
    for (dir, chain) in [("in", &acl.inbound), ("out", &acl.outbound)] {
        let mut t = table(&["#", dir.to_uppercase().as_str(), "FRAMES", "BYTES"]);
        for (i, r) in chain.rules.iter().enumerate() {
            t.add_row(vec![
                Cell::new(i + 1),
                Cell::new(&r.rule),
                Cell::new(r.frames),
                Cell::new(bytes(r.bytes)),
            ]);
        }
        t.add_row(vec![
            Cell::new("-"),
            Cell::new(format!("default {}", chain.default)),
            Cell::new(chain.default_frames),
            Cell::new(bytes(chain.default_bytes)),
        ]);
        right_align(&mut t, &[0, 2, 3]);
        text.push_str(&render(&t));
    }
    if let Some(ct) = &acl.conntrack {
        text.push_str(&format!(
            "connections tracked: {} of at most {}, {} refused (table full)\n",
            ct.entries, ct.max, ct.refused
        ));
    }
    text
}

/// `vnet fdb ls`: MAC, remote VTEP, age, static or learned.
pub fn fdb_table(entries: &[vnet_control::FdbEntry]) -> String {
    let mut t = table(&["MAC", "REMOTE", "AGE", "TYPE"]);
    for e in entries {
        t.add_row(vec![
            Cell::new(e.mac),
            Cell::new(e.remote),
            Cell::new(format!("{} s", e.age_secs)),
            Cell::new(if e.fixed { "static" } else { "learned" }),
        ]);
    }
    right_align(&mut t, &[2]);
    render(&t)
}

/// `access 10`, `trunk 10,20-29`, `trunk 10,20 native 1`.
pub fn vlan_mode(mode: &VlanMode) -> String {
    match mode {
        VlanMode::Access { vlan } => format!("access {vlan}"),
        VlanMode::Trunk { allowed, native } => {
            let mut text = format!("trunk {}", vlan_ranges(allowed));
            if let Some(native) = native {
                text.push_str(&format!(" native {native}"));
            }
            text
        }
    }
}

/// `[1, 2, 3, 7]` → `1-3,7`.
fn vlan_ranges(vlans: &[u16]) -> String {
    let mut sorted = vlans.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut parts = Vec::new();
    let mut i = 0;
    while i < sorted.len() {
        let start = sorted[i];
        while i + 1 < sorted.len() && sorted[i + 1] == sorted[i] + 1 {
            i += 1;
        }
        parts.push(if sorted[i] == start {
            start.to_string()
        } else {
            format!("{start}-{}", sorted[i])
        });
        i += 1;
    }
    if parts.is_empty() {
        "none".into()
    } else {
        parts.join(",")
    }
}

/// The first MAC and how many more.
fn mac_summary(macs: &[MacAddr]) -> String {
    match macs {
        [] => "-".into(),
        [one] => one.to_string(),
        [first, rest @ ..] => format!("{first} +{}", rest.len()),
    }
}

fn mac_list(macs: &[MacAddr]) -> String {
    if macs.is_empty() {
        return "-".into();
    }
    macs.iter()
        .map(|m| m.to_string())
        .collect::<Vec<_>>()
        .join(" ")
}

fn traffic(frames: u64, octets: u64) -> String {
    format!("{frames} / {}", bytes(octets))
}

fn total_drops(c: &Counters) -> u64 {
    c.drops.values().sum()
}

/// `999 B`, `1.5 KiB`, `12.0 MiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use vnet_control::{HostAdapterInfo, NetworkSockets, PortKind};

    fn mac(s: &str) -> MacAddr {
        s.parse().unwrap()
    }

    fn vmnet1() -> NetworkInfo {
        NetworkInfo {
            name: "vmnet1".into(),
            mtu: 1500,
            max_frame: 1514,
            mac_aging_secs: 300,
            max_macs_per_port: 1024,
            max_macs: 16384,
            ports: 2,
            macs: 3,
            sockets: NetworkSockets {
                stream: "/run/vnet/vmnet1/stream.sock".into(),
                dgram: "/run/vnet/vmnet1/dgram.sock".into(),
                api: "/run/vnet/vmnet1/api.sock".into(),
            },
            subnet: None,
            ipv6: None,
            host_adapter: None,
            dhcp: None,
            dhcp_counters: None,
            uplink: None,
            nat: None,
            thread: 0,
            transient: false,
            allow_users: Vec::new(),
            allow_groups: Vec::new(),
            policy: Default::default(),
            captures: Default::default(),
            snooping: Default::default(),
        }
    }

    fn two_ports() -> Vec<PortInfo> {
        vec![
            PortInfo {
                vxlan: None,
                id: 1,
                kind: PortKind::Stream,
                description: "qemu pid 4242 (web1)".into(),
                pid: Some(4242),
                uid: Some(1000),
                state: None,
                vlan: VlanMode::Access { vlan: 1 },
                mac: None,
                promiscuous: false,
                macs: vec![mac("52:54:00:00:00:01")],
                counters: Counters {
                    rx_frames: 10,
                    rx_bytes: 1200,
                    tx_frames: 12,
                    tx_bytes: 3 * 1024 * 1024,
                    drops: BTreeMap::from([("queue_full".into(), 2), ("runt".into(), 1)]),
                },
                queue_len: 0,
                queue_capacity: 256,
                policy: Default::default(),
                enforced: Default::default(),
                policy_counters: Default::default(),
                mirror_destination: Vec::new(),
            },
            PortInfo {
                vxlan: None,
                id: 12,
                kind: PortKind::Tap,
                description: "tap-fw".into(),
                pid: None,
                uid: None,
                state: None,
                vlan: VlanMode::Trunk {
                    allowed: vec![10, 20, 21, 22],
                    native: Some(1),
                },
                mac: Some(mac("02:00:00:00:00:09")),
                promiscuous: true,
                macs: vec![mac("02:00:00:00:00:09"), mac("02:00:00:00:00:0a")],
                counters: Counters::default(),
                queue_len: 3,
                queue_capacity: 256,
                policy: Default::default(),
                enforced: Default::default(),
                policy_counters: Default::default(),
                mirror_destination: Vec::new(),
            },
        ]
    }

    #[test]
    fn network_list_is_one_line_per_vnet() {
        let mut other = vmnet1();
        other.name = "vmnet8".into();
        other.mtu = 9000;
        assert_eq!(
            networks_table(&[vmnet1(), other]),
            "\
NAME     MTU  PORTS  MACS  MAC AGING
vmnet1  1500      2     3      300 s
vmnet8  9000      2     3      300 s
"
        );
    }

    #[test]
    fn network_details_show_the_sockets() {
        let text = network_details(&vmnet1());
        assert!(
            text.contains("mtu            1500 (frames up to 1514 bytes)\n"),
            "{text}"
        );
        assert!(
            text.contains("stream socket  /run/vnet/vmnet1/stream.sock\n"),
            "{text}"
        );
        assert!(
            text.contains("mac limit      1024 per port, 16384 in all\n"),
            "{text}"
        );
        assert!(
            text.contains("attach         anyone who can open its sockets\n"),
            "{text}"
        );
        let mut narrowed = vmnet1();
        narrowed.allow_groups = vec![AccountInfo {
            id: 4000,
            name: Some("lab".into()),
        }];
        let text = network_details(&narrowed);
        assert!(text.contains("allow users    -\n"), "{text}");
        assert!(text.contains("allow groups   lab (4000)\n"), "{text}");
    }

    #[test]
    fn port_list_shows_traffic_and_total_drops() {
        assert_eq!(
            ports_table(&two_ports()),
            "\
ID  KIND     UID  DESCRIPTION           VLAN                     MACS                  RX FRAMES/BYTES  TX FRAMES/BYTES  DROPS
 1  stream  1000  qemu pid 4242 (web1)  access 1                 52:54:00:00:00:01        10 / 1.2 KiB     12 / 3.0 MiB      3
12  tap        -  tap-fw                trunk 10,20-22 native 1  02:00:00:00:00:09 +1          0 / 0 B          0 / 0 B      0
"
        );
    }

    #[test]
    fn a_port_whose_interface_is_down_says_so() {
        let mut p = two_ports().remove(1);
        p.kind = PortKind::Interface;
        p.description = "interface fc-tap0".into();
        p.state = Some(LinkState::Down);
        assert!(ports_table(std::slice::from_ref(&p)).contains("interface fc-tap0 (down)"));
        assert!(port_details(&p).contains("state         down\n"));
        p.state = Some(LinkState::Up);
        assert!(!ports_table(std::slice::from_ref(&p)).contains("(down)"));
    }

    #[test]
    fn port_details_break_drops_down_by_cause() {
        let ports = two_ports();
        let text = port_details(&ports[0]);
        for line in [
            "uid           1000",
            "pid           4242",
            "vlan          access 1",
            "mac           -",
            "rx            10 frames, 1.2 KiB",
            "drops         3",
            "  queue_full  2",
            "  runt        1",
            "egress queue  0 of 256 frames",
        ] {
            assert!(
                text.contains(&format!("{line}\n")),
                "{line:?} not in\n{text}"
            );
        }
        let text = port_details(&ports[1]);
        assert!(!text.contains("pid") && !text.contains("uid"), "{text}");
        assert!(text.contains("promiscuous   yes\n"), "{text}");
        assert!(text.contains("macs learned  02:00:00:00:00:09 02:00:00:00:00:0a\n"));
    }

    #[test]
    fn port_details_show_what_port_security_holds() {
        use vnet_control::policy::security::{SecurityReport, SecuritySpec};
        let mut port = two_ports().remove(0);
        port.enforced.security = Some(SecuritySpec::strict());
        port.policy_counters = Some(vnet_control::PolicyReport {
            security: Some(SecurityReport {
                learned_macs: vec![mac("52:54:00:00:00:01")],
                shut_down_by: Some(mac("52:54:00:00:00:66")),
            }),
            rate: Some(Default::default()),
            impair: None,
            ..Default::default()
        });
        let text = port_details(&port);
        for line in [
            "  security          strict (the vnet's)",
            "  MAC lock learned  52:54:00:00:00:01",
            "  shut down         by 52:54:00:00:00:66: set its security again to enable it",
            "  shaper holds      0 frames, 0 B",
        ] {
            assert!(
                text.contains(&format!("{line}\n")),
                "{line:?} not in\n{text}"
            );
        }
    }

    #[test]
    fn mac_table_is_sorted_by_vlan_then_mac() {
        let entry = |vlan, m: &str, port, fixed| MacEntry {
            vlan,
            mac: mac(m),
            port,
            age_secs: 7,
            fixed,
        };
        let text = macs_table(&[
            entry(20, "52:54:00:00:00:02", 3, false),
            entry(1, "52:54:00:00:00:09", 1, true),
            entry(1, "52:54:00:00:00:01", 12, false),
        ]);
        assert_eq!(
            text,
            "\
VLAN  MAC                PORT  AGE  TYPE
   1  52:54:00:00:00:01    12  7 s  learned
   1  52:54:00:00:00:09     1  7 s  fixed
  20  52:54:00:00:00:02     3  7 s  learned
"
        );
    }

    fn host_only() -> NetworkInfo {
        let mut n = vmnet1();
        n.subnet = Some("192.168.101.0/24".parse().unwrap());
        n.host_adapter = Some(HostAdapterInfo {
            name: "vmnet1".into(),
            address: "192.168.101.1".parse().unwrap(),
            address6: None,
            port: 1,
        });
        n.dhcp = Some(DhcpSpec {
            enabled: true,
            range: Some([
                "192.168.101.128".parse().unwrap(),
                "192.168.101.253".parse().unwrap(),
            ]),
            server: Some("192.168.101.254".parse().unwrap()),
            lease_secs: 1800,
            dns: vec!["192.168.101.1".parse().unwrap(), "9.9.9.9".parse().unwrap()],
            domain: None,
            reservations: vec![
                Reservation {
                    mac: mac("52:54:00:00:00:0b"),
                    ip: "192.168.101.20".parse().unwrap(),
                    hostname: None,
                    ip6: None,
                    duid: None,
                },
                Reservation {
                    mac: mac("52:54:00:00:00:0a"),
                    ip: "192.168.101.10".parse().unwrap(),
                    hostname: Some("db".into()),
                    ip6: None,
                    duid: None,
                },
            ],
            ..DhcpSpec::default()
        });
        n
    }

    #[test]
    fn network_details_show_the_uplink() {
        let mut n = vmnet1();
        n.uplink = Some(vnet_control::UplinkSpec {
            vxlan: None,
            interface: "eth1".into(),
            vlan: None,
            mode: UplinkMode::Trunk,
            vlans: vec![10, 11, 12, 20],
        });
        assert!(network_details(&n).contains("uplink         eth1 trunk 10-12,20\n"));
        n.uplink = Some(vnet_control::UplinkSpec {
            vxlan: None,
            interface: "eth1".into(),
            vlan: Some(10),
            mode: UplinkMode::Access,
            vlans: Vec::new(),
        });
        assert!(network_details(&n).contains("uplink         eth1 vlan 10\n"));
    }

    #[test]
    fn network_details_show_subnet_host_adapter_and_dhcp_when_present() {
        let text = network_details(&host_only());
        for line in [
            "subnet         192.168.101.0/24",
            "host adapter   vmnet1 192.168.101.1 (port 1)",
            "dhcp           on, 192.168.101.128-192.168.101.253, leases of 30m, 2 reservations",
            "stream socket  /run/vnet/vmnet1/stream.sock",
        ] {
            assert!(
                text.contains(&format!("{line}\n")),
                "{line:?} not in\n{text}"
            );
        }
        let text = network_details(&vmnet1());
        for key in ["subnet", "host adapter", "dhcp"] {
            assert!(!text.contains(key), "{key} in\n{text}");
        }
        let mut off = host_only();
        let dhcp = off.dhcp.as_mut().unwrap();
        dhcp.enabled = false;
        dhcp.reservations.truncate(1);
        dhcp.lease_secs = 86400;
        assert!(network_details(&off).contains(
            "dhcp           off, 192.168.101.128-192.168.101.253, leases of 1d, 1 reservation\n"
        ));
    }

    #[test]
    fn network_details_show_ipv6_the_advertisements_and_the_counters_that_moved() {
        let mut n = host_only();
        n.host_adapter.as_mut().unwrap().address6 = Some("fd00:77::1".parse().unwrap());
        n.ipv6 = Some(Ipv6Info {
            subnet: "fd00:77::/64".parse().unwrap(),
            derived: true,
            router: None,
            ra: vnet_control::RaSpec {
                domains: vec!["vm.test".into()],
                ..Default::default()
            },
            router_lifetime_secs: 0,
            counters: Some(vnet_control::RaCounters {
                rs_answered: 3,
                ..Default::default()
            }),
        });
        let text = network_details(&n);
        for line in [
            "subnet6        fd00:77::/64 (from the name)",
            "ra             on, slaac, no default router, domains vm.test, every 600 s at most",
            "  rs_answered  3",
            "host adapter   vmnet1 192.168.101.1 fd00:77::1 (port 1)",
        ] {
            assert!(
                text.contains(&format!("{line}\n")),
                "{line:?} not in\n{text}"
            );
        }
        assert!(!text.contains("ra_sent"), "{text}");
        let v6 = n.ipv6.as_mut().unwrap();
        v6.router = Some("fd00:77::2".parse().unwrap());
        v6.router_lifetime_secs = 1800;
        v6.ra.enabled = false;
        let text = network_details(&n);
        assert!(text.contains("ra             off\n"), "{text}");
    }

    #[test]
    fn network_details_show_the_nat_device_and_the_counters_that_moved() {
        let mut n = vmnet1();
        n.nat = Some(NatInfo {
            gateway: "192.168.108.2".parse().unwrap(),
            dns_upstreams: vec!["127.0.0.53:53".parse().unwrap()],
            flows: 1,
            counters: vnet_control::NatCounters {
                dns_queries: 7,
                dns_local: 2,
                ..Default::default()
            },
        });
        let text = network_details(&n);
        for line in [
            "nat            192.168.108.2, dns via 127.0.0.53:53, 1 flow",
            "  dns_queries  7",
            "  dns_local    2",
        ] {
            assert!(
                text.contains(&format!("{line}\n")),
                "{line:?} not in\n{text}"
            );
        }
        assert!(!text.contains("arp_replies"), "{text}");
        let nat = n.nat.as_mut().unwrap();
        nat.dns_upstreams.clear();
        nat.flows = 0;
        assert!(network_details(&n).contains("nat            192.168.108.2, dns off, 0 flows\n"));
    }

    #[test]
    fn dhcp_details_list_settings_then_reservations_by_address() {
        assert_eq!(
            dhcp_details(host_only().dhcp.as_ref().unwrap()),
            "\
dhcp          on
server        192.168.101.254
range         192.168.101.128-192.168.101.253
lease time    1800 s (30m)
dns           192.168.101.1 9.9.9.9
domain        -
reservations  2

MAC                IP              HOSTNAME
52:54:00:00:00:0a  192.168.101.10  db
52:54:00:00:00:0b  192.168.101.20  -
"
        );
        let bare = DhcpSpec::default();
        let text = dhcp_details(&bare);
        assert!(text.ends_with("reservations  0\n"), "{text}");
        assert!(text.contains("range         -\n"), "{text}");
    }

    #[test]
    fn lease_table_is_sorted_by_address_with_relative_expiry() {
        let now = 1_700_000_000;
        let lease = |m: &str, ip: &str, hostname: Option<&str>, expires, state: &str| Lease {
            mac: mac(m),
            ip: ip.parse().unwrap(),
            duid: None,
            hostname: hostname.map(String::from),
            expires,
            state: state.into(),
        };
        let text = leases_table(
            &[
                lease(
                    "52:54:00:00:00:02",
                    "192.168.101.200",
                    None,
                    now - 150,
                    "expired",
                ),
                lease(
                    "52:54:00:00:00:01",
                    "192.168.101.128",
                    Some("web1"),
                    now + 1799,
                    "bound",
                ),
                lease(
                    "52:54:00:00:00:03",
                    "192.168.101.13",
                    Some("db"),
                    now + 7500,
                    "bound",
                ),
            ],
            now,
        );
        assert_eq!(
            text,
            "\
MAC                IP               HOSTNAME  EXPIRES   STATE
52:54:00:00:00:03  192.168.101.13   db        in 2h 5m  bound
52:54:00:00:00:01  192.168.101.128  web1      in 29m    bound
52:54:00:00:00:02  192.168.101.200  -         2m ago    expired
"
        );
        assert_eq!(
            leases_table(&[], now),
            "MAC  IP  HOSTNAME  EXPIRES  STATE\n"
        );
    }

    #[test]
    fn expiries_read_relative_to_now() {
        let now = 1_700_000_000;
        assert_eq!(expiry(now + 45, now), "in 45s");
        assert_eq!(expiry(now + 1799, now), "in 29m");
        assert_eq!(expiry(now + 3600, now), "in 1h");
        assert_eq!(expiry(now + 3 * 86400 + 4 * 3600 + 59, now), "in 3d 4h");
        assert_eq!(expiry(now + 2 * 86400 + 59 * 60, now), "in 2d");
        assert_eq!(expiry(now, now), "now");
        assert_eq!(expiry(now - 61, now), "1m ago");
        assert_eq!(expiry(0, now), "-");
        assert_eq!(expiry(u64::MAX, now), "never");
        assert_eq!(span(0), "0s");
    }

    #[test]
    fn sizes_read_like_people_write_them() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(5 << 30), "5.0 GiB");
        assert_eq!(vlan_ranges(&[7, 1, 2, 3, 9, 10]), "1-3,7,9-10");
        assert_eq!(vlan_ranges(&[]), "none");
    }

    #[test]
    fn a_vxlan_uplink_shows_its_remotes_and_the_fdb_its_entries() {
        let mut p = two_ports().remove(0);
        p.vxlan = Some(vnet_control::VxlanInfo {
            vni: 100,
            socket: "192.0.2.1:4789".into(),
            remotes: vec![vnet_control::RemoteInfo {
                address: "192.0.2.2".parse().unwrap(),
                rx_frames: 3,
                rx_bytes: 180,
                tx_frames: 4,
                tx_bytes: 240,
                drops: 1,
            }],
            socket_drops: BTreeMap::from([("short".into(), 2), ("flags".into(), 0)]),
        });
        let text = port_details(&p);
        assert!(
            text.contains("vni") && text.contains("192.0.2.1:4789"),
            "{text}"
        );
        assert!(text.contains("remote 192.0.2.2"), "{text}");
        assert!(
            text.contains("tx 4 frames") && text.contains("1 dropped"),
            "{text}"
        );
        assert!(
            text.contains("short 2") && !text.contains("flags 0"),
            "{text}"
        );
        let table = fdb_table(&[vnet_control::FdbEntry {
            mac: mac("52:54:00:00:00:01"),
            remote: "192.0.2.2".parse().unwrap(),
            age_secs: 5,
            fixed: true,
        }]);
        assert!(
            table.contains("52:54:00:00:00:01") && table.contains("static"),
            "{table}"
        );
    }
}
