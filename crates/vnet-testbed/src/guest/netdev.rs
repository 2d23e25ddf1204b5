//! QEMU network backends for guest NICs.

use std::path::{Path, PathBuf};

/// A QEMU network backend for one guest NIC (the `-netdev` half; the
/// test bed adds the matching `-device virtio-net-pci`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Netdev {
    /// Connect to a listening unix stream socket (e.g. the daemon's
    /// `RUN/NET/stream.sock`): `-netdev stream,server=off,addr.type=unix,addr.path=PATH`.
    /// The socket must exist when the guest boots ([`crate::GuestBuilder::boot`]
    /// checks): QEMU 7.2 connects once, asynchronously, silently gives up on
    /// failure and never reconnects (a restarted daemon loses the guest).
    Stream {
        /// The listening socket.
        path: PathBuf,
    },
    /// Listen on a unix stream socket (`server=on`) for one peer, e.g. another
    /// guest's [`Netdev::Stream`]: a direct cable between two guests.
    StreamServer {
        /// The socket QEMU creates.
        path: PathBuf,
    },
    /// Unix datagram sockets: `-netdev dgram,local.type=unix,local.path=LOCAL,remote.type=unix,remote.path=REMOTE`
    /// (e.g. `remote` = the daemon's `RUN/NET/dgram.sock`). QEMU binds `local`.
    Dgram {
        /// The guest's own socket, created by QEMU.
        local: PathBuf,
        /// The peer's socket.
        remote: PathBuf,
    },
    /// A VDE switch directory: `-netdev vde,sock=DIR` (QEMU must be built
    /// with VDE support).
    Vde {
        /// The switch directory (holding `ctl`).
        sock: PathBuf,
    },
    /// An existing TAP interface: `-netdev tap,ifname=NAME,script=no,downscript=no`.
    Tap {
        /// The interface name.
        ifname: String,
    },
    /// A vhost-user back-end socket: `-chardev socket,path=PATH` +
    /// `-netdev vhost-user`; the guest's RAM is then a shared memfd, as
    /// vhost-user requires.
    VhostUser {
        /// The back-end's socket.
        path: PathBuf,
    },
    /// Anything else: `TYPE,OPTIONS` as QEMU's `-netdev` takes it, without
    /// `id=` (the test bed appends it), e.g. `"socket,connect=127.0.0.1:1234"`.
    Raw(String),
}

impl Netdev {
    /// The QEMU arguments for this backend with netdev id `id`.
    pub(super) fn qemu_args(&self, id: &str) -> Vec<String> {
        let p = |p: &Path| qemu_escape(&p.to_string_lossy());
        let netdev = match self {
            Netdev::Stream { path } => {
                format!(
                    "stream,id={id},server=off,addr.type=unix,addr.path={}",
                    p(path)
                )
            }
            Netdev::StreamServer { path } => {
                format!(
                    "stream,id={id},server=on,addr.type=unix,addr.path={}",
                    p(path)
                )
            }
            Netdev::Dgram { local, remote } => format!(
                "dgram,id={id},local.type=unix,local.path={},remote.type=unix,remote.path={}",
                p(local),
                p(remote)
            ),
            Netdev::Vde { sock } => format!("vde,id={id},sock={}", p(sock)),
            Netdev::Tap { ifname } => {
                format!(
                    "tap,id={id},ifname={},script=no,downscript=no",
                    qemu_escape(ifname)
                )
            }
            Netdev::VhostUser { path } => {
                return vec![
                    "-chardev".into(),
                    format!("socket,id={id}c,path={}", p(path)),
                    "-netdev".into(),
                    format!("vhost-user,id={id},chardev={id}c"),
                ];
            }
            Netdev::Raw(raw) => format!("{raw},id={id}"),
        };
        vec!["-netdev".into(), netdev]
    }
}

/// QEMU option values escape commas by doubling them.
fn qemu_escape(s: &str) -> String {
    s.replace(',', ",,")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netdev_args() {
        let a = Netdev::Stream {
            path: "/r/n,1/stream.sock".into(),
        }
        .qemu_args("n0");
        assert_eq!(
            a,
            [
                "-netdev",
                "stream,id=n0,server=off,addr.type=unix,addr.path=/r/n,,1/stream.sock"
            ]
        );
        let d = Netdev::Dgram {
            local: "/c".into(),
            remote: "/p".into(),
        }
        .qemu_args("n1");
        assert_eq!(
            d[1],
            "dgram,id=n1,local.type=unix,local.path=/c,remote.type=unix,remote.path=/p"
        );
        assert_eq!(
            Netdev::Raw("vde,sock=/x".into()).qemu_args("n2")[1],
            "vde,sock=/x,id=n2"
        );
        assert_eq!(
            Netdev::VhostUser { path: "/v".into() }.qemu_args("n3"),
            [
                "-chardev",
                "socket,id=n3c,path=/v",
                "-netdev",
                "vhost-user,id=n3,chardev=n3c"
            ]
        );
    }
}
