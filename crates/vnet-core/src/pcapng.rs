//! pcapng, written: the blocks a live capture of a vnet needs, little-endian, appended
//! to a byte buffer. Sans-I/O: whoever holds the buffer sends it.
//!
//! One section header, then an interface description per port (named after it,
//! timestamps in nanoseconds), enhanced packet blocks with the frame's direction on
//! that port, and interface statistics with the frames the capture dropped. Interface
//! blocks may come at any point before their first packet, so a port that appears
//! while a capture runs gets one then. Format: draft-ietf-opsawg-pcapng.

/// LINKTYPE_ETHERNET.
const LINKTYPE_ETHERNET: u16 = 1;

const SHB: u32 = 0x0A0D_0D0A;
const IDB: u32 = 1;
const ISB: u32 = 5;
const EPB: u32 = 6;

const OPT_END: u16 = 0;
const IF_NAME: u16 = 2;
const IF_DESCRIPTION: u16 = 3;
const IF_TSRESOL: u16 = 9;
const EPB_FLAGS: u16 = 2;
const ISB_IFRECV: u16 = 4;
const ISB_IFDROP: u16 = 5;

/// Which way a frame crossed its port, as `epb_flags` says it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Received from the port's client (into the vnet).
    Inbound,
    /// Sent to the port's client (out of the vnet).
    Outbound,
}

impl Direction {
    fn flags(self) -> u32 {
        match self {
            Direction::Inbound => 1,
            Direction::Outbound => 2,
        }
    }
}

/// Appends the section header block that starts every capture.
pub fn section_header(out: &mut Vec<u8>) {
    block(out, SHB, |b| {
        b.extend_from_slice(&0x1A2B_3C4Du32.to_le_bytes());
        b.extend_from_slice(&1u16.to_le_bytes());
        b.extend_from_slice(&0u16.to_le_bytes());
        // Section length: unknown (the capture is a stream).
        b.extend_from_slice(&(-1i64).to_le_bytes());
        b.extend_from_slice(&end_of_options());
    });
}

/// Appends an Ethernet interface description: `name` and `description` as the port's,
/// frames cut at `snaplen`, timestamps in nanoseconds.
pub fn interface(out: &mut Vec<u8>, name: &str, description: &str, snaplen: u32) {
    block(out, IDB, |b| {
        b.extend_from_slice(&LINKTYPE_ETHERNET.to_le_bytes());
        b.extend_from_slice(&0u16.to_le_bytes());
        b.extend_from_slice(&snaplen.to_le_bytes());
        option(b, IF_NAME, name.as_bytes());
        if !description.is_empty() {
            option(b, IF_DESCRIPTION, description.as_bytes());
        }
        option(b, IF_TSRESOL, &[9]);
        b.extend_from_slice(&end_of_options());
    });
}

/// Appends one frame seen on interface `iface` at `ts_ns` (ns since the Unix epoch):
/// `data` is what was kept of a frame `orig_len` bytes long.
pub fn packet(
    out: &mut Vec<u8>,
    iface: u32,
    ts_ns: u64,
    data: &[u8],
    orig_len: u32,
    direction: Direction,
) {
    block(out, EPB, |b| {
        b.extend_from_slice(&iface.to_le_bytes());
        timestamp(b, ts_ns);
        b.extend_from_slice(&(data.len() as u32).to_le_bytes());
        b.extend_from_slice(&orig_len.to_le_bytes());
        b.extend_from_slice(data);
        pad(b);
        option(b, EPB_FLAGS, &direction.flags().to_le_bytes());
        b.extend_from_slice(&end_of_options());
    });
}

/// Appends interface `iface`'s statistics at `ts_ns`: frames the capture saw on it
/// (`received`, dropped ones included) and those it `dropped`.
pub fn statistics(out: &mut Vec<u8>, iface: u32, ts_ns: u64, received: u64, dropped: u64) {
    block(out, ISB, |b| {
        b.extend_from_slice(&iface.to_le_bytes());
        timestamp(b, ts_ns);
        option(b, ISB_IFRECV, &received.to_le_bytes());
        option(b, ISB_IFDROP, &dropped.to_le_bytes());
        b.extend_from_slice(&end_of_options());
    });
}

/// Frames a block: type, total length, `body`, total length again.
fn block(out: &mut Vec<u8>, kind: u32, body: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend_from_slice(&kind.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    body(out);
    let len = (out.len() - start + 4) as u32;
    out[start + 4..start + 8].copy_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&len.to_le_bytes());
}

fn option(b: &mut Vec<u8>, code: u16, value: &[u8]) {
    b.extend_from_slice(&code.to_le_bytes());
    b.extend_from_slice(&(value.len() as u16).to_le_bytes());
    b.extend_from_slice(value);
    pad(b);
}

fn end_of_options() -> [u8; 4] {
    let mut end = [0; 4];
    end[..2].copy_from_slice(&OPT_END.to_le_bytes());
    end
}

fn timestamp(b: &mut Vec<u8>, ts_ns: u64) {
    b.extend_from_slice(&((ts_ns >> 32) as u32).to_le_bytes());
    b.extend_from_slice(&(ts_ns as u32).to_le_bytes());
}

/// Pads to a multiple of 4 bytes, as every block body and option value is.
fn pad(b: &mut Vec<u8>) {
    b.resize(b.len().next_multiple_of(4), 0);
}

#[cfg(test)]
mod tests {
    use super::*;
    use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketOption;
    use pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionOption;
    use pcap_file::pcapng::blocks::interface_statistics::InterfaceStatisticsOption;
    use pcap_file::pcapng::{Block, PcapNgReader};

    #[test]
    fn a_capture_reads_back_with_names_directions_nanoseconds_and_drops() {
        let mut out = Vec::new();
        section_header(&mut out);
        interface(&mut out, "port1", "tap vm-a", 96);
        interface(&mut out, "port2", "", 96);
        // Odd lengths exercise the padding.
        packet(
            &mut out,
            0,
            1_700_000_000_123_456_789,
            &[0xaa; 61],
            98,
            Direction::Inbound,
        );
        packet(
            &mut out,
            1,
            1_700_000_000_123_456_790,
            &[0xbb; 3],
            3,
            Direction::Outbound,
        );
        statistics(&mut out, 1, 1_700_000_001_000_000_000, 12, 7);

        let mut reader = PcapNgReader::new(&out[..]).expect("a section header");
        let mut blocks = Vec::new();
        while let Some(block) = reader.next_block() {
            blocks.push(block.expect("well-formed").into_owned());
        }
        assert_eq!(blocks.len(), 5, "{blocks:?}");
        let Block::InterfaceDescription(idb) = &blocks[0] else {
            panic!("{:?}", blocks[0]);
        };
        assert_eq!(idb.snaplen, 96);
        assert!(idb
            .options
            .contains(&InterfaceDescriptionOption::IfName("port1".into())));
        assert!(idb
            .options
            .contains(&InterfaceDescriptionOption::IfDescription(
                "tap vm-a".into()
            )));
        assert!(idb
            .options
            .contains(&InterfaceDescriptionOption::IfTsResol(9)));
        let Block::EnhancedPacket(first) = &blocks[2] else {
            panic!("{:?}", blocks[2]);
        };
        assert_eq!(first.interface_id, 0);
        assert_eq!(first.original_len, 98);
        assert_eq!(&first.data[..], &[0xaa; 61][..]);
        assert!(first.options.contains(&EnhancedPacketOption::Flags(1)));
        let Block::EnhancedPacket(second) = &blocks[3] else {
            panic!("{:?}", blocks[3]);
        };
        assert_eq!(second.interface_id, 1);
        assert_eq!(&second.data[..], &[0xbb; 3][..]);
        assert!(second.options.contains(&EnhancedPacketOption::Flags(2)));
        let Block::InterfaceStatistics(isb) = &blocks[4] else {
            panic!("{:?}", blocks[4]);
        };
        assert_eq!(isb.interface_id, 1);
        assert!(isb
            .options
            .contains(&InterfaceStatisticsOption::IsbIfRecv(12)));
        assert!(isb
            .options
            .contains(&InterfaceStatisticsOption::IsbIfDrop(7)));
    }

    #[test]
    fn timestamps_split_into_high_and_low_words() {
        let mut out = Vec::new();
        packet(
            &mut out,
            0,
            0x0000_0001_0000_0002,
            &[],
            0,
            Direction::Inbound,
        );
        assert_eq!(&out[12..20], &[1, 0, 0, 0, 2, 0, 0, 0]);
    }
}
