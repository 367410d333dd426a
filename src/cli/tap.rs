//! `udptee tap`: its flags and the HTTP client that reads a running udptee's `GET /tap`.

use std::path::PathBuf;
use std::time::Duration;

use crate::config;

/// `udptee tap`.
#[derive(Debug, Clone, clap::Args)]
pub struct TapArgs {
    /// The running udptee's admin listener.
    #[arg(long, value_name = "ADDR", default_value = config::DEFAULT_ADMIN)]
    pub admin: String,
    /// Stop after N datagrams.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,
    /// Only lines whose metric name matches this glob (repeat for several).
    #[arg(long, value_name = "GLOB")]
    pub include: Vec<String>,
    /// File holding the admin bearer token (needed when the admin listener is not on loopback).
    #[arg(long, value_name = "PATH")]
    pub admin_token_file: Option<PathBuf>,
}

impl TapArgs {
    /// Connects to the tap; the reader yields its lines as they come.
    pub fn connect(&self) -> Result<Box<dyn std::io::BufRead>, String> {
        let addr = config::resolve(&self.admin).map_err(|e| e.to_string())?;
        let mut query = form_urlencoded::Serializer::new(String::new());
        if let Some(n) = self.count {
            query.append_pair("count", &n.to_string());
        }
        for g in &self.include {
            query.append_pair("include", g);
        }
        let url = format!("http://{addr}/tap?{}", query.finish());
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(5)))
            .build()
            .into();
        let mut req = agent.get(&url);
        if let Some(path) = &self.admin_token_file {
            let token = std::fs::read_to_string(path)
                .map_err(|e| format!("--admin-token-file {}: {e}", path.display()))?;
            req = req.header("authorization", &format!("Bearer {}", token.trim()));
        }
        let resp = req
            .call()
            .map_err(|e| format!("connecting to the admin listener at {addr}: {e}"))?;
        let status = resp.status();
        let mut body = resp.into_body();
        if !status.is_success() {
            let text = body
                .with_config()
                .limit(64 << 10)
                .read_to_string()
                .unwrap_or_default();
            let why = serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_owned))
                .unwrap_or(text);
            return Err(format!("{addr} answered {status}: {}", why.trim()));
        }
        Ok(Box::new(std::io::BufReader::new(
            body.into_with_config().limit(u64::MAX).reader(),
        )))
    }
}
