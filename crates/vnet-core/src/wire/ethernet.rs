//! Ethernet II frames with an optional 802.1Q tag.
//!
//! Layout (no FCS, as every port backend delivers frames):
//!
//! ```text
//! 0      6      12          14 (untagged)
//! | dst  | src  | ethertype | payload ...
//!                12     14    16        18 (tagged)
//! | dst  | src  | 0x8100 | TCI | ethertype | payload ...
//! ```
//!
//! Only the outermost tag is interpreted: an 802.1ad (0x88a8) outer tag is carried as
//! payload, which is what an access port must do with QinQ.

use std::fmt;
use std::ops::Range;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

const DST: Range<usize> = 0..6;
const SRC: Range<usize> = 6..12;
const TYPE: Range<usize> = 12..14;
const TCI: Range<usize> = 14..16;
const INNER_TYPE: Range<usize> = 16..18;

/// Length of an untagged Ethernet header.
pub const HEADER_LEN: usize = 14;
/// Length of one 802.1Q tag.
pub const VLAN_TAG_LEN: usize = 4;

/// A 48-bit IEEE MAC address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    pub const BROADCAST: MacAddr = MacAddr([0xff; 6]);

    /// Group addresses (broadcast and multicast) have the I/G bit set.
    pub fn is_multicast(&self) -> bool {
        self.0[0] & 1 == 1
    }

    pub fn is_broadcast(&self) -> bool {
        *self == Self::BROADCAST
    }

    /// A unicast address that is not all zeros: the only kind a switch may learn.
    pub fn is_learnable(&self) -> bool {
        !self.is_multicast() && self.0 != [0; 6]
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The text was not six colon- or dash-separated hex octets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid MAC address {0:?}: expected six hex octets like 52:54:00:12:34:56")]
pub struct ParseMacError(String);

impl FromStr for MacAddr {
    type Err = ParseMacError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseMacError(s.to_string());
        let mut out = [0u8; 6];
        let mut parts = s.split([':', '-']);
        for byte in &mut out {
            let part = parts.next().ok_or_else(err)?;
            if part.is_empty() || part.len() > 2 {
                return Err(err());
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| err())?;
        }
        if parts.next().is_some() {
            return Err(err());
        }
        Ok(MacAddr(out))
    }
}

impl Serialize for MacAddr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MacAddr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// EtherType values vnet interprets.
pub struct EtherType;

impl EtherType {
    pub const IPV4: u16 = 0x0800;
    pub const ARP: u16 = 0x0806;
    pub const VLAN: u16 = 0x8100;
    pub const QINQ: u16 = 0x88a8;
    pub const IPV6: u16 = 0x86dd;
}

/// An 802.1Q tag control information word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VlanTag {
    /// Priority code point (0–7).
    pub pcp: u8,
    /// Drop eligible indicator.
    pub dei: bool,
    /// VLAN identifier (0–4095; 0 means priority-tagged, 4095 is reserved).
    pub vid: u16,
}

impl VlanTag {
    pub fn from_tci(tci: u16) -> Self {
        VlanTag {
            pcp: (tci >> 13) as u8,
            dei: tci & 0x1000 != 0,
            vid: tci & 0x0fff,
        }
    }

    pub fn tci(&self) -> u16 {
        (u16::from(self.pcp & 7) << 13) | (u16::from(self.dei) << 12) | (self.vid & 0x0fff)
    }
}

/// Why bytes are not a frame the switch can forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("runt frame: {0} bytes, an Ethernet header needs 14")]
    Runt(usize),
    #[error("truncated 802.1Q tag: {0} bytes, a tagged header needs 18")]
    TruncatedTag(usize),
}

/// A checked, read-only view of an Ethernet frame's header fields.
#[derive(Debug, Clone, Copy)]
pub struct Frame<'a> {
    bytes: &'a [u8],
}

impl<'a> Frame<'a> {
    /// Checks that `bytes` holds a complete (possibly tagged) Ethernet header.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, FrameError> {
        if bytes.len() < HEADER_LEN {
            return Err(FrameError::Runt(bytes.len()));
        }
        let frame = Frame { bytes };
        if frame.outer_type() == EtherType::VLAN && bytes.len() < HEADER_LEN + VLAN_TAG_LEN {
            return Err(FrameError::TruncatedTag(bytes.len()));
        }
        Ok(frame)
    }

    pub fn dst(&self) -> MacAddr {
        MacAddr(self.bytes[DST].try_into().expect("checked length"))
    }

    pub fn src(&self) -> MacAddr {
        MacAddr(self.bytes[SRC].try_into().expect("checked length"))
    }

    fn outer_type(&self) -> u16 {
        u16::from_be_bytes([self.bytes[TYPE.start], self.bytes[TYPE.start + 1]])
    }

    /// The 802.1Q tag, if the frame carries one.
    pub fn vlan_tag(&self) -> Option<VlanTag> {
        (self.outer_type() == EtherType::VLAN).then(|| {
            VlanTag::from_tci(u16::from_be_bytes([
                self.bytes[TCI.start],
                self.bytes[TCI.start + 1],
            ]))
        })
    }

    /// The EtherType of the payload (after the tag, if any).
    pub fn ethertype(&self) -> u16 {
        if self.outer_type() == EtherType::VLAN {
            u16::from_be_bytes([
                self.bytes[INNER_TYPE.start],
                self.bytes[INNER_TYPE.start + 1],
            ])
        } else {
            self.outer_type()
        }
    }

    /// Offset of the payload from the start of the frame.
    pub fn header_len(&self) -> usize {
        if self.outer_type() == EtherType::VLAN {
            HEADER_LEN + VLAN_TAG_LEN
        } else {
            HEADER_LEN
        }
    }

    pub fn payload(&self) -> &'a [u8] {
        &self.bytes[self.header_len()..]
    }

    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }
}

/// Writes an untagged Ethernet header into the first 14 bytes of `buf`.
///
/// Panics if `buf` is shorter than 14 bytes (a caller bug, not input).
pub fn write_header(buf: &mut [u8], dst: MacAddr, src: MacAddr, ethertype: u16) {
    buf[DST].copy_from_slice(&dst.0);
    buf[SRC].copy_from_slice(&src.0);
    buf[TYPE].copy_from_slice(&ethertype.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// An ARP request from 52:54:00:00:00:01, broadcast, untagged.
    static ARP_BYTES: [u8; 42] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x52, 0x54, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00,
        0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, 0x52, 0x54, 0x00, 0x00, 0x00, 0x01, 10, 0, 0, 1,
        0, 0, 0, 0, 0, 0, 10, 0, 0, 2,
    ];

    /// The same request tagged VLAN 10, priority 5.
    static TAGGED_BYTES: [u8; 20] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x52, 0x54, 0x00, 0x00, 0x00, 0x01, 0x81, 0x00, 0xa0,
        0x0a, 0x08, 0x06, 0x00, 0x01,
    ];

    #[test]
    fn parses_untagged_arp() {
        let f = Frame::parse(&ARP_BYTES).unwrap();
        assert!(f.dst().is_broadcast());
        assert_eq!(f.src().to_string(), "52:54:00:00:00:01");
        assert_eq!(f.ethertype(), EtherType::ARP);
        assert_eq!(f.vlan_tag(), None);
        assert_eq!(f.payload().len(), 28);
    }

    #[test]
    fn parses_tag() {
        let f = Frame::parse(&TAGGED_BYTES).unwrap();
        let tag = f.vlan_tag().unwrap();
        assert_eq!((tag.pcp, tag.dei, tag.vid), (5, false, 10));
        assert_eq!(tag.tci(), 0xa00a);
        assert_eq!(f.ethertype(), EtherType::ARP);
        assert_eq!(f.header_len(), 18);
    }

    #[test]
    fn rejects_runts_and_truncated_tags() {
        assert_eq!(Frame::parse(&[]).unwrap_err(), FrameError::Runt(0));
        assert_eq!(
            Frame::parse(&ARP_BYTES[..13]).unwrap_err(),
            FrameError::Runt(13)
        );
        assert_eq!(
            Frame::parse(&TAGGED_BYTES[..16]).unwrap_err(),
            FrameError::TruncatedTag(16)
        );
    }

    #[test]
    fn qinq_outer_tag_is_payload() {
        let mut bytes = TAGGED_BYTES;
        bytes[12..14].copy_from_slice(&EtherType::QINQ.to_be_bytes());
        let f = Frame::parse(&bytes).unwrap();
        assert_eq!(f.vlan_tag(), None);
        assert_eq!(f.ethertype(), EtherType::QINQ);
    }

    #[test]
    fn mac_text_round_trip_and_errors() {
        let mac: MacAddr = "52:54:00:AB:cd:0f".parse().unwrap();
        assert_eq!(mac.to_string(), "52:54:00:ab:cd:0f");
        assert_eq!("52-54-00-ab-cd-0f".parse::<MacAddr>().unwrap(), mac);
        for bad in [
            "",
            "52:54:00:ab:cd",
            "52:54:00:ab:cd:0f:00",
            "g2:54:00:ab:cd:0f",
            "525:4:00:ab:cd:0f",
        ] {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad}");
        }
        assert!(MacAddr::BROADCAST.is_multicast());
        assert!(!MacAddr([0; 6]).is_learnable());
    }

    proptest! {
        #[test]
        fn parse_never_panics_and_lengths_add_up(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            match Frame::parse(&bytes) {
                Ok(f) => {
                    prop_assert!(bytes.len() >= f.header_len());
                    prop_assert_eq!(f.payload().len(), bytes.len() - f.header_len());
                    prop_assert_eq!(&f.dst().0[..], &bytes[0..6]);
                }
                Err(FrameError::Runt(n)) => prop_assert!(n < 14),
                Err(FrameError::TruncatedTag(n)) => prop_assert!((14..18).contains(&n)),
            }
        }

        #[test]
        fn tci_round_trips(tci in any::<u16>()) {
            prop_assert_eq!(VlanTag::from_tci(tci).tci(), tci);
        }

        #[test]
        fn mac_display_parses_back(b in any::<[u8; 6]>()) {
            prop_assert_eq!(MacAddr(b).to_string().parse::<MacAddr>().unwrap(), MacAddr(b));
        }
    }
}
