//! Runtime control: reload from the configuration file, and the admin API's target verbs, each
//! turned into one change of the [`TargetRegistry`] and answered with what it did or why it was
//! refused. Changes are serialised by the registry; nothing here is on the data path.
//!
//! Changes made through the API are runtime state: the next reload re-applies the file.
//!
//! Floor 4 (control): imports the data path, the recorder and `config`; never the command line
//! (a reload re-reads the file through the [`Loader`] that `main` hands in) nor anything above.

use std::sync::{Arc, Mutex};

use crate::config::file::FileTarget;
use crate::config::table::target_from_table;
use crate::config::{Config, ConfigError, check_name};
use crate::fanout::targets::{Change, ChangeError, TargetRegistry};
use crate::metrics::reloads::ReloadCounters;

/// Re-reads the configuration (the file under the command line's flags).
pub type Loader = Box<dyn Fn() -> Result<Config, ConfigError> + Send + Sync>;

/// Why a control request was refused. Nothing was changed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    /// The request or the configuration it leads to is invalid (HTTP 400).
    #[error("{0}")]
    Invalid(String),
    /// No such target (HTTP 404).
    #[error("{0}")]
    NotFound(String),
    /// The forwarder cannot take the change now (HTTP 503).
    #[error("{0}")]
    Unavailable(String),
}

impl From<ChangeError> for ControlError {
    fn from(e: ChangeError) -> Self {
        match e {
            ChangeError::NotFound(_) => Self::NotFound(e.to_string()),
            ChangeError::Stopping | ChangeError::Switch { .. } => Self::Unavailable(e.to_string()),
            e => Self::Invalid(e.to_string()),
        }
    }
}

/// What a reload did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReloadReport {
    /// The target changes applied.
    pub change: Change,
    /// What the reload did to the recording: `started`, `stopped`, `restarted` or `unchanged`.
    pub record: &'static str,
    /// Settings that changed in the file but only take effect at a restart.
    pub restart_needed: Vec<&'static str>,
}

/// The control plane of one forwarder.
pub struct Control {
    registry: Arc<TargetRegistry>,
    recorder: Arc<crate::record::Recorder>,
    config: Mutex<Config>,
    loader: Option<Loader>,
    reloads: Arc<ReloadCounters>,
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Control").finish_non_exhaustive()
    }
}

/// Start-up settings a reload cannot change, by key.
fn restart_needed(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut v = Vec::new();
    let mut check = |key, differs: bool| {
        if differs {
            v.push(key);
        }
    };
    check(
        "listen",
        old.listen != new.listen
            || old.listen_unix != new.listen_unix
            || old.extra_listen != new.extra_listen
            || old.streams_only != new.streams_only
            || old.streams != new.streams,
    );
    check(
        "max-connections/idle-timeout/pack-size",
        old.stream != new.stream,
    );
    check("workers/cpus", old.worker_cpus != new.worker_cpus);
    check("sender-cpus", old.sender_cpus != new.sender_cpus);
    check("batch", old.batch != new.batch);
    check("rcvbuf", old.rcvbuf_bytes != new.rcvbuf_bytes);
    check("max-datagram", old.max_datagram != new.max_datagram);
    check("admin", old.admin != new.admin);
    check("admin-token-file", old.admin_token != new.admin_token);
    check("user", old.user != new.user);
    check("latency", old.latency != new.latency);
    check("io", old.io_backend != new.io_backend);
    check("max-targets", old.max_targets != new.max_targets);
    check("drain-timeout", old.drain_timeout != new.drain_timeout);
    check("stats-interval", old.stats_interval != new.stats_interval);
    check("histogram-log", old.histogram_log != new.histogram_log);
    check("fast-path", old.fast_path != new.fast_path);
    check(
        "fast-path-interfaces",
        old.fast_path_interfaces != new.fast_path_interfaces,
    );
    v
}

impl Control {
    /// Control over `registry`, with `config` as the running configuration and `loader` to re-read
    /// it (`None`: reload is refused, as when started without `--config`... or from a library).
    pub fn new(
        registry: Arc<TargetRegistry>,
        recorder: Arc<crate::record::Recorder>,
        config: Config,
        loader: Option<Loader>,
    ) -> Self {
        Self {
            registry,
            recorder,
            config: Mutex::new(config),
            loader,
            reloads: Arc::default(),
        }
    }

    /// The registry.
    pub fn registry(&self) -> &Arc<TargetRegistry> {
        &self.registry
    }

    fn config(&self) -> std::sync::MutexGuard<'_, Config> {
        self.config.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The token mutating admin requests must present, if one is configured.
    pub fn admin_token(&self) -> Option<String> {
        self.config().admin_token.clone()
    }

    /// Reloads: `(ok, error)` counts so far.
    pub fn reload_counts(&self) -> (u64, u64) {
        self.reloads.get()
    }

    /// Reloads so far, applied and refused (read by the report).
    pub fn reload_counters(&self) -> &Arc<ReloadCounters> {
        &self.reloads
    }

    /// Re-reads the configuration and applies the target difference. A file that does not parse or
    /// validate changes nothing; the error is returned (and counted) for the caller to log or answer.
    pub fn reload(&self) -> Result<ReloadReport, ControlError> {
        let result = self.try_reload();
        match &result {
            Ok(r) => {
                self.reloads.count(true);
                tracing::info!(
                    generation = r.change.generation, added = ?r.change.added, removed = ?r.change.removed,
                    replaced = ?r.change.replaced, toggled = ?r.change.toggled,
                    "reloaded the configuration"
                );
                if !r.restart_needed.is_empty() {
                    tracing::warn!(settings = ?r.restart_needed,
                        "these settings changed in the configuration but take effect only at a restart");
                }
            }
            Err(e) => {
                self.reloads.count(false);
                tracing::error!(error = %e, "reload refused; the running configuration is kept");
            }
        }
        result
    }

    fn try_reload(&self) -> Result<ReloadReport, ControlError> {
        let loader = self.loader.as_ref().ok_or_else(|| {
            ControlError::Invalid("nothing to reload: udptee was started without --config".into())
        })?;
        let new = loader().map_err(|e| ControlError::Invalid(e.to_string()))?;
        let mut config = self.config();
        let restart = restart_needed(&config, &new);
        let change = self.registry.apply(new.targets.clone())?;
        let record = self.reload_record(&config, &new);
        self.registry
            .set_allow(crate::net::allow::AllowList::new(&new.allow));
        config.allow = new.allow.clone();
        // Keep start-up settings as they run; take the new per-target defaults and targets.
        config.targets = new.targets;
        config.queue_depth = new.queue_depth;
        config.queue_bytes = new.queue_bytes;
        config.sndbuf_bytes = new.sndbuf_bytes;
        config.resolve_interval = new.resolve_interval;
        config.record = new.record;
        config.record_start = new.record_start;
        Ok(ReloadReport {
            change,
            record,
            restart_needed: restart,
        })
    }

    /// Applies a changed `[record]`: a recording the file started follows the file; one started
    /// through the API is left alone unless the file now asks for one.
    fn reload_record(&self, old: &Config, new: &Config) -> &'static str {
        let want = new.record.as_ref().filter(|_| new.record_start);
        let had = old.record.as_ref().filter(|_| old.record_start);
        if want == had {
            return "unchanged";
        }
        // Only a recording the file started is the file's to stop.
        let stopped = self.recorder.active() && had.is_some() && self.recorder.stop().is_ok();
        match want {
            Some(s) if !self.recorder.active() => match self.recorder.start(s.clone()) {
                Ok(_) if stopped => "restarted",
                Ok(_) => "started",
                Err(e) => {
                    tracing::error!(error = %e, "reload: the [record] settings could not start a recording");
                    "stopped"
                }
            },
            None if stopped => "stopped",
            _ => "unchanged",
        }
    }

    /// The recorder.
    pub fn recorder(&self) -> &Arc<crate::record::Recorder> {
        &self.recorder
    }

    /// `POST /record/start`: starts a recording with the configured `--record*` settings, changed by
    /// the JSON body's keys (all optional): `file` (a file name, placed in the configured recording's
    /// directory or `$STATE_DIRECTORY`; never a path, so the API cannot write elsewhere), `max-bytes`,
    /// `rotate`, `keep`, `include`, `exclude`.
    pub fn record_start(
        &self,
        body: &[u8],
    ) -> Result<crate::record::RecordStatus, crate::record::RecordError> {
        use crate::record::{RecordError, RecordSettings};
        #[derive(serde::Deserialize, Default)]
        #[serde(deny_unknown_fields, rename_all = "kebab-case")]
        struct Body {
            file: Option<String>,
            max_bytes: Option<crate::config::file::Size>,
            rotate: Option<crate::config::file::Dur>,
            keep: Option<usize>,
            include: Option<Vec<String>>,
            exclude: Option<Vec<String>>,
        }
        let b: Body = if body.iter().all(u8::is_ascii_whitespace) {
            Body::default()
        } else {
            serde_json::from_slice(body)
                .map_err(|e| RecordError::Invalid(format!("bad record body: {e}")))?
        };
        let configured = self.config().record.clone();
        let mut s = match (&configured, &b.file) {
            (Some(c), None) => c.clone(),
            (c, Some(file)) => {
                // Also refuses "." and "..".
                if file.is_empty() || file.contains(['/', '\0']) || file.starts_with('.') {
                    return Err(RecordError::Invalid(
                        "file: a plain file name (no '/' or NUL, not starting with '.')".into(),
                    ));
                }
                let dir = match c {
                    Some(c) => c.path.parent().map(std::path::Path::to_path_buf),
                    None => std::env::var_os("STATE_DIRECTORY").map(|d| {
                        // systemd may pass several, separated by ':'; the first is ours.
                        let d = d.to_string_lossy().into_owned();
                        std::path::PathBuf::from(d.split(':').next().unwrap_or_default())
                    }),
                };
                let Some(dir) = dir else {
                    return Err(RecordError::Conflict(
                        "no recording directory: start udptee with --record PATH (and --record-start off) or under systemd's StateDirectory=".into(),
                    ));
                };
                let mut s = c.clone().unwrap_or_else(|| RecordSettings::new(""));
                s.path = dir.join(file);
                s
            }
            (None, None) => {
                return Err(RecordError::Conflict(
                    "nothing configured to record to: give {\"file\": NAME}, or start udptee with --record PATH".into(),
                ));
            }
        };
        if let Some(m) = b.max_bytes {
            s.max_bytes = Some(m.0 as u64);
        }
        if let Some(r) = b.rotate {
            s.rotate = Some(r.0);
        }
        if b.keep.is_some() {
            s.keep = b.keep;
        }
        if let Some(i) = b.include {
            s.include = i;
        }
        if let Some(e) = b.exclude {
            s.exclude = e;
        }
        self.recorder.start(s)
    }

    /// `PUT /targets/{name}`: adds or replaces one target from a JSON body.
    pub fn put(&self, name: &str, body: &[u8]) -> Result<Change, ControlError> {
        check_name(name).map_err(|e| ControlError::Invalid(e.to_string()))?;
        let t: FileTarget = serde_json::from_slice(body)
            .map_err(|e| ControlError::Invalid(format!("bad target body: {e}")))?;
        if let Some(n) = &t.name {
            if n != name {
                return Err(ControlError::Invalid(format!(
                    "the body names {n:?} but the path names {name:?}"
                )));
            }
        }
        let spec = {
            let config = self.config();
            target_from_table(&config, &t, Some(name))
                .map_err(|e| ControlError::Invalid(e.to_string()))?
        };
        let change = self.registry.put(spec)?;
        tracing::info!(target_name = name, generation = change.generation, added = ?change.added,
            replaced = ?change.replaced, "target put through the admin API (runtime state: a reload re-applies the file)");
        Ok(change)
    }

    /// `DELETE /targets/{name}`.
    pub fn remove(&self, name: &str) -> Result<Change, ControlError> {
        let change = self.registry.remove(name)?;
        tracing::info!(
            target_name = name,
            generation = change.generation,
            "target removed through the admin API; its queue drains in the background"
        );
        Ok(change)
    }

    /// `POST /targets/{name}/enable` and `/disable`.
    pub fn set_enabled(&self, name: &str, enabled: bool) -> Result<Change, ControlError> {
        let change = self.registry.set_enabled(name, enabled)?;
        tracing::info!(
            target_name = name,
            enabled,
            generation = change.generation,
            "target toggled through the admin API"
        );
        Ok(change)
    }

    /// Looks the host-named members of every group up again; a group whose members moved gets a
    /// new incarnation at the new addresses (its ring is by name, so no key moves).
    fn resolve_members(&self, resolver: &crate::config::Resolver) {
        let table = self.registry.current();
        for t in table.targets.iter() {
            let Some(group) = &t.spec.group else { continue };
            let mut moved = group.clone();
            for m in moved
                .members
                .iter_mut()
                .filter(|m| m.addr.parse::<std::net::SocketAddr>().is_err())
            {
                match resolver.0.resolve(&m.addr) {
                    Ok(addr) => m.resolved = addr,
                    Err(e) => {
                        self.registry.resolve_error(&t.spec.name);
                        tracing::warn!(target_name = %t.spec.name, member = %m.addr, error = %e,
                            "looking a group member's host up failed; keeping its last address {}", m.resolved);
                    }
                }
            }
            if &moved != group {
                let spec = crate::config::TargetSpec {
                    group: Some(moved),
                    ..t.spec.clone()
                };
                match self.registry.put(spec) {
                    Ok(_) => {
                        tracing::info!(target_name = %t.spec.name, "group member addresses changed; moved their sockets")
                    }
                    Err(e) => tracing::warn!(target_name = %t.spec.name, error = %e,
                        "group member addresses changed but the move was refused; keeping the old ones"),
                }
            }
        }
    }

    /// Looks every host-named target up again and moves those whose address changed. A failed
    /// look-up keeps the last address, is counted, and is logged once until it succeeds again.
    pub fn resolve_again(&self, failing: &mut Vec<String>) {
        let (resolver, table) = (self.config().resolver.clone(), self.registry.current());
        self.resolve_members(&resolver);
        for t in table.targets.iter().filter(|t| t.spec.is_host_name()) {
            let spec = &t.spec;
            match resolver.0.resolve(spec.host_port()) {
                Ok(addr) => {
                    failing.retain(|n| n != &spec.name);
                    if addr != spec.resolved {
                        let moved = crate::config::TargetSpec {
                            resolved: addr,
                            ..spec.clone()
                        };
                        match self.registry.put(moved) {
                            Ok(_) => tracing::info!(target_name = %spec.name, host = %spec.addr,
                                from = %spec.resolved, to = %addr, "target address changed; moved its socket"),
                            Err(e) => {
                                tracing::warn!(target_name = %spec.name, to = %addr, error = %e,
                                "target address changed but the move was refused; keeping the old one")
                            }
                        }
                    }
                }
                Err(e) => {
                    self.registry.resolve_error(&spec.name);
                    if !failing.contains(&spec.name) {
                        failing.push(spec.name.clone());
                        tracing::warn!(target_name = %spec.name, error = %e,
                            "looking the target's host up failed; keeping its last address {}", spec.resolved);
                    }
                }
            }
        }
    }
}
