//! Reading UDP datagrams out of capture files: pcap and pcapng (pcap-parser, rusticata's streaming
//! reader) and the link, IP and UDP headers inside each frame (etherparse).
//!
//! Link types: Ethernet (with VLAN tags), Linux cooked capture v1 and v2 (tcpdump 4.99 writes SLL2
//! for `-i any`), raw IPv4/IPv6, and BSD loopback/null. Frames that are not UDP, IP fragments, and
//! frames cut short by the capture's snap length are skipped and counted by reason. A file that
//! ends inside a block or holds a block that cannot be parsed is an error naming its byte offset;
//! what was read before it stands.

use std::fmt;
use std::fs::File;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use etherparse::{EtherType, NetSlice, SlicedPacket, TransportSlice};
use pcap_parser::{Block, Linktype, PcapBlockOwned, PcapError};

/// Largest block the reader accepts (a pcapng block may be up to 4 GiB by its header; no real
/// capture of UDP has one over a few hundred KiB).
const MAX_BLOCK: usize = 16 << 20;

/// One UDP datagram of a capture.
#[derive(Debug, Clone, Copy)]
pub struct Udp<'a> {
    /// Capture time, ns since the Unix epoch (`None`: pcapng simple packet blocks have none).
    pub ts_nanos: Option<u64>,
    /// Source address and port.
    pub src: SocketAddr,
    /// Destination address and port.
    pub dst: SocketAddr,
    /// The UDP payload.
    pub payload: &'a [u8],
}

/// Why a frame was skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// Not UDP over IPv4/IPv6 (TCP, ARP, ICMP, ...).
    NotUdp,
    /// An IP fragment: the datagram is not whole in this frame.
    Fragment,
    /// Cut short by the capture's snap length.
    Truncated,
    /// Headers that do not parse.
    Malformed,
    /// A link type this reader does not decode.
    UnsupportedLink,
}

impl Skip {
    /// Every reason, in report order.
    pub const ALL: [Self; 5] = [
        Self::NotUdp,
        Self::Fragment,
        Self::Truncated,
        Self::Malformed,
        Self::UnsupportedLink,
    ];

    /// The reason's name in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotUdp => "not_udp",
            Self::Fragment => "fragment",
            Self::Truncated => "truncated",
            Self::Malformed => "malformed",
            Self::UnsupportedLink => "unsupported_link",
        }
    }
}

/// A capture file that cannot be read on.
#[derive(Debug)]
pub struct CaptureError {
    /// Byte offset in the file where reading stopped.
    pub offset: u64,
    /// Why.
    pub reason: String,
}

impl fmt::Display for CaptureError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at byte offset {}: {}", self.offset, self.reason)
    }
}

/// Decodes one frame of link type `link`.
pub fn decode(link: Linktype, frame: &[u8]) -> Result<(SocketAddr, SocketAddr, &[u8]), Skip> {
    let sliced = match link {
        Linktype::ETHERNET => SlicedPacket::from_ethernet(frame),
        Linktype::LINUX_SLL => SlicedPacket::from_linux_sll(frame),
        Linktype::LINUX_SLL2 => {
            // 20 bytes: protocol type (big-endian) first, then interface, ARPHRD, packet type and
            // the link-layer address.
            let proto = frame.get(..2).ok_or(Skip::Truncated)?;
            let rest = frame.get(20..).ok_or(Skip::Truncated)?;
            SlicedPacket::from_ether_type(EtherType(u16::from_be_bytes([proto[0], proto[1]])), rest)
        }
        Linktype::RAW | Linktype::IPV4 | Linktype::IPV6 => SlicedPacket::from_ip(frame),
        Linktype::NULL | Linktype::LOOP => {
            // The address family, in the capturing host's byte order (NULL) or big-endian (LOOP).
            let fam = frame.get(..4).ok_or(Skip::Truncated)?;
            let (le, be) = (
                u32::from_le_bytes([fam[0], fam[1], fam[2], fam[3]]),
                u32::from_be_bytes([fam[0], fam[1], fam[2], fam[3]]),
            );
            let ip = |f: u32| matches!(f, 2 | 24 | 28 | 30);
            if !ip(le) && !ip(be) {
                return Err(Skip::NotUdp);
            }
            SlicedPacket::from_ip(&frame[4..])
        }
        _ => return Err(Skip::UnsupportedLink),
    };
    let sliced = sliced.map_err(|e| match e {
        etherparse::err::packet::SliceError::Len(_) => Skip::Truncated,
        _ => Skip::Malformed,
    })?;
    let (src, dst, fragmented) = match &sliced.net {
        Some(NetSlice::Ipv4(v4)) => (
            IpAddr::V4(v4.header().source_addr()),
            IpAddr::V4(v4.header().destination_addr()),
            v4.is_payload_fragmented(),
        ),
        Some(NetSlice::Ipv6(v6)) => (
            IpAddr::V6(v6.header().source_addr()),
            IpAddr::V6(v6.header().destination_addr()),
            v6.is_payload_fragmented(),
        ),
        _ => return Err(Skip::NotUdp),
    };
    if fragmented {
        return Err(Skip::Fragment);
    }
    match sliced.transport {
        Some(TransportSlice::Udp(udp)) => Ok((
            SocketAddr::new(src, udp.source_port()),
            SocketAddr::new(dst, udp.destination_port()),
            udp.payload(),
        )),
        _ => Err(Skip::NotUdp),
    }
}

/// What reading a capture skipped, by reason ([`Skip::ALL`] order).
pub type Skipped = [u64; Skip::ALL.len()];

/// Calls `each` with every UDP datagram of the capture at `path`, in file order, counting skipped
/// frames into `skipped`. Stops at the first error of `each` (returned as the reason) or of the file.
pub fn for_each_udp(
    path: &Path,
    skipped: &mut Skipped,
    each: impl FnMut(Udp<'_>) -> Result<(), String>,
) -> Result<(), CaptureError> {
    let file = File::open(path).map_err(|e| CaptureError {
        offset: 0,
        reason: e.to_string(),
    })?;
    for_each_udp_in(file, skipped, each)
}

/// [`for_each_udp`] over any reader (the fuzz target reads from memory).
pub fn for_each_udp_in(
    input: impl std::io::Read + Send,
    skipped: &mut Skipped,
    mut each: impl FnMut(Udp<'_>) -> Result<(), String>,
) -> Result<(), CaptureError> {
    let at = |offset: u64, reason: String| CaptureError { offset, reason };
    let mut reader = pcap_parser::create_reader(64 << 10, input)
        .map_err(|e| at(0, format!("not a pcap or pcapng file ({})", describe(&e))))?;
    // The legacy header's link type and time unit; pcapng interfaces' (link type, ticks per second).
    let mut legacy: Option<(Linktype, u64)> = None;
    let mut interfaces: Vec<(Linktype, u64, i64)> = Vec::new();
    let mut size: usize = 64 << 10;
    loop {
        let offset = reader.consumed() as u64;
        let skip = |s: Skip, skipped: &mut Skipped| skipped[s as usize] += 1;
        let used = match reader.next() {
            Ok((used, block)) => {
                let frame = match block {
                    PcapBlockOwned::LegacyHeader(h) => {
                        let unit = if h.is_nanosecond_precision() {
                            1
                        } else {
                            1_000
                        };
                        legacy = Some((h.network, unit));
                        None
                    }
                    PcapBlockOwned::Legacy(b) => {
                        let (link, unit) = legacy
                            .ok_or_else(|| at(offset, "a packet before the file header".into()))?;
                        let ts = u64::from(b.ts_sec) * 1_000_000_000 + u64::from(b.ts_usec) * unit;
                        Some((link, Some(ts), b.caplen < b.origlen, b.data))
                    }
                    PcapBlockOwned::NG(Block::SectionHeader(_)) => {
                        interfaces.clear();
                        None
                    }
                    PcapBlockOwned::NG(Block::InterfaceDescription(idb)) => {
                        let per_sec = idb.ts_resolution().unwrap_or(1_000_000).max(1);
                        interfaces.push((idb.linktype, per_sec, idb.ts_offset()));
                        None
                    }
                    PcapBlockOwned::NG(Block::EnhancedPacket(epb)) => {
                        let &(link, per_sec, ts_offset) =
                            interfaces.get(epb.if_id as usize).ok_or_else(|| {
                                at(
                                    offset,
                                    format!("a packet of undeclared interface {}", epb.if_id),
                                )
                            })?;
                        let ticks = (u64::from(epb.ts_high) << 32) | u64::from(epb.ts_low);
                        let secs = (ticks / per_sec).saturating_add_signed(ts_offset);
                        let frac =
                            u128::from(ticks % per_sec) * 1_000_000_000 / u128::from(per_sec);
                        let ts = secs
                            .saturating_mul(1_000_000_000)
                            .saturating_add(frac as u64);
                        let data = epb.data.get(..epb.caplen as usize).unwrap_or(epb.data);
                        Some((link, Some(ts), epb.caplen < epb.origlen, data))
                    }
                    PcapBlockOwned::NG(Block::SimplePacket(spb)) => {
                        let &(link, _, _) = interfaces
                            .first()
                            .ok_or_else(|| at(offset, "a packet before any interface".into()))?;
                        Some((
                            link,
                            None,
                            (spb.data.len() as u64) < u64::from(spb.origlen),
                            spb.data,
                        ))
                    }
                    PcapBlockOwned::NG(_) => None,
                };
                if let Some((link, ts, cut, data)) = frame {
                    if cut {
                        skip(Skip::Truncated, skipped);
                    } else {
                        match decode(link, data) {
                            Ok((src, dst, payload)) => each(Udp {
                                ts_nanos: ts,
                                src,
                                dst,
                                payload,
                            })
                            .map_err(|e| at(offset, e))?,
                            Err(s) => skip(s, skipped),
                        }
                    }
                }
                used
            }
            Err(PcapError::Eof) => return Ok(()),
            Err(e @ (PcapError::Incomplete(_) | PcapError::BufferTooSmall)) => {
                let (incomplete, needed) = match e {
                    PcapError::Incomplete(n) => (true, n),
                    _ => (false, 0),
                };
                if reader.reader_exhausted() && incomplete {
                    return Err(at(
                        offset,
                        "the file ends inside a block (truncated capture)".into(),
                    ));
                }
                let before = reader.data().len();
                reader.refill().map_err(|e| at(offset, describe(&e)))?;
                if reader.data().len() == before {
                    // The block does not fit in the buffer: grow it, within reason.
                    size = size.saturating_mul(2).max(needed.saturating_add(before));
                    if size > MAX_BLOCK || !reader.grow(size) {
                        return Err(at(
                            offset,
                            format!(
                                "a block larger than {} MiB (a corrupt length?)",
                                MAX_BLOCK >> 20
                            ),
                        ));
                    }
                    reader.refill().map_err(|e| at(offset, describe(&e)))?;
                }
                continue;
            }
            Err(e) => return Err(at(offset, describe(&e))),
        };
        if used == 0 {
            return Err(at(offset, "a block of length 0 (corrupt capture)".into()));
        }
        reader.consume(used);
    }
}

/// A reader error in a few words: never the bytes it was looking at (pcap-parser's own messages
/// include them).
fn describe<I>(e: &PcapError<I>) -> String {
    match e {
        PcapError::Eof | PcapError::UnexpectedEof => {
            "the file ends early (truncated capture)".into()
        }
        PcapError::Incomplete(_) => "the file ends inside a block (truncated capture)".into(),
        PcapError::BufferTooSmall => "a block too large to read".into(),
        PcapError::ReadError => "the file could not be read".into(),
        PcapError::HeaderNotRecognized => "no pcap or pcapng header".into(),
        PcapError::NomError(_, kind) | PcapError::OwnedNomError(_, kind) => {
            format!("a corrupt block ({})", kind.description())
        }
    }
}
