//! `vnetd`: the vnet daemon.
//!
//! Start-up: read the configuration (or the built-in one), claim the runtime directory
//! (refusing if another vnetd serves it, replacing a crashed one's sockets), read the
//! saved state (`STATE/state.json`, `state`) and merge the configuration into it, start
//! the data plane, create the vnets and ports, save, then serve the control API until
//! SIGTERM or SIGINT; SIGHUP reloads the configuration (`live`). Shutdown removes every
//! socket it made.
//!
//! Started as root, vnetd gives the directories to its service user (`--user`, else
//! `vnet` where it exists) and becomes it, with its network capabilities permitted but
//! raised only around the steps that need them, before any thread starts
//! (`privileges`); landlock and a seccomp allow-list then hold it to its work
//! (`sandbox`).
#![forbid(unsafe_code)]

mod access;
mod capture;
mod config;
mod control;
mod dirs;
mod live;
mod manual;
mod privileges;
mod reload;
mod sandbox;
mod state;
mod systemd;

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Parser;
use tracing::{info, warn};
use vnet_io::DataPlane;

use config::Config;

/// Virtual Ethernet switches for virtual machines.
#[derive(Parser, Debug)]
#[command(name = "vnetd", version, about)]
struct Args {
    /// TOML configuration; without it vnetd runs the built-in vmnet1 and vmnet8.
    #[arg(long, short = 'c')]
    config: Option<PathBuf>,
    /// Runtime directory for sockets [default: /run/vnet as root, $XDG_RUNTIME_DIR/vnet
    /// otherwise, else /run/user/UID/vnet].
    #[arg(long)]
    run_dir: Option<PathBuf>,
    /// State directory [default: /var/lib/vnet as root, $XDG_STATE_HOME/vnet otherwise,
    /// else ~/.local/state/vnet].
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Data-plane threads (each vnet runs on one) [default: the config's `threads`, else
    /// one per CPU core, up to 8].
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    threads: Option<u16>,
    /// Microseconds a data-plane thread keeps polling after traffic instead of sleeping:
    /// lower latency for a busy core while traffic flows [default: the config's
    /// `busy_poll_us`, else 0].
    #[arg(long, value_parser = clap::value_parser!(u32).range(..=i64::from(config::MAX_BUSY_POLL_US)))]
    busy_poll_us: Option<u32>,
    /// Members of this group (a name or a gid) hold the admin role on the control API,
    /// as root and vnetd's own uid do [default: the config's `[access] admin_group`,
    /// else vnet-admin if it exists].
    #[arg(long, value_name = "GROUP")]
    admin_group: Option<String>,
    /// Members of this group (a name or a gid) hold the user role, and vnetd's sockets
    /// are group-owned by it [default: the config's `[access] user_group`, else vnet if
    /// it exists].
    #[arg(long, value_name = "GROUP")]
    user_group: Option<String>,
    /// Started as root, run as this user (a name or a numeric uid) after setup, with
    /// network capabilities raised only while a step needs them; RUN and STATE are given
    /// to it; `root` stays root [default: the config's `[access] user`, else vnet if it
    /// exists, else stay root].
    #[arg(long, value_name = "USER")]
    user: Option<String>,
    /// Check the configuration and exit.
    #[arg(long)]
    check: bool,
    /// Also place /dev/NET as a symlink to each configured vnet's classic device
    /// RUN/dev/NET (root only; an existing /dev/NET that is not such a link is left alone).
    #[arg(long)]
    dev_links: bool,
    /// Write the manual page vnetd.8 into DIR and exit (packaging).
    #[arg(long, value_name = "DIR", hide = true)]
    man: Option<PathBuf>,
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("VNET_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    if let Err(e) = run(Args::parse()) {
        eprintln!("vnetd: {e:#}");
        std::process::exit(1);
    }
}

/// Every port, flow and listener is a descriptor: a few hundred VMs with NAT traffic
/// outgrow the usual soft limit of 1024 long before the hard limit, so take all of it.
fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => info!("open files: up to {hard} (was {soft})"),
            Err(e) => warn!("open files stay at {soft}: cannot raise to {hard}: {e}"),
        },
        Ok(_) => {}
        Err(e) => warn!("cannot read the open-file limit: {e}"),
    }
}

fn run(args: Args) -> Result<()> {
    if let Some(dir) = &args.man {
        return manual::write(<Args as clap::CommandFactory>::command(), dir);
    }
    let config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::built_in(),
    };
    let service =
        privileges::ServiceUser::choose(args.user.as_deref().or(config.access.user.as_deref()))?;
    let sandboxed = config.access.sandbox.unwrap_or(true);
    let mut policy = access::Policy::resolve(
        &config.access,
        args.admin_group.clone(),
        args.user_group.clone(),
    )?;
    if args.check {
        println!("configuration OK: {} vnet(s)", config.network.len());
        return Ok(());
    }
    if let Some(user) = &service {
        privileges::require_root(user)?;
    }
    // Socket activation (vnetd.socket): the control socket is already bound and listening.
    let activated = systemd::inherited_control_listener()?;
    let socket_activated = activated.is_some();
    // Absolute, because clients are told these paths and run elsewhere.
    let run_dir = std::path::absolute(vnet_dirs::run_dir(args.run_dir)?)?;
    let state_dir = std::path::absolute(vnet_dirs::state_dir(args.state_dir)?)?;
    let control = dirs::claim(
        &run_dir,
        &state_dir,
        service.as_ref().map(|u| u.uid),
        activated.is_none(),
    )?;
    if let Some(listener) = &activated {
        systemd::report_activation(listener, &control);
    }
    let state_file = state_dir.join(state::file::NAME);
    let config_nets = state::of_config(&config);
    let nets = state::file::restore(&state_file, &config_nets)?;
    if let Some(group) = &policy.user {
        match access::share_run_dir(&run_dir, group.gid) {
            Ok(()) => info!(
                "sockets in {} belong to group {} (gid {})",
                run_dir.display(),
                group.name,
                group.gid
            ),
            Err(e) if group.explicit => {
                return Err(e).with_context(|| {
                    format!(
                        "cannot give {} to the user group {}",
                        run_dir.display(),
                        group.name
                    )
                })
            }
            Err(e) => warn!(
                "sockets keep vnetd's group: cannot give {} to group {}: {e}",
                run_dir.display(),
                group.name
            ),
        }
    }
    raise_fd_limit();
    if let Some(user) = &service {
        // Before the first thread: capabilities are per thread (privileges.rs).
        let keep = privileges::kept(
            config.access.keep_capabilities,
            privileges::configured(&config.limits, &nets),
        );
        let groups: Vec<u32> = policy.user.iter().map(|g| g.gid).collect();
        privileges::drop_to(user, &groups, &keep)?;
        for dir in [&run_dir, &state_dir] {
            std::fs::read_dir(dir).with_context(|| {
                format!(
                    "{} cannot use {} (is a parent directory closed to it?)",
                    user.name,
                    dir.display()
                )
            })?;
        }
        // vnetd's own uid is admin, as for an unprivileged vnetd (root stays admin).
        policy.daemon_uid = user.uid;
    } else if !vnet_dirs::is_root() {
        privileges::lower_effective()?;
    }

    let tuning = config.tuning(args.threads.map(usize::from), args.busy_poll_us);
    if sandboxed && service.is_some() {
        sandbox::restrict_files(&sandbox::landlock::Paths {
            run_dir: run_dir.clone(),
            state_dir: state_dir.clone(),
            config: args
                .config
                .as_deref()
                .map(std::path::absolute)
                .transpose()?,
        })?;
    } else if sandboxed {
        info!(
            "landlock: not applied: it forbids the classic devices' mount; a vnetd run as \
             a service user (--user) has it"
        );
    }
    let limits = config.limits.limits();
    let control_limits = config.limits.control();
    let dataplane = DataPlane::spawn(run_dir.clone(), state_dir.clone(), tuning, limits)
        .context("cannot start the data plane")?;
    info!(
        "limits: {} client ports per vnet, VDE handshake {} s, {} vnets, {} control \
         connections, control request {} s, stream send buffer {}",
        limits.ports_per_vnet,
        limits.vde_handshake.as_secs(),
        limits.vnets,
        control_limits.connections,
        control_limits.request.as_secs(),
        if limits.stream_sndbuf_force {
            "forced past wmem_max"
        } else {
            "within wmem_max"
        }
    );
    info!(
        "limits: {} device opens, {} queued API replies per port, per vnet {} NAT flows, \
         {} bytes of NAT buffers and {} MACs; {} descriptors kept from client ports, \
         {} of them from the NAT too; per port {} held frames, {} bytes",
        limits.device_opens,
        limits.api_reply_queue,
        limits.nat_flows,
        limits.nat_buffer_bytes,
        limits.macs_per_vnet,
        limits.fd_reserve,
        limits.fd_reserve_control,
        limits.held_frames_per_port,
        limits.held_bytes_per_port,
    );
    info!(
        "data plane: {} thread(s), busy poll {} µs",
        tuning.threads,
        tuning.busy_poll.as_micros()
    );
    let handle = dataplane.handle();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the control-plane runtime")?;
    let daemon = state::export::Daemon {
        threads: tuning.threads,
        busy_poll_us: u32::try_from(tuning.busy_poll.as_micros()).unwrap_or(u32::MAX),
        access: config::AccessConfig {
            admin_group: args
                .admin_group
                .clone()
                .or(config.access.admin_group.clone()),
            user_group: args.user_group.clone().or(config.access.user_group.clone()),
            user: args.user.clone().or(config.access.user.clone()),
            ..config.access.clone()
        },
        limits: config.limits.clone(),
    };
    let live = std::sync::Arc::new(live::Live::new(
        handle.clone(),
        state_file.clone(),
        args.config.clone(),
        daemon,
        config.daemon_keys(),
    ));
    // Before control.sock opens: clients find every vnet there from the first request.
    let started = runtime.block_on(live.start(&nets, config_nets));
    if started.is_err() && state_file.exists() {
        let hint = "(a vnet saved there cannot be made? Move the file aside to start from \
                    the configuration alone)";
        return started.with_context(|| format!("{} {hint}", state_file.display()));
    }
    started?;
    if service.is_none() && !vnet_dirs::is_root() {
        info!("running unprivileged: TAP ports need root or CAP_NET_ADMIN; socket ports work");
    }
    let devices = match &service {
        Some(user) => {
            warn!(
                "classic devices (RUN/dev/NET) skipped: mounting FUSE needs root, and vnetd \
                 runs as {}",
                user.name
            );
            None
        }
        None => vnet_fuse::DeviceMount::mount(&run_dir, handle.clone())
            .inspect_err(|e| warn!("classic devices (RUN/dev/NET) skipped: cannot mount FUSE: {e}"))
            .ok(),
    };
    let links = match (&devices, args.dev_links) {
        (Some(m), true) if vnet_dirs::is_root() => dev_links(m.dir(), &config),
        (_, true) => {
            warn!("--dev-links skipped: needs root and the classic devices");
            Vec::new()
        }
        _ => Vec::new(),
    };
    // The last privileged step is behind: from here on, the allow-list.
    if !sandboxed {
        warn!("seccomp and landlock off ([access] sandbox = false)");
    } else if devices.is_some() && !vnet_dirs::is_root() {
        info!(
            "seccomp: not applied: the classic devices are unmounted by fusermount3, which \
             would inherit the filter"
        );
    } else {
        sandbox::restrict_calls(sandbox::seccomp::Needs {
            unmount: devices.is_some(),
        })?;
    }

    let served = runtime.block_on(async {
        // Anyone may connect: each request's role decides (crate::access), so that admins
        // outside the user group get in and everyone else gets a refusal saying why.
        // Before control.sock appears: a SIGHUP from then on reloads, never kills.
        let hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .context("cannot handle SIGHUP")?;
        tokio::spawn(reload_on_hangup(live.clone(), hangup));
        let listener = match activated {
            Some(listener) => tokio::net::UnixListener::from_std(listener)?,
            None => dirs::listen(&control, 0o666)?,
        };
        info!("control API on {}", control.display());
        let status = systemd::ready(&handle).await;
        // Ends with the runtime, after the control server.
        tokio::spawn(systemd::keep_status(handle.clone(), status));
        let app = control::router(handle.clone(), policy, live);
        // A client stalled mid-request must not hold the shutdown (and the socket
        // cleanup) hostage: open connections get a short grace period, no more.
        let serve = control::serve(
            listener,
            app,
            handle,
            control_limits,
            shutdown_signal(),
            SHUTDOWN_GRACE,
        );
        // A daemon whose data plane died must not go on answering as if it served.
        let watchdog = async {
            while dataplane.is_running() {
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
        };
        tokio::select! {
            () = serve => Ok(()),
            () = watchdog => Err(anyhow::anyhow!("the data plane stopped unexpectedly (see the log above)")),
        }
    });
    systemd::stopping();
    for link in links {
        let _ = std::fs::remove_file(link);
    }
    drop(devices);
    dataplane.shutdown();
    // The data plane hands lease files to a writer thread; let it finish before exit.
    if let Some(writer) = vnet_io::services::lease_writer::LeaseWriter::started() {
        let timeout = vnet_io::services::dhcp::FLUSH_TIMEOUT;
        if !writer.flush_all(timeout) {
            warn!("lease files not all saved after {timeout:?}");
        }
    }
    // The socket unit's file stays: it starts vnetd again at the next connection.
    if !socket_activated {
        let _ = std::fs::remove_file(&control);
    }
    info!("stopped");
    served
}

/// Places `/dev/NET` → `RUN/dev/NET` for each configured vnet; returns the links made.
fn dev_links(dev_dir: &std::path::Path, config: &Config) -> Vec<PathBuf> {
    let mut made = Vec::new();
    for net in &config.network {
        let name = &net.get_ref().name;
        let link = PathBuf::from("/dev").join(name);
        let target = dev_dir.join(name);
        if std::fs::read_link(&link).is_ok_and(|t| t == target) {
            let _ = std::fs::remove_file(&link);
        }
        match std::os::unix::fs::symlink(&target, &link) {
            Ok(()) => {
                info!("{} -> {}", link.display(), target.display());
                made.push(link);
            }
            Err(e) => warn!("cannot place {}: {e}", link.display()),
        }
    }
    made
}

/// Reloads the configuration on each SIGHUP, logging what changed or why nothing did.
async fn reload_on_hangup(
    live: std::sync::Arc<live::Live>,
    mut hangup: tokio::signal::unix::Signal,
) {
    while hangup.recv().await.is_some() {
        match live.reload().await {
            Ok(changes) => info!(
                "SIGHUP: configuration reloaded, {} change(s)",
                changes.len()
            ),
            Err(e) => warn!("SIGHUP: configuration not reloaded: {}", e.message),
        }
    }
}

/// How long open control connections may delay a shutdown.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => info!("SIGTERM: shutting down"),
        _ = int.recv() => info!("SIGINT: shutting down"),
    }
}
