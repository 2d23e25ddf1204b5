//! One function per command: ask vnetd, print the answer.

use std::io::{self, Write};

use serde::Serialize;
use vnet_control::client::{self, Client};

use crate::cli::{Cli, Command, IfExists, MayExist};
use crate::failure::Failure;

mod acl;
mod attach;
mod capture;
mod config;
mod dhcp;
mod docs;
mod fdb;
mod forward;
mod lease;
mod mac;
mod mirror;
mod net;
mod policy;
mod port;
mod shape;
mod uplink;
mod version;

/// What every command needs: the client and how to print.
pub struct Context {
    pub client: Client,
    pub json: bool,
}

pub fn run(cli: Cli) -> Result<(), Failure> {
    // These need no vnetd.
    match cli.command {
        Command::Completions { shell } => return docs::completions(shell),
        Command::Man { dir } => return docs::man_pages(&dir),
        _ => {}
    }
    let run_dir = vnet_dirs::run_dir(cli.run_dir).map_err(|e| {
        Failure::new(
            "cannot tell where vnetd's runtime directory is",
            e.to_string(),
        )
    })?;
    let ctx = Context {
        client: Client::for_run_dir(run_dir)?,
        json: cli.json,
    };
    match cli.command {
        Command::Net(command) => net::run(&ctx, command),
        Command::Port(command) => port::run(&ctx, command),
        Command::Mac(command) => mac::run(&ctx, command),
        Command::Lease(command) => lease::run(&ctx, command),
        Command::Dhcp(command) => dhcp::run(&ctx, command),
        Command::Uplink(command) => uplink::run(&ctx, command),
        Command::Fdb(command) => fdb::run(&ctx, command),
        Command::Forward(command) => forward::run(&ctx, command),
        Command::Mirror(command) => mirror::run(&ctx, command),
        Command::Acl(command) => acl::run(&ctx, command),
        Command::Capture(args) => capture::run(&ctx, args),
        Command::Attach(args) => attach::run(&ctx, args),
        Command::Config(command) => config::run(&ctx, command),
        Command::Reload => config::reload(&ctx),
        Command::Version => version::run(&ctx),
        Command::Completions { .. } | Command::Man { .. } => unreachable!("answered above"),
    }
}

/// What an addition with `--may-exist` met.
pub enum Added<T> {
    /// Made now.
    New(T),
    /// There already, left as it was.
    There(T),
}

impl Context {
    /// `--if-exists`: a removal that vnetd answered "not found" succeeds, saying so on
    /// stderr (unless `--json`). When the thing belongs to vnet `net`, that vnet must
    /// exist: removing a port of a vnet that is not there is a mistake, not a no-op.
    pub fn unless_absent(
        &self,
        removed: Result<(), client::Error>,
        flag: &IfExists,
        net: Option<&str>,
    ) -> Result<(), client::Error> {
        match removed {
            Err(e) if flag.if_exists && e.status().is_some_and(|s| s.as_u16() == 404) => {
                if let Some(net) = net {
                    self.client.network(net)?;
                }
                self.note(&format!("{}: nothing to remove", api_message(&e)));
                Ok(())
            }
            other => other,
        }
    }

    /// `--may-exist`: an addition that vnetd answered "conflict" succeeds if `existing`
    /// finds what was to be added there already (a conflict with something else, or a
    /// bound, stays an error), saying so on stderr (unless `--json`).
    pub fn unless_present<T>(
        &self,
        added: Result<T, client::Error>,
        flag: &MayExist,
        existing: impl FnOnce(&Client) -> Result<Option<T>, client::Error>,
    ) -> Result<Added<T>, client::Error> {
        match added {
            Err(e) if flag.may_exist && e.status().is_some_and(|s| s.as_u16() == 409) => {
                match existing(&self.client)? {
                    Some(there) => {
                        self.note(&format!("{}: left as it is", api_message(&e)));
                        Ok(Added::There(there))
                    }
                    None => Err(e),
                }
            }
            other => other.map(Added::New),
        }
    }

    /// A remark on stderr for people; `--json` output stays only the JSON.
    fn note(&self, text: &str) {
        if !self.json {
            eprintln!("vnet: {text}");
        }
    }
}

/// vnetd's own words for a refusal.
fn api_message(error: &client::Error) -> String {
    match error {
        client::Error::Api { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

impl Context {
    /// Print `value` as pretty JSON with `--json`, else the human `text` of it.
    pub fn show<T: Serialize>(
        &self,
        value: &T,
        text: impl FnOnce(&T) -> String,
    ) -> Result<(), Failure> {
        if self.json {
            print_json(value)
        } else {
            print(&text(value))
        }
    }
}

pub fn print_json<T: Serialize>(value: &T) -> Result<(), Failure> {
    let mut text = serde_json::to_string_pretty(value).map_err(|e| {
        Failure::new(
            format!("cannot encode the answer as JSON: {e}"),
            "report this bug",
        )
    })?;
    text.push('\n');
    print(&text)
}

/// Write to stdout; a closed pipe (`vnet port ls NET | head`) is not an error.
pub fn print(text: &str) -> Result<(), Failure> {
    let mut stdout = io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => Err(Failure::new(
            format!("cannot write to standard output: {e}"),
            "check where the output goes",
        )),
        _ => Ok(()),
    }
}
