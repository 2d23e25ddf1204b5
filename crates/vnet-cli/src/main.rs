//! `vnet`: the command line over vnetd's control API.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;

mod cli;
mod commands;
mod failure;
mod output;
mod qemu;
mod recipes;

fn main() -> ExitCode {
    // Usage errors exit here with status 2 (clap's convention, `Exit::Invalid`), --help
    // with 0.
    let cli = cli::Cli::parse();
    match commands::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("vnet: {failure}");
            ExitCode::from(failure.exit() as u8)
        }
    }
}
