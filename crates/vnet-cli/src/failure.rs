//! Why a command failed, and what the user can do about it.

use std::fmt;

use vnet_control::client;

/// Printed as `vnet: <what went wrong>: <what to do>`; exit status 1.
#[derive(Debug)]
pub struct Failure {
    what: String,
    todo: Option<String>,
    /// The HTTP status, when vnetd refused the request.
    status: Option<u16>,
}

impl Failure {
    pub fn new(what: impl Into<String>, todo: impl Into<String>) -> Failure {
        Failure {
            what: what.into(),
            todo: Some(todo.into()),
            status: None,
        }
    }

    /// Replace the generic advice for "not found" answers with one that fits the command.
    pub fn if_not_found(mut self, todo: impl Into<String>) -> Failure {
        if self.status == Some(404) {
            self.todo = Some(todo.into());
        }
        self
    }
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
        let todo = match &error {
            // These already say what to do.
            E::NotRunning { .. } | E::PermissionDenied { .. } => None,
            E::Api { status, .. } => match status.as_u16() {
                404 => Some("check the name with `vnet net ls` (ports: `vnet port ls NET`)"),
                409 => Some("choose another name, or remove the existing one first"),
                400 | 422 => {
                    Some("check the values given (`vnet help` lists what each command takes)")
                }
                403 => Some("vnetd lacks the privilege for this: run it as root"),
                503 => Some("vnetd is shutting down: start it again"),
                500..=599 => Some("vnetd failed: see its log"),
                _ => None,
            },
            E::Timeout { .. } => Some("check that vnetd is running and not stuck (see its log)"),
            E::Connect { .. } | E::Runtime(_) => Some("check the runtime directory (--run-dir)"),
            E::Http { .. } | E::Decode { .. } | E::Encode(_) => {
                Some("check that vnet and vnetd are the same version (`vnet version`)")
            }
        };
        Failure {
            what: error.to_string(),
            todo: todo.map(String::from),
            status: error.status().map(|s| s.as_u16()),
        }
    }
}
