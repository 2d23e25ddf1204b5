//! Who may do what on the control API.
//!
//! # Theory of operation
//!
//! Every control connection is a unix socket, so the kernel tells who is on the other
//! end: `SO_PEERCRED` (uid, primary gid, pid) and `SO_PEERGROUPS` (the supplementary
//! groups), both recorded when the client called `connect()`. [`Peer::of`] reads them
//! once per connection; [`Policy::role`] turns them into a [`Role`] for each request:
//!
//! | role  | who                                                            |
//! |-------|----------------------------------------------------------------|
//! | admin | uid 0, vnetd's own uid, members of `[access] admin_group`      |
//! | user  | members of `[access] user_group`                               |
//! | none  | everyone else                                                  |
//!
//! Membership counts the primary gid and the supplementary groups the client process
//! holds, not what `/etc/group` says now: the kernel's record cannot be changed by the
//! client after it connected (no pid to reuse, no file to race), it needs no group
//! database (numeric gids, containers), and it matches the file permissions the same
//! process meets on the sockets. As with files, a user added to a group gets the role
//! at their next login.
//!
//! [`RULES`] says which role each route needs (an unlisted route needs admin). Two
//! routes look at more than the route: a user may add only vhost-user ports on the
//! default VLAN ([`Policy::check_port`]), only on vnets whose allow lists admit them
//! (the data plane decides, as for its sockets: `vnet_io::admission`), and remove only
//! the ports they added (the control plane remembers who added which port). A refusal is `403` with a message
//! naming the role, who holds it and what the client is ([`Policy::refusal`]).

use std::io;
use std::os::fd::AsFd;
use std::path::Path;

use anyhow::{bail, Context, Result};
use axum::http::Method;
use vnet_model::{PortSpec, VlanMode};

use crate::config::{AccessConfig, DEFAULT_ADMIN_GROUP, DEFAULT_USER_GROUP};

/// What a client may do: each role may do everything the roles below it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    None,
    User,
    Admin,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::None => "no role",
            Role::User => "role user",
            Role::Admin => "role admin",
        }
    }
}

/// Who is on the other end of a control connection, as the kernel saw it at
/// `connect()`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub uid: u32,
    pub gid: u32,
    pub pid: Option<u32>,
    /// Supplementary groups.
    pub groups: Vec<u32>,
}

impl Peer {
    /// The credentials of `stream`'s peer; `None` if the kernel will not say (then the
    /// client has no role).
    pub fn of(stream: &tokio::net::UnixStream) -> Option<Peer> {
        let cred = stream.peer_cred().ok()?;
        let pid = cred.pid().and_then(|p| u32::try_from(p).ok());
        // The groups as the kernel recorded them at connect(); never looked up by pid,
        // which may have been reused since.
        let groups = vnet_io::sys::peer::groups(stream.as_fd()).unwrap_or_else(|e| {
            tracing::warn!(
                uid = cred.uid(),
                "no supplementary groups for a control client (SO_PEERGROUPS: {e}): \
                 only its primary group counts"
            );
            Vec::new()
        });
        Some(Peer {
            uid: cred.uid(),
            gid: cred.gid(),
            pid,
            groups,
        })
    }

    fn is_member(&self, gid: u32) -> bool {
        self.gid == gid || self.groups.contains(&gid)
    }
}

/// A group as configured and as the system knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// As written in the configuration (a name, or a gid in decimal).
    pub name: String,
    pub gid: u32,
    /// Named in the configuration or on the command line, not a default.
    pub explicit: bool,
}

/// Who holds which role; fixed at start.
#[derive(Debug, Clone)]
pub struct Policy {
    /// vnetd's own uid: admin, so an unprivileged vnetd serves its owner as before.
    pub daemon_uid: u32,
    pub admin: Option<Group>,
    pub user: Option<Group>,
}

/// Which role a request needs, and what it does (for the refusal).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    pub need: Role,
    pub action: &'static str,
}

/// The role each route needs: (method, route as the router spells it, role, action).
/// Anything not listed needs admin.
pub const RULES: &[(&str, &str, Role, &str)] = &[
    ("GET", "/v1/version", Role::None, "reading the version"),
    ("GET", "/v1/networks", Role::User, "listing vnets"),
    ("POST", "/v1/networks", Role::Admin, "creating a vnet"),
    ("GET", "/v1/networks/{net}", Role::User, "showing a vnet"),
    (
        "DELETE",
        "/v1/networks/{net}",
        Role::Admin,
        "deleting a vnet",
    ),
    (
        "GET",
        "/v1/networks/{net}/ports",
        Role::User,
        "listing ports",
    ),
    (
        "POST",
        "/v1/networks/{net}/ports",
        Role::User,
        "adding a port",
    ),
    (
        "GET",
        "/v1/networks/{net}/ports/{id}",
        Role::User,
        "showing a port",
    ),
    (
        "DELETE",
        "/v1/networks/{net}/ports/{id}",
        Role::User,
        "removing a port",
    ),
    (
        "PUT",
        "/v1/networks/{net}/ports/{id}/vlan",
        Role::Admin,
        "setting a port's VLANs",
    ),
    (
        "PATCH",
        "/v1/networks/{net}/ports/{id}/policy",
        Role::Admin,
        "setting a port's policy",
    ),
    (
        "GET",
        "/v1/networks/{net}/policy",
        Role::User,
        "showing a vnet's port policy",
    ),
    (
        "PATCH",
        "/v1/networks/{net}/policy",
        Role::Admin,
        "setting a vnet's port policy",
    ),
    (
        "PUT",
        "/v1/networks/{net}/uplink",
        Role::Admin,
        "setting an uplink",
    ),
    (
        "DELETE",
        "/v1/networks/{net}/uplink",
        Role::Admin,
        "removing an uplink",
    ),
    (
        "POST",
        "/v1/networks/{net}/uplink/remotes",
        Role::Admin,
        "adding a VXLAN remote",
    ),
    (
        "DELETE",
        "/v1/networks/{net}/uplink/remotes/{addr}",
        Role::Admin,
        "removing a VXLAN remote",
    ),
    (
        "GET",
        "/v1/networks/{net}/fdb",
        Role::User,
        "listing forwarding entries",
    ),
    (
        "POST",
        "/v1/networks/{net}/fdb",
        Role::Admin,
        "adding a forwarding entry",
    ),
    (
        "DELETE",
        "/v1/networks/{net}/fdb/{mac}",
        Role::Admin,
        "removing a forwarding entry",
    ),
    (
        "GET",
        "/v1/networks/{net}/macs",
        Role::User,
        "listing MAC addresses",
    ),
    (
        "GET",
        "/v1/networks/{net}/leases",
        Role::User,
        "listing leases",
    ),
    (
        "PUT",
        "/v1/networks/{net}/dhcp",
        Role::Admin,
        "setting DHCP",
    ),
    (
        "PATCH",
        "/v1/networks/{net}/dhcp",
        Role::Admin,
        "changing DHCP settings",
    ),
    (
        "POST",
        "/v1/networks/{net}/dhcp/reservations",
        Role::Admin,
        "adding a DHCP reservation",
    ),
    (
        "DELETE",
        "/v1/networks/{net}/dhcp/reservations/{mac}",
        Role::Admin,
        "removing a DHCP reservation",
    ),
    (
        "GET",
        "/v1/networks/{net}/forwards",
        Role::User,
        "listing forwards",
    ),
    (
        "POST",
        "/v1/networks/{net}/forwards",
        Role::Admin,
        "adding a forward",
    ),
    (
        "DELETE",
        "/v1/networks/{net}/forwards/{host}",
        Role::Admin,
        "removing a forward",
    ),
    // Every frame of every port, other users' included.
    (
        "GET",
        "/v1/networks/{net}/capture",
        Role::Admin,
        "capturing a vnet's traffic",
    ),
    ("GET", "/metrics", Role::User, "reading metrics"),
    (
        "GET",
        "/v1/config",
        Role::User,
        "exporting the configuration",
    ),
    (
        "POST",
        "/v1/reload",
        Role::Admin,
        "reloading the configuration",
    ),
];

/// The role `method` on `route` needs (admin for anything [`RULES`] does not list).
pub fn rule(method: &Method, route: &str) -> Rule {
    RULES
        .iter()
        .find(|(m, r, _, _)| *m == method.as_str() && *r == route)
        .map_or(
            Rule {
                need: Role::Admin,
                action: "this request",
            },
            |&(_, _, need, action)| Rule { need, action },
        )
}

impl Policy {
    /// Resolves the configured groups (flags before the file, the file before the
    /// defaults). A group named explicitly must exist; a default one that does not only
    /// means nobody holds the role through it.
    pub fn resolve(
        config: &AccessConfig,
        admin_flag: Option<String>,
        user_flag: Option<String>,
    ) -> Result<Policy> {
        let group = |key: &str, flag: Option<String>, file: &Option<String>, default: &str| {
            let explicit = flag.or_else(|| file.clone());
            let name = explicit.clone().unwrap_or_else(|| default.to_string());
            match lookup_group(&name)? {
                Some(gid) => Ok(Some(Group {
                    name,
                    gid,
                    explicit: explicit.is_some(),
                })),
                None if explicit.is_some() => bail!(
                    "[access] {key} = {name:?}: no such group (create it with `groupadd {name}`, \
                     or give a numeric gid)"
                ),
                None => {
                    tracing::info!(
                        "no group {name:?} on this system: the {key} role goes to nobody through a \
                         group (set [access] {key} to use another)"
                    );
                    Ok(None)
                }
            }
        };
        Ok(Policy {
            daemon_uid: nix::unistd::geteuid().as_raw(),
            admin: group(
                "admin_group",
                admin_flag,
                &config.admin_group,
                DEFAULT_ADMIN_GROUP,
            )?,
            user: group(
                "user_group",
                user_flag,
                &config.user_group,
                DEFAULT_USER_GROUP,
            )?,
        })
    }

    /// The role `peer` holds.
    pub fn role(&self, peer: &Peer) -> Role {
        let member = |g: &Option<Group>| g.as_ref().is_some_and(|g| peer.is_member(g.gid));
        if peer.uid == 0 || peer.uid == self.daemon_uid || member(&self.admin) {
            Role::Admin
        } else if member(&self.user) {
            Role::User
        } else {
            Role::None
        }
    }

    /// Who holds `role`, as a person reads it: "root or group vnet-admin".
    pub fn holders(&self, role: Role) -> String {
        let mut who = match role {
            Role::None => return "anyone".into(),
            Role::User => self
                .user
                .iter()
                .map(|g| format!("group {}", g.name))
                .collect(),
            Role::Admin => Vec::new(),
        };
        who.push("root".to_string());
        if self.daemon_uid != 0 {
            who.push(format!("uid {}", self.daemon_uid));
        }
        if let Some(g) = &self.admin {
            who.push(format!("group {}", g.name));
        }
        match who.split_last() {
            Some((last, [])) => last.clone(),
            Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
            None => unreachable!("root always holds a role"),
        }
    }

    /// Why `peer` (with `role`) may not do `action`, which needs `need`.
    pub fn refusal(&self, peer: Option<&Peer>, role: Role, need: Role, action: &str) -> String {
        let needed = match need {
            Role::Admin => "the admin role",
            _ => "the user role",
        };
        let you = match peer {
            Some(p) => format!("uid {} with {}", p.uid, role.as_str()),
            None => "a client whose credentials the kernel did not give".into(),
        };
        format!(
            "{action} needs {needed} ({}); you are {you}",
            self.holders(need)
        )
    }

    /// What more than [`Role::User`] adding `spec` needs, if anything: a TAP or an
    /// interface port is a host interface (and an interface port sees all its traffic,
    /// `CAP_NET_RAW`), and a VLAN other than the default is the admin's to give.
    pub fn check_port(spec: &PortSpec) -> Option<&'static str> {
        match spec {
            PortSpec::Tap { .. } => Some("adding a TAP port"),
            PortSpec::Interface { .. } => Some("adding an interface port"),
            PortSpec::VhostUser { vlan, .. } if *vlan != VlanMode::default() => {
                Some("adding a port on a VLAN")
            }
            PortSpec::VhostUser { .. } => None,
        }
    }
}

/// The gid of group `name`: from the group database, else `name` read as a number.
fn lookup_group(name: &str) -> Result<Option<u32>> {
    let found = nix::unistd::Group::from_name(name)
        .with_context(|| format!("cannot read the group database for {name:?}"))?;
    Ok(found.map(|g| g.gid.as_raw()).or_else(|| name.parse().ok()))
}

/// Makes the run directory the user group's: its group becomes `gid` and it gets the
/// set-group-ID bit, so every socket and directory made in it later (control.sock, each
/// vnet's sockets, vhost-user and VDE sockets) is created with that group and its
/// members can connect (the sockets are mode 0660). Directories already there (from an
/// earlier run) are handed over the same way.
pub fn share_run_dir(run_dir: &Path, gid: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mut dirs = vec![run_dir.to_path_buf()];
    for entry in std::fs::read_dir(run_dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            dirs.push(entry.path());
        }
    }
    for dir in dirs {
        std::os::unix::fs::chown(&dir, None, Some(gid))?;
        let mode = std::fs::metadata(&dir)?.permissions().mode() & 0o7777;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode | 0o2000))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ADMINS: u32 = 4000;
    const USERS: u32 = 4001;

    fn policy(daemon_uid: u32) -> Policy {
        let group = |name: &str, gid| {
            Some(Group {
                name: name.into(),
                gid,
                explicit: true,
            })
        };
        Policy {
            daemon_uid,
            admin: group("vnet-admin", ADMINS),
            user: group("vnet", USERS),
        }
    }

    fn peer(uid: u32, gid: u32, groups: &[u32]) -> Peer {
        Peer {
            uid,
            gid,
            pid: None,
            groups: groups.to_vec(),
        }
    }

    #[test]
    fn root_and_the_daemons_own_uid_are_admins() {
        assert_eq!(policy(0).role(&peer(0, 0, &[])), Role::Admin);
        assert_eq!(policy(1000).role(&peer(0, 0, &[])), Role::Admin);
        assert_eq!(policy(1000).role(&peer(1000, 1000, &[])), Role::Admin);
        assert_eq!(policy(0).role(&peer(1000, 1000, &[])), Role::None);
    }

    #[test]
    fn groups_count_as_primary_or_supplementary() {
        let p = policy(0);
        assert_eq!(p.role(&peer(1000, ADMINS, &[])), Role::Admin);
        assert_eq!(p.role(&peer(1000, 1000, &[7, ADMINS])), Role::Admin);
        assert_eq!(p.role(&peer(1000, USERS, &[])), Role::User);
        assert_eq!(p.role(&peer(1000, 1000, &[USERS])), Role::User);
        assert_eq!(p.role(&peer(1000, 1000, &[USERS, ADMINS])), Role::Admin);
        assert_eq!(p.role(&peer(1000, 1000, &[27, 100])), Role::None);
    }

    #[test]
    fn without_groups_only_root_and_the_daemon_have_a_role() {
        let p = Policy {
            daemon_uid: 0,
            admin: None,
            user: None,
        };
        assert_eq!(p.role(&peer(1000, ADMINS, &[USERS])), Role::None);
        assert_eq!(p.role(&peer(0, 0, &[])), Role::Admin);
    }

    #[test]
    fn users_read_and_attach_admins_change_the_network() {
        let need = |m: Method, r: &str| rule(&m, r).need;
        assert_eq!(need(Method::GET, "/v1/version"), Role::None);
        for r in [
            "/v1/networks",
            "/v1/networks/{net}",
            "/v1/networks/{net}/ports",
            "/v1/networks/{net}/ports/{id}",
            "/v1/networks/{net}/macs",
            "/v1/networks/{net}/leases",
            "/v1/networks/{net}/forwards",
            "/v1/networks/{net}/policy",
            "/metrics",
        ] {
            assert_eq!(need(Method::GET, r), Role::User, "GET {r}");
        }
        assert_eq!(need(Method::POST, "/v1/networks/{net}/ports"), Role::User);
        assert_eq!(
            need(Method::DELETE, "/v1/networks/{net}/ports/{id}"),
            Role::User
        );
        for (m, r) in [
            (Method::POST, "/v1/networks"),
            (Method::DELETE, "/v1/networks/{net}"),
            (Method::PUT, "/v1/networks/{net}/ports/{id}/vlan"),
            (Method::PATCH, "/v1/networks/{net}/ports/{id}/policy"),
            (Method::PATCH, "/v1/networks/{net}/policy"),
            (Method::PUT, "/v1/networks/{net}/uplink"),
            (Method::DELETE, "/v1/networks/{net}/uplink"),
            (Method::PUT, "/v1/networks/{net}/dhcp"),
            (Method::PATCH, "/v1/networks/{net}/dhcp"),
            (Method::POST, "/v1/networks/{net}/dhcp/reservations"),
            (Method::DELETE, "/v1/networks/{net}/dhcp/reservations/{mac}"),
            (Method::POST, "/v1/networks/{net}/forwards"),
            (Method::DELETE, "/v1/networks/{net}/forwards/{host}"),
            // Not in the table: fail closed.
            (Method::PATCH, "/v1/networks"),
            (Method::GET, "/v1/something-new"),
        ] {
            assert_eq!(need(m.clone(), r), Role::Admin, "{m} {r}");
        }
    }

    #[test]
    fn users_add_only_vhost_user_ports_on_the_default_vlan() {
        let vhost = |vlan| PortSpec::VhostUser {
            name: "vm1".into(),
            vlan,
            policy: Default::default(),
        };
        assert_eq!(Policy::check_port(&vhost(VlanMode::default())), None);
        assert!(Policy::check_port(&vhost(VlanMode::Access { vlan: 10 })).is_some());
        let tap = PortSpec::Tap {
            ifname: "tap0".into(),
            vlan: VlanMode::default(),
            policy: Default::default(),
        };
        assert_eq!(Policy::check_port(&tap), Some("adding a TAP port"));
        let interface = PortSpec::Interface {
            interface: "fc-tap0".into(),
            vlan: VlanMode::default(),
            policy: Default::default(),
        };
        assert_eq!(
            Policy::check_port(&interface),
            Some("adding an interface port")
        );
    }

    #[test]
    fn refusals_name_the_role_who_holds_it_and_the_client() {
        let p = policy(0);
        assert_eq!(
            p.refusal(
                Some(&peer(1000, 1000, &[])),
                Role::User,
                Role::Admin,
                "creating a vnet"
            ),
            "creating a vnet needs the admin role (root or group vnet-admin); you are uid 1000 \
             with role user"
        );
        assert_eq!(
            p.refusal(
                Some(&peer(1001, 1001, &[])),
                Role::None,
                Role::User,
                "listing vnets"
            ),
            "listing vnets needs the user role (group vnet, root or group vnet-admin); you are \
             uid 1001 with no role"
        );
        let unprivileged = Policy {
            daemon_uid: 1000,
            admin: None,
            user: None,
        };
        assert_eq!(unprivileged.holders(Role::Admin), "root or uid 1000");
        assert_eq!(unprivileged.holders(Role::User), "root or uid 1000");
    }

    /// docs/openapi.yaml says each operation's role (`x-vnet-role`): the same as here.
    #[test]
    fn the_api_document_gives_every_route_the_role_of_the_table() {
        let doc = include_str!("../../../docs/openapi.yaml");
        let (mut path, mut method, mut documented) = ("", "", Vec::new());
        for line in doc.lines() {
            if let Some(p) = line.strip_prefix("  /").and_then(|p| p.strip_suffix(':')) {
                path = &line[2..2 + p.len() + 1];
            } else if let Some(m) = line.strip_prefix("    ").and_then(|m| m.strip_suffix(':')) {
                method = m;
            } else if let Some(role) = line.strip_prefix("      x-vnet-role: ") {
                documented.push((method.to_uppercase(), path.to_string(), role.to_string()));
            }
        }
        let name = |role| match role {
            Role::None => "anyone",
            Role::User => "user",
            Role::Admin => "admin",
        };
        let table: Vec<_> = RULES
            .iter()
            .map(|&(m, p, role, _)| (m.to_string(), p.to_string(), name(role).to_string()))
            .collect();
        documented.sort();
        let mut table = table;
        table.sort();
        assert_eq!(documented, table);
    }

    #[test]
    fn groups_resolve_by_name_or_number() {
        assert_eq!(lookup_group("root").unwrap(), Some(0));
        assert_eq!(lookup_group("4242").unwrap(), Some(4242));
        assert_eq!(lookup_group("no-such-group-vnet-test").unwrap(), None);
        let explicit = AccessConfig {
            admin_group: Some("no-such-group-vnet-test".into()),
            ..AccessConfig::default()
        };
        let e = Policy::resolve(&explicit, None, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no such group"), "{e}");
        let flags = Policy::resolve(&explicit, Some("4242".into()), Some("4243".into())).unwrap();
        assert_eq!(flags.admin.map(|g| g.gid), Some(4242));
        assert_eq!(flags.user.map(|g| (g.gid, g.explicit)), Some((4243, true)));
    }
}
