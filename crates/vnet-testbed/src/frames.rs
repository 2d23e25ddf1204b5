//! Hand-made Ethernet frames for tests that talk to a vnet directly (its API,
//! VDE, dgram and classic-device ports): addresses from text, test frames of the
//! local experimental EtherType 0x88b5, and ARP.

use vnet_control::MacAddr;

/// The IEEE's "local experimental" EtherType: frames no stack answers.
pub const EXPERIMENTAL: [u8; 2] = [0x88, 0xb5];

/// A MAC address written `02:00:00:00:00:01`.
///
/// # Panics
/// If `text` is not one.
pub fn mac(text: &str) -> [u8; 6] {
    text.parse::<MacAddr>()
        .unwrap_or_else(|e| panic!("{text:?} is not a MAC: {e}"))
        .0
}

/// An IPv4 address written `10.0.0.1`.
///
/// # Panics
/// If `text` is not one.
pub fn ip(text: &str) -> [u8; 4] {
    let ip: std::net::Ipv4Addr = text
        .parse()
        .unwrap_or_else(|e| panic!("{text:?} is not an IPv4 address: {e}"));
    ip.octets()
}

/// A frame of `len` bytes (at least 14) from `src` to `dst` of EtherType
/// [`EXPERIMENTAL`], its payload counting up from 0, so a truncation shows.
pub fn frame(dst: [u8; 6], src: [u8; 6], len: usize) -> Vec<u8> {
    let mut f = vec![0u8; len.max(14)];
    f[..6].copy_from_slice(&dst);
    f[6..12].copy_from_slice(&src);
    f[12..14].copy_from_slice(&EXPERIMENTAL);
    for (i, b) in f[14..].iter_mut().enumerate() {
        *b = i as u8;
    }
    f
}

/// A minimal (60-byte) broadcast from `src` of EtherType [`EXPERIMENTAL`], zeros after.
pub fn broadcast(src: [u8; 6]) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&src);
    f.extend_from_slice(&EXPERIMENTAL);
    f.resize(60, 0);
    f
}

/// The fields of an Ethernet/IPv4 ARP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arp {
    /// 1: request, 2: reply.
    pub op: u16,
    /// Sender MAC.
    pub sha: [u8; 6],
    /// Sender IP.
    pub spa: [u8; 4],
    /// Target MAC.
    pub tha: [u8; 6],
    /// Target IP.
    pub tpa: [u8; 4],
}

impl Arp {
    /// The ARP packet in Ethernet frame `f`, if it carries one.
    pub fn parse(f: &[u8]) -> Option<Arp> {
        if f.len() < 42 || f[12..14] != [0x08, 0x06] || f[14..20] != [0, 1, 0x08, 0, 6, 4] {
            return None;
        }
        Some(Arp {
            op: u16::from_be_bytes([f[20], f[21]]),
            sha: f[22..28].try_into().ok()?,
            spa: f[28..32].try_into().ok()?,
            tha: f[32..38].try_into().ok()?,
            tpa: f[38..42].try_into().ok()?,
        })
    }

    /// The packet in a minimal (60-byte) Ethernet frame to `dst` from `sha`.
    pub fn frame(&self, dst: [u8; 6]) -> Vec<u8> {
        let mut f = Vec::with_capacity(60);
        f.extend_from_slice(&dst);
        f.extend_from_slice(&self.sha);
        f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4]);
        f.extend_from_slice(&self.op.to_be_bytes());
        f.extend_from_slice(&self.sha);
        f.extend_from_slice(&self.spa);
        f.extend_from_slice(&self.tha);
        f.extend_from_slice(&self.tpa);
        f.resize(60, 0);
        f
    }
}

/// "Who has `target`? Tell `src_ip`", broadcast from `src_mac`.
pub fn arp_request(src_mac: [u8; 6], src_ip: [u8; 4], target: [u8; 4]) -> Vec<u8> {
    Arp {
        op: 1,
        sha: src_mac,
        spa: src_ip,
        tha: [0; 6],
        tpa: target,
    }
    .frame([0xff; 6])
}

/// "`sender_ip` is at `sender_mac`", to `target_mac`/`target_ip`.
pub fn arp_reply(
    sender_mac: [u8; 6],
    sender_ip: [u8; 4],
    target_mac: [u8; 6],
    target_ip: [u8; 4],
) -> Vec<u8> {
    Arp {
        op: 2,
        sha: sender_mac,
        spa: sender_ip,
        tha: target_mac,
        tpa: target_ip,
    }
    .frame(target_mac)
}

/// Whether `f` is an ARP reply to `to` saying where `ip` is.
pub fn is_arp_reply(f: &[u8], to: [u8; 6], ip: [u8; 4]) -> bool {
    f.get(..6) == Some(&to[..]) && Arp::parse(f).is_some_and(|a| a.op == 2 && a.spa == ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arp_round_trips_and_frames_are_well_formed() {
        let me = mac("02:00:00:00:00:01");
        let req = arp_request(me, ip("10.0.0.1"), ip("10.0.0.2"));
        assert_eq!(req.len(), 60);
        let a = Arp::parse(&req).unwrap();
        assert_eq!(
            (a.op, a.sha, a.spa, a.tpa),
            (1, me, [10, 0, 0, 1], [10, 0, 0, 2])
        );
        let them = mac("02:00:00:00:00:02");
        let reply = arp_reply(them, ip("10.0.0.2"), me, ip("10.0.0.1"));
        assert!(is_arp_reply(&reply, me, ip("10.0.0.2")));
        assert!(!is_arp_reply(&reply, them, ip("10.0.0.2")));
        assert!(!is_arp_reply(&req, [0xff; 6], ip("10.0.0.1")));
        assert_eq!(Arp::parse(&broadcast(me)), None);
        let f = frame([0xff; 6], me, 20);
        assert_eq!((f.len(), &f[12..14], f[19]), (20, &EXPERIMENTAL[..], 5));
    }
}
