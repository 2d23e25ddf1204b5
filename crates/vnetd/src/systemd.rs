//! vnetd under a service manager (systemd): the control socket it may hand over
//! (socket activation, `vnetd.socket`) and the readiness and status vnetd reports back
//! (`Type=notify`).
//!
//! Both do nothing outside systemd: a listener is taken only when `LISTEN_PID` names
//! this process (`sd_listen_fds(3)`), and notifications are sent only when
//! `NOTIFY_SOCKET` is set (`sd_notify(3)`), so the same binary runs by hand, under a
//! test bed or as a unit.

use std::os::unix::net::UnixListener;

use anyhow::{bail, Context, Result};
use sd_notify::NotifyState;
use tracing::{info, warn};
use vnet_io::Handle;

/// The name `vnetd.socket` gives the control socket (`FileDescriptorName=`); with one
/// socket passed, its name does not matter.
pub const CONTROL_FD_NAME: &str = "control";

/// The control socket the service manager passed, if it passed one to this process:
/// an `AF_UNIX` stream socket, listening, bound to `RUN/control.sock` by the socket
/// unit. The `LISTEN_*` variables are removed, so nothing vnetd starts inherits them.
/// Call it before any thread starts (it changes the environment).
pub fn inherited_control_listener() -> Result<Option<UnixListener>> {
    let var = |name| std::env::var(name).ok();
    let index = control_index(
        std::process::id(),
        var("LISTEN_PID").as_deref(),
        var("LISTEN_FDS").as_deref(),
        var("LISTEN_FDNAMES").as_deref(),
    )?;
    // Read (and removed from the environment) by listenfd, which checks the type of the
    // descriptor before owning it: no unsafe here.
    let mut passed = listenfd::ListenFd::from_env();
    std::env::remove_var("LISTEN_FDNAMES");
    let Some(index) = index else {
        return Ok(None);
    };
    let fd = 3 + index;
    let listener = passed
        .take_unix_listener(index)
        .with_context(|| format!("the socket passed as fd {fd} is not the control socket"))?
        .with_context(|| format!("no socket passed as fd {fd}"))?;
    let listening = nix::sys::socket::getsockopt(&listener, nix::sys::socket::sockopt::AcceptConn)
        .with_context(|| format!("cannot inspect the socket passed as fd {fd}"))?;
    if !listening {
        bail!(
            "the socket passed as fd {fd} is not listening (use ListenStream= in the socket unit)"
        );
    }
    listener.set_nonblocking(true)?;
    Ok(Some(listener))
}

/// Logs that the control socket came from the service manager, and warns if it is not
/// at `control`, where clients look for it.
pub fn report_activation(listener: &UnixListener, control: &std::path::Path) {
    info!("control socket passed by the service manager (socket activation)");
    match listener.local_addr() {
        Ok(bound) if bound.as_pathname() == Some(control) => {}
        bound => warn!(
            "the control socket passed by the service manager is {bound:?}, not {}: clients \
             look for the latter (align ListenStream= with --run-dir)",
            control.display()
        ),
    }
}

/// Which of the descriptors passed from fd 3 on is the control socket (`sd_listen_fds(3)`):
/// none unless `LISTEN_PID` is `pid`; the one named [`CONTROL_FD_NAME`], else the only
/// one. Anything inconsistent is an error rather than a guess, since serving the wrong
/// socket would be worse than not starting.
fn control_index(
    pid: u32,
    listen_pid: Option<&str>,
    listen_fds: Option<&str>,
    names: Option<&str>,
) -> Result<Option<usize>> {
    if listen_pid.and_then(|p| p.trim().parse::<u32>().ok()) != Some(pid) {
        return Ok(None);
    }
    let Some(count) = listen_fds else {
        return Ok(None);
    };
    let count: usize = count
        .trim()
        .parse()
        .with_context(|| format!("LISTEN_FDS={count:?} is not a number"))?;
    if count == 0 {
        return Ok(None);
    }
    let named = match names {
        Some(names) => {
            let names: Vec<&str> = names.split(':').collect();
            if names.len() != count {
                bail!(
                    "LISTEN_FDNAMES names {} socket(s) but LISTEN_FDS passes {count}",
                    names.len()
                );
            }
            names.iter().position(|n| *n == CONTROL_FD_NAME)
        }
        None => None,
    };
    match (named, count) {
        (Some(i), _) => Ok(Some(i)),
        (None, 1) => Ok(Some(0)),
        (None, _) => bail!(
            "{count} sockets passed and none named {CONTROL_FD_NAME:?}: give the control \
             socket FileDescriptorName={CONTROL_FD_NAME} in the socket unit"
        ),
    }
}

/// Tells the service manager that vnetd serves (every configured vnet and the control
/// socket are up), with a status line.
pub async fn ready(handle: &Handle) -> String {
    let status = status_line(handle).await;
    send(&[NotifyState::Ready, NotifyState::Status(&status)]);
    status
}

/// Keeps the status line `systemctl status vnetd` shows current (`last` is the one sent
/// before), checking every few seconds; sends only what changed. Runs until dropped.
pub async fn keep_status(handle: Handle, mut last: String) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    loop {
        tokio::time::sleep(STATUS_PERIOD).await;
        let status = status_line(&handle).await;
        if last != status {
            send(&[NotifyState::Status(&status)]);
            last = status;
        }
    }
}

/// How often [`keep_status`] looks: cheap (one command per data-plane thread), and the
/// line is for people.
const STATUS_PERIOD: std::time::Duration = std::time::Duration::from_secs(5);

/// Tells the service manager that vnetd is shutting down.
pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("shutting down")]);
}

/// `3 vnets, 5 ports`.
async fn status_line(handle: &Handle) -> String {
    match handle.networks().await {
        Ok(nets) => {
            let ports: usize = nets.iter().map(|n| n.ports).sum();
            format!(
                "{} vnet{}, {ports} port{}",
                nets.len(),
                if nets.len() == 1 { "" } else { "s" },
                if ports == 1 { "" } else { "s" }
            )
        }
        Err(e) => format!("cannot list the vnets: {}", e.message()),
    }
}

fn send(state: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(state) {
        warn!("cannot notify the service manager (NOTIFY_SOCKET): {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: u32 = 4242;

    fn index(pid: Option<&str>, fds: Option<&str>, names: Option<&str>) -> Result<Option<usize>> {
        control_index(ME, pid, fds, names)
    }

    #[test]
    fn sockets_for_another_process_are_not_taken() {
        assert_eq!(index(None, Some("1"), None).unwrap(), None);
        assert_eq!(index(Some("4243"), Some("1"), None).unwrap(), None);
        assert_eq!(index(Some("x"), Some("1"), None).unwrap(), None);
        assert_eq!(index(Some("4242"), None, None).unwrap(), None);
        assert_eq!(index(Some("4242"), Some("0"), None).unwrap(), None);
    }

    #[test]
    fn the_only_socket_or_the_one_named_control_is_taken() {
        assert_eq!(index(Some("4242"), Some("1"), None).unwrap(), Some(0));
        assert_eq!(
            index(Some("4242"), Some("1"), Some("vnetd.socket")).unwrap(),
            Some(0)
        );
        assert_eq!(
            index(Some("4242"), Some("3"), Some("a:control:b")).unwrap(),
            Some(1)
        );
    }

    #[test]
    fn inconsistent_variables_are_refused() {
        let err = |pid, fds, names| index(pid, fds, names).unwrap_err().to_string();
        assert!(err(Some("4242"), Some("two"), None).contains("not a number"));
        assert!(err(Some("4242"), Some("2"), None).contains("FileDescriptorName=control"));
        assert!(err(Some("4242"), Some("2"), Some("a:b")).contains("none named"));
        assert!(err(Some("4242"), Some("2"), Some("control")).contains("names 1 socket(s)"));
    }
}
