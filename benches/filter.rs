//! The line filter on realistic DogStatsD traffic (the same shape as `udptee-loadgen send --profile
//! realistic --payload dogstatsd`: several varied lines per datagram, types c/g/ms/h/s/d, sample
//! rates, tags), in lines per second on one core: parsing alone, include + sample by name (the
//! issue's case), and with prefix and add-tags rewriting the copy.

use std::io::Write as _;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use udptee::statsd::filter::{LineCounts, LineFilter, LineSettings, SampleBy};

const NAMES: [&str; 8] = [
    "api.requests",
    "api.latency",
    "db.query.time",
    "cache.hits",
    "queue.depth",
    "jobs.processed",
    "users.unique",
    "payload.size",
];
const TYPES: [&str; 6] = ["c", "g", "ms", "h", "s", "d"];
const TAGS: [&str; 4] = [
    "env:prod,service:api",
    "env:staging,az:b",
    "host:web-12,role:frontend",
    "version:1.4.2",
];

/// 1000 datagrams of about 512 bytes of realistic lines each.
fn traffic() -> (Vec<Vec<u8>>, u64) {
    let mut rng = fastrand::Rng::with_seed(1);
    let mut lines = 0;
    let datagrams = (0..1000)
        .map(|_| {
            let mut d = Vec::new();
            while d.len() < 450 {
                if !d.is_empty() {
                    d.push(b'\n');
                }
                let _ = write!(
                    d,
                    "{}.{}:{}|{}",
                    NAMES[rng.usize(..NAMES.len())],
                    rng.u8(..16),
                    rng.u32(..100_000),
                    TYPES[rng.usize(..TYPES.len())]
                );
                if rng.u8(..4) == 0 {
                    let _ = write!(d, "|@0.{}", rng.u8(1..10));
                }
                let _ = write!(d, "|#{}", TAGS[rng.usize(..TAGS.len())]);
                lines += 1;
            }
            d
        })
        .collect();
    (datagrams, lines)
}

fn filters(c: &mut Criterion) {
    let (traffic, lines) = traffic();
    let mut group = c.benchmark_group("filter");
    group.throughput(Throughput::Elements(lines));
    group.bench_function("parse_only", |b| {
        b.iter(|| {
            let mut ok = 0;
            for d in &traffic {
                for l in udptee::statsd::lines(d) {
                    ok += usize::from(udptee::statsd::parse(l).is_ok());
                }
            }
            ok
        });
    });
    let include_sample = LineSettings {
        include: vec!["api.*".into(), "db.*".into(), "cache.hits.1".into()],
        sample: Some(0.5),
        ..LineSettings::default()
    };
    let cases = [
        ("include_sample_name", include_sample.clone()),
        (
            "include_sample_rewrite",
            LineSettings {
                add_tags: vec!["shadow:true".into()],
                prefix: "shadow.".into(),
                ..include_sample.clone()
            },
        ),
        (
            "sample_line",
            LineSettings {
                sample: Some(0.5),
                sample_by: SampleBy::Line,
                ..LineSettings::default()
            },
        ),
    ];
    for (name, settings) in cases {
        let f = LineFilter::new(&settings, 65535).unwrap();
        let (mut out, mut parts) = (Vec::with_capacity(1 << 20), Vec::with_capacity(4096));
        let mut rng = fastrand::Rng::with_seed(2);
        group.bench_function(BenchmarkId::new("apply", name), |b| {
            b.iter(|| {
                out.clear();
                parts.clear();
                let mut counts = LineCounts::default();
                for d in &traffic {
                    f.apply(d, &mut out, &mut parts, &mut counts, &mut rng);
                }
                counts.kept
            });
        });
    }
    group.finish();
}

criterion_group!(benches, filters);
criterion_main!(benches);
