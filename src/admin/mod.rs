//! The admin HTTP listener, on its own thread with a small single-threaded tokio runtime and hyper,
//! never on the data path.
//!
//! Read-only: `/metrics` (classic Prometheus text, or OpenMetrics when the scraper asks for it),
//! `/latency`, `/healthz`, `/readyz`, `GET /targets[/{name}]`. Mutating: `PUT` and `DELETE
//! /targets/{name}`, `POST /targets/{name}/enable|disable`, `POST /-/reload`; these need the bearer
//! token when one is configured, and are refused (403) without one unless the listener is on loopback.
//! Bounded against hostile clients: headers at most [`MAX_HEADER_BYTES`] (hyper answers 431), bodies
//! at most [`MAX_BODY_BYTES`] (413), at most [`MAX_CONNECTIONS`] connections at once (more are closed
//! at once), [`HEADER_TIMEOUT`] to send the headers and [`CONNECTION_TIMEOUT`] per connection;
//! malformed requests get 400 from hyper. Answers never echo the request.
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

use self::routes::{Answer, App, Body, tap_stream};
use crate::control::Control;
use crate::report::Stats;
use crate::report::prometheus;

mod routes;

/// Largest request head (request line and headers) read: 16 KiB.
pub(crate) const MAX_HEADER_BYTES: usize = 16 << 10;
/// Largest request body read: 64 KiB (a target's JSON is a few hundred bytes).
pub(crate) const MAX_BODY_BYTES: usize = 64 << 10;
/// Most connections served at once; a scraper and an operator need a handful.
pub(crate) const MAX_CONNECTIONS: usize = 64;
/// Time a client has to send its request headers (slowloris).
pub(crate) const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest a connection may stay open, keep-alive included.
pub(crate) const CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);

/// The running admin listener.
pub(crate) struct AdminServer {
    addr: SocketAddr,
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

async fn serve(
    app: Arc<App>,
    req: Request<Incoming>,
    streaming: Arc<std::sync::atomic::AtomicBool>,
) -> Result<Response<Body>, Infallible> {
    let method = req.method().clone();
    if method == Method::GET && req.uri().path() == "/tap" {
        let auth = req
            .headers()
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let answer = match app.authorized(auth) {
            Err(a) => Err(a),
            Ok(()) => tap_stream(&app, req.uri().query().unwrap_or("")),
        };
        match answer {
            Ok(body) => {
                streaming.store(true, std::sync::atomic::Ordering::Relaxed);
                return Ok(Response::builder()
                    .status(StatusCode::OK)
                    .header(CONTENT_TYPE, "text/plain; charset=utf-8")
                    .header("cache-control", "no-store")
                    .body(http_body_util::Either::Right(body))
                    .unwrap_or_else(|_| {
                        Response::new(http_body_util::Either::Left(Full::default()))
                    }));
            }
            Err(a) => return Ok(respond(a)),
        }
    }
    // The query stays on: only /parity reads one (`?primary=NAME`).
    let path = req
        .uri()
        .path_and_query()
        .map_or_else(|| req.uri().path().to_owned(), |p| p.as_str().to_owned());
    let header = |name| {
        req.headers()
            .get(name)
            .and_then(|v: &hyper::header::HeaderValue| v.to_str().ok())
            .map(str::to_owned)
    };
    let (accept, auth) = (header(ACCEPT), header(AUTHORIZATION));
    let answer = match Limited::new(req.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
    {
        Ok(body) => {
            let body = body.to_bytes();
            let app = Arc::clone(&app);
            // Control verbs connect sockets and start threads: keep them off the runtime's thread.
            tokio::task::spawn_blocking(move || {
                app.answer(&method, &path, accept.as_deref(), auth.as_deref(), &body)
            })
            .await
            .unwrap_or_else(|_| Answer::text(500, "internal error\n"))
        }
        Err(_) => Answer::error(413, "request body too large or unreadable"),
    };
    Ok(respond(answer))
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
    /// Binds `addr` and serves until [`stop`](Self::stop).
    pub(crate) fn start(
        addr: SocketAddr,
        stats: Arc<Stats>,
        control: Arc<Control>,
    ) -> io::Result<Self> {
        let listener = std::net::TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let bound = listener.local_addr()?;
        let app = Arc::new(App {
            registry: prometheus::registry(Arc::clone(&stats)),
            stats,
            control,
            loopback: bound.ip().is_loopback(),
            history: std::sync::Mutex::new(crate::report::status::History::new()),
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
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// The bound address (with the real port when asked for port 0).
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting and joins the serving thread.
    pub(crate) fn stop(&mut self) {
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
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let mut refused = crate::fanout::ratelimit::RateLimit::new();
    loop {
        let (stream, _) = tokio::select! {
            _ = &mut stop => return,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(_) => {
                    // Out of fds and the like: back off instead of spinning.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
            if let Some(count) = refused.hit(1) {
                tracing::warn!(
                    count,
                    limit = MAX_CONNECTIONS,
                    "admin listener at its connection limit; closing new connections"
                );
            }
            drop(stream);
            continue;
        };
        let app = Arc::clone(&app);
        tokio::spawn(async move {
            let _permit = permit;
            // A tap streams for as long as its client reads: the connection limit spares it.
            let streaming = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let flag = Arc::clone(&streaming);
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .max_buf_size(MAX_HEADER_BYTES)
                .serve_connection(
                    TokioIo::new(stream),
                    hyper::service::service_fn(move |req| {
                        serve(Arc::clone(&app), req, Arc::clone(&flag))
                    }),
                );
            tokio::pin!(conn);
            if tokio::time::timeout(CONNECTION_TIMEOUT, conn.as_mut())
                .await
                .is_err()
                && streaming.load(std::sync::atomic::Ordering::Relaxed)
            {
                let _ = conn.await;
            }
        });
    }
}
