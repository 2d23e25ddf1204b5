//! Software offloads on the data plane's slow path: cutting a GSO super-frame into
//! MTU-sized frames, and completing a partial checksum, for ports that take neither.
//!
//! Run with `cargo bench -p vnet-core --bench offload`. Byte counters are the input frame,
//! so divan's throughput is "super-frame bytes per second".

use divan::counter::{BytesCount, ItemsCount};
use divan::{black_box, Bencher};
use vnet_core::wire::offload::{complete_checksum, segment, Segmenter, VirtioNetHdr};

fn main() {
    divan::main();
}

const MSS: u16 = 1448;

/// An untagged IPv4/TCP frame (12 bytes of timestamp options, so 66 header bytes, as Linux
/// sends) with `payload` bytes, and the virtio header a TAP gives with it.
fn tcpv4_frame(payload: usize, gso: bool) -> (Vec<u8>, VirtioNetHdr) {
    let mut f = vec![0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1, 0x08, 0x00];
    let total = (20 + 32 + payload) as u16;
    f.extend_from_slice(&[0x45, 0, 0, 0, 0x12, 0x34, 0x40, 0, 64, 6, 0, 0]);
    f[16..18].copy_from_slice(&total.to_be_bytes());
    f.extend_from_slice(&[10, 0, 0, 1, 10, 0, 0, 2]);
    f.extend_from_slice(&[
        0xc0, 0x01, 0x14, 0x51, 0, 0, 0x10, 0, 0, 0, 0, 1, 0x80, 0x18,
    ]);
    f.extend_from_slice(&[0x01, 0xf5, 0, 0, 0, 0, 1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]);
    f.extend((0..payload).map(|i| (i * 13) as u8));
    let hdr = VirtioNetHdr {
        flags: VirtioNetHdr::F_NEEDS_CSUM,
        gso_type: if gso { VirtioNetHdr::GSO_TCPV4 } else { 0 },
        hdr_len: 66,
        gso_size: if gso { MSS } else { 0 },
        csum_start: 34,
        csum_offset: 16,
    };
    (f, hdr)
}

/// A 64 KiB TCPv4 super-frame (IP total length 65535) cut at MSS 1448: 46 segments,
/// written one after another into one scratch buffer.
#[divan::bench]
fn segment_tcpv4_64k(bencher: Bencher) {
    let (frame, hdr) = tcpv4_frame(65535 - 52, true);
    let mut scratch = vec![0u8; 2048];
    let n = segment(&frame, &hdr, &mut scratch, |_| {}).unwrap();
    assert_eq!(n, 46);
    bencher
        .counter(BytesCount::new(frame.len()))
        .bench_local(|| {
            segment(black_box(&frame), &hdr, &mut scratch, |s| {
                black_box(s);
            })
        });
}

/// The same, as a data plane with a buffer pool does it: one buffer per segment.
#[divan::bench]
fn segment_tcpv4_64k_into_pool(bencher: Bencher) {
    let (frame, hdr) = tcpv4_frame(65535 - 52, true);
    let mut pool = vec![[0u8; 2048]; 46];
    bencher
        .counter(BytesCount::new(frame.len()))
        .bench_local(|| {
            let seg = Segmenter::new(black_box(&frame), &hdr).unwrap();
            for (i, buf) in pool.iter_mut().enumerate().take(seg.count()) {
                black_box(seg.write(i, buf).unwrap());
            }
        });
}

/// Completing the TCP checksum of a full-size 1514-byte frame in place.
#[divan::bench]
fn complete_checksum_1514(bencher: Bencher) {
    let (mut frame, hdr) = tcpv4_frame(1448, false);
    assert_eq!(frame.len(), 1514);
    bencher
        .counter(ItemsCount::new(1usize))
        .counter(BytesCount::new(frame.len()))
        .bench_local(|| {
            // Put the pseudo-header sum back (any value costs the same).
            frame[50..52].copy_from_slice(&[0x12, 0x34]);
            complete_checksum(black_box(&mut frame), &hdr).unwrap();
        });
}
