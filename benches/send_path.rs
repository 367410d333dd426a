//! The send side, measured both ways on the same loopback sockets: one `sendmmsg` of a batch, against
//! one io_uring submit of a batch of `SendMsg` operations (waiting for all completions). udptee keeps
//! whichever costs less per datagram (docs/performance.md, "send path").

use std::net::UdpSocket;
use std::os::fd::{AsFd, AsRawFd};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use io_uring::{IoUring, opcode, types};
use udptee::net::mmsg::MmsgSend;

const BATCH: usize = 32;

fn send_path(c: &mut Criterion) {
    let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
    // Drained by the kernel: a tiny receive buffer makes the receiver drop, so the bench measures the
    // sender's cost only and never fills memory.
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    tx.connect(rx.local_addr().unwrap()).unwrap();
    let payload = vec![[b'x'; 64]; BATCH];

    let mut group = c.benchmark_group(format!("send_batch_{BATCH}_64B"));
    group.throughput(Throughput::Elements(BATCH as u64));

    let mut mmsg = MmsgSend::new(BATCH);
    group.bench_function("sendmmsg", |b| {
        b.iter(|| {
            let mut sent = 0;
            while sent < BATCH {
                sent += mmsg.send_slices(tx.as_fd(), &payload[sent..]).unwrap();
            }
        });
    });

    let mut ring = IoUring::builder()
        .setup_cqsize(2 * BATCH as u32)
        .build(BATCH as u32)
        .unwrap();
    let mut iovs: Vec<libc::iovec> = payload
        .iter()
        .map(|p| libc::iovec {
            iov_base: p.as_ptr().cast_mut().cast(),
            iov_len: p.len(),
        })
        .collect();
    // SAFETY: msghdr is plain C data; all-zero is valid.
    let mut hdrs: Vec<libc::msghdr> = (0..BATCH).map(|_| unsafe { std::mem::zeroed() }).collect();
    for (h, iov) in hdrs.iter_mut().zip(iovs.iter_mut()) {
        h.msg_iov = iov;
        h.msg_iovlen = 1;
    }
    group.bench_function("io_uring_sendmsg", |b| {
        b.iter(|| {
            for h in &hdrs {
                let sqe = opcode::SendMsg::new(types::Fd(tx.as_raw_fd()), h).build();
                // SAFETY: each msghdr and its iovec and payload live until the completions are reaped
                // below, before the next iteration touches them.
                unsafe { ring.submission().push(&sqe).unwrap() };
            }
            ring.submit_and_wait(BATCH).unwrap();
            let done = ring
                .completion()
                .map(|cqe: io_uring::cqueue::Entry| assert!(cqe.result() >= 0))
                .count();
            assert_eq!(done, BATCH);
        });
    });
    group.finish();
}

criterion_group!(benches, send_path);
criterion_main!(benches);
