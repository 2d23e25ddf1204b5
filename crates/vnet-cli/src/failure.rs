//! Why a command failed, what the user can do about it, and the exit status that tells
//! a script which kind of failure it was.

use std::fmt;

use vnet_control::client;

/// `vnet`'s exit statuses: one per kind of failure a script may want to tell apart
/// (documented in `vnet --help`, the man page and the README).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    /// Anything else: vnetd failed to carry out the request, an I/O error, a version
    /// mismatch.
    Failed = 1,
    /// The command line (clap's usage errors) or the request (HTTP 400) is invalid.
    Invalid = 2,
    /// vnetd cannot be reached: not running, or no socket where it was looked for.
    NotRunning = 3,
    /// The vnet, port, reservation or forward named does not exist (HTTP 404).
    NotFound = 4,
    /// It exists already, or conflicts with what exists or a bound (HTTP 409).
    Conflict = 5,
    /// The caller may not do this (HTTP 403, or the socket refused the connection).
    Denied = 6,
}

/// The exit statuses as `vnet --help` and the man page list them.
pub const EXIT_STATUS_HELP: &str = "\
Exit status:
  0  success (also: --if-exists found nothing to remove, --may-exist found it there)
  1  other failure (vnetd failed to carry out the request; see its log)
  2  invalid command line or request
  3  vnetd is not running (no control socket, or nobody listening on it)
  4  not found: no such vnet, port, reservation or forward
  5  already exists, or conflicts with what exists or a [limits] bound
  6  permission denied: your role may not do this, or the socket refused you";

/// Printed as `vnet: <what went wrong>: <what to do>`; the exit status is its [`Exit`].
#[derive(Debug)]
pub struct Failure {
    what: String,
    todo: Option<String>,
    /// The HTTP status, when vnetd refused the request.
    status: Option<u16>,
    exit: Exit,
}

impl Failure {
    pub fn new(what: impl Into<String>, todo: impl Into<String>) -> Failure {
        Failure {
            what: what.into(),
            todo: Some(todo.into()),
            status: None,
            exit: Exit::Failed,
        }
    }

    /// A command line that asks for nothing, or for something that cannot be.
    pub fn invalid(what: impl Into<String>, todo: impl Into<String>) -> Failure {
        Failure {
            exit: Exit::Invalid,
            ..Failure::new(what, todo)
        }
    }

    /// The exit status that tells a script what kind of failure this is.
    pub fn exit(&self) -> Exit {
        self.exit
    }

    /// Replace the generic advice for "not found" answers with one that fits the
    /// command, unless vnetd's message already says where to look.
    pub fn if_not_found(self, todo: impl Into<String>) -> Failure {
        self.if_status(404, todo)
    }

    /// Replace the advice for answers with HTTP `status` with one that fits the command,
    /// unless vnetd's message already says what to do.
    pub fn if_status(mut self, status: u16, todo: impl Into<String>) -> Failure {
        if self.status == Some(status) && !names_a_command(&self.what) {
            self.todo = Some(todo.into());
        }
        self
    }
}

/// Who holds the role a refusal names: vnetd says "creating a vnet needs the admin role
/// (root or group vnet-admin); you are uid 1000 with role user".
fn needs_role(message: &str) -> Option<&str> {
    let (_, rest) = message.split_once(" role (")?;
    Some(rest.split_once(')')?.0)
}

/// What to do about a refusal, from who holds the role: join their group.
fn role_advice(holders: &str) -> String {
    let group = holders
        .split(" or ")
        .flat_map(|part| part.split(", "))
        .find_map(|who| who.strip_prefix("group "));
    match group {
        Some(group) => {
            format!("you need to be in group {group} (or root); after being added, log in again")
        }
        None => format!("you need to be {holders}"),
    }
}

/// vnetd's messages often end in advice such as "(see `vnet net ls`)".
fn names_a_command(message: &str) -> bool {
    message.contains("`vnet ")
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.todo {
            Some(todo) => write!(f, "{}: {todo}", self.what),
            None => f.write_str(&self.what),
        }
    }
}

impl From<client::Error> for Failure {
    fn from(error: client::Error) -> Failure {
        use client::Error as E;
        let status = error.status().map(|s| s.as_u16());
        let exit = match (&error, status) {
            (_, Some(400)) => Exit::Invalid,
            (_, Some(403)) | (E::PermissionDenied { .. }, _) => Exit::Denied,
            (_, Some(404)) => Exit::NotFound,
            (_, Some(409)) => Exit::Conflict,
            (E::NotRunning { .. } | E::Connect { .. }, _) => Exit::NotRunning,
            _ => Exit::Failed,
        };
        let (what, todo) = match &error {
            // The answers vnetd gives to a wrong request: its message says what was
            // wrong (and usually what to do), the status adds nothing for a person.
            E::Api { message, status } if matches!(status.as_u16(), 400 | 404 | 409) => {
                let todo = match status.as_u16() {
                    _ if names_a_command(message) => None,
                    404 => Some("check the name with `vnet net ls` (ports: `vnet port ls NET`)"),
                    409 => Some("choose another name, or remove the existing one first"),
                    _ => None,
                };
                (message.clone(), todo.map(String::from))
            }
            // vnetd refused the client, not the request: say who may do it.
            E::Api { message, status }
                if status.as_u16() == 403 && needs_role(message).is_some() =>
            {
                let holders = needs_role(message).unwrap_or_default();
                (message.clone(), Some(role_advice(holders)))
            }
            E::Api { status, .. } => {
                let todo = match status.as_u16() {
                    403 => Some("vnetd lacks the privilege for this: run it as root".into()),
                    503 => Some("vnetd is shutting down: start it again".into()),
                    500..=599 => Some("vnetd failed: see its log".into()),
                    _ => None,
                };
                (error.to_string(), todo)
            }
            // These already say what to do.
            E::NotRunning { .. } | E::PermissionDenied { .. } => (error.to_string(), None),
            E::Timeout { .. } => (
                error.to_string(),
                Some("check that vnetd is running and not stuck (see its log)".into()),
            ),
            E::Broken { .. } => (
                error.to_string(),
                Some("vnetd stopped or restarted: see its log".into()),
            ),
            E::Write(_) => (
                error.to_string(),
                Some("check the output file or the program reading the pipe".into()),
            ),
            E::Connect { .. } | E::Runtime(_) => (
                error.to_string(),
                Some("check the runtime directory (--run-dir)".into()),
            ),
            E::Http { .. } | E::Decode { .. } | E::Encode(_) => (
                error.to_string(),
                Some("check that vnet and vnetd are the same version (`vnet version`)".into()),
            ),
        };
        Failure {
            what,
            todo,
            status,
            exit,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vnet_control::client::Error;

    fn api(status: u16, message: &str) -> Failure {
        Failure::from(Error::Api {
            status: status.try_into().unwrap(),
            message: message.into(),
        })
    }

    #[test]
    fn refusals_show_vnetds_message_and_what_to_do() {
        assert_eq!(
            api(409, "vnet \"lab\" already exists").to_string(),
            "vnet \"lab\" already exists: choose another name, or remove the existing one first"
        );
        assert_eq!(
            api(404, "no vnet named \"x\"")
                .if_not_found("list the vnets with `vnet net ls`")
                .to_string(),
            "no vnet named \"x\": list the vnets with `vnet net ls`"
        );
        assert_eq!(
            api(400, "invalid vnet name \"a/b\": use 1-15 characters").to_string(),
            "invalid vnet name \"a/b\": use 1-15 characters"
        );
    }

    #[test]
    fn advice_is_not_given_twice() {
        let message = "no vnet named \"x\" (see `vnet net ls`)";
        assert_eq!(api(404, message).to_string(), message);
        assert_eq!(
            api(404, message).if_not_found("look elsewhere").to_string(),
            message
        );
    }

    #[test]
    fn advice_can_fit_the_command_for_any_status() {
        let conflict = api(409, "52:54:00:aa:bb:cc already has a reservation")
            .if_not_found("not this")
            .if_status(
                409,
                "remove it first with `vnet dhcp unreserve lab 52:54:00:aa:bb:cc`",
            );
        assert_eq!(
            conflict.to_string(),
            "52:54:00:aa:bb:cc already has a reservation: remove it first with `vnet dhcp \
             unreserve lab 52:54:00:aa:bb:cc`"
        );
        assert_eq!(
            api(400, "10.9.9.9 is outside 192.168.1.0/24")
                .if_status(400, "pick another")
                .to_string(),
            "10.9.9.9 is outside 192.168.1.0/24: pick another"
        );
        assert_eq!(
            Failure::new("x", "y").if_status(400, "z").to_string(),
            "x: y"
        );
    }

    #[test]
    fn a_refused_role_says_which_group_to_join() {
        assert_eq!(
            api(
                403,
                "creating a vnet needs the admin role (root or group vnet-admin); you are uid \
                 1000 with role user"
            )
            .to_string(),
            "creating a vnet needs the admin role (root or group vnet-admin); you are uid 1000 \
             with role user: you need to be in group vnet-admin (or root); after being added, \
             log in again"
        );
        assert_eq!(
            api(
                403,
                "listing vnets needs the user role (group vnet, root or group vnet-admin); you \
                 are uid 1001 with no role"
            )
            .to_string(),
            "listing vnets needs the user role (group vnet, root or group vnet-admin); you are \
             uid 1001 with no role: you need to be in group vnet (or root); after being added, \
             log in again"
        );
        assert_eq!(
            api(
                403,
                "creating a vnet needs the admin role (root or uid 1000); you are uid 1001 with \
                 no role"
            )
            .to_string(),
            "creating a vnet needs the admin role (root or uid 1000); you are uid 1001 with no \
             role: you need to be root or uid 1000"
        );
        // vnetd's own lack of privilege is another matter.
        assert_eq!(
            api(403, "creating TAP devices needs CAP_NET_ADMIN").to_string(),
            "creating TAP devices needs CAP_NET_ADMIN (403 Forbidden): vnetd lacks the \
             privilege for this: run it as root"
        );
    }

    #[test]
    fn each_kind_of_refusal_has_its_exit_status() {
        assert_eq!(api(400, "bad").exit(), Exit::Invalid);
        assert_eq!(api(403, "needs the admin role (root)").exit(), Exit::Denied);
        assert_eq!(api(404, "no vnet").exit(), Exit::NotFound);
        assert_eq!(api(409, "exists").exit(), Exit::Conflict);
        assert_eq!(api(500, "failed").exit(), Exit::Failed);
        assert_eq!(api(503, "shutting down").exit(), Exit::Failed);
        let io = || std::io::Error::from(std::io::ErrorKind::NotFound);
        let path = std::path::PathBuf::from("/run/vnet/control.sock");
        let not_running = Error::NotRunning {
            path: path.clone(),
            source: io(),
        };
        assert_eq!(Failure::from(not_running).exit(), Exit::NotRunning);
        let denied = Error::PermissionDenied { path, source: io() };
        assert_eq!(Failure::from(denied).exit(), Exit::Denied);
        assert_eq!(Failure::new("x", "y").exit(), Exit::Failed);
    }

    #[test]
    fn the_documented_statuses_are_the_real_ones() {
        for exit in [
            Exit::Failed,
            Exit::Invalid,
            Exit::NotRunning,
            Exit::NotFound,
            Exit::Conflict,
            Exit::Denied,
        ] {
            let line = format!("\n  {}  ", exit as u8);
            assert!(
                EXIT_STATUS_HELP.contains(&line),
                "{exit:?} is not documented"
            );
        }
    }

    #[test]
    fn unexpected_statuses_are_shown() {
        assert_eq!(
            api(500, "cannot create TAP").to_string(),
            "cannot create TAP (500 Internal Server Error): vnetd failed: see its log"
        );
        assert_eq!(api(418, "teapot").to_string(), "teapot (418 I'm a teapot)");
    }
}
