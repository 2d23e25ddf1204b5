//! Adding, rewriting and stripping 802.1Q tags in place.
//!
//! Frames live in buffers with headroom in front, so inserting a tag moves the 12 address
//! bytes back by four instead of moving the payload.

use crate::wire::ethernet::{EtherType, VLAN_TAG_LEN};
use crate::wire::VlanTag;

use super::Tagging;

/// Headroom a buffer needs in front of a frame so that any tag can be inserted.
pub const RETAG_HEADROOM: usize = VLAN_TAG_LEN;

/// Makes the frame at `buf[*start..*start + *len]` carry the tag `want` asks for.
///
/// The frame must already have passed [`crate::wire::Frame::parse`]. Returns `false` (and
/// changes nothing) only if a tag must be inserted and `*start < RETAG_HEADROOM`.
pub fn retag(buf: &mut [u8], start: &mut usize, len: &mut usize, want: Tagging) -> bool {
    let frame = &buf[*start..*start + *len];
    let has_tag = u16::from_be_bytes([frame[12], frame[13]]) == EtherType::VLAN;
    match (has_tag, want) {
        (false, Tagging::Untagged) => {}
        (true, Tagging::Untagged) => {
            buf.copy_within(*start..*start + 12, *start + VLAN_TAG_LEN);
            *start += VLAN_TAG_LEN;
            *len -= VLAN_TAG_LEN;
        }
        (true, Tagging::Tagged(vid)) => {
            let at = *start + 14;
            let old = VlanTag::from_tci(u16::from_be_bytes([buf[at], buf[at + 1]]));
            let tci = VlanTag { vid, ..old }.tci();
            buf[at..at + 2].copy_from_slice(&tci.to_be_bytes());
        }
        (false, Tagging::Tagged(vid)) => {
            if *start < RETAG_HEADROOM {
                return false;
            }
            buf.copy_within(*start..*start + 12, *start - VLAN_TAG_LEN);
            *start -= VLAN_TAG_LEN;
            *len += VLAN_TAG_LEN;
            let at = *start + 12;
            buf[at..at + 2].copy_from_slice(&EtherType::VLAN.to_be_bytes());
            buf[at + 2..at + 4].copy_from_slice(&(vid & 0x0fff).to_be_bytes());
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Frame;
    use proptest::prelude::*;

    fn placed(frame: &[u8]) -> (Vec<u8>, usize, usize) {
        let mut buf = vec![0u8; RETAG_HEADROOM];
        buf.extend_from_slice(frame);
        (buf, RETAG_HEADROOM, frame.len())
    }

    proptest! {
        /// Tagging then untagging gives back the original frame; the tag reads back.
        #[test]
        fn tag_then_strip_round_trips(
            body in proptest::collection::vec(any::<u8>(), 14..100),
            vid in 1u16..4095,
        ) {
            let mut frame = body.clone();
            frame[12..14].copy_from_slice(&EtherType::IPV4.to_be_bytes());
            let (mut buf, mut start, mut len) = placed(&frame);
            prop_assert!(retag(&mut buf, &mut start, &mut len, Tagging::Tagged(vid)));
            let tagged = Frame::parse(&buf[start..start + len]).unwrap();
            prop_assert_eq!(tagged.vlan_tag().unwrap().vid, vid);
            prop_assert_eq!(tagged.ethertype(), EtherType::IPV4);
            prop_assert_eq!(tagged.payload(), &frame[14..]);
            prop_assert!(retag(&mut buf, &mut start, &mut len, Tagging::Tagged(7)));
            prop_assert_eq!(Frame::parse(&buf[start..start + len]).unwrap().vlan_tag().unwrap().vid, 7);
            prop_assert!(retag(&mut buf, &mut start, &mut len, Tagging::Untagged));
            prop_assert_eq!(&buf[start..start + len], &frame[..]);
        }
    }

    #[test]
    fn insertion_needs_headroom() {
        let mut frame = vec![0u8; 20];
        let (mut start, mut len) = (0, 20);
        assert!(!retag(&mut frame, &mut start, &mut len, Tagging::Tagged(5)));
        assert_eq!((start, len), (0, 20));
    }
}
