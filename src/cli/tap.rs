//! `udptee tap`: its flags and the HTTP client that reads a running udptee's `GET /tap`.

use std::path::PathBuf;

use super::client::AdminClient;
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
        let client = AdminClient::new(&self.admin, self.admin_token_file.as_deref())?;
        let mut query = form_urlencoded::Serializer::new(String::new());
        if let Some(n) = self.count {
            query.append_pair("count", &n.to_string());
        }
        for g in &self.include {
            query.append_pair("include", g);
        }
        let body = client.get(&format!("/tap?{}", query.finish()), None)?;
        Ok(Box::new(std::io::BufReader::new(
            body.into_with_config().limit(u64::MAX).reader(),
        )))
    }
}
