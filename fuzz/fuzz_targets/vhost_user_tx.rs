#![no_main]
//! What a guest puts in the vhost-user TX queue: the readable descriptors of a chain
//! (the input split at 0xfe bytes) are joined like the worker does, and the message
//! (`virtio_net_hdr` + frame) is taken into a frame buffer by the same function the
//! data plane's `recv` uses; a frame that needs offloads then has its checksum
//! completed like for a port that does not offload.
use libfuzzer_sys::fuzz_target;
use vnet_core::wire::offload::{complete_checksum, VIRTIO_NET_HDR_LEN};
use vnet_io::backend::vhost_user::guest_message;
use vnet_io::backend::Received;
use vnet_io::frame::FrameBuf;

fuzz_target!(|data: &[u8]| {
    let mut msg = Vec::new();
    for desc in data.split(|&b| b == 0xfe) {
        msg.extend_from_slice(desc);
    }
    let mut buf = FrameBuf::large();
    match guest_message(&msg, &mut buf) {
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
    let _ = guest_message(data, &mut buf);
});
