//! Every default and bound of the configuration, as named constants with the reason for each value
//! (docs/tuning.md explains them and the memory they cost), and the pool's slot layout that sizing
//! depends on. Floor 1: imports nothing.

use std::time::Duration;

/// Datagrams per `recvmmsg`/`sendmmsg` call: 32, as quinn-udp's `BATCH_SIZE`; tune with `--batch`.
pub const DEFAULT_BATCH: usize = 32;
/// Largest batch accepted: the kernel caps `sendmmsg` at `UIO_MAXIOV` (1024) messages per call.
pub const MAX_BATCH: usize = 1024;
/// Datagrams queued per target: 4096 rides out a 40 ms sender stall at 100k datagrams/s.
pub const DEFAULT_QUEUE_DEPTH: usize = 4096;
/// Bytes of backlog per target: 4 MiB holds the 4096 datagrams of `DEFAULT_QUEUE_DEPTH` up to ~1 KiB
/// each (statsd lines are mostly under 64 bytes, DogStatsD's buffered datagrams near 1.4 KiB), so it
/// absorbs the same burst time as before for statsd-sized traffic at a tenth of the memory.
pub const DEFAULT_QUEUE_BYTES: usize = 4 << 20;
/// Smallest `--queue-bytes`: one largest datagram must fit.
pub const MIN_QUEUE_BYTES: usize = 4096;
/// Largest `--queue-bytes` accepted per target (a typo guard): 4 GiB.
pub const MAX_QUEUE_BYTES: usize = 4 << 30;
/// How often host names in target addresses are looked up again.
pub const DEFAULT_RESOLVE_INTERVAL: Duration = Duration::from_secs(30);
/// Upper bound on `--queue-depth`, so a typo cannot ask for terabytes of pool.
pub const MAX_QUEUE_DEPTH: usize = 1 << 22;
/// Receive buffer asked for per worker socket: 8 MiB. Measured with `scripts/bench-rcvbuf.sh`: the stock
/// 208 KiB loses datagrams at 25k/s on a VM with millisecond stalls; 8 MiB holds ~60 ms of 64-byte
/// datagrams at 100k/s (each costs ~1.2 KiB of kernel truesize).
pub const DEFAULT_RCVBUF_BYTES: usize = 8 << 20;
/// Largest datagram forwarded: every datagram UDP can carry (65,507 bytes over IPv4, 65,527 over IPv6)
/// and a Unix datagram up to 64 KiB. Only the workers' receive staging slots are this large (a few MiB
/// in all); backlogs hold bytes, not slots, so the default no longer costs memory per target.
pub const DEFAULT_MAX_DATAGRAM: usize = 65535;
/// Largest datagram the kernel can hand us over UDP (65535 minus the 8-byte UDP header, rounded up).
pub const MAX_DATAGRAM_LIMIT: usize = 65535;
/// How often a stats line is logged.
pub const DEFAULT_STATS_INTERVAL: Duration = Duration::from_secs(10);
/// How long queued datagrams may take to drain at shutdown before they are counted as dropped.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(2);
/// Where the command line serves the admin endpoints unless told otherwise: loopback only, on a port
/// no neighbour of ours takes by default (statsd 8125/8126, DogStatsD 8125, statsd_exporter 9102 and
/// 9125, Prometheus 9090, node_exporter 9100, Pushgateway 9091, Alertmanager 9093).
pub const DEFAULT_ADMIN: &str = "127.0.0.1:8135";
/// Longest `--stats-interval` accepted: a day (longer is almost certainly a typo).
pub const MAX_STATS_INTERVAL: Duration = Duration::from_secs(24 * 3600);
/// Longest `--drain-timeout` accepted: an hour.
pub const MAX_DRAIN_TIMEOUT: Duration = Duration::from_secs(3600);
/// Most targets accepted: each costs a sender thread, a socket and its backlog bytes.
pub const MAX_TARGETS: usize = 256;
/// Longest target name: it is a metric label and a URL path segment.
pub const MAX_NAME_LEN: usize = 128;
/// Largest CPU number `--cpus` accepts; guards against a typo expanding to billions of entries.
pub const MAX_CPU_ID: u32 = 4095;
/// Shortest `--stats-interval` and `--resolve-interval` (other than 0, off): a typo such as `1ns`
/// must not print a line per microsecond.
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);
/// Largest `--rcvbuf`: the kernel keeps socket buffer sizes in an int, doubled (socket(7)), so 1 GiB is
/// the most that can be granted as asked.
pub const MAX_RCVBUF_BYTES: usize = 1 << 30;
/// Smallest `--rcvbuf`: below 64 KiB a socket drops datagrams at any real rate.
pub const MIN_RCVBUF_BYTES: usize = 64 << 10;
/// Bytes in front of every pool slot's payload: io_uring's multishot recvmsg writes its 16-byte
/// `io_uring_recvmsg_out`, the sender's address (32 bytes, `net::mmsg::NAME_BYTES`) and the control
/// messages (120 bytes, `net::mmsg::CMSG_BYTES`) there, so both backends share one slot layout and
/// senders always find the payload at the same offset. `net::uring` checks the sum at compile time.
pub const HEADROOM: usize = 168;

/// Buffers a worker keeps in its io_uring buffer ring: enough for the kernel to write ahead while
/// the worker sends (four batches, 64 to 4096, a power of two as the kernel requires).
pub fn ring_entries(batch: usize) -> u16 {
    (batch * 4).clamp(64, 4096).next_power_of_two() as u16
}
