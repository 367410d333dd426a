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
use prometheus_client::registry::Registry;
use serde_json::json;

use crate::control::{Control, ControlError};
use crate::report::Stats;
use crate::report::prometheus;

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

/// What a request needs to be answered.
struct App {
    stats: Arc<Stats>,
    control: Arc<Control>,
    registry: Registry,
    loopback: bool,
    /// The status page's samples (one a second, by a task on this runtime).
    history: std::sync::Mutex<crate::report::status::History>,
}

/// What to answer: status, content type, body, extra headers.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) content_type: &'static str,
    pub(crate) body: String,
    allow: Option<&'static str>,
    /// The status page's assets: only this listener may be reached from them.
    csp: bool,
}

impl Answer {
    fn text(status: u16, body: impl Into<String>) -> Self {
        Self {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into(),
            allow: None,
            csp: false,
        }
    }

    fn asset(content_type: &'static str, body: &'static str) -> Self {
        Self {
            content_type,
            csp: true,
            ..Self::text(200, body)
        }
    }

    fn json(status: u16, value: &serde_json::Value) -> Self {
        Self {
            status,
            content_type: "application/json",
            body: serde_json::to_string_pretty(value).unwrap_or_default() + "\n",
            allow: None,
            csp: false,
        }
    }

    fn error(status: u16, message: &str) -> Self {
        Self::json(status, &json!({ "error": message }))
    }

    fn method_not_allowed(allow: &'static str) -> Self {
        Self {
            allow: Some(allow),
            ..Self::text(405, format!("method not allowed; use {allow}\n"))
        }
    }
}

impl From<ControlError> for Answer {
    fn from(e: ControlError) -> Self {
        let status = match e {
            ControlError::Invalid(_) => 400,
            ControlError::NotFound(_) => 404,
            ControlError::Unavailable(_) => 503,
        };
        Self::error(status, &e.to_string())
    }
}

/// A route the listener knows, by path shape.
enum Route {
    Metrics,
    Latency,
    Parity(Option<String>),
    Healthz,
    Readyz,
    Targets,
    Target(String),
    Toggle(String, bool),
    Reload,
    Page,
    PageAsset(&'static str, &'static str),
    Status(Option<String>),
    Record,
    RecordStart,
    RecordStop,
    Tap,
    Unknown,
}

fn route_of(path_and_query: &str) -> Route {
    let (path, query) = path_and_query
        .split_once('?')
        .unwrap_or((path_and_query, ""));
    let primary = query.split('&').find_map(|kv| {
        let v = kv.strip_prefix("primary=")?;
        percent_encoding::percent_decode_str(v)
            .decode_utf8()
            .ok()
            .map(|c| c.into_owned())
    });
    match path {
        "/" => Route::Page,
        "/status.css" => Route::PageAsset("text/css; charset=utf-8", crate::report::status::CSS),
        "/status.js" => {
            Route::PageAsset("text/javascript; charset=utf-8", crate::report::status::JS)
        }
        "/status.json" => Route::Status(primary),
        "/metrics" => Route::Metrics,
        "/parity" => Route::Parity(primary),
        "/latency" => Route::Latency,
        "/healthz" => Route::Healthz,
        "/readyz" => Route::Readyz,
        "/targets" | "/targets/" => Route::Targets,
        "/-/reload" => Route::Reload,
        "/record" => Route::Record,
        "/record/start" => Route::RecordStart,
        "/record/stop" => Route::RecordStop,
        "/tap" => Route::Tap,
        _ => {
            let Some(rest) = path.strip_prefix("/targets/") else {
                return Route::Unknown;
            };
            let decode = |s: &str| {
                percent_encoding::percent_decode_str(s)
                    .decode_utf8()
                    .map(|c| c.into_owned())
                    .ok()
            };
            match rest.rsplit_once('/') {
                Some((name, "enable")) => {
                    decode(name).map_or(Route::Unknown, |n| Route::Toggle(n, true))
                }
                Some((name, "disable")) => {
                    decode(name).map_or(Route::Unknown, |n| Route::Toggle(n, false))
                }
                Some(_) => Route::Unknown,
                None => decode(rest).map_or(Route::Unknown, Route::Target),
            }
        }
    }
}

/// True for the OpenMetrics media type in an `Accept` header (Prometheus sends it first when it
/// supports it); anything else gets the classic text format, which every parser reads.
fn wants_openmetrics(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| a.contains("application/openmetrics-text"))
}

impl App {
    /// Mutations need the token when one is set; without one, only a loopback listener takes them.
    fn authorized(&self, auth: Option<&str>) -> Result<(), Answer> {
        match self.control.admin_token() {
            Some(token) => {
                let given = auth.and_then(|a| a.strip_prefix("Bearer ")).map(str::trim);
                if given.is_some_and(|g| constant_time_eq(g.as_bytes(), token.as_bytes())) {
                    Ok(())
                } else {
                    Err(Answer::error(
                        403,
                        "this needs Authorization: Bearer <the --admin-token-file token>",
                    ))
                }
            }
            None if self.loopback => Ok(()),
            None => Err(Answer::error(
                403,
                "changes are accepted only on a loopback admin listener unless --admin-token-file is set",
            )),
        }
    }

    /// Routes one request. Pure apart from the forwarder's state, so it is tested without sockets.
    pub(crate) fn answer(
        &self,
        method: &Method,
        path: &str,
        accept: Option<&str>,
        auth: Option<&str>,
        body: &[u8],
    ) -> Answer {
        let read = matches!(*method, Method::GET | Method::HEAD);
        match route_of(path) {
            Route::Unknown => Answer::text(
                404,
                "not found; try /, /status.json, /metrics, /latency, /healthz, /readyz, /targets, /parity, /record, /tap, /-/reload\n",
            ),
            Route::Metrics
            | Route::Latency
            | Route::Healthz
            | Route::Readyz
            | Route::Targets
            | Route::Record
            | Route::Page
            | Route::PageAsset(..)
            | Route::Status(_)
            | Route::Tap
            | Route::Parity(_)
                if !read =>
            {
                Answer::method_not_allowed("GET, HEAD")
            }
            Route::Metrics => {
                let open = wants_openmetrics(accept);
                match prometheus::render(&self.registry, open) {
                    Ok(body) => Answer {
                        content_type: if open {
                            prometheus::OPENMETRICS_CONTENT_TYPE
                        } else {
                            prometheus::TEXT_CONTENT_TYPE
                        },
                        ..Answer::text(200, body)
                    },
                    Err(_) => Answer::text(500, "encoding metrics failed\n"),
                }
            }
            Route::Latency => Answer::json(
                200,
                &serde_json::to_value(self.stats.latency_summaries()).unwrap_or_default(),
            ),
            Route::Healthz => Answer::text(200, "ok\n"),
            Route::Readyz => match self.stats.ready() {
                Ok(()) => Answer::text(200, "ready\n"),
                Err(why) => Answer::text(503, format!("not ready: {why}\n")),
            },
            Route::Targets => Answer::json(200, &targets_json(&self.stats, None)),
            Route::Page => Answer::asset("text/html; charset=utf-8", crate::report::status::PAGE),
            Route::PageAsset(content_type, body) => Answer::asset(content_type, body),
            Route::Status(primary) => {
                let history = self.history.lock().unwrap_or_else(|p| p.into_inner());
                Answer::json(
                    200,
                    &crate::report::status::status_json(&self.stats, &history, primary.as_deref()),
                )
            }
            Route::Record => Answer::json(
                200,
                &serde_json::to_value(self.control.recorder().status()).unwrap_or_default(),
            ),
            route @ (Route::RecordStart | Route::RecordStop) => {
                if *method != Method::POST {
                    return Answer::method_not_allowed("POST");
                }
                if let Err(a) = self.authorized(auth) {
                    return a;
                }
                let r = if matches!(route, Route::RecordStart) {
                    self.control.record_start(body)
                } else {
                    self.control.recorder().stop()
                };
                match r {
                    Ok(status) => {
                        Answer::json(200, &serde_json::to_value(status).unwrap_or_default())
                    }
                    Err(e) => {
                        let code = match e {
                            crate::record::RecordError::Invalid(_) => 400,
                            crate::record::RecordError::Conflict(_) => 409,
                            _ => 503,
                        };
                        Answer::error(code, &e.to_string())
                    }
                }
            }
            // Streamed by `serve`; reaching here means a HEAD or a refused request.
            Route::Tap => match self.authorized(auth) {
                Err(a) => a,
                Ok(()) => Answer::text(200, ""),
            },
            Route::Parity(primary) => match parity_json(&self.stats, primary.as_deref()) {
                Ok(v) => Answer::json(200, &v),
                Err(e) => Answer::error(404, &e),
            },
            Route::Target(name) => match *method {
                Method::GET | Method::HEAD => {
                    let v = targets_json(&self.stats, Some(&name));
                    match v.as_array().and_then(|a| a.first()) {
                        Some(t) => Answer::json(200, t),
                        None => Answer::error(404, "no target of that name"),
                    }
                }
                Method::PUT | Method::DELETE => {
                    if let Err(a) = self.authorized(auth) {
                        return a;
                    }
                    let r = if *method == Method::PUT {
                        self.control.put(&name, body)
                    } else {
                        self.control.remove(&name)
                    };
                    changed(r)
                }
                _ => Answer::method_not_allowed("GET, HEAD, PUT, DELETE"),
            },
            Route::Toggle(name, enabled) => {
                if *method != Method::POST {
                    return Answer::method_not_allowed("POST");
                }
                if let Err(a) = self.authorized(auth) {
                    return a;
                }
                changed(self.control.set_enabled(&name, enabled))
            }
            Route::Reload => {
                if *method != Method::POST {
                    return Answer::method_not_allowed("POST");
                }
                if let Err(a) = self.authorized(auth) {
                    return a;
                }
                match self.control.reload() {
                    Ok(report) => {
                        Answer::json(200, &serde_json::to_value(report).unwrap_or_default())
                    }
                    Err(e) => e.into(),
                }
            }
        }
    }
}

/// The answer to an API change: what it did, and that it is runtime state.
fn changed(r: Result<crate::fanout::targets::Change, ControlError>) -> Answer {
    match r {
        Ok(change) => Answer::json(
            200,
            &json!({
                "change": change,
                "note": "runtime state: the next reload re-applies the configuration file",
            }),
        ),
        Err(e) => e.into(),
    }
}

/// Compares secrets in time independent of where they differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `GET /targets`: every target (current, then removed) with its settings and counters.
pub(crate) fn targets_json(stats: &Stats, only: Option<&str>) -> serde_json::Value {
    let table = stats.registry().current();
    let snaps = stats.registry().snapshots();
    let list: Vec<serde_json::Value> = snaps
        .iter()
        .filter(|(name, _)| only.is_none_or(|o| o == name))
        .map(|(name, s)| {
            let entry = table.targets.iter().find(|t| &t.spec.name == name);
            let dropped: serde_json::Map<String, serde_json::Value> =
                crate::metrics::counters::DropReason::PER_TARGET
                    .iter()
                    .map(|r| (r.as_str().to_owned(), json!(s.dropped(*r))))
                    .collect();
            let counters = json!({
                "offered": s.offered,
                "forwarded": s.forwarded,
                "forwarded_bytes": s.bytes,
                "kernel_forwarded": s.kernel_forwarded,
                "dropped": dropped,
                "queued": s.queued(),
                "receiver_drops": s.receiver_drops,
                "up": s.up,
                "filtered": s.filtered,
                "lines": crate::metrics::counters::LineOutcome::ALL
                    .iter()
                    .map(|o| (o.as_str().to_owned(), json!(s.lines(*o))))
                    .collect::<serde_json::Map<String, serde_json::Value>>(),
            });
            match entry {
                Some(t) => json!({
                    "name": name,
                    "state": "active",
                    "addr": t.spec.addr,
                    "resolved": t.spec.unix.as_ref().map_or_else(
                        || t.spec.resolved.to_string(),
                        |p| format!("unixgram://{}", p.display()),
                    ),
                    "enabled": t.spec.enabled,
                    "path": stats.registry().path_of(name),
                    "queue-depth": t.spec.queue_depth,
                    "queue-bytes": t.spec.queue_bytes,
                    "sndbuf": t.spec.sndbuf_bytes,
                    "lines": t.spec.lines,
                    "parity": t.spec.parity,
                    "queued_bytes": t.core.ring.used_bytes(),
                    "counters": counters,
                }),
                None => json!({ "name": name, "state": "removed", "counters": counters }),
            }
        })
        .collect();
    serde_json::Value::Array(list)
}

/// One target's books in the parity ledger: datagrams and lines by outcome, and the digest.
fn ledger(s: &crate::metrics::counters::TargetSnapshot) -> serde_json::Value {
    use crate::metrics::counters::{DropReason, LineOutcome};
    let dropped: serde_json::Map<String, serde_json::Value> = DropReason::PER_TARGET
        .iter()
        .map(|r| (r.as_str().to_owned(), json!(s.dropped(*r))))
        .collect();
    let lines: serde_json::Map<String, serde_json::Value> = LineOutcome::ALL
        .iter()
        .map(|o| (o.as_str().to_owned(), json!(s.lines(*o))))
        .collect();
    json!({
        "datagrams": {
            "offered": s.offered,
            "sent": s.forwarded,
            "filtered": s.filtered,
            "dropped": dropped,
            "queued": s.queued(),
        },
        "lines": lines,
        "digest": format!("{:016x}", s.digest),
    })
}

/// `GET /parity[?primary=NAME]`: per target, since start and over the last complete window, what
/// was offered, kept, removed (by cause), dropped (by reason) and sent, with an order-independent
/// digest of the lines sent. With a primary, each other target is compared with it: equal digests,
/// and every difference in lines sent beside the causes the target's own books give.
pub(crate) fn parity_json(
    stats: &Stats,
    primary: Option<&str>,
) -> Result<serde_json::Value, String> {
    use crate::metrics::counters::LineOutcome;
    let now = stats.registry().snapshots();
    let last = stats.registry().last_parity_window();
    let primary_snap = match primary {
        Some(p) => Some(
            now.iter()
                .find(|(n, _)| n == p)
                .map(|(_, s)| s.clone())
                .ok_or_else(|| format!("no target named {p:?}"))?,
        ),
        None => None,
    };
    let targets: Vec<serde_json::Value> = now
        .iter()
        .map(|(name, s)| {
            let mut v = json!({ "name": name, "since_start": ledger(s) });
            if let Some((len, window)) = &last {
                if let Some((_, w)) = window.iter().find(|(n, _)| n == name) {
                    v["last_interval"] = ledger(w);
                    v["last_interval"]["seconds"] = json!(len.as_secs_f64());
                }
            }
            if let (Some(p), Some(pname)) = (&primary_snap, primary) {
                if pname != name {
                    let sent = |x: &crate::metrics::counters::TargetSnapshot| x.lines(LineOutcome::Sent);
                    let cause = |o: LineOutcome| s.lines(o) as i128 - p.lines(o) as i128;
                    v["versus_primary"] = json!({
                        "digest_equal": s.digest == p.digest,
                        "lines_sent_difference": sent(p) as i128 - sent(s) as i128,
                        "explained_by": {
                            "filtered": cause(LineOutcome::Filtered),
                            "sampled_out": cause(LineOutcome::SampledOut),
                            "malformed_dropped": cause(LineOutcome::MalformedDropped),
                            "dropped": cause(LineOutcome::Dropped),
                            "datagrams_dropped_before_the_filter": s.dropped_total() as i128 - p.dropped_total() as i128,
                            "offered": p.lines(LineOutcome::Offered) as i128 - s.lines(LineOutcome::Offered) as i128,
                        },
                    });
                }
            }
            v
        })
        .collect();
    Ok(json!({
        "primary": primary,
        "window_seconds": crate::fanout::targets::PARITY_INTERVAL.as_secs(),
        "note": "lines are counted for targets with line settings or parity = true; others show zeros",
        "targets": targets,
    }))
}

/// A response body: a whole answer, or a tap's stream.
type Body = http_body_util::Either<Full<Bytes>, TapBody>;

/// The body of `GET /tap`: chunks from the tap's task, as the client reads them.
pub(crate) struct TapBody(tokio::sync::mpsc::Receiver<Bytes>);

impl hyper::body::Body for TapBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Infallible>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|b| Ok(hyper::body::Frame::data(b))))
    }
}

/// Opens a tap and streams it: the task drains the tap's ring every [`crate::tap::POLL`] into
/// chunks, and waits (the ring filling, workers counting drops) while the client does not read.
fn tap_stream(app: &App, query: &str) -> Result<TapBody, Answer> {
    let q = crate::tap::TapQuery::parse(query).map_err(|e| Answer::error(400, &e))?;
    let mut tap = app.stats.taps().open(&q).map_err(|e| match e {
        crate::tap::TapError::Invalid(m) => Answer::error(400, &m),
        e => Answer::error(503, &e.to_string()),
    })?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
    tokio::spawn(async move {
        let _ = tx
            .send(Bytes::from_static(
                b"# udptee tap: time source > destination length payload\n",
            ))
            .await;
        loop {
            let mut text = String::new();
            let taken = tap.fill(&mut text);
            if !text.is_empty() && tx.send(Bytes::from(text)).await.is_err() {
                return; // the client went away
            }
            if tap.done() {
                break;
            }
            if taken == 0 {
                tokio::select! {
                    () = tokio::time::sleep(crate::tap::POLL) => {}
                    () = tx.closed() => return,
                }
            }
        }
        let _ = tx.send(Bytes::from(tap.summary())).await;
    });
    Ok(TapBody(rx))
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
            registry: prometheus::registry(Arc::clone(&stats), Arc::clone(&control)),
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
