#![no_main]
//! vnet API messages, both directions.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = vnet_core::wire::seqpacket::decode_client(data);
    let _ = vnet_core::wire::seqpacket::decode_vnet(data);
});
