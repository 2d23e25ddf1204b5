#![no_main]
//! VDE control requests (v1 and v3) and socket addresses.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = vnet_core::wire::vde::parse_request(data);
    let _ = vnet_core::wire::vde::decode_sockaddr_un(data);
});
