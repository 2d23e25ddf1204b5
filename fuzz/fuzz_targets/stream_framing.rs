#![no_main]
//! The QEMU stream length framing.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    while let Ok(Some(r)) = vnet_core::wire::stream::next_record(rest) {
        rest = &rest[r.consumed..];
    }
});
