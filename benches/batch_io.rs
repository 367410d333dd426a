//! Batch I/O on loopback: one sendmmsg of N 64-byte datagrams plus the recvmmsg calls that take them,
//! per batch size. Shows how much batching saves per datagram (the syscall share of the cost).

use std::net::UdpSocket;
use std::os::fd::AsFd;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use udptee::net::mmsg::{MmsgRecv, MmsgSend, RecvMeta};
use udptee::pool::{BufId, BufPool};

fn batch_io(c: &mut Criterion) {
    let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
    rx.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    tx.connect(rx.local_addr().unwrap()).unwrap();
    let payload = vec![[b'x'; 64]; 256];
    let pool = BufPool::new(256, 2048);
    let ids: Vec<BufId> = std::iter::from_fn(|| pool.try_take()).collect();
    let mut meta = vec![RecvMeta::default(); 256];
    for batch in [1usize, 8, 32, 128] {
        let mut group = c.benchmark_group(format!("backend_mmsg_batch_{batch}"));
        group.throughput(Throughput::Elements(batch as u64));
        let mut send = MmsgSend::new(batch);
        let mut recv = MmsgRecv::new(batch);
        group.bench_function(BenchmarkId::new("send_recv_64B", batch), |b| {
            b.iter(|| {
                let mut sent = 0;
                while sent < batch {
                    sent += send.send_slices(tx.as_fd(), &payload[sent..batch]).unwrap();
                }
                let mut got = 0;
                while got < batch {
                    got += recv
                        .recv_batch(rx.as_fd(), &pool, &ids[got..batch], &mut meta[got..])
                        .unwrap();
                }
            });
        });
        group.finish();
    }
}

criterion_group!(benches, batch_io);
criterion_main!(benches);
