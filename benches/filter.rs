//! The line filter on realistic DogStatsD traffic (the loadgen's own `--profile realistic
//! --payload dogstatsd` datagrams: several varied lines each, types c/g/ms/h/s/d, sample rates,
//! tags), in lines per second on one core: parsing alone, include + sample by name (the
//! issue's case), and with prefix and add-tags rewriting the copy.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use udptee::statsd::filter::{LineCounts, LineFilter, LineSettings, SampleBy};
use udptee_loadgen::payload::{Format, Header, Profile, encode};

/// 1000 datagrams of 512 bytes, exactly what `udptee-loadgen send --payload dogstatsd --profile
/// realistic --size 512` sends; and how many lines they hold.
fn traffic() -> (Vec<Vec<u8>>, u64) {
    let mut rng = fastrand::Rng::with_seed(1);
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
                512,
                &mut rng,
                &mut d,
            );
            d
        })
        .collect();
    let lines = datagrams
        .iter()
        .map(|d| udptee::statsd::lines(d).count() as u64)
        .sum();
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
        include: vec![
            "ulg.*".into(),
            "api.*".into(),
            "db.*".into(),
            "cache.hits.1".into(),
        ],
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
