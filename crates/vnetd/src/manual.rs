//! `vnetd --man DIR`: the manual page `vnetd.8`, made from the same clap definitions as
//! the command line (the Debian package runs it at build time: `packaging/build-deb`).

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};

/// What `--help` cannot say: where things are, the signals, systemd, the exit status.
const MORE: &str = r#".SH FILES
.TP
\fI/etc/vnet/vnetd.toml\fR
the configuration the packaged service reads (\fB--config\fR); without \fB--config\fR,
vnetd runs the built-in vmnet1 (host-only) and vmnet8 (NAT)
.TP
\fI/run/vnet/control.sock\fR
the control API (HTTP/1.1 + JSON), used by \fBvnet\fR(1)
.TP
\fI/run/vnet/NET/\fR
the sockets VMs attach through: stream.sock, dgram.sock, api.sock, vde/, vhost-user/
.TP
\fI/var/lib/vnet/NET/leases.json\fR
DHCP leases
.TP
\fI/var/lib/vnet/state.json\fR
the vnets vnetd runs, saved after every change and restored at start; a
\fI[[network]]\fR table of the configuration that changed since it was last applied sets
its vnet (README, "State"); a corrupt file is kept as state.json.corrupt-TIME
.SH SIGNALS
SIGTERM and SIGINT shut vnetd down cleanly, removing every socket it made. SIGHUP
(\fBsystemctl reload vnetd\fR, \fBvnet reload\fR) re-reads the configuration and applies
what changed in it, live; an invalid file or a change that fails changes nothing.
.SH SYSTEMD
vnetd.service is \fIType=notify\fR: vnetd sends READY=1 once every configured vnet and
the control socket are up, and a STATUS= line (vnets and ports) that
\fBsystemctl status vnetd\fR shows. vnetd.socket binds /run/vnet/control.sock and starts
vnetd at the first connection (socket activation); vnetd takes the socket over (LISTEN_FDS, LISTEN_PID,
LISTEN_FDNAMES=control) and starts without it too. The service runs
\fBvnetd --user vnet\fR: set up as root, then the user vnet with CAP_NET_ADMIN,
CAP_NET_RAW and CAP_NET_BIND_SERVICE permitted, each raised only around the step that
needs it, under a seccomp allow-list and landlock. systemd-sysusers creates the user vnet and the groups vnet (the user
role on the control API) and vnet-admin (the admin role).
.SH "EXIT STATUS"
0 after a clean shutdown (or a successful \fB--check\fR), 1 when the configuration,
the directories or the set-up fail (the message says why).
.SH "SEE ALSO"
\fBvnet\fR(1), \fBsystemd-sysusers\fR(8), /usr/share/doc/vnet/README.md
"#;

/// Writes `DIR/vnetd.8`.
pub fn write(command: clap::Command, dir: &Path) -> Result<()> {
    let man = clap_mangen::Man::new(command).section("8");
    let mut page = Vec::new();
    man.render_title(&mut page)?;
    man.render_name_section(&mut page)?;
    man.render_synopsis_section(&mut page)?;
    man.render_description_section(&mut page)?;
    man.render_options_section(&mut page)?;
    page.write_all(MORE.as_bytes())?;
    man.render_version_section(&mut page)?;
    std::fs::create_dir_all(dir)?;
    let path = dir.join(man.get_filename());
    std::fs::write(&path, page).with_context(|| format!("cannot write {}", path.display()))
}
