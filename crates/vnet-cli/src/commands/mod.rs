//! One function per command: ask vnetd, print the answer.

use std::io::{self, Write};

use serde::Serialize;
use vnet_control::client::Client;

use crate::cli::{Cli, Command};
use crate::failure::Failure;

mod attach;
mod config;
mod dhcp;
mod forward;
mod lease;
mod mac;
mod net;
mod port;
mod uplink;
mod version;

/// What every command needs: the client and how to print.
pub struct Context {
    pub client: Client,
    pub json: bool,
}

pub fn run(cli: Cli) -> Result<(), Failure> {
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
        Command::Forward(command) => forward::run(&ctx, command),
        Command::Attach(args) => attach::run(&ctx, args),
        Command::Config(command) => config::run(&ctx, command),
        Command::Reload => config::reload(&ctx),
        Command::Version => version::run(&ctx),
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
