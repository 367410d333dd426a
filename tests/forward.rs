//! Forwarding on loopback: every datagram to every target, byte for byte, with exact accounting.

mod util;

use std::net::UdpSocket;
use std::time::Duration;

use udptee::DropReason;
use util::*;

/// 3 targets x 100,000 datagrams of every size 0..=max: each target gets each datagram exactly once,
/// byte-identical and, with one worker and one client socket, in order.
#[test]
fn every_target_gets_every_datagram_once_in_order() {
    on_each_backend(every_target_gets_every_datagram_once_in_order_on);
}

fn every_target_gets_every_datagram_once_in_order_on() {
    const COUNT: usize = 100_000;
    let sinks: Vec<Sink> = (0..3).map(|_| Sink::new(false)).collect();
    let addrs: Vec<_> = sinks.iter().map(|s| s.addr).collect();
    let fwd = forwarder(false, &addrs, |_| {});
    let max = 2048;
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    let paced: Vec<&Sink> = sinks.iter().collect();
    let sent = send_paced(
        &fwd,
        &client,
        0,
        (0..COUNT).map(|i| i % (max + 1)),
        1000,
        &paced,
    );
    let snap = fwd.shutdown();
    assert_eq!(snap.received(), COUNT as u64);
    for (t, sink) in sinks.into_iter().enumerate() {
        let (seen, _) = sink.finish();
        assert_eq!(
            seen.len(),
            COUNT,
            "target {t} got each datagram exactly once"
        );
        assert!(
            seen == sent,
            "target {t} got the datagrams byte-identical and in send order"
        );
        assert_eq!(snap.targets[t].forwarded, COUNT as u64);
        assert_eq!(
            snap.dropped_total(t),
            0,
            "nothing dropped on an unloaded path:\n{snap}"
        );
    }
    assert_accounted(&snap);
}

/// A target that never reads, with a tiny receive buffer: the others still get everything, and what it
/// missed is exactly what udptee dropped for it plus what its own kernel socket dropped.
#[test]
fn a_target_that_never_reads_loses_only_its_own_copies() {
    on_each_backend(a_target_that_never_reads_loses_only_its_own_copies_on);
}

fn a_target_that_never_reads_loses_only_its_own_copies_on() {
    const COUNT: usize = 20_000;
    let fast = [Sink::new(false), Sink::new(false)];
    let stuck = udp_socket(loopback(false), 1); // the kernel rounds up to its minimum (~2 KiB)
    let fwd = forwarder(
        false,
        &[fast[0].addr, stuck.local_addr().unwrap(), fast[1].addr],
        |_| {},
    );
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    let sent = send_paced(
        &fwd,
        &client,
        0,
        (0..COUNT).map(|i| 100 + i % 500),
        500,
        &[&fast[0], &fast[1]],
    );
    let snap = fwd.shutdown();

    stuck.set_nonblocking(true).unwrap();
    let mut delivered = 0u64;
    let mut buf = [0u8; 4096];
    while stuck.recv(&mut buf).is_ok() {
        delivered += 1;
    }
    let kernel = kernel_drops(&stuck);
    assert!(
        kernel > 0,
        "a 2 KiB buffer cannot hold 20,000 datagrams; the test must exercise the drop path"
    );
    assert_eq!(
        delivered + kernel + snap.dropped_total(1),
        COUNT as u64,
        "missed copies = udptee drops + the target socket's kernel drops:\n{snap}"
    );
    assert_eq!(
        snap.targets[1].forwarded,
        delivered + kernel,
        "every copy udptee sent reached the socket or its drop counter"
    );
    assert_eq!(
        snap.targets[1].receiver_drops,
        Some(kernel),
        "udptee reports the receiver's own drops (sock_diag), exactly:\n{snap}"
    );
    assert_eq!(snap.targets[1].up, Some(true));
    assert!(
        snap.to_string().contains(&format!(
            "receiver_drops {kernel} (forwarded, lost at the receiver)"
        )),
        "the final summary shows them:\n{snap}"
    );
    for (t, sink) in [0, 2].into_iter().zip(fast) {
        let (seen, _) = sink.finish();
        assert!(
            seen == sent,
            "fast target {t} got everything, in order, despite the stuck one"
        );
        assert_eq!(
            snap.dropped_total(t),
            0,
            "fast target {t} lost nothing:\n{snap}"
        );
        assert_eq!(snap.targets[t].receiver_drops, Some(0));
    }
    assert_accounted(&snap);
}

/// A closed target port: others unaffected, errors counted by reason, and no CPU burnt afterwards.
#[test]
fn a_closed_port_is_counted_and_does_not_spin() {
    on_each_backend(a_closed_port_is_counted_and_does_not_spin_on);
}

fn a_closed_port_is_counted_and_does_not_spin_on() {
    const COUNT: usize = 5_000;
    let closed = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap(); // dropped: port now closed
    let sink = Sink::new(false);
    let fwd = forwarder(false, &[closed, sink.addr], |_| {});
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    let sent = send_paced(&fwd, &client, 0, (0..COUNT).map(|_| 64), 500, &[&sink]);
    wait_for(&fwd, "the closed target's queue to drain", || {
        fwd.snapshot().unaccounted(0) == 0
    });

    // Traffic has stopped: the forwarder must now be idle, whatever the dead target did to it.
    let before = fwd.cpu_time();
    std::thread::sleep(Duration::from_secs(1));
    let idle_cpu = fwd.cpu_time() - before;
    assert!(
        idle_cpu <= Duration::from_millis(50),
        "idle forwarder used {idle_cpu:?} of CPU in 1 s: a busy loop or retry storm"
    );

    let snap = fwd.shutdown();
    let refused = snap.targets[0].send_errors[0];
    assert!(
        refused > 0,
        "ECONNREFUSED from the ICMP port unreachable is counted as conn_refused:\n{snap}"
    );
    assert_eq!(
        snap.dropped(0, DropReason::SendError),
        refused,
        "all of the closed port's errors are conn_refused"
    );
    assert_eq!(snap.targets[0].up, Some(false), "nothing bound: down");
    assert_eq!(
        snap.targets[0].receiver_drops,
        Some(snap.targets[0].forwarded),
        "what the kernel accepted for a port nobody binds is counted as lost at the receiver:\n{snap}"
    );
    assert!(snap.to_string().contains("receiver down"), "{snap}");
    let (seen, _) = sink.finish();
    assert!(seen == sent, "the live target got everything");
    assert_eq!(snap.dropped_total(1), 0);
    assert_eq!(snap.targets[1].up, Some(true));
    assert_accounted(&snap);
}

/// A datagram over --max-datagram is counted as truncated and delivered nowhere; the rest flow on.
#[test]
fn oversized_datagrams_are_counted_and_never_cut() {
    on_each_backend(oversized_datagrams_are_counted_and_never_cut_on);
}

fn oversized_datagrams_are_counted_and_never_cut_on() {
    let sinks = [Sink::new(false), Sink::new(false)];
    let fwd = forwarder(false, &[sinks[0].addr, sinks[1].addr], |c| {
        c.max_datagram = 1000
    });
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    let sizes = [10, 1000, 1001, 0, 9000, 999];
    let sent = send_paced(&fwd, &client, 0, sizes.into_iter(), 1, &[]);
    wait_for(&fwd, "all six datagrams to be handled", || {
        let s = fwd.snapshot();
        s.received() == 6 && s.unaccounted(0) == 0 && s.unaccounted(1) == 0
    });
    let snap = fwd.shutdown();
    assert_eq!(
        snap.truncated(),
        2,
        "1001 and 9000 bytes exceed 1000:\n{snap}"
    );
    let expected: Vec<_> = sent
        .iter()
        .filter(|(len, _)| *len <= 1000)
        .copied()
        .collect();
    for (t, sink) in sinks.into_iter().enumerate() {
        let (seen, _) = sink.finish();
        assert_eq!(
            seen, expected,
            "target {t} got exactly the datagrams that fit, whole, in order"
        );
        assert_eq!(snap.dropped(t, DropReason::Truncated), 2);
    }
    assert_accounted(&snap);
}

/// IPv6 listen address and targets.
#[test]
fn ipv6_listen_and_targets() {
    on_each_backend(ipv6_listen_and_targets_on);
}

fn ipv6_listen_and_targets_on() {
    if !ipv6_available() {
        skip("skipped: ::1 cannot be bound on this host");
        return;
    }
    let sinks = [Sink::new(true), Sink::new(true)];
    let fwd = forwarder(true, &[sinks[0].addr, sinks[1].addr], |_| {});
    assert!(fwd.local_addr().is_ipv6());
    let client = UdpSocket::bind("[::1]:0").unwrap();
    let paced: Vec<&Sink> = sinks.iter().collect();
    let sent = send_paced(&fwd, &client, 0, (0..5000).map(|i| i % 1500), 500, &paced);
    let snap = fwd.shutdown();
    for sink in sinks {
        assert!(
            sink.finish().0 == sent,
            "IPv6 targets get every datagram in order"
        );
    }
    assert_accounted(&snap);
}

/// Several workers and several client sockets: exact totals over workers, nothing lost or duplicated.
#[test]
fn several_workers_totals_are_exact() {
    on_each_backend(several_workers_totals_are_exact_on);
}

fn several_workers_totals_are_exact_on() {
    const CLIENTS: usize = 8;
    const PER_CLIENT: usize = 5_000;
    let sinks = [Sink::new(false), Sink::new(false)];
    let fwd = forwarder(false, &[sinks[0].addr, sinks[1].addr], |c| {
        c.worker_cpus = vec![None; 3]
    });
    let clients: Vec<UdpSocket> = (0..CLIENTS)
        .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
        .collect();
    let mut sent = Vec::new();
    for (stream, client) in clients.iter().enumerate() {
        sent.extend(send_paced(
            &fwd,
            client,
            stream as u32,
            (0..PER_CLIENT).map(|i| 8 + i % 700),
            1000,
            &[&sinks[0], &sinks[1]],
        ));
    }
    let snap = fwd.shutdown();
    assert_eq!(snap.workers.len(), 3);
    assert_eq!(
        snap.received(),
        (CLIENTS * PER_CLIENT) as u64,
        "the sum over workers is exact:\n{snap}"
    );
    sent.sort_unstable();
    for (t, sink) in sinks.into_iter().enumerate() {
        let (mut seen, _) = sink.finish();
        seen.sort_unstable();
        assert!(
            seen == sent,
            "target {t} got each datagram of each client exactly once"
        );
        assert_eq!(snap.targets[t].forwarded, (CLIENTS * PER_CLIENT) as u64);
    }
    assert_accounted(&snap);
}

/// Workers and senders pinned with --cpus/--sender-cpus (CPU 0 exists everywhere) forward exactly.
#[test]
fn pinned_workers_and_senders_forward_exactly() {
    let sinks = [Sink::new(false), Sink::new(false)];
    let fwd = forwarder(false, &[sinks[0].addr, sinks[1].addr], |c| {
        c.worker_cpus = vec![Some(0)];
        c.sender_cpus = vec![0];
    });
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    let sent = send_paced(
        &fwd,
        &client,
        0,
        (0..5000).map(|i| i % 1400),
        500,
        &[&sinks[0], &sinks[1]],
    );
    let snap = fwd.shutdown();
    for sink in sinks {
        assert!(
            sink.finish().0 == sent,
            "pinned threads forward every datagram in order"
        );
    }
    assert_accounted(&snap);
}

/// With the default --max-datagram, the largest datagram UDP can carry goes through whole: 65,507
/// bytes over IPv4 and 65,527 over IPv6 (and the 9,430-byte DogStatsD datagram the old default
/// dropped).
#[test]
fn the_largest_udp_datagrams_go_through_by_default() {
    on_each_backend(the_largest_udp_datagrams_go_through_by_default_on);
}

fn the_largest_udp_datagrams_go_through_by_default_on() {
    for (v6, largest) in [(false, 65_507), (true, 65_527)] {
        if v6 && !ipv6_available() {
            skip_part("IPv6 part skipped: ::1 cannot be bound here");
            continue;
        }
        let sink = Sink::new(v6);
        let fwd = forwarder(v6, &[sink.addr], |c| {
            c.max_datagram = udptee::config::DEFAULT_MAX_DATAGRAM;
        });
        let client = udp_socket(loopback(v6), 1 << 20);
        let sent = send_paced(
            &fwd,
            &client,
            0,
            [largest, 9_430, 1].into_iter(),
            1,
            &[&sink],
        );
        let snap = fwd.shutdown();
        let (seen, _) = sink.finish();
        assert_eq!(
            seen, sent,
            "every size arrives whole, byte-identical (v6: {v6})"
        );
        assert_eq!(snap.truncated(), 0, "nothing is too large by default");
        assert_accounted(&snap);
    }
}

/// A receiver that stops and comes back (a statsd restart): while nothing is bound, the target is down
/// and every copy the kernel accepted for it is counted as lost at the receiver; it is up again once a
/// socket is bound, and gets what follows.
#[test]
fn a_receiver_that_goes_away_is_seen_down_and_its_loss_counted() {
    let sink = Sink::new(false);
    let addr = sink.addr;
    let witness = Sink::new(false);
    let fwd = forwarder(false, &[addr, witness.addr], |_| {});
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    send_paced(&fwd, &client, 0, (0..100).map(|_| 64), 100, &[&sink]);
    let _ = sink.finish(); // the receiver stops: its socket is closed
    wait_for(&fwd, "the target to be seen down", || {
        fwd.snapshot().targets[0].up == Some(false)
    });
    let before = fwd.snapshot().targets[0].clone();
    send_paced(&fwd, &client, 1, (0..1000).map(|_| 64), 100, &[&witness]);
    // The witness having everything says nothing of the dead target's queue: let it empty.
    wait_for(&fwd, "the down target's copies to go out", || {
        fwd.snapshot().unaccounted(0) == 0
    });
    let during = fwd.snapshot().targets[0].clone();
    let accepted = during.forwarded - before.forwarded;
    let refused = during.send_errors_total() - before.send_errors_total();
    assert_eq!(accepted + refused, 1000, "every copy sent or refused");
    wait_for(&fwd, "the next look to count the loss", || {
        fwd.snapshot().targets[0].receiver_drops == Some(accepted)
    });
    let back = udp_socket(addr, 1 << 20);
    back.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    wait_for(&fwd, "the target to be seen up again", || {
        fwd.snapshot().targets[0].up == Some(true)
    });
    // An ECONNREFUSED from the down period may still be pending on the target socket and fail the
    // next send (counted as send_error); the one after is delivered.
    let mut buf = [0u8; 64];
    let delivered = (0..10).any(|_| {
        client.send_to(b"after", fwd.local_addr()).unwrap();
        back.recv(&mut buf).is_ok_and(|n| &buf[..n] == b"after")
    });
    assert!(delivered, "the receiver gets copies again once it is back");
    let snap = fwd.shutdown();
    assert_eq!(
        snap.targets[0].receiver_drops,
        Some(accepted),
        "nothing counted lost once it is back:\n{snap}"
    );
    assert_eq!(snap.targets[1].receiver_drops, Some(0));
    assert_accounted(&snap);
    let _ = witness.finish();
}
