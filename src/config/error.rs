//! [`ConfigError`]: why a configuration was rejected, naming the flag (or file key) and the value
//! at fault, and where in the file it stands. Floor 1.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

/// Why a configuration was rejected. Each message names the flag and the value at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// No `--to` was given.
    #[error("no targets: give at least one --to HOST:PORT (or a [[target]] table in --config)")]
    NoTargets,
    /// No `--listen` was given.
    #[error("no listen address: give --listen HOST:PORT (or `listen` in --config)")]
    NoListen,
    /// The recording settings are invalid.
    #[error("{0}")]
    Record(String),
    /// An `--allow` entry does not parse.
    #[error("--allow {0}")]
    Allow(String),
    /// A value outside its set of choices.
    #[error("{what} {got:?}: expected {expected}")]
    BadValue {
        /// The flag or key.
        what: &'static str,
        /// What was given.
        got: String,
        /// What is accepted.
        expected: &'static str,
    },
    /// An address did not resolve.
    #[error(
        "cannot resolve {spec:?} (expected HOST:PORT, e.g. 127.0.0.1:8126 or [::1]:8126): {source}"
    )]
    Resolve {
        /// What the user wrote.
        spec: String,
        /// The resolver's error.
        #[source]
        source: io::Error,
    },
    /// A number outside its allowed range.
    #[error("{what} must be between {min} and {max}, got {got}")]
    Range {
        /// The flag.
        what: &'static str,
        /// Smallest allowed.
        min: usize,
        /// Largest allowed.
        max: usize,
        /// What was given.
        got: usize,
    },
    /// A malformed or unavailable CPU list.
    #[error("{flag} {list:?}: {problem}")]
    Cpus {
        /// The flag.
        flag: &'static str,
        /// What the user wrote.
        list: String,
        /// What is wrong with it.
        problem: String,
    },
    /// Two targets resolve to the same address: every datagram would be sent there twice.
    #[error(
        "targets {a:?} and {b:?} are the same address {addr}: each datagram would be sent twice"
    )]
    DuplicateTarget {
        /// First spelling.
        a: String,
        /// Second spelling.
        b: String,
        /// The shared address.
        addr: SocketAddr,
    },
    /// A duration beyond its sane maximum.
    #[error("{what} must be at most {max:?}, got {got:?}")]
    Duration {
        /// The flag.
        what: &'static str,
        /// What was given.
        got: Duration,
        /// The largest accepted.
        max: Duration,
    },
    /// The pool these settings need has more slots than a slot id can name.
    #[error(
        "workers x --batch need {slots} pool slots ({bytes} bytes); lower --workers, --batch or --max-datagram"
    )]
    PoolTooLarge {
        /// Slots needed.
        slots: usize,
        /// Bytes needed.
        bytes: usize,
    },
    /// Two targets share a name.
    #[error("two targets are named {name:?}: names must be unique")]
    DuplicateName {
        /// The name.
        name: String,
    },
    /// A name that is not a valid label and path segment.
    #[error(
        "target name {name:?} is not valid: use 1 to 128 letters, digits and . _ : - [ ], not . or .."
    )]
    Name {
        /// What was given.
        name: String,
    },
    /// A target with port 0.
    #[error("target {target:?} has port 0, which no receiver can listen on")]
    PortZero {
        /// The offending target.
        target: String,
    },
    /// An interval below its sane minimum.
    #[error("{what} must be 0 (off) or at least {min:?}, got {got:?}")]
    TooShort {
        /// The flag.
        what: &'static str,
        /// What was given.
        got: Duration,
        /// The smallest accepted.
        min: Duration,
    },
    /// A configuration file could not be read or parsed.
    #[error("{0}")]
    File(String),
    /// A target is the listen address itself.
    #[error(
        "target {target:?} reaches the listen address {listen}: udptee would forward to itself forever"
    )]
    Loop {
        /// The offending target.
        target: String,
        /// The listen address.
        listen: SocketAddr,
    },
    /// A Unix socket target is one of udptee's own listeners (the same path, or a link to it).
    #[error(
        "target {target:?} at {} is udptee's own listener {} (the same socket{}): udptee would forward to itself, or to a socket that cannot take datagrams",
        path.display(), listen.display(), if *link { ", through a link" } else { "" }
    )]
    UnixLoop {
        /// The offending target.
        target: String,
        /// Its path as given.
        path: std::path::PathBuf,
        /// The listener's path.
        listen: std::path::PathBuf,
        /// The two paths differ: a symbolic or hard link joins them.
        link: bool,
    },
    /// `--user` or `--unix-owner` names no user.
    #[error("{flag}: {reason}")]
    User {
        /// The flag that named it.
        flag: &'static str,
        /// Why.
        reason: String,
    },
    /// A target's line settings are invalid.
    #[error("target {target:?}: {reason}")]
    Lines {
        /// The target.
        target: String,
        /// Which key and why.
        reason: String,
    },
    /// A group's members or settings are invalid.
    #[error("group {target:?}: {reason}")]
    Group {
        /// The group target.
        target: String,
        /// What and why.
        reason: String,
    },
    /// `preserve-source = true` where the origin cannot be kept, or without the privilege.
    #[error("target {target:?}: preserve-source: {reason}")]
    Origin {
        /// The target.
        target: String,
        /// Why not.
        reason: String,
    },
}

impl ConfigError {
    /// Where in a configuration file this error points: a top-level key, or a value as written.
    pub fn place(&self) -> (Option<String>, Option<String>) {
        let key = |what: &str| Some(what.trim_start_matches('-').to_owned());
        match self {
            Self::Range { what, .. }
            | Self::Duration { what, .. }
            | Self::TooShort { what, .. }
            | Self::BadValue { what, .. } => (key(what), None),
            Self::Cpus { flag, list, .. } => (key(flag), Some(list.clone())),
            Self::Resolve { spec, .. } => (None, Some(spec.clone())),
            Self::DuplicateTarget { b, .. } => (None, Some(b.clone())),
            Self::DuplicateName { name } | Self::Name { name } => (None, Some(name.clone())),
            Self::PortZero { target }
            | Self::Loop { target, .. }
            | Self::UnixLoop { target, .. } => (None, Some(target.clone())),
            Self::NoListen => (key("listen"), None),
            Self::User { flag, .. } => (key(flag), None),
            Self::Allow(_) => (key("allow"), None),
            Self::Group { target, .. } => (None, Some(target.clone())),
            Self::Origin { .. } => (key("preserve-source"), None),
            Self::Lines { reason, .. } => (
                reason
                    .split(' ')
                    .next()
                    .map(|k| k.trim_end_matches(':').to_owned()),
                None,
            ),
            _ => (None, None),
        }
    }
}
