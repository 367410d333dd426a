//! The admin listener's connection slots, and who gives way when they are all taken.
//!
//! A client that opens connections and sends its requests slowly (slowloris) must not keep a
//! liveness probe out. Every connection holds one of [`MAX_CONNECTIONS`](super::MAX_CONNECTIONS)
//! slots; a connection that is waiting for a request or still reading one is *waiting*, one being
//! answered (or streaming a tap) is *busy*. When every slot is taken, a new connection evicts the
//! connection that has been waiting longest: a probe that sends its request at once is answered,
//! a client that dribbles loses its connection to it. Only when every slot is busy is the new
//! connection refused. All of it is counted ([`AdminCounters`]).
//!
//! Floor 5 (the edges), beside the listener; touched by the accept loop and each connection's
//! task, never by the data path.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

/// What happened to the admin listener's connections, for `/metrics`.
#[derive(Debug, Clone, Default)]
pub(crate) struct AdminCounters {
    accepted: Counter,
    dropped: Family<[(&'static str, &'static str); 1], Counter>,
}

/// Why a connection was closed before it was answered.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Dropped {
    /// Every slot was busy answering: refused at accept.
    Limit,
    /// Closed while waiting for (or reading) a request, to make room for a new connection.
    Evicted,
    /// The request (headers and body) did not arrive in time.
    Slow,
    /// A change refused from its headers alone; its body was never read.
    Unauthorized,
}

impl AdminCounters {
    /// Registers the counters as `udptee_admin_connections_total` and
    /// `udptee_admin_connections_dropped_total{reason}`.
    pub(crate) fn register(&self, registry: &mut Registry) {
        registry.register(
            "udptee_admin_connections",
            "Connections the admin listener accepted",
            self.accepted.clone(),
        );
        registry.register(
            "udptee_admin_connections_dropped",
            "Admin connections closed before an answer, by reason: limit (every slot busy), evicted (waited longest when a new one came), slow (request not read in time), unauthorized (a change refused from its headers)",
            self.dropped.clone(),
        );
    }

    pub(crate) fn accepted(&self) {
        self.accepted.inc();
    }

    pub(crate) fn dropped(&self, why: Dropped) {
        let reason = match why {
            Dropped::Limit => "limit",
            Dropped::Evicted => "evicted",
            Dropped::Slow => "slow",
            Dropped::Unauthorized => "unauthorized",
        };
        self.dropped.get_or_create(&[("reason", reason)]).inc();
    }
}

/// One connection's slot: whether it waits (and since when) or is busy, and the signal that
/// evicts it.
#[derive(Debug)]
pub(crate) struct Slot {
    /// Milliseconds since the slots' epoch, plus one, when it began waiting; 0 while busy.
    waiting_since: AtomicU64,
    closed: AtomicBool,
    evict: tokio::sync::Notify,
    epoch: Instant,
}

impl Slot {
    /// The connection waits for or reads a request from now on (evictable).
    pub(crate) fn waiting(&self) {
        let ms = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX - 1);
        self.waiting_since.store(ms + 1, Ordering::Relaxed);
    }

    /// The connection is being answered (not evictable).
    pub(crate) fn busy(&self) {
        self.waiting_since.store(0, Ordering::Relaxed);
    }

    /// Resolves when the accept loop evicts this connection.
    pub(crate) async fn evicted(&self) {
        self.evict.notified().await;
    }

    /// The connection has ended: its slot is free.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
    }
}

/// The accept loop's view of every open connection.
#[derive(Debug)]
pub(crate) struct Slots {
    open: Vec<Arc<Slot>>,
    limit: usize,
    epoch: Instant,
}

/// What the accept loop does with a new connection.
#[derive(Debug)]
pub(crate) enum Admit {
    /// Serve it in this slot.
    Serve(Arc<Slot>),
    /// Serve it in this slot; another connection was evicted to make room.
    Evicted(Arc<Slot>),
    /// Every slot is busy answering: close it.
    Refuse,
}

impl Slots {
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            open: Vec::with_capacity(limit),
            limit,
            epoch: Instant::now(),
        }
    }

    /// Connections holding a slot now.
    pub(crate) fn open(&mut self) -> usize {
        self.open.retain(|s| !s.closed.load(Ordering::Relaxed));
        self.open.len()
    }

    /// A slot for a new connection (which starts out waiting for its request).
    pub(crate) fn admit(&mut self) -> Admit {
        let epoch = self.epoch;
        let slot = move || {
            let s = Arc::new(Slot {
                waiting_since: AtomicU64::new(0),
                closed: AtomicBool::new(false),
                evict: tokio::sync::Notify::new(),
                epoch,
            });
            s.waiting();
            s
        };
        if self.open() < self.limit {
            let s = slot();
            self.open.push(Arc::clone(&s));
            return Admit::Serve(s);
        }
        let longest = self
            .open
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                let since = s.waiting_since.load(Ordering::Relaxed);
                (since != 0).then_some((since, i))
            })
            .min();
        let Some((_, i)) = longest else {
            return Admit::Refuse;
        };
        let old = self.open.swap_remove(i);
        old.close();
        old.evict.notify_one();
        let s = slot();
        self.open.push(Arc::clone(&s));
        Admit::Evicted(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_waiting_connection_gives_way_and_busy_ones_never_do() {
        let mut slots = Slots::new(3);
        let take = |a: Admit| match a {
            Admit::Serve(s) | Admit::Evicted(s) => s,
            Admit::Refuse => panic!("refused"),
        };
        let a = take(slots.admit());
        std::thread::sleep(std::time::Duration::from_millis(3));
        let b = take(slots.admit());
        std::thread::sleep(std::time::Duration::from_millis(3));
        let c = take(slots.admit());
        b.busy();
        // Full: a has waited longest.
        let d = match slots.admit() {
            Admit::Evicted(s) => s,
            other => panic!("{other:?}"),
        };
        assert!(a.closed.load(Ordering::Relaxed), "a gave way");
        assert!(!c.closed.load(Ordering::Relaxed));
        // An evicted connection that is answered later still finds its signal.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            tokio::time::timeout(std::time::Duration::from_secs(1), a.evicted())
                .await
                .expect("the evicted connection is told");
        });
        c.busy();
        d.busy();
        assert!(
            matches!(slots.admit(), Admit::Refuse),
            "every slot answering"
        );
        d.close();
        assert!(matches!(slots.admit(), Admit::Serve(_)), "a slot came free");
        assert_eq!(slots.open(), 3);
    }
}
