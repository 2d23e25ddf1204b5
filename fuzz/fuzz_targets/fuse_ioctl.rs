#![no_main]
//! The classic device's ioctls (`/dev/vmnetN` served over FUSE): the command and its
//! argument as a client passed them to the kernel. The first 4 bytes pick the command
//! (mostly one of the four real ones), the rest is the argument.
use libfuzzer_sys::fuzz_target;
use vnet_core::wire::seqpacket::{decode_client, ClientMessage, PortInfo};
use vnet_core::wire::MacAddr;
use vnet_fuse::ioctl;

const CMDS: [u32; 4] = [
    ioctl::SETMAC,
    ioctl::SETPROMISC,
    ioctl::GETPORTID,
    ioctl::GETVERSION,
];

fuzz_target!(|data: &[u8]| {
    let Some((head, input)) = data.split_first_chunk::<4>() else {
        return;
    };
    let raw = u32::from_ne_bytes(*head);
    // Mostly real commands (with any argument), sometimes anything at all.
    let cmd = if raw & 0x8000_0000 != 0 {
        raw
    } else {
        CMDS[raw as usize % 4]
    };
    match ioctl::decode(cmd, input) {
        Ok(req) => {
            assert!(CMDS.contains(&cmd), "unknown command {cmd:#x} decoded");
            // What goes to the vnet is a well-formed request that reads back the same.
            let bytes = req.encode();
            assert!(
                matches!(decode_client(&bytes), Ok(ClientMessage::Request(r)) if r == req),
                "{req:?} does not read back"
            );
            let info = PortInfo {
                api_version: 1,
                port_id: raw,
                mac: MacAddr([2, 0, 0, 0, 0, 1]),
                promiscuous: false,
                vlan: 1,
                max_frame: 1518,
            };
            let out = ioctl::output(cmd, Some(info)).expect("answered");
            // Never more than the command's size field says the caller has room for.
            assert!(out.len() <= ((cmd >> 16) & 0x3fff) as usize);
            let _ = ioctl::output(cmd, None);
        }
        Err(_) => {
            let expected = match cmd {
                ioctl::SETMAC => 6,
                ioctl::SETPROMISC => 4,
                _ => usize::MAX,
            };
            assert_ne!(
                input.len(),
                expected,
                "{cmd:#x} refused a well-sized argument"
            );
        }
    }
});
