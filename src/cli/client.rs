//! The HTTP client of the subcommands that read a running udptee's admin listener (`udptee tap`,
//! `udptee top`): one agent, the bearer token when there is one, and an error answer's `error` text
//! as the message.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use crate::config;

/// A running udptee's admin listener, as a client sees it.
#[derive(Debug)]
pub(crate) struct AdminClient {
    addr: SocketAddr,
    agent: ureq::Agent,
    token: Option<String>,
}

impl AdminClient {
    /// A client of `admin` (`HOST:PORT`), with the token read from `token_file` if given.
    pub(crate) fn new(admin: &str, token_file: Option<&Path>) -> Result<Self, String> {
        let addr = config::resolve(admin).map_err(|e| e.to_string())?;
        let token = token_file
            .map(|path| {
                std::fs::read_to_string(path)
                    .map(|t| t.trim().to_owned())
                    .map_err(|e| format!("--admin-token-file {}: {e}", path.display()))
            })
            .transpose()?;
        Ok(Self::at(addr, token))
    }

    /// A client of `addr` presenting `token`.
    pub(crate) fn at(addr: SocketAddr, token: Option<String>) -> Self {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(5)))
            .build()
            .into();
        Self { addr, agent, token }
    }

    /// The listener's address.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `GET path_and_query`: the body of a 2xx answer, or what went wrong in one line. `timeout`
    /// bounds the whole exchange (`None`: a stream read for as long as it lasts).
    pub(crate) fn get(
        &self,
        path_and_query: &str,
        timeout: Option<Duration>,
    ) -> Result<ureq::Body, String> {
        let addr = self.addr;
        let mut req = self
            .agent
            .get(format!("http://{addr}{path_and_query}"))
            .config()
            .timeout_global(timeout)
            .build();
        if let Some(token) = &self.token {
            req = req.header("authorization", &format!("Bearer {token}"));
        }
        let resp = req
            .call()
            .map_err(|e| format!("asking the admin listener at {addr}: {e}"))?;
        let status = resp.status();
        let mut body = resp.into_body();
        if status.is_success() {
            return Ok(body);
        }
        let text = body
            .with_config()
            .limit(64 << 10)
            .read_to_string()
            .unwrap_or_default();
        let why = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_owned))
            .unwrap_or(text);
        Err(format!("{addr} answered {status}: {}", why.trim()))
    }
}
