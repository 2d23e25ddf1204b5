#![no_main]
//! Software GRO: frames cut from the input (each behind a 2-byte length) go through a
//! `Coalescer` as a tunnel's reader gives them. It must never panic, and every
//! super-frame it finishes must cut (with the `Segmenter`) into as many segments as it
//! merged, carrying the same payload bytes.
use libfuzzer_sys::fuzz_target;
use vnet_core::wire::gro::Coalescer;
use vnet_core::wire::offload::Segmenter;

fuzz_target!(|data: &[u8]| {
    let mut frames = Vec::new();
    let mut rest = data;
    while rest.len() >= 2 {
        let len = usize::from(u16::from_be_bytes([rest[0], rest[1]])).min(rest.len() - 2);
        frames.push(&rest[2..2 + len]);
        rest = &rest[2 + len..];
    }
    let mut gro = Coalescer::default();
    let mut merged: Vec<&[u8]> = Vec::new();
    let check = |gro: &mut Coalescer, merged: &mut Vec<&[u8]>| {
        let count = gro.segments();
        if let Some(hdr) = gro.finish() {
            let seg = Segmenter::new(gro.super_frame(), &hdr).expect("a super-frame cuts");
            assert_eq!(seg.count(), count);
            let payload = |f: &[u8]| f.len() - usize::from(hdr.hdr_len);
            let total: usize = merged.iter().map(|f| payload(f)).sum();
            assert_eq!(payload(gro.super_frame()), total);
        }
        merged.clear();
    };
    for f in frames {
        if gro.append(f) {
            merged.push(f);
            continue;
        }
        check(&mut gro, &mut merged);
        if gro.start(f, 1514) {
            merged.push(f);
        }
    }
    check(&mut gro, &mut merged);
});
