//! The admin HTTP listener: `/metrics`, `/latency`, `/healthz`, `/readyz`, served by tiny_http on its
//! own threads, never on the data path. Anything else is 404; a known path with a method other than
//! GET or HEAD is 405. Malformed requests are answered 400 by tiny_http itself.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;

use prometheus_client::registry::Registry;
use tiny_http::{Header, Method, Response, Server};

use crate::fanout::Stats;
use crate::metrics::prometheus;

/// The running admin listener.
pub(crate) struct AdminServer {
    server: Arc<Server>,
    addr: SocketAddr,
    thread: Option<JoinHandle<()>>,
}

/// What to answer: status, content type, body.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) content_type: &'static str,
    pub(crate) body: String,
}

impl Answer {
    fn text(status: u16, body: impl Into<String>) -> Self {
        Self {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into(),
        }
    }
}

const PATHS: [&str; 4] = ["/metrics", "/latency", "/healthz", "/readyz"];

/// Routes one request. Pure apart from reading `stats`, so it is tested without sockets.
pub(crate) fn route(stats: &Stats, registry: &Registry, method: &Method, url: &str) -> Answer {
    let path = url.split('?').next().unwrap_or(url);
    if !PATHS.contains(&path) {
        return Answer::text(
            404,
            format!("not found: {path}; try {}\n", PATHS.join(", ")),
        );
    }
    if !matches!(method, Method::Get | Method::Head) {
        return Answer::text(
            405,
            format!("method {method} not allowed on {path}; use GET\n"),
        );
    }
    match path {
        "/metrics" => match prometheus::render(registry) {
            Ok(body) => Answer {
                status: 200,
                content_type: prometheus::CONTENT_TYPE,
                body,
            },
            Err(_) => Answer::text(500, "encoding metrics failed\n"),
        },
        "/latency" => match serde_json::to_string_pretty(&stats.latency_summaries()) {
            Ok(body) => Answer {
                status: 200,
                content_type: "application/json",
                body: body + "\n",
            },
            Err(e) => Answer::text(500, format!("encoding latency failed: {e}\n")),
        },
        "/healthz" => Answer::text(200, "ok\n"),
        _ => match stats.ready() {
            Ok(()) => Answer::text(200, "ready\n"),
            Err(why) => Answer::text(503, format!("not ready: {why}\n")),
        },
    }
}

impl std::fmt::Debug for AdminServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminServer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl AdminServer {
    /// Binds `addr` and serves until [`stop`](Self::stop).
    pub(crate) fn start(addr: SocketAddr, stats: Arc<Stats>) -> io::Result<Self> {
        let server = Arc::new(Server::http(addr).map_err(|e| io::Error::other(e.to_string()))?);
        let bound = server.server_addr().to_ip().unwrap_or(addr);
        let registry = prometheus::registry(Arc::clone(&stats));
        let srv = Arc::clone(&server);
        let thread = std::thread::Builder::new()
            .name("udptee-admin".into())
            .spawn(move || {
                for request in srv.incoming_requests() {
                    let answer = route(&stats, &registry, request.method(), request.url());
                    let mut response =
                        Response::from_string(answer.body).with_status_code(answer.status);
                    if let Ok(h) = Header::from_bytes("Content-Type", answer.content_type) {
                        response.add_header(h);
                    }
                    if answer.status == 405 {
                        if let Ok(h) = Header::from_bytes("Allow", "GET, HEAD") {
                            response.add_header(h);
                        }
                    }
                    // A client that went away is its own problem, not the forwarder's.
                    let _ = request.respond(response);
                }
            })?;
        Ok(Self {
            server,
            addr: bound,
            thread: Some(thread),
        })
    }

    /// The bound address (with the real port when asked for port 0).
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting and joins the serving thread.
    pub(crate) fn stop(&mut self) {
        self.server.unblock();
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
