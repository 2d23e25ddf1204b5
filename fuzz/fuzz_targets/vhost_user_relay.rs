#![no_main]
//! The vhost-user relay between QEMU and the back-end: the input is what a front-end
//! writes on the socket. What comes out must be exactly its whole messages (12-byte
//! header, payload of the header's size, at most 4096 bytes), in order, except that
//! `SET_VRING_ENABLE` (18) before the first `SET_FEATURES` (2) waits until right after
//! it; the first message that is cut short or too big ends the relay.
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;

use libfuzzer_sys::fuzz_target;
use vnet_io::backend::vhost_user::relay;

const SET_FEATURES: u32 = 2;
const SET_VRING_ENABLE: u32 = 18;
const HEADER: usize = 12;
const MAX_PAYLOAD: usize = 4096;

/// The relay's contract, written out.
fn expected(mut input: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut held = Vec::new();
    let mut features_set = false;
    while input.len() >= HEADER {
        let request = u32::from_le_bytes(input[0..4].try_into().unwrap());
        let size = u32::from_le_bytes(input[8..12].try_into().unwrap()) as usize;
        if size > MAX_PAYLOAD || input.len() < HEADER + size {
            break;
        }
        let (msg, rest) = input.split_at(HEADER + size);
        input = rest;
        if !features_set && request == SET_VRING_ENABLE {
            held.extend_from_slice(msg);
            continue;
        }
        out.extend_from_slice(msg);
        if !features_set && request == SET_FEATURES {
            features_set = true;
            out.append(&mut held);
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    if data.len() > 64 * 1024 {
        return;
    }
    let (front_end, from) = UnixStream::pair().unwrap();
    let (to, back_end) = UnixStream::pair().unwrap();
    // The input (one write of at most 64 KiB) fits the socket's buffer, so it is all
    // written before the relay starts, which then cannot close its end under a write.
    // Its output is read while it runs: it writes message by message, and thousands of
    // small messages fill a socket's buffer (each takes ~1 KiB of it).
    (&front_end).write_all(data).unwrap();
    front_end.shutdown(std::net::Shutdown::Write).unwrap();
    let relay = std::thread::spawn(move || relay(from, to, true));
    let mut got = Vec::new();
    (&back_end).read_to_end(&mut got).unwrap();
    relay.join().unwrap();
    assert_eq!(got, expected(data));
});
