//! A group's sharding on one core, in lines per second: split + key + md5 + ring lookup +
//! re-batch into 4 members' datagrams of at most 1432 bytes, each ready datagram copied out once
//! (as into its member's ring). On DogStatsD traffic as `udptee-loadgen send --payload dogstatsd
//! --profile realistic --size 1432` makes it (several varied lines per datagram, tags, rates).
//! Beside it, the split alone, for scale. The goal: at least 3 M lines/s on one core.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use udptee::statsd::ring::Ring;
use udptee::statsd::shard::Sharder;
use udptee_loadgen::payload::{Format, Header, Profile, encode};

fn traffic() -> (Vec<Vec<u8>>, u64) {
    let mut rng = fastrand::Rng::with_seed(7);
    let datagrams: Vec<Vec<u8>> = (0..1000)
        .map(|seq| {
            let mut d = Vec::new();
            let h = Header {
                stream: 0,
                seq,
                sent_us: 0,
            };
            encode(
                Format::Dogstatsd,
                Profile::Realistic,
                h,
                1432,
                &mut rng,
                &mut d,
            );
            d
        })
        .collect();
    let lines = datagrams
        .iter()
        .map(|d| d.split(|&b| b == b'\n').filter(|l| !l.is_empty()).count() as u64)
        .sum();
    (datagrams, lines)
}

fn shard(c: &mut Criterion) {
    let (traffic, lines) = traffic();
    let bytes: usize = traffic.iter().map(Vec::len).sum();
    eprintln!(
        "corpus: {} datagrams, {lines} lines, {:.0} B a line",
        traffic.len(),
        bytes as f64 / lines as f64
    );
    let members = [
        "10.0.0.1:8125",
        "10.0.0.2:8125",
        "10.0.0.3:8125",
        "10.0.0.4:8125",
    ];
    let ring = Ring::new(members.iter().copied().enumerate());
    let mut group = c.benchmark_group("group");
    group.throughput(Throughput::Elements(lines));
    group.bench_function("split_only", |b| {
        b.iter(|| {
            let mut n = 0usize;
            for d in &traffic {
                n += memchr::memchr_iter(b'\n', d).count();
            }
            n
        });
    });
    let mut sharder = Sharder::new(members.len(), 1432);
    let mut out = vec![0u8; 65536];
    group.bench_function("shard_4_members", |b| {
        b.iter(|| {
            let mut copied = 0usize;
            let mut emit = |_m: usize, d: &[u8], _lines: u32, _rx: u64| {
                out[..d.len()].copy_from_slice(d);
                copied += d.len();
            };
            for d in &traffic {
                sharder.shard(&ring, d, 0, &mut emit);
            }
            sharder.flush(&mut emit);
            copied
        });
    });
    group.finish();
}

criterion_group!(benches, shard);
criterion_main!(benches);
