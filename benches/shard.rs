//! A group's sharding on one core, in lines per second: split + key + md5 + ring lookup +
//! re-batch into 4 members' datagrams of at most 1432 bytes, each ready datagram copied out once
//! (as into its member's ring). On DogStatsD traffic as `udptee-loadgen send --payload dogstatsd
//! --profile realistic --size 1432` makes it (several varied lines per datagram, tags, rates).
//! And on the corpus: ~120-byte lines with 0 to 10 tags in 1,432-byte datagrams. Beside
//! each, the split alone, for scale. The goal: at least 3 M lines/s on one core.

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

/// The corpus: DogStatsD lines of ~120 bytes on average (2,000 metric names, 0 to 10 tags
/// of a realistic shape), packed in order into datagrams of at most 1,432 bytes.
fn tagged() -> (Vec<Vec<u8>>, u64) {
    let mut rng = fastrand::Rng::with_seed(11);
    let tags = [
        "env:production",
        "service:checkout-api",
        "region:eu-west-1",
        "az:eu-west-1b",
        "host:i-0a1b2c3d4e5f",
        "version:2.14.3",
        "team:payments",
        "route:/v2/orders",
        "status_code:200",
        "method:post",
    ];
    let kinds = ["c", "g", "ms", "h", "d", "s"];
    let (mut datagrams, mut lines) = (Vec::new(), 0u64);
    let mut d: Vec<u8> = Vec::new();
    for _ in 0..30_000 {
        let mut l = format!(
            "app.{}.requests.latency_{}:{}|{}",
            ["web", "api", "db", "cache", "queue"][rng.usize(..5)],
            rng.usize(..2000),
            rng.u32(..100_000),
            kinds[rng.usize(..kinds.len())]
        );
        let n = rng.usize(..=10);
        if n > 0 {
            l.push_str("|#");
            l.push_str(&tags[..n].join(","));
        }
        if !d.is_empty() && d.len() + 1 + l.len() > 1432 {
            datagrams.push(std::mem::take(&mut d));
        }
        if !d.is_empty() {
            d.push(b'\n');
        }
        d.extend_from_slice(l.as_bytes());
        lines += 1;
    }
    datagrams.push(d);
    (datagrams, lines)
}

fn shard(c: &mut Criterion) {
    for (name, (traffic, lines)) in [("loadgen", traffic()), ("tagged_120B", tagged())] {
        shard_corpus(c, name, &traffic, lines);
    }
}

fn shard_corpus(c: &mut Criterion, name: &str, traffic: &[Vec<u8>], lines: u64) {
    let bytes: usize = traffic.iter().map(Vec::len).sum();
    eprintln!(
        "corpus {name}: {} datagrams, {lines} lines, {:.0} B a line",
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
    let mut group = c.benchmark_group(format!("group_{name}"));
    group.throughput(Throughput::Elements(lines));
    group.bench_function("split_only", |b| {
        b.iter(|| {
            let mut n = 0usize;
            for d in traffic {
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
            for d in traffic {
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
