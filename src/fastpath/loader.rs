//! Loading and attaching the program with aya, and its maps.
//!
//! On kernels with TCX (6.6+) the program is attached by a BPF link: the link is a file descriptor
//! of this process, so it goes away with the process, `kill -9` included. On older kernels it is a
//! netlink tc filter on the clsact qdisc, which outlives the process: a stale filter of ours
//! (matched by program name) is removed before attaching, and ours is removed at exit.

#![allow(unsafe_code)] // aya's `Pod` marker for the map value types, nothing else

use std::net::SocketAddr;

use aya::maps::{Array, MapData, PerCpuArray};
use aya::programs::SchedClassifier;
use aya::programs::tc::{self, TcAttachType};
use aya::util::KernelVersion;

use super::plan::{MAX_KERNEL_TARGETS, PASS_REASONS, Plan, addr_words};
use crate::metrics::kernel::KernelTargetCounts;

const PROGRAM: &str = "udptee_fastpath";

/// The program's `struct ktarget`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
struct KTarget {
    home: u32,
    addr: [u32; 4],
    port: u16,
    family: u8,
    slot: u8,
}

/// The program's `struct config`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
struct Config {
    generation: u32,
    v4_addr: u32,
    v6_addr: [u32; 4],
    port: u16,
    v4: u8,
    v6: u8,
    pass_v4: u8,
    pass_v6: u8,
    n: u8,
    pad: u8,
    lo: u32,
    t: [KTarget; MAX_KERNEL_TARGETS],
}

/// The program's `struct tstat`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
struct TStat {
    copies: u64,
    backlog: u64,
    error: u64,
    bytes: u64,
}

const _: () = assert!(size_of::<Config>() == 228 && size_of::<TStat>() == 32);

// SAFETY: plain `repr(C)` structs of integers with no padding the program could see as
// uninitialised (every field is written; `Default` zeroes them), as aya's `Pod` requires.
unsafe impl aya::Pod for Config {}
// SAFETY: as above.
unsafe impl aya::Pod for TStat {}

pub(super) struct Loaded {
    /// Owns the program and its links: dropping it detaches them.
    ebpf: aya::Ebpf,
    cfg: Array<MapData, Config>,
    cur: Array<MapData, u32>,
    tstats: PerCpuArray<MapData, TStat>,
    stats: PerCpuArray<MapData, u64>,
    listen: SocketAddr,
    generation: u32,
    lo: u32,
    /// Interfaces with a netlink filter of ours, removed at drop (kernels before TCX).
    netlink: Vec<String>,
}

fn take<T>(ebpf: &mut aya::Ebpf, name: &str) -> Result<T, String>
where
    T: TryFrom<aya::maps::Map>,
    T::Error: std::fmt::Display,
{
    let map = ebpf
        .take_map(name)
        .ok_or_else(|| format!("the program has no map {name:?}"))?;
    T::try_from(map).map_err(|e| format!("map {name:?}: {e}"))
}

/// A one-line reason for a refused load, with the usual cause.
fn explain(what: &str, e: impl std::fmt::Display) -> String {
    let text = e.to_string();
    let hint = if text.contains("Operation not permitted") || text.contains("EPERM") {
        " (it needs CAP_BPF and CAP_NET_ADMIN, or root)"
    } else {
        ""
    };
    format!("{what}: {text}{hint}")
}

impl Loaded {
    pub(super) fn attach(
        listen: SocketAddr,
        interfaces: &[String],
    ) -> Result<(Self, &'static str), String> {
        let bytes = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/fastpath.bpf.o"));
        let mut ebpf = aya::EbpfLoader::new()
            .load(bytes)
            .map_err(|e| explain("loading the BPF object", error_chain(&e)))?;
        let lo =
            nix::net::if_::if_nametoindex("lo").map_err(|e| format!("no lo interface: {e}"))?;
        let tcx = KernelVersion::current().is_ok_and(|v| v >= KernelVersion::new(6, 6, 0));
        let mut netlink = Vec::new();
        {
            let program: &mut SchedClassifier = ebpf
                .program_mut(PROGRAM)
                .ok_or("the BPF object has no program")?
                .try_into()
                .map_err(|e| format!("{e}"))?;
            program
                .load()
                .map_err(|e| explain("loading the program", error_chain(&e)))?;
            for iface in interfaces {
                // A netlink filter left by a udptee killed before it could remove it (or one from a
                // kernel without TCX) would copy every datagram a second time.
                // (An error means none, or no clsact qdisc at all.)
                if tc::qdisc_detach_program(iface, TcAttachType::Ingress, PROGRAM).is_ok() {
                    tracing::warn!(
                        interface = %iface,
                        "removed a stale udptee filter (from a udptee that did not exit cleanly)"
                    );
                }
                if !tcx {
                    if let Err(e) = tc::qdisc_add_clsact(iface) {
                        let already = matches!(&e, tc::TcError::AlreadyAttached)
                            || e.to_string().contains("exists");
                        if !already {
                            return Err(explain(&format!("adding clsact to {iface}"), e));
                        }
                    }
                    netlink.push(iface.clone());
                }
                program
                    .attach(iface, TcAttachType::Ingress)
                    .map_err(|e| explain(&format!("attaching to {iface}"), error_chain(&e)))?;
            }
        }
        let cfg = take(&mut ebpf, "cfg")?;
        let cur = take(&mut ebpf, "cur")?;
        let tstats = take(&mut ebpf, "tstats")?;
        let stats = take(&mut ebpf, "stats")?;
        Ok((
            Self {
                ebpf,
                cfg,
                cur,
                tstats,
                stats,
                listen,
                // A random start: marks left in sockets by an earlier instance (systemd's fd store
                // after a drain that timed out) are then unknown here, counted as stale, rather
                // than read as one of our first generations.
                generation: fastrand::u32(..),
                lo,
                netlink,
            },
            if tcx { "tcx" } else { "netlink" },
        ))
    }

    /// Writes `plan` under the next generation: first `record` (the book), then the idle slot,
    /// then the switch. The program copies a slot and checks the switch did not move meanwhile.
    pub(super) fn publish(&mut self, plan: &Plan, record: impl FnOnce(u32)) -> Result<(), String> {
        let mut next = self.generation.wrapping_add(1);
        if next == 0 {
            next = 1;
        }
        let mut c = Config {
            generation: next,
            port: self.listen.port().to_be(),
            pass_v4: u8::from(plan.pass_v4),
            pass_v6: u8::from(plan.pass_v6),
            lo: self.lo,
            ..Config::default()
        };
        match self.listen {
            SocketAddr::V4(a) => {
                c.v4 = 1;
                c.v4_addr = addr_words((*a.ip()).into())[0];
            }
            SocketAddr::V6(a) => {
                c.v6 = 1;
                // A dual-stack wildcard also receives IPv4.
                if a.ip().is_unspecified() {
                    c.v4 = 1;
                } else if let Some(v4) = a.ip().to_ipv4_mapped() {
                    c.v4 = 1;
                    c.v6 = 0;
                    c.v4_addr = addr_words(v4.into())[0];
                } else {
                    c.v6_addr = addr_words((*a.ip()).into());
                }
            }
        }
        for (k, t) in
            c.t.iter_mut()
                .zip(plan.targets.iter().take(MAX_KERNEL_TARGETS))
        {
            *k = KTarget {
                home: t.home,
                addr: addr_words(t.addr.ip()),
                port: t.addr.port().to_be(),
                family: if t.addr.is_ipv4() { 4 } else { 6 },
                slot: t.slot,
            };
        }
        c.n = plan.targets.len().min(MAX_KERNEL_TARGETS) as u8;
        record(next);
        self.cfg
            .set(next & 1, c, 0)
            .map_err(|e| format!("writing the kernel path's configuration: {e}"))?;
        self.cur
            .set(0, next, 0)
            .map_err(|e| format!("publishing the kernel path's configuration: {e}"))?;
        self.generation = next;
        Ok(())
    }

    /// Runs the program once on `packet` (BPF_PROG_TEST_RUN): its verdict and the packet after it.
    pub(super) fn test_run(&mut self, packet: &[u8]) -> Result<(i32, Vec<u8>), String> {
        use aya::programs::{TestRun, TestRunOptions};
        let program: &mut SchedClassifier = self
            .ebpf
            .program_mut(PROGRAM)
            .ok_or("no program")?
            .try_into()
            .map_err(|e| format!("{e}"))?;
        let mut out = vec![0u8; packet.len() + 256];
        let r = program
            .test_run(TestRunOptions {
                data_in: Some(packet),
                data_out: Some(&mut out),
                ..TestRunOptions::new()
            })
            .map_err(|e| error_chain(&e))?;
        out.truncate(r.data_size_out as usize);
        Ok((r.return_value as i32, out))
    }

    /// Our next generation follows `generation` (another instance's last), so ours take the
    /// book's entries after its ones instead of overwriting them.
    pub(super) fn continue_after(&mut self, generation: u32) {
        self.generation = generation;
    }

    /// Stops every copy: the program passes everything up unmarked.
    pub(super) fn clear(&mut self) {
        let _ = self.cur.set(0, 0, 0);
    }

    pub(super) fn target_counts(&self, slots: usize) -> Vec<KernelTargetCounts> {
        (0..slots as u32)
            .map(|i| {
                self.tstats.get(&i, 0).map_or_else(
                    |_| KernelTargetCounts::default(),
                    |per_cpu| {
                        per_cpu
                            .iter()
                            .fold(KernelTargetCounts::default(), |mut a, s| {
                                a.copies += s.copies;
                                a.bytes += s.bytes;
                                a.backlog += s.backlog;
                                a.error += s.error;
                                a
                            })
                    },
                )
            })
            .collect()
    }

    /// (handled, consumed, consumed bytes, passed by reason), in the program's `enum reason`
    /// order: handled, consumed, the pass reasons, consumed bytes.
    pub(super) fn reasons(&self) -> (u64, u64, u64, [u64; PASS_REASONS.len()]) {
        let sum = |i: u32| {
            self.stats
                .get(&i, 0)
                .map_or(0, |v| v.iter().copied().sum::<u64>())
        };
        let bytes = PASS_REASONS.len() as u32 + 2;
        (
            sum(0),
            sum(1),
            sum(bytes),
            std::array::from_fn(|i| sum(i as u32 + 2)),
        )
    }
}

impl Drop for Loaded {
    fn drop(&mut self) {
        self.clear();
        for iface in self.netlink.drain(..) {
            let _ = tc::qdisc_detach_program(&iface, TcAttachType::Ingress, PROGRAM);
        }
        // The TCX links go with `ebpf`, dropped after this.
    }
}

/// An error with its causes, on one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
