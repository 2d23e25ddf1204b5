//! `vnet completions SHELL` and `vnet man DIR`: shell completions and manual pages,
//! generated from the same clap definitions as the command line itself, so they cannot
//! drift from it. The Debian package runs both at build time (`packaging/build-deb`).

use std::io::Write;
use std::path::Path;

use clap::CommandFactory;

use super::print;
use crate::cli::Cli;
use crate::failure::{Failure, EXIT_STATUS_HELP};

/// Prints the completion script for `shell` on stdout.
pub fn completions(shell: clap_complete::Shell) -> Result<(), Failure> {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "vnet", &mut script);
    print(&String::from_utf8_lossy(&script))
}

/// Writes `vnet.1` and a page per command (`vnet-net.1`, `vnet-net-create.1`, ...) into
/// `dir`.
pub fn man_pages(dir: &Path) -> Result<(), Failure> {
    let failed = |e: std::io::Error| {
        Failure::new(
            format!("cannot write the manual pages into {}: {e}", dir.display()),
            "check the directory",
        )
    };
    std::fs::create_dir_all(dir).map_err(failed)?;
    let command = Cli::command();
    for sub in command.get_subcommands().filter(|c| !c.is_hide_set()) {
        // Page names `vnet-net.1`, synopses `vnet net ...`; pages for the commands' own
        // subcommands (`vnet-net-ls.1`, ...) too.
        let sub = sub
            .clone()
            .display_name(format!("vnet-{}", sub.get_name()))
            .bin_name(format!("vnet {}", sub.get_name()));
        clap_mangen::generate_to(sub, dir).map_err(failed)?;
    }
    let mut page = Vec::new();
    vnet_page(command, &mut page).map_err(failed)?;
    std::fs::write(dir.join("vnet.1"), page).map_err(failed)
}

/// `vnet.1`: clap_mangen's sections, with the exit statuses under EXIT STATUS (where
/// man-pages(7) puts them) instead of its generic EXTRA.
fn vnet_page(command: clap::Command, out: &mut dyn Write) -> std::io::Result<()> {
    let man = clap_mangen::Man::new(
        command
            .clone()
            .after_help(None::<&str>)
            .disable_help_subcommand(true),
    );
    man.render_title(out)?;
    man.render_name_section(out)?;
    man.render_synopsis_section(out)?;
    man.render_description_section(out)?;
    man.render_options_section(out)?;
    man.render_subcommands_section(out)?;
    writeln!(out, ".SH \"EXIT STATUS\"\n.nf")?;
    for line in EXIT_STATUS_HELP.lines().skip(1) {
        writeln!(out, "{}", line.trim_start())?;
    }
    writeln!(out, ".fi")?;
    writeln!(
        out,
        ".SH \"SEE ALSO\"\n\\fBvnetd\\fR(8), \\fBvnet-net\\fR(1), \\fBvnet-port\\fR(1), \
         /usr/share/doc/vnet/README.md"
    )?;
    man.render_version_section(out)
}
