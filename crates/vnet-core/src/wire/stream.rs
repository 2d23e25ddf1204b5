//! The QEMU `-netdev stream` / `-netdev socket` framing: a 32-bit big-endian length, then
//! that many bytes of Ethernet frame (no FCS). passt, gvproxy and socket_vmnet speak it too.

/// QEMU refuses records longer than this (`NET_BUFSIZE`); so do we: a longer length
/// prefix means the byte stream is garbage and cannot be resynchronised.
pub const MAX_RECORD: usize = 4 + 69632;

/// Length of the record header.
pub const PREFIX_LEN: usize = 4;

/// The length prefix announces more than any peer may send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("stream length prefix {0} exceeds the 69632-byte limit: peer is not speaking the QEMU stream protocol")]
pub struct RecordTooLong(pub u32);

/// One complete record at the front of a receive buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    /// Bytes of the buffer the record occupies (prefix + frame).
    pub consumed: usize,
    /// Length of the frame that follows the prefix (may be a runt or oversize; the
    /// switch judges that).
    pub frame_len: usize,
}

/// Looks for a complete record at the front of `buf`.
///
/// `Ok(None)` means more bytes are needed. The frame is `buf[PREFIX_LEN..record.consumed]`.
pub fn next_record(buf: &[u8]) -> Result<Option<Record>, RecordTooLong> {
    let Some(prefix) = buf.first_chunk::<PREFIX_LEN>() else {
        return Ok(None);
    };
    let len = u32::from_be_bytes(*prefix);
    if len as usize > MAX_RECORD - PREFIX_LEN {
        return Err(RecordTooLong(len));
    }
    let consumed = PREFIX_LEN + len as usize;
    Ok((buf.len() >= consumed).then_some(Record {
        consumed,
        frame_len: len as usize,
    }))
}

/// The prefix to send before a frame of `len` bytes.
pub fn prefix(len: usize) -> [u8; PREFIX_LEN] {
    (len as u32).to_be_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn waits_for_whole_record() {
        let mut buf = prefix(3).to_vec();
        assert_eq!(next_record(&buf[..2]), Ok(None));
        assert_eq!(next_record(&buf), Ok(None));
        buf.extend_from_slice(b"abcde");
        assert_eq!(
            next_record(&buf),
            Ok(Some(Record {
                consumed: 7,
                frame_len: 3
            }))
        );
    }

    #[test]
    fn zero_length_is_a_record_and_huge_is_an_error() {
        assert_eq!(
            next_record(&[0, 0, 0, 0]),
            Ok(Some(Record {
                consumed: 4,
                frame_len: 0
            }))
        );
        assert_eq!(next_record(&[0xff; 4]), Err(RecordTooLong(u32::MAX)));
        assert!(next_record(&prefix(69632)).unwrap().is_none());
        assert!(next_record(&prefix(69633)).is_err());
    }

    proptest! {
        #[test]
        fn splits_any_concatenation(frames in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..200), 0..8)) {
            let mut wire = Vec::new();
            for f in &frames {
                wire.extend_from_slice(&prefix(f.len()));
                wire.extend_from_slice(f);
            }
            let mut rest = &wire[..];
            let mut out = Vec::new();
            while let Some(r) = next_record(rest).unwrap() {
                out.push(rest[PREFIX_LEN..r.consumed].to_vec());
                rest = &rest[r.consumed..];
            }
            prop_assert!(rest.is_empty());
            prop_assert_eq!(out, frames);
        }

        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..16)) {
            let _ = next_record(&bytes);
        }
    }
}
