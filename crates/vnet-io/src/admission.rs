//! Who may attach to a vnet: its allow lists (`allow_users`, `allow_groups`).
//!
//! # Theory of operation
//!
//! Every port a client makes has a [`Client`]: the credentials the kernel gives for it
//! (`SO_PEERCRED` + `SO_PEERGROUPS` on a stream, api, VDE or vhost-user connection,
//! `SCM_CREDENTIALS` on a dgram peer's first datagram, the FUSE request header of a
//! classic-device open, the control connection of a port added through the API).
//! The port records its uid and pid for `vnet port ls`; [`AllowList::decide`] says
//! whether it may attach at all:
//!
//! | client                                   | attaches |
//! |------------------------------------------|----------|
//! | any, when both lists are empty           | yes (whoever can open the socket files) |
//! | uid 0, vnetd's own uid                   | yes      |
//! | a uid in `allow_users`                   | yes      |
//! | a member of a group in `allow_groups`    | yes      |
//! | anyone else                              | no: the connection is closed at once |
//!
//! Membership is the primary gid or a supplementary group. Where the kernel says the
//! supplementary groups with the credentials (`SO_PEERGROUPS`: stream, api, VDE,
//! vhost-user, the control API) those count, as the kernel recorded them at
//! `connect()`. A datagram's `SCM_CREDENTIALS` and a FUSE request carry only uid and
//! gid: there the user's groups come from the group database (`getgrouplist` of the
//! uid's user name), looked up only when the decision needs them (the uid is not listed
//! itself and `allow_groups` is not empty). The database says what the user would get
//! at their next login, not what the process holds now: a user removed from a group
//! whose session still holds it is refused here (the safe side), one just added is
//! admitted before logging in again. The alternative, the primary gid alone, would
//! refuse nearly every member (a user's primary group is usually their own); reading
//! `/proc/PID/status` could meet another process that reused the pid.
//!
//! Names are resolved once, when the vnet is made ([`AllowList::resolve`]): a name the
//! system does not know is an error; a number is taken as it is.

use std::fmt;
use std::sync::Arc;

use vnet_model::{Account, AccountInfo};

use crate::dataplane::Refusals;

/// Who made a port, as the kernel vouches for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    pub uid: u32,
    /// The primary group.
    pub gid: u32,
    pub pid: Option<u32>,
    /// Supplementary groups, where the transport says them (`SO_PEERGROUPS`); `None`:
    /// looked up in the group database when needed (see the module docs).
    pub groups: Option<Vec<u32>>,
}

impl Client {
    /// The groups `uid` belongs to: those the kernel gave, else the group database's.
    fn groups(&self) -> Vec<u32> {
        match &self.groups {
            Some(groups) => groups.clone(),
            None => database_groups(self.uid, self.gid),
        }
    }
}

/// `uid`'s groups in the system's group database (`getgrouplist`), with `gid`; only
/// `gid` if the uid has no user name or the lookup fails.
fn database_groups(uid: u32, gid: u32) -> Vec<u32> {
    use nix::unistd::{getgrouplist, Gid, Uid, User};
    let Ok(Some(user)) = User::from_uid(Uid::from_raw(uid)) else {
        return vec![gid];
    };
    let Ok(name) = std::ffi::CString::new(user.name) else {
        return vec![gid];
    };
    getgrouplist(&name, Gid::from_raw(gid))
        .map(|groups| groups.into_iter().map(Gid::as_raw).collect())
        .unwrap_or_else(|_| vec![gid])
}

/// Who asks the control API for a port (TAP, vhost-user).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requester {
    /// The control connection's credentials.
    pub client: Client,
    /// An admin of the control API: the allow lists do not apply (admins may change
    /// them, and the vnet, anyway); `[limits]` do.
    pub admin: bool,
}

/// A vnet's allow lists, resolved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList {
    users: Vec<AccountInfo>,
    groups: Vec<AccountInfo>,
}

/// Why a client was let in ([`AllowList::decide`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admitted {
    /// The vnet has no allow list.
    Open,
    Root,
    /// vnetd's own uid.
    Daemon,
    /// Listed in `allow_users`.
    User,
    /// A member of this group of `allow_groups`.
    Group(u32),
}

/// A client the allow lists refuse: the answer (API) and the log line say who and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("uid {uid} may not attach to vnet {vnet:?}: only root, vnetd's uid, {allowed} may")]
pub struct Refused {
    pub uid: u32,
    pub vnet: String,
    /// Who may, as a person reads it: `users alice (1001) and members of groups lab (4000)`.
    pub allowed: String,
}

/// A name in an allow list the system does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllowListError {
    #[error("allow_users: no user named {0:?} (give a user name or a numeric uid)")]
    NoSuchUser(String),
    #[error("allow_groups: no group named {0:?} (give a group name or a numeric gid)")]
    NoSuchGroup(String),
    #[error("cannot read the user and group database for {0:?}")]
    Database(String, #[source] nix::Error),
}

impl AllowList {
    /// Resolves names through the system's user and group database; a number is taken
    /// as it is (with its name, if the database has one), a name that is not known but
    /// reads as a number too.
    pub fn resolve(users: &[Account], groups: &[Account]) -> Result<AllowList, AllowListError> {
        use nix::unistd::{Gid, Group, Uid, User};
        let db = |name: &str, e| AllowListError::Database(name.to_string(), e);
        let users = users
            .iter()
            .map(|a| match a {
                Account::Id(id) => Ok(AccountInfo {
                    id: *id,
                    name: User::from_uid(Uid::from_raw(*id))
                        .ok()
                        .flatten()
                        .map(|u| u.name),
                }),
                Account::Name(name) => match User::from_name(name).map_err(|e| db(name, e))? {
                    Some(u) => Ok(AccountInfo {
                        id: u.uid.as_raw(),
                        name: Some(u.name),
                    }),
                    None => name
                        .parse()
                        .map(|id| AccountInfo { id, name: None })
                        .map_err(|_| AllowListError::NoSuchUser(name.clone())),
                },
            })
            .collect::<Result<_, _>>()?;
        let groups = groups
            .iter()
            .map(|a| match a {
                Account::Id(id) => Ok(AccountInfo {
                    id: *id,
                    name: Group::from_gid(Gid::from_raw(*id))
                        .ok()
                        .flatten()
                        .map(|g| g.name),
                }),
                Account::Name(name) => match Group::from_name(name).map_err(|e| db(name, e))? {
                    Some(g) => Ok(AccountInfo {
                        id: g.gid.as_raw(),
                        name: Some(g.name),
                    }),
                    None => name
                        .parse()
                        .map(|id| AccountInfo { id, name: None })
                        .map_err(|_| AllowListError::NoSuchGroup(name.clone())),
                },
            })
            .collect::<Result<_, _>>()?;
        Ok(AllowList { users, groups })
    }

    /// Without lists: everyone who can open the sockets attaches.
    pub fn is_open(&self) -> bool {
        self.users.is_empty() && self.groups.is_empty()
    }

    pub fn users(&self) -> &[AccountInfo] {
        &self.users
    }

    pub fn groups(&self) -> &[AccountInfo] {
        &self.groups
    }

    /// Whether `uid` may attach (the table in the module docs). `groups` gives the
    /// client's primary and supplementary groups; it is called only when the answer
    /// depends on them.
    pub fn decide(
        &self,
        daemon_uid: u32,
        uid: u32,
        groups: impl FnOnce() -> Vec<u32>,
    ) -> Result<Admitted, String> {
        if self.is_open() {
            return Ok(Admitted::Open);
        }
        if uid == 0 {
            return Ok(Admitted::Root);
        }
        if uid == daemon_uid {
            return Ok(Admitted::Daemon);
        }
        if self.users.iter().any(|u| u.id == uid) {
            return Ok(Admitted::User);
        }
        if !self.groups.is_empty() {
            let held = groups();
            if let Some(g) = self.groups.iter().find(|g| held.contains(&g.id)) {
                return Ok(Admitted::Group(g.id));
            }
        }
        Err(self.to_string())
    }

    /// [`AllowList::decide`] for `client` of vnet `vnet`, vnetd running as `daemon_uid`.
    pub fn check(&self, vnet: &str, daemon_uid: u32, client: &Client) -> Result<Admitted, Refused> {
        self.decide(daemon_uid, client.uid, || {
            let mut groups = client.groups();
            groups.push(client.gid);
            groups
        })
        .map_err(|allowed| Refused {
            uid: client.uid,
            vnet: vnet.to_string(),
            allowed,
        })
    }
}

/// A vnet's allow lists where its clients connect: applied, and refusals counted
/// (`vnet_limit_refusals_total{limit="allow"}`) and logged, by the data plane and by
/// listeners on threads of their own (vhost-user).
#[derive(Debug, Clone)]
pub(crate) struct Gate {
    pub vnet: String,
    pub allow: Arc<AllowList>,
    /// vnetd's own uid, always admitted.
    pub daemon_uid: u32,
    pub refusals: Arc<Refusals>,
}

impl Gate {
    /// Whether `client` may make `what` (e.g. `a stream client pid 42 uid 1000`).
    pub fn admit(&self, client: &Client, what: &str) -> Result<Admitted, Refused> {
        let decided = self.allow.check(&self.vnet, self.daemon_uid, client);
        if let Err(refused) = &decided {
            self.refusals
                .refuse_attach(&self.vnet, what, &refused.to_string());
        }
        decided
    }
}

/// Who the lists let in, as a person reads it.
impl fmt::Display for AllowList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |accounts: &[AccountInfo]| {
            accounts
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        match (self.users.is_empty(), self.groups.is_empty()) {
            (true, true) => f.write_str("anyone"),
            (false, true) => write!(f, "users {}", list(&self.users)),
            (true, false) => write!(f, "members of groups {}", list(&self.groups)),
            (false, false) => write!(
                f,
                "users {} and members of groups {}",
                list(&self.users),
                list(&self.groups)
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAEMON: u32 = 990;
    const ALICE: u32 = 1001;
    const BOB: u32 = 1002;
    const LAB: u32 = 4000;

    fn list(users: &[(u32, &str)], groups: &[(u32, &str)]) -> AllowList {
        let info = |&(id, name): &(u32, &str)| AccountInfo {
            id,
            name: Some(name.to_string()).filter(|n| !n.is_empty()),
        };
        AllowList {
            users: users.iter().map(info).collect(),
            groups: groups.iter().map(info).collect(),
        }
    }

    fn no_lookup() -> Vec<u32> {
        panic!("the decision did not need the groups")
    }

    #[test]
    fn without_lists_everyone_attaches_and_no_groups_are_looked_up() {
        let open = AllowList::default();
        assert_eq!(open.decide(DAEMON, BOB, no_lookup), Ok(Admitted::Open));
        assert_eq!(open.to_string(), "anyone");
    }

    #[test]
    fn root_the_daemon_and_listed_users_attach_without_a_group_lookup() {
        let l = list(&[(ALICE, "alice")], &[(LAB, "lab")]);
        assert_eq!(l.decide(DAEMON, 0, no_lookup), Ok(Admitted::Root));
        assert_eq!(l.decide(DAEMON, DAEMON, no_lookup), Ok(Admitted::Daemon));
        assert_eq!(l.decide(DAEMON, ALICE, no_lookup), Ok(Admitted::User));
    }

    #[test]
    fn a_member_of_a_listed_group_attaches_others_are_refused_with_the_lists() {
        let l = list(&[(ALICE, "alice")], &[(LAB, "lab"), (4001, "")]);
        assert_eq!(
            l.decide(DAEMON, BOB, || vec![BOB, 27, 4001]),
            Ok(Admitted::Group(4001))
        );
        assert_eq!(
            l.decide(DAEMON, BOB, || vec![BOB, 27]),
            Err("users alice (1001) and members of groups lab (4000), 4001".into())
        );
        // Only users listed: groups do not matter and are not looked up.
        let users = list(&[(ALICE, "")], &[]);
        assert_eq!(
            users.decide(DAEMON, BOB, no_lookup),
            Err("users 1001".into())
        );
    }

    #[test]
    fn a_refusal_names_the_uid_the_vnet_and_who_may() {
        let l = list(&[], &[(LAB, "lab")]);
        let client = Client {
            uid: BOB,
            gid: BOB,
            pid: Some(42),
            groups: Some(vec![]),
        };
        let e = l.check("lab", DAEMON, &client).unwrap_err();
        assert_eq!(
            e.to_string(),
            "uid 1002 may not attach to vnet \"lab\": only root, vnetd's uid, members of \
             groups lab (4000) may"
        );
        // The primary group counts as membership.
        let primary = Client { gid: LAB, ..client };
        assert_eq!(l.check("lab", DAEMON, &primary), Ok(Admitted::Group(LAB)));
    }

    #[test]
    fn names_resolve_through_the_database_numbers_as_they_are() {
        let l = AllowList::resolve(
            &[
                Account::Name("root".into()),
                Account::Id(64_999),
                Account::Name("64998".into()),
            ],
            &[Account::Name("root".into()), Account::Id(0)],
        )
        .unwrap();
        let ids: Vec<u32> = l.users().iter().map(|u| u.id).collect();
        assert_eq!(ids, [0, 64_999, 64_998]);
        assert_eq!(l.users()[0].name.as_deref(), Some("root"));
        assert_eq!(l.groups()[1].name.as_deref(), Some("root"));
        assert_eq!(
            AllowList::resolve(&[Account::Name("no-such-user-vnet".into())], &[]),
            Err(AllowListError::NoSuchUser("no-such-user-vnet".into()))
        );
        let e = AllowList::resolve(&[], &[Account::Name("no-such-group-vnet".into())])
            .unwrap_err()
            .to_string();
        assert!(e.contains("no group named \"no-such-group-vnet\""), "{e}");
    }

    #[test]
    fn a_uid_without_a_user_name_has_only_its_primary_group_in_the_database() {
        assert_eq!(database_groups(64_997, 64_996), vec![64_996]);
        // root is in group root.
        assert!(database_groups(0, 0).contains(&0));
    }
}
