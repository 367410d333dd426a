//! The user-space part of dispatching one batch to T targets, without syscalls: pool take, share,
//! and either the inline release (no backlog) or the queue round trip to a sender and its release.
//! Compare with the ~4-5 µs a loopback send costs in the kernel: this is the overhead udptee's design
//! adds per datagram, and it must stay a small fraction of that.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use crossbeam_channel::bounded;
use udptee::pool::{BufId, BufPool};

const BATCH: usize = 32;

/// A worker's part before any send: a batch of slots taken, filled and shared by every target.
fn take_shared(pool: &BufPool, ready: &mut Vec<BufId>, targets: usize) {
    ready.clear();
    ready.extend(std::iter::from_fn(|| pool.try_take()).take(BATCH));
    for &id in ready.iter() {
        pool.set_meta(id, 64, 0);
        pool.share(id, targets as u32);
    }
}

fn dispatch(c: &mut Criterion) {
    for targets in [1usize, 2, 4] {
        let mut group = c.benchmark_group(format!("fanout_{targets}"));
        group.throughput(Throughput::Elements(BATCH as u64));
        let pool = BufPool::new(targets * 1024 + 2 * BATCH, 2048);
        let queues: Vec<_> = (0..targets).map(|_| bounded::<BufId>(1024)).collect();
        let mut ready = Vec::with_capacity(BATCH);
        group.bench_function(BenchmarkId::new("inline", targets), |b| {
            b.iter(|| {
                take_shared(&pool, &mut ready, targets);
                for _ in 0..targets {
                    for &id in &ready {
                        pool.release(id);
                    }
                }
            });
        });
        group.bench_function(BenchmarkId::new("queued", targets), |b| {
            b.iter(|| {
                take_shared(&pool, &mut ready, targets);
                for (tx, _) in &queues {
                    for &id in &ready {
                        tx.try_send(id).unwrap();
                    }
                }
                for (_, rx) in &queues {
                    while let Ok(id) = rx.try_recv() {
                        pool.release(id);
                    }
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
