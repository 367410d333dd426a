//! The user-space part of dispatching one batch of 64-byte datagrams to T targets, without
//! syscalls: staging slots taken and given back (every target sent inline), or, for targets with a
//! backlog, each copy pushed into the target's byte ring and read back out by its sender. Compare
//! with the ~4-5 µs a loopback send costs in the kernel: this is the overhead udptee's design adds
//! per datagram, and it must stay a small fraction of that.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use udptee::pool::ring::{ByteRing, Entry};
use udptee::pool::{BufId, BufPool};

const BATCH: usize = 32;

/// A worker's part before any send: a batch of staging slots taken and filled.
fn take_batch(pool: &BufPool, ready: &mut Vec<BufId>) {
    ready.clear();
    ready.extend(std::iter::from_fn(|| pool.try_take()).take(BATCH));
    for &id in ready.iter() {
        pool.set_meta(id, 64, 0);
    }
}

fn dispatch(c: &mut Criterion) {
    let payload = [7u8; 64];
    for targets in [1usize, 2, 4] {
        let mut group = c.benchmark_group(format!("fanout_{targets}"));
        group.throughput(Throughput::Elements(BATCH as u64));
        let pool = BufPool::new(2 * BATCH, 2048);
        let rings: Vec<_> = (0..targets)
            .map(|_| ByteRing::try_new(1 << 20, 4096).unwrap())
            .collect();
        let mut ready = Vec::with_capacity(BATCH);
        let mut out = vec![Entry::default(); BATCH];
        let mut pos = vec![0u64; targets];
        group.bench_function(BenchmarkId::new("inline", targets), |b| {
            b.iter(|| {
                take_batch(&pool, &mut ready);
                for &id in &ready {
                    pool.put_back(id);
                }
            });
        });
        group.bench_function(BenchmarkId::new("backlog", targets), |b| {
            b.iter(|| {
                take_batch(&pool, &mut ready);
                for (ring, pos) in rings.iter().zip(&mut pos) {
                    {
                        let mut p = ring.producer();
                        for _ in &ready {
                            // SAFETY: `payload` is a live local array of 64 bytes, read only.
                            let pushed = unsafe { p.push(payload.as_ptr(), payload.len(), 0) };
                            assert!(pushed, "the ring has room");
                        }
                    }
                    let n = ring.peek(*pos, &mut out);
                    *pos = out[n - 1].next;
                    ring.consume(*pos, n);
                }
                for &id in &ready {
                    pool.put_back(id);
                }
            });
        });
        group.finish();
    }
}

criterion_group!(benches, dispatch, latency_recording);
criterion_main!(benches);

/// The hot-path cost of latency recording per datagram: one clock read and one uncontended lock per
/// batch, one histogram increment per copy (`--latency on`; `off` skips all of it).
fn latency_recording(c: &mut Criterion) {
    use udptee::metrics::histogram::{LatencyRecorder, now_nanos};
    let recorder = LatencyRecorder::default();
    for batch in [1u64, 32] {
        let mut group = c.benchmark_group(format!("latency_record_batch_{batch}"));
        group.throughput(Throughput::Elements(batch));
        let rx: Vec<u64> = (0..batch)
            .map(|i| now_nanos() - 50_000 - i * 1000)
            .collect();
        group.bench_function("record", |b| {
            b.iter(|| recorder.record_batch(now_nanos(), rx.iter().copied()))
        });
        group.finish();
    }
}
