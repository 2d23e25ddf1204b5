//! The vhost-user handshake, front-end side: what QEMU does for a virtio-net NIC, for a
//! guest whose RAM is one memfd and whose driver is [`traffic`](super::traffic).

use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::Arc;

use vhost::vhost_user::message::{VhostUserProtocolFeatures, VhostUserVirtioFeatures};
use vhost::vhost_user::{Frontend, VhostUserFrontend};
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use vmm_sys_util::eventfd::EventFd;

use super::frames::{MAX_TSO_FRAME, NET_HDR};
use super::memory::Region;
use super::ring::{Driver, Layout};

pub const VIRTIO_F_VERSION_1: u64 = 1 << 32;
pub const VIRTIO_NET_F_CSUM: u64 = 1 << 0;
pub const VIRTIO_NET_F_GUEST_CSUM: u64 = 1 << 1;
pub const VIRTIO_NET_F_GUEST_TSO4: u64 = 1 << 7;
pub const VIRTIO_NET_F_HOST_TSO4: u64 = 1 << 11;
pub const VIRTIO_NET_F_MRG_RXBUF: u64 = 1 << 15;
pub const VIRTIO_RING_F_EVENT_IDX: u64 = 1 << 29;
/// What the guest's driver would take: a Linux virtio-net driver's core set.
pub const WANTED: u64 = VIRTIO_F_VERSION_1
    | VIRTIO_NET_F_CSUM
    | VIRTIO_NET_F_GUEST_CSUM
    | VIRTIO_NET_F_GUEST_TSO4
    | VIRTIO_NET_F_HOST_TSO4
    | VIRTIO_NET_F_MRG_RXBUF
    | VIRTIO_RING_F_EVENT_IDX;

/// Bytes per buffer: a header and the largest TSO frame, page-rounded.
pub const BUF_LEN: u64 = ((NET_HDR + MAX_TSO_FRAME) as u64 + 4095) & !4095;
const RX: usize = 0;
const TX: usize = 1;

/// One queue of a guest as its driver sees it: ring, buffers, kick and call.
pub struct Queue {
    pub mem: Arc<Region>,
    pub ring: Driver,
    /// Guest → device: "look at the avail ring".
    pub kick: EventFd,
    /// Device → guest: "look at the used ring".
    pub call: EventFd,
    /// Where buffer 0 is; buffer `i` is `BUF_LEN` bytes further per index.
    pub bufs: u64,
}

impl Queue {
    pub fn size(&self) -> u16 {
        self.ring.layout().size
    }

    pub fn buf_addr(&self, id: u16) -> u64 {
        self.bufs + u64::from(id) * BUF_LEN
    }
}

/// A guest's RAM and both queues' places in it.
pub struct Ram {
    pub mem: Arc<Region>,
    pub rx: Layout,
    pub tx: Layout,
    rx_bufs: u64,
    tx_bufs: u64,
}

impl Ram {
    /// RAM for two queues of `size` entries with their buffers.
    pub fn new(size: u16) -> std::io::Result<Ram> {
        let ring = Layout::bytes(size);
        let rx = Layout::at(0, size);
        let tx = Layout::at(ring, size);
        let rx_bufs = (2 * ring + 4095) & !4095;
        let tx_bufs = rx_bufs + u64::from(size) * BUF_LEN;
        let len = tx_bufs + u64::from(size) * BUF_LEN;
        Ok(Ram {
            mem: Arc::new(Region::new(len as usize)?),
            rx,
            tx,
            rx_bufs,
            tx_bufs,
        })
    }

    /// The driver's ends of both queues, rings zeroed.
    pub fn queues(&self, event_idx: bool) -> std::io::Result<(Queue, Queue)> {
        let q = |l: Layout, bufs: u64| -> std::io::Result<Queue> {
            Ok(Queue {
                mem: self.mem.clone(),
                ring: Driver::new(&self.mem, l, event_idx),
                kick: EventFd::new(libc::EFD_NONBLOCK)?,
                call: EventFd::new(libc::EFD_NONBLOCK)?,
                bufs,
            })
        };
        Ok((q(self.rx, self.rx_bufs)?, q(self.tx, self.tx_bufs)?))
    }
}

/// A guest attached to a vhost-user back-end.
pub struct Guest {
    /// The connection; the back-end stops when it closes.
    _frontend: Frontend,
    pub features: u64,
    pub rx: Queue,
    pub tx: Queue,
}

fn err(what: &str, e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(format!("{what}: {e}"))
}

/// Connects to the back-end at `path` and sets up RAM and two queues of `size`.
pub fn connect(path: &Path, size: u16) -> std::io::Result<Guest> {
    let mut fe = Frontend::connect(path, 2).map_err(|e| err("connect", e))?;
    fe.set_owner().map_err(|e| err("SET_OWNER", e))?;
    let offered = fe.get_features().map_err(|e| err("GET_FEATURES", e))?;
    let protocol = VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits();
    let features = offered & (WANTED | protocol);
    if features & VIRTIO_F_VERSION_1 == 0 {
        return Err(err("features", format!("{offered:#x} lacks VERSION_1")));
    }
    if features & protocol != 0 {
        let p = fe
            .get_protocol_features()
            .map_err(|e| err("GET_PROTOCOL_FEATURES", e))?;
        fe.set_protocol_features(p & VhostUserProtocolFeatures::empty())
            .map_err(|e| err("SET_PROTOCOL_FEATURES", e))?;
    }
    fe.set_features(features)
        .map_err(|e| err("SET_FEATURES", e))?;
    let ram = Ram::new(size)?;
    let region = VhostUserMemoryRegionInfo {
        guest_phys_addr: 0,
        memory_size: ram.mem.len() as u64,
        userspace_addr: ram.mem.host_addr(0),
        mmap_offset: 0,
        mmap_handle: ram.mem.fd().as_raw_fd(),
    };
    fe.set_mem_table(&[region])
        .map_err(|e| err("SET_MEM_TABLE", e))?;
    let (rx, tx) = ram.queues(features & VIRTIO_RING_F_EVENT_IDX != 0)?;
    for (index, q) in [(RX, &rx), (TX, &tx)] {
        let l = q.ring.layout();
        let config = VringConfigData {
            queue_max_size: size,
            queue_size: size,
            flags: 0,
            desc_table_addr: ram.mem.host_addr(l.desc),
            used_ring_addr: ram.mem.host_addr(l.used),
            avail_ring_addr: ram.mem.host_addr(l.avail),
            log_addr: None,
        };
        fe.set_vring_num(index, size)
            .map_err(|e| err("SET_VRING_NUM", e))?;
        fe.set_vring_addr(index, &config)
            .map_err(|e| err("SET_VRING_ADDR", e))?;
        fe.set_vring_base(index, 0)
            .map_err(|e| err("SET_VRING_BASE", e))?;
        fe.set_vring_call(index, &q.call)
            .map_err(|e| err("SET_VRING_CALL", e))?;
        fe.set_vring_kick(index, &q.kick)
            .map_err(|e| err("SET_VRING_KICK", e))?;
        if features & protocol != 0 {
            fe.set_vring_enable(index, true)
                .map_err(|e| err("SET_VRING_ENABLE", e))?;
        }
    }
    Ok(Guest {
        _frontend: fe,
        features,
        rx,
        tx,
    })
}
