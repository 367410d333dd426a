//! The admin API's routes and their answers: which request goes where (`admin/route`), who may
//! change what (`App::authorized`), and each handler, calling the control verbs (floor 4) and the
//! report (floor 3). Pure apart from the forwarder's state, so it is tested without sockets; the
//! listener in `admin/mod.rs` only bounds and carries requests.

use std::sync::Arc;

use http_body_util::Full;
use hyper::Method;
use hyper::body::Bytes;
use prometheus_client::registry::Registry;
use serde_json::json;

use super::route::{Route, route_of};
use crate::control::{Control, ControlError};
use crate::report::Stats;
use crate::report::json::{parity_json, placement_json, targets_json};
use crate::report::prometheus;

/// What a request needs to be answered.
pub(crate) struct App {
    pub(crate) stats: Arc<Stats>,
    pub(crate) control: Arc<Control>,
    pub(crate) registry: Registry,
    pub(crate) loopback: bool,
    /// The status page's samples (one a second, by a task on this runtime).
    pub(crate) history: std::sync::Mutex<crate::report::status::History>,
    /// What became of the listener's connections.
    pub(crate) counters: super::slots::AdminCounters,
}

/// Who sent a request: the bearer token it carried, and the user owning the other end of its
/// connection when the kernel names one (loopback clients only).
#[derive(Debug, Default, Clone)]
pub(crate) struct Caller {
    pub(crate) auth: Option<String>,
    pub(crate) uid: Option<u32>,
}

/// What to answer: status, content type, body, extra headers.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) content_type: &'static str,
    pub(crate) body: String,
    pub(crate) allow: Option<&'static str>,
    /// The status page's assets: only this listener may be reached from them.
    pub(crate) csp: bool,
}

impl Answer {
    pub(crate) fn text(status: u16, body: impl Into<String>) -> Self {
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

    pub(crate) fn error(status: u16, message: &str) -> Self {
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

/// True for the OpenMetrics media type in an `Accept` header (Prometheus sends it first when it
/// supports it); anything else gets the classic text format, which every parser reads.
fn wants_openmetrics(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| a.contains("application/openmetrics-text"))
}

impl App {
    /// Who may change things: with a token configured, whoever presents it; without one, only on
    /// a loopback listener, and only root or the user udptee runs as (the kernel names the owner of
    /// the client's socket). Loopback is not trust on a shared host.
    pub(crate) fn authorized(&self, caller: &Caller) -> Result<(), Answer> {
        match self.control.admin_token() {
            Some(token) => {
                let given = caller
                    .auth
                    .as_deref()
                    .and_then(|a| a.strip_prefix("Bearer "))
                    .map(str::trim);
                if given.is_some_and(|g| constant_time_eq(g.as_bytes(), token.as_bytes())) {
                    Ok(())
                } else {
                    Err(Answer::error(
                        403,
                        "this needs Authorization: Bearer <the --admin-token-file token>",
                    ))
                }
            }
            None if self.loopback => {
                let me = nix::unistd::Uid::effective().as_raw();
                match caller.uid {
                    Some(uid) if uid == 0 || uid == me => Ok(()),
                    _ => Err(Answer::error(
                        403,
                        &format!(
                            "without --admin-token-file, changes are accepted only from root or uid {me} (udptee's user)"
                        ),
                    )),
                }
            }
            None => Err(Answer::error(
                403,
                "changes are accepted only on a loopback admin listener unless --admin-token-file is set",
            )),
        }
    }

    /// Routes one request. Pure apart from the forwarder's state, so it is tested without sockets.
    /// An error answer never echoes the request: what it quotes of the path or the body is cut out.
    pub(crate) fn answer(
        &self,
        method: &Method,
        path: &str,
        accept: Option<&str>,
        caller: &Caller,
        body: &[u8],
    ) -> Answer {
        let mut a = self.route(method, path, accept, caller, body);
        if a.status >= 400 {
            if let Some(message) = serde_json::from_str::<serde_json::Value>(&a.body)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_owned))
            {
                a.body = Answer::error(a.status, &without_echoes(&message, path, body)).body;
            }
        }
        a
    }

    fn route(
        &self,
        method: &Method,
        path: &str,
        accept: Option<&str>,
        caller: &Caller,
        body: &[u8],
    ) -> Answer {
        let read = matches!(*method, Method::GET | Method::HEAD);
        match route_of(path) {
            Route::Unknown => Answer::text(
                404,
                "not found; try /, /status.json, /metrics, /latency, /healthz, /readyz, /targets, /parity, /record, /tap, /top, /-/reload\n",
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
            | Route::Top(_)
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
                if let Err(a) = self.authorized(caller) {
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
            Route::Tap => match self.authorized(caller) {
                Err(a) => a,
                Ok(()) => Answer::text(200, ""),
            },
            Route::Top(query) => match crate::top::TopQuery::parse(&query) {
                Err(e) => Answer::error(400, &e),
                Ok(q) => match self.stats.top().look(&q) {
                    Ok(r) => Answer::json(200, &serde_json::to_value(r).unwrap_or_default()),
                    Err(e) => Answer::error(503, &e.to_string()),
                },
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
                    if let Err(a) = self.authorized(caller) {
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
            Route::Ring(name, keys) => {
                if !matches!(*method, Method::GET | Method::HEAD) {
                    return Answer::method_not_allowed("GET, HEAD");
                }
                let [key] = &keys[..] else {
                    return Answer::error(400, "give exactly one key: /targets/NAME/ring?key=KEY");
                };
                match self.stats.locate(&name, key.as_bytes()) {
                    Some(p) => Answer::json(200, &placement_json(&name, key, &p)),
                    None => Answer::error(404, "no group of that name"),
                }
            }
            Route::Toggle(name, enabled) => {
                if *method != Method::POST {
                    return Answer::method_not_allowed("POST");
                }
                if let Err(a) = self.authorized(caller) {
                    return a;
                }
                changed(self.control.set_enabled(&name, enabled))
            }
            Route::Reload => {
                if *method != Method::POST {
                    return Answer::method_not_allowed("POST");
                }
                if let Err(a) = self.authorized(caller) {
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

/// `message` with every quoted piece of the request cut out: the path's segments and query values
/// (decoded) and the body's JSON strings and keys, as `"…"` (a Rust or JSON quote) or `` `…` ``.
fn without_echoes(message: &str, path: &str, body: &[u8]) -> String {
    let mut echoes: Vec<String> = path
        .split(['/', '?', '&', '='])
        .filter_map(|p| percent_encoding::percent_decode_str(p).decode_utf8().ok())
        .map(|p| p.into_owned())
        .collect();
    fn strings(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::String(s) => out.push(s.clone()),
            serde_json::Value::Array(a) => a.iter().for_each(|v| strings(v, out)),
            serde_json::Value::Object(o) => o.iter().for_each(|(k, v)| {
                out.push(k.clone());
                strings(v, out);
            }),
            _ => {}
        }
    }
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) {
        strings(&v, &mut echoes);
    }
    let mut out = message.to_owned();
    for e in echoes.iter().filter(|e| !e.is_empty()) {
        for quoted in [format!("{e:?}"), format!("`{e}`"), format!("\"{e}\"")] {
            out = out.replace(&quoted, "\"…\"");
        }
    }
    out
}

/// Compares secrets in time independent of where they differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The body of `GET /tap`: chunks from the tap's task, as the client reads them.
pub(crate) struct TapBody(tokio::sync::mpsc::Receiver<Bytes>);

impl hyper::body::Body for TapBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, std::convert::Infallible>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|b| Ok(hyper::body::Frame::data(b))))
    }
}

/// A response body: a whole answer, or a tap's stream.
pub(crate) type Body = http_body_util::Either<Full<Bytes>, TapBody>;

/// Opens a tap and streams it: the task drains the tap's ring every [`crate::tap::POLL`] into
/// chunks, and waits (the ring filling, workers counting drops) while the client does not read.
pub(crate) fn tap_stream(app: &App, query: &str) -> Result<TapBody, Answer> {
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
