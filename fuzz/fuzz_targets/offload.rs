#![no_main]
//! The virtio-net header / GSO path: the first 12 bytes are a `virtio_net_hdr`, the rest
//! a frame. `complete_checksum` and the `Segmenter` must never panic, emit nothing on
//! error, and every segment must fit `max_segment_len`.
use libfuzzer_sys::fuzz_target;
use vnet_core::wire::offload::{complete_checksum, segment, Segmenter, VirtioNetHdr};

fuzz_target!(|data: &[u8]| {
    let Ok((hdr, frame)) = VirtioNetHdr::split(data) else {
        return;
    };
    let mut f = frame.to_vec();
    let _ = complete_checksum(&mut f, &hdr);
    // Force the GSO kinds too, so the segmenter is reached more often than 1 in 256.
    for gso_type in [
        hdr.gso_type,
        VirtioNetHdr::GSO_TCPV4,
        VirtioNetHdr::GSO_TCPV6,
        VirtioNetHdr::GSO_UDP_L4,
    ] {
        let hdr = VirtioNetHdr { gso_type, ..hdr };
        let mut scratch = vec![0u8; 65_600];
        let mut emitted = 0;
        match segment(frame, &hdr, &mut scratch, |_| emitted += 1) {
            Ok(n) => assert_eq!(n, emitted),
            Err(_) => assert_eq!(emitted, 0),
        }
        if let Ok(seg) = Segmenter::new(frame, &hdr) {
            let max = seg.max_segment_len();
            for i in (0..seg.count()).rev() {
                let len = seg.write(i, &mut scratch).unwrap();
                assert!(len <= max && len == seg.segment_len(i));
            }
        }
    }
});
