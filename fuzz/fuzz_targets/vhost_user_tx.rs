#![no_main]
//! What a guest puts in the vhost-user TX queue: the readable descriptors of a chain
//! (the input split at 0xfe bytes) are gathered into a frame buffer by the function
//! the data plane's `recv` uses (`virtio_net_hdr` + frame); a frame that needs
//! offloads then has its checksum completed like for a port that does not offload.
use libfuzzer_sys::fuzz_target;
use vnet_core::wire::offload::{complete_checksum, VIRTIO_NET_HDR_LEN};
use vnet_io::backend::vhost_user::guest_message;
use vnet_io::backend::Received;
use vnet_io::frame::FrameBuf;

/// The chain `parts` (descriptor `i` at "address" `i`) gathered into `buf`.
fn gather(parts: &[&[u8]], buf: &mut FrameBuf) -> Received {
    let descs = parts.iter().enumerate().map(|(i, p)| (i as u64, p.len() as u32));
    let read = |addr: u64, dst: &mut [u8]| {
        dst.copy_from_slice(parts[addr as usize]);
        true
    };
    guest_message(descs, read, buf)
}

fuzz_target!(|data: &[u8]| {
    let parts: Vec<&[u8]> = data.split(|&b| b == 0xfe).collect();
    let msg = parts.concat();
    let mut buf = FrameBuf::large();
    match gather(&parts, &mut buf) {
        Received::Frame => {
            assert!(msg.len() >= VIRTIO_NET_HDR_LEN);
            assert_eq!(buf.frame(), &msg[VIRTIO_NET_HDR_LEN..]);
            if buf.needs_offload() {
                let hdr = buf.offload;
                let _ = complete_checksum(buf.frame_mut(), &hdr);
            }
        }
        Received::Dropped(..) => {
            assert!(
                msg.len() < VIRTIO_NET_HDR_LEN || msg.len() > VIRTIO_NET_HDR_LEN + buf.capacity()
            )
        }
        other => panic!("{other:?}"),
    }
    // A buffer that held a frame takes the next message as well.
    let _ = gather(&[data], &mut buf);
});
