//! The admin HTTP listener, on its own thread with a small single-threaded tokio runtime and hyper,
//! never on the data path.
//!
//! Read-only: `/metrics` (classic Prometheus text, or OpenMetrics when the scraper asks for it),
//! `/latency`, `/healthz`, `/readyz`, `GET /targets[/{name}]`, the status page. Mutating: `PUT` and
//! `DELETE /targets/{name}`, `POST /targets/{name}/enable|disable`, `POST /-/reload`, the recording
//! verbs, and `GET /tap`: who may is `App::authorized` (the token, or root / udptee's own user on a
//! loopback listener, the client's owner named by the kernel), decided from the headers before a
//! body is read. Bounded against hostile clients: headers at most [`MAX_HEADER_BYTES`] (hyper
//! answers 431), bodies at most [`MAX_BODY_BYTES`] (413), [`HEADER_TIMEOUT`] for the headers and
//! [`BODY_TIMEOUT`] for the body (408), [`CONNECTION_TIMEOUT`] per connection, and at most
//! [`MAX_CONNECTIONS`] open, the one waiting longest giving way to a new one (`slots`); malformed
//! requests get 400 from hyper. Answers never echo the request. In a takeover the listening socket
//! goes to the successor with the data sockets.
//!
//! Floor 5 (the edges): routes and request bounds only; `routes` calls the control verbs (floor 4)
//! and the report (floor 3).

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{ACCEPT, ALLOW, AUTHORIZATION, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};

use std::sync::atomic::{AtomicBool, Ordering};

use self::routes::{Answer, App, Body, Caller, tap_stream};
use self::slots::{AdminCounters, Admit, Dropped, Slot, Slots};
use crate::control::Control;
use crate::report::Stats;
use crate::report::prometheus;

mod route;
mod routes;
mod slots;

/// Largest request head (request line and headers) read: 16 KiB.
pub(crate) const MAX_HEADER_BYTES: usize = 16 << 10;
/// Largest request body read: 64 KiB (a target's JSON is a few hundred bytes).
pub(crate) const MAX_BODY_BYTES: usize = 64 << 10;
/// Most connections served at once; a scraper and an operator need a handful.
pub(crate) const MAX_CONNECTIONS: usize = 64;
/// Time a client has to send its request headers (slowloris).
pub(crate) const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Time a client has to send a request's body once its headers are in: a whole request takes
/// at most [`HEADER_TIMEOUT`] + this.
pub(crate) const BODY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a stopping listener lets the requests it is answering finish.
pub(crate) const STOP_GRACE: Duration = Duration::from_secs(2);
/// Longest a connection may stay open, keep-alive included.
pub(crate) const CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);

/// The running admin listener.
pub(crate) struct AdminServer {
    addr: SocketAddr,
    /// A second descriptor of the listening socket, to hand to a successor.
    handover: Option<std::net::TcpListener>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for AdminServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminServer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

/// One connection's facts the handlers need: its slot, and both ends.
struct Conn {
    slot: Arc<Slot>,
    peer: SocketAddr,
    local: SocketAddr,
    /// Set once it streams a tap: the connection limit spares it.
    streaming: AtomicBool,
}

async fn serve(
    app: Arc<App>,
    req: Request<Incoming>,
    conn: Arc<Conn>,
) -> Result<Response<Body>, Infallible> {
    let method = req.method().clone();
    let header = |name| {
        req.headers()
            .get(name)
            .and_then(|v: &hyper::header::HeaderValue| v.to_str().ok())
            .map(str::to_owned)
    };
    let (accept, auth) = (header(ACCEPT), header(AUTHORIZATION));
    let tap = method == Method::GET && req.uri().path() == "/tap";
    let read = matches!(method, Method::GET | Method::HEAD) && !tap;
    // Who asks is known from the headers and the socket: a change is refused before its body
    // is read.
    let caller = Caller {
        auth,
        uid: if read {
            None
        } else {
            peer_uid(&app, conn.peer, conn.local).await
        },
    };
    if !read {
        if let Err(a) = app.authorized(&caller) {
            app.counters.dropped(Dropped::Unauthorized);
            return Ok(closing(respond(a)));
        }
    }
    if tap {
        return Ok(match tap_stream(&app, req.uri().query().unwrap_or("")) {
            Ok(body) => {
                conn.streaming.store(true, Ordering::Relaxed);
                conn.slot.busy();
                Response::builder()
                    .status(StatusCode::OK)
                    .header(CONTENT_TYPE, "text/plain; charset=utf-8")
                    .header("cache-control", "no-store")
                    .body(http_body_util::Either::Right(body))
                    .unwrap_or_else(|_| {
                        Response::new(http_body_util::Either::Left(Full::default()))
                    })
            }
            Err(a) => respond(a),
        });
    }
    // The query stays on: /parity, /status.json, /targets/NAME/ring and /top read one.
    let path = req
        .uri()
        .path_and_query()
        .map_or_else(|| req.uri().path().to_owned(), |p| p.as_str().to_owned());
    let body = tokio::time::timeout(
        BODY_TIMEOUT,
        Limited::new(req.into_body(), MAX_BODY_BYTES).collect(),
    )
    .await;
    let answer = match body {
        Ok(Ok(body)) => {
            conn.slot.busy();
            let body = body.to_bytes();
            let app = Arc::clone(&app);
            // Control verbs connect sockets and start threads: keep them off the runtime's thread.
            let answer = tokio::task::spawn_blocking(move || {
                app.answer(&method, &path, accept.as_deref(), &caller, &body)
            })
            .await
            .unwrap_or_else(|_| Answer::text(500, "internal error\n"));
            conn.slot.waiting();
            answer
        }
        Ok(Err(_)) => Answer::error(413, "request body too large or unreadable"),
        Err(_) => {
            app.counters.dropped(Dropped::Slow);
            return Ok(closing(respond(Answer::error(
                408,
                "the request body did not arrive in time",
            ))));
        }
    };
    Ok(respond(answer))
}

/// The uid owning the client's end of a loopback connection, asked of the kernel (sock_diag);
/// `None` for a client on another host or when the kernel cannot say.
async fn peer_uid(app: &App, peer: SocketAddr, local: SocketAddr) -> Option<u32> {
    if !app.loopback || !crate::config::canonical(peer).ip().is_loopback() {
        return None;
    }
    tokio::task::spawn_blocking(move || {
        crate::net::diag::Diag::open()
            .and_then(|mut d| d.tcp_owner(peer, local))
            .ok()
            .flatten()
    })
    .await
    .ok()
    .flatten()
}

/// An answer after which the connection closes (its unread body is not waited for).
fn closing(mut resp: Response<Body>) -> Response<Body> {
    resp.headers_mut().insert(
        hyper::header::CONNECTION,
        hyper::header::HeaderValue::from_static("close"),
    );
    resp
}

fn respond(answer: Answer) -> Response<Body> {
    let mut resp = Response::builder()
        .status(StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header(CONTENT_TYPE, answer.content_type);
    if let Some(allow) = answer.allow {
        resp = resp.header(ALLOW, allow);
    }
    if answer.csp {
        resp = resp
            .header(
                "content-security-policy",
                "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'",
            )
            .header("x-content-type-options", "nosniff");
    }
    resp.body(http_body_util::Either::Left(Full::new(Bytes::from(
        answer.body,
    ))))
    .unwrap_or_else(|_| Response::new(http_body_util::Either::Left(Full::default())))
}

impl AdminServer {
    /// Serves on `addr` until [`stop`](Self::stop): on `inherited` (the listener of the udptee
    /// this one takes over) when it is bound there, else on a socket bound now.
    pub(crate) fn start(
        addr: SocketAddr,
        inherited: Option<std::net::TcpListener>,
        stats: Arc<Stats>,
        control: Arc<Control>,
    ) -> io::Result<Self> {
        let inherited = inherited.filter(|l| {
            l.local_addr()
                .is_ok_and(|bound| crate::net::socket::serves(bound, addr))
        });
        let listener = match inherited {
            Some(l) => {
                tracing::info!(%addr, "admin listener taken over from the previous udptee");
                l
            }
            None => std::net::TcpListener::bind(addr)?,
        };
        listener.set_nonblocking(true)?;
        let bound = listener.local_addr()?;
        let handover = listener.try_clone()?;
        let counters = AdminCounters::default();
        let mut registry = prometheus::registry(Arc::clone(&stats));
        counters.register(&mut registry);
        let app = Arc::new(App {
            registry,
            stats,
            control,
            loopback: bound.ip().is_loopback(),
            history: std::sync::Mutex::new(crate::report::status::History::new()),
            counters,
        });
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .max_blocking_threads(4)
            .thread_name("udptee-admin")
            .build()?;
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("udptee-admin".into())
            .spawn(move || runtime.block_on(accept_loop(listener, app, stop_rx)))?;
        Ok(Self {
            addr: bound,
            handover: Some(handover),
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// A second descriptor of the listening socket, for the next takeover.
    pub(crate) fn handover_fd(&self) -> Option<std::os::fd::OwnedFd> {
        self.handover
            .as_ref()
            .and_then(|l| l.try_clone().ok())
            .map(std::os::fd::OwnedFd::from)
    }

    /// The bound address (with the real port when asked for port 0).
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, lets the requests being answered finish (up to [`STOP_GRACE`]) and joins
    /// the serving thread. A successor holding the same listening socket answers what comes next.
    pub(crate) fn stop(&mut self) {
        self.handover = None;
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn accept_loop(
    listener: std::net::TcpListener,
    app: Arc<App>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
        tracing::error!("admin listener: could not register the socket; admin is off");
        return;
    };
    // The status page's samples: one snapshot a second, off the data path.
    let sampler = Arc::clone(&app);
    tokio::spawn(async move {
        let mut every = tokio::time::interval(crate::report::status::INTERVAL);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            every.tick().await;
            let app = Arc::clone(&sampler);
            let _ = tokio::task::spawn_blocking(move || {
                let snap = app.stats.snapshot();
                app.history
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .record(&snap, std::time::Instant::now());
            })
            .await;
        }
    });
    let mut slots = Slots::new(MAX_CONNECTIONS);
    let mut refused = crate::fanout::ratelimit::RateLimit::new();
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut stop => break,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(_) => {
                    // Out of fds and the like: back off instead of spinning.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let slot = match slots.admit() {
            Admit::Serve(s) => s,
            Admit::Evicted(s) => {
                app.counters.dropped(Dropped::Evicted);
                s
            }
            Admit::Refuse => {
                app.counters.dropped(Dropped::Limit);
                if let Some(count) = refused.hit(1) {
                    tracing::warn!(
                        count,
                        limit = MAX_CONNECTIONS,
                        "admin listener: every connection is being answered; closing new ones"
                    );
                }
                drop(stream);
                continue;
            }
        };
        app.counters.accepted();
        let Ok(local) = stream.local_addr() else {
            slot.close();
            continue;
        };
        let app = Arc::clone(&app);
        tokio::spawn(async move {
            let conn = Arc::new(Conn {
                slot,
                peer,
                local,
                streaming: AtomicBool::new(false),
            });
            let each = Arc::clone(&conn);
            let http = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .max_buf_size(MAX_HEADER_BYTES)
                .serve_connection(
                    TokioIo::new(stream),
                    hyper::service::service_fn(move |req| {
                        serve(Arc::clone(&app), req, Arc::clone(&each))
                    }),
                );
            tokio::pin!(http);
            tokio::select! {
                r = tokio::time::timeout(CONNECTION_TIMEOUT, http.as_mut()) => {
                    if r.is_err() && conn.streaming.load(Ordering::Relaxed) {
                        tokio::select! {
                            _ = http.as_mut() => {}
                            () = conn.slot.evicted() => {}
                        }
                    }
                }
                () = conn.slot.evicted() => {}
            }
            conn.slot.close();
        });
    }
    // Stopping: no new connections here (a successor may hold the same socket and take them);
    // the requests being answered get a moment to finish.
    drop(listener);
    let deadline = tokio::time::Instant::now() + STOP_GRACE;
    while slots.open() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
