//! TAP devices through `/dev/net/tun`.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;

use super::privilege::{self, Capability};

/// Why a TAP could not be opened: the step that failed.
#[derive(Debug, thiserror::Error)]
pub enum TapError {
    #[error("invalid interface name {0:?}: use 1-15 characters, no '/', ':' or whitespace")]
    BadName(String),
    #[error("cannot open /dev/net/tun")]
    OpenTun(#[source] io::Error),
    #[error("cannot create a TAP")]
    Privilege(#[source] io::Error),
    #[error("cannot attach TAP {name:?} (TUNSETIFF{hint})")]
    SetIff {
        name: String,
        /// Why the kernel probably refused, for the errors that have a usual reason.
        hint: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("cannot set the TAP's virtio_net_hdr size (TUNSETVNETHDRSZ)")]
    SetVnetHdrSize(#[source] io::Error),
    #[error("cannot switch on TAP offloads (TUNSETOFFLOAD)")]
    SetOffload(#[source] io::Error),
}

/// Creates (or attaches to an existing, unused) TAP interface `name`, non-blocking,
/// without packet information, with a 12-byte `virtio_net_hdr_v1` in front of every
/// frame: one `read`/`write` is one header plus one Ethernet frame. Offloads (checksum,
/// TSO, USO where the kernel has it) are switched on, so the kernel hands over GSO
/// super-frames and takes them back unsegmented. The interface lives as long as the
/// returned file unless someone made it persistent. `CAP_NET_ADMIN` is raised for the
/// call ([`privilege`]).
pub fn open_tap(name: &str) -> Result<File, TapError> {
    if !vnet_model::is_valid_ifname(name) {
        return Err(TapError::BadName(name.to_string()));
    }
    let _admin = privilege::raise(Capability::CAP_NET_ADMIN).map_err(TapError::Privilege)?;
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open("/dev/net/tun")
        .map_err(TapError::OpenTun)?;
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    req.ifr_ifru.ifru_flags =
        (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as libc::c_short;
    // SAFETY: the fd is open on /dev/net/tun and `req` is a valid ifreq that outlives
    // the call; TUNSETIFF reads and writes only that struct.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &mut req) };
    if rc < 0 {
        let source = io::Error::last_os_error();
        let hint = match source.raw_os_error() {
            Some(libc::EPERM) => "; creating a TAP needs root or CAP_NET_ADMIN",
            Some(libc::EBUSY) => "; another process has it open",
            Some(libc::EINVAL) => "; an interface of another kind has this name",
            _ => "",
        };
        return Err(TapError::SetIff {
            name: name.to_string(),
            hint,
            source,
        });
    }
    let hdr_len: libc::c_int = VNET_HDR_LEN as libc::c_int;
    // SAFETY: TUNSETVNETHDRSZ reads one int through the pointer, which is valid.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETVNETHDRSZ, &hdr_len) };
    if rc < 0 {
        return Err(TapError::SetVnetHdrSize(io::Error::last_os_error()));
    }
    let base = libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6 | libc::TUN_F_TSO_ECN;
    // USO came with Linux 6.2; older kernels refuse the flag, so ask without it.
    for flags in [base | libc::TUN_F_USO4 | libc::TUN_F_USO6, base] {
        // SAFETY: TUNSETOFFLOAD takes its argument by value; no memory is shared.
        let rc = unsafe {
            libc::ioctl(
                file.as_raw_fd(),
                libc::TUNSETOFFLOAD,
                flags as libc::c_ulong,
            )
        };
        if rc == 0 {
            return Ok(file);
        }
    }
    Err(TapError::SetOffload(io::Error::last_os_error()))
}

/// Size of the `virtio_net_hdr_v1` the TAP puts in front of each frame.
pub const VNET_HDR_LEN: usize = 12;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names() {
        assert!(vnet_model::is_valid_ifname("a-b_c.d"));
        for bad in ["", ".", "..", "a/b", "a:b", "a b", "sixteen-chars-xx"] {
            assert!(!vnet_model::is_valid_ifname(bad), "{bad}");
            assert!(matches!(open_tap(bad), Err(TapError::BadName(_))), "{bad}");
        }
    }

    #[test]
    fn a_refused_attach_says_its_cause_once() {
        let e = TapError::SetIff {
            name: "vm1".into(),
            hint: "; creating a TAP needs root or CAP_NET_ADMIN",
            source: io::Error::from_raw_os_error(libc::EPERM),
        };
        let said = crate::error::chain(&e);
        assert!(
            said.starts_with("cannot attach TAP \"vm1\" (TUNSETIFF; creating"),
            "{said}"
        );
        assert_eq!(said.matches("not permitted").count(), 1, "{said}");
    }
}
