//! The pcap encoding of a recording: the file header (nanosecond timestamps, link type RAW), one
//! record per datagram with synthetic IPv4 or IPv6 and UDP headers around it (etherparse), and the
//! in-memory writer the recorder thread encodes into before it decides what reaches the file.

use std::cell::RefCell;
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use pcap_file::{DataLink, TsResolution};

use crate::fanout::observe::Observed;

/// Snap length written in the file header: every UDP datagram, whole.
const SNAPLEN: u32 = 262_144;

/// A `Write` into a buffer the recorder thread also holds, so pcap-file's writer encodes into memory
/// and the thread decides when and how the bytes reach the file.
#[derive(Clone, Default)]
pub(crate) struct Shared(pub(crate) Rc<RefCell<Vec<u8>>>);

impl Write for Shared {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.borrow_mut().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The pcap header every file starts with.
pub(crate) fn pcap_header() -> PcapHeader {
    PcapHeader {
        snaplen: SNAPLEN,
        datalink: DataLink::RAW,
        ts_resolution: TsResolution::NanoSecond,
        ..PcapHeader::default()
    }
}

/// The file header's bytes.
pub(crate) fn header_bytes() -> Vec<u8> {
    let buf = Shared::default();
    let _ = PcapWriter::with_header(buf.clone(), pcap_header());
    buf.0.take()
}

/// Builds one datagram's packet into `packet`: synthetic IP and UDP headers around `payload`. IPv4
/// when both ends are IPv4 (or IPv4-mapped), IPv6 otherwise; an unnamed sender is port 0 of the
/// unspecified address.
pub(crate) fn build_packet(
    packet: &mut Vec<u8>,
    o: &Observed<'_>,
    payload: &[u8],
) -> Result<(), String> {
    let src = o
        .src
        .unwrap_or_else(|| SocketAddr::new(IpAddr::from([0u8; 4]), 0));
    let (sip, dip) = (src.ip().to_canonical(), o.dst.ip().to_canonical());
    let builder = match (sip, dip) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            etherparse::PacketBuilder::ipv4(s.octets(), d.octets(), 64)
        }
        (s, d) => {
            let v6 = |ip: IpAddr| match ip {
                IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
                IpAddr::V6(v6) => v6.octets(),
            };
            etherparse::PacketBuilder::ipv6(v6(s), v6(d), 64)
        }
    }
    .udp(src.port(), o.dst.port());
    packet.clear();
    builder
        .write(packet, payload)
        .map_err(|e| format!("encoding a {}-byte datagram: {e}", payload.len()))
}

/// Appends `packet` as one pcap record stamped with the kernel receive time (now, if the socket gave
/// none).
pub(crate) fn write_record(
    w: &mut PcapWriter<impl Write>,
    rx_nanos: u64,
    packet: &[u8],
) -> Result<(), String> {
    let ts = if rx_nanos == 0 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
    } else {
        Duration::from_nanos(rx_nanos)
    };
    w.write_packet(&PcapPacket::new(ts, packet.len() as u32, packet))
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Bytes of a pcap record header.
pub(crate) const RECORD_HEADER: u64 = 16;

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn addr(v6: bool, bits: u128, port: u16) -> SocketAddr {
        let ip = if v6 {
            IpAddr::from(bits.to_be_bytes())
        } else {
            IpAddr::from((bits as u32).to_be_bytes())
        };
        SocketAddr::new(ip, port)
    }

    proptest! {
        /// What the recorder writes, our own reader reads back: addresses, ports, payload and the
        /// receive time to the nanosecond, for both families and any payload.
        #[test]
        fn records_read_back_exactly(
            v6 in any::<bool>(), src in any::<u128>(), dst in any::<u128>(),
            sport in any::<u16>(), dport in any::<u16>(),
            payload in proptest::collection::vec(any::<u8>(), 0..3000),
            rx in 1u64..4_000_000_000_000_000_000,
        ) {
            let (s, d) = (addr(v6, src, sport), addr(v6, dst, dport));
            let o = Observed { src: Some(s), dst: d, rx_nanos: rx, payload: &payload };
            let mut w = PcapWriter::with_header(Vec::new(), pcap_header()).unwrap();
            let mut packet = Vec::new();
            build_packet(&mut packet, &o, &payload).unwrap();
            write_record(&mut w, rx, &packet).unwrap();
            let file = w.into_writer();
            let mut got = Vec::new();
            let mut skipped = Default::default();
            crate::replay::capture::for_each_udp_in(&file[..], &mut skipped, |u| {
                got.push((u.src, u.dst, u.ts_nanos, u.payload.to_vec()));
                Ok(())
            }).unwrap();
            // IPv4-mapped IPv6 addresses are written as IPv4 (canonical), as the kernel reports them.
            let canon = |a: SocketAddr| SocketAddr::new(a.ip().to_canonical(), a.port());
            let both_v4 = s.ip().to_canonical().is_ipv4() && d.ip().to_canonical().is_ipv4();
            let want = |a: SocketAddr| if both_v4 { canon(a) } else { match a.ip().to_canonical() {
                IpAddr::V4(v4) => SocketAddr::new(IpAddr::V6(v4.to_ipv6_mapped()), a.port()),
                IpAddr::V6(_) => a,
            }};
            prop_assert_eq!(got, vec![(want(s), want(d), Some(rx), payload.clone())]);
        }
    }
}
