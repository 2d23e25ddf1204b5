//! `vnet version`

use serde::Serialize;
use vnet_control::Version;

use super::{print, print_json, Context};
use crate::failure::Failure;

const CLIENT_VERSION: &str = env!("CARGO_PKG_VERSION");

#[derive(Serialize)]
struct Versions {
    vnet: &'static str,
    vnetd: Version,
}

/// Both versions; the client's is printed even when vnetd cannot be reached.
pub fn run(ctx: &Context) -> Result<(), Failure> {
    let daemon = ctx.client.version();
    if ctx.json {
        return print_json(&Versions {
            vnet: CLIENT_VERSION,
            vnetd: daemon?,
        });
    }
    print(&format!("vnet  {CLIENT_VERSION}\n"))?;
    let daemon = daemon?;
    print(&format!("vnetd {} (API {})\n", daemon.version, daemon.api))
}
