//! `vnet capture`: a vnet's frames live, as pcapng, to stdout or a file.

use std::fs::File;
use std::io::{self, Write};

use super::Context;
use crate::cli::CaptureArgs;
use crate::failure::Failure;

pub fn run(ctx: &Context, args: CaptureArgs) -> Result<(), Failure> {
    let mut out: Box<dyn Write> = match &args.file {
        Some(path) => Box::new(File::create(path).map_err(|e| {
            Failure::new(
                format!("cannot create {}: {e}", path.display()),
                "choose a file in a writable directory",
            )
        })?),
        // Unbuffered: each chunk reaches the reader (tcpdump, wireshark) as it comes.
        None => Box::new(io::stdout().lock()),
    };
    ctx.client
        .capture(&args.net, &args.ports, args.count, args.snaplen, &mut out)
        .map_err(|e| Failure::from(e).if_not_found("list the ports with `vnet port ls NET`"))
}
