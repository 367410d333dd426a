//! From flags to a [`Config`]: the flags over the configuration file (a flag given on the command
//! line wins; a file key fills in what it did not say), checked, with errors pointing at the file's
//! line. Used at start-up and at every reload.

use std::path::PathBuf;

use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches, ValueEnum};

use super::args::{Args, IoArg, LogFormat, parse_mode};
use crate::config::file::{Dur, FileTarget, Loaded, Size};
use crate::config::table::target_from_table;
use crate::config::{self, Config, ConfigError, TargetSpec};

/// Parsed flags with where each came from, so a configuration file can fill in what the command line
/// did not say. Re-used at every reload.
#[derive(Debug, Clone)]
pub struct Invocation {
    /// The flags, defaults included.
    pub args: Args,
    given: Vec<String>,
}

impl Invocation {
    /// Parses the process's command line (exits with clap's message on a usage error).
    pub fn from_env() -> Self {
        let mut command = Args::command();
        // Only when asked: the text probes io_uring, whose teardown leaves kernel work for this
        // thread that would interrupt a blocking call soon after (a takeover's first read).
        if std::env::args_os().any(|a| a == "--version") {
            let long: &'static str = Box::leak(super::generate::long_version().into_boxed_str());
            command = command.long_version(long);
        }
        Self::from_matches(command.get_matches())
    }

    /// Parses `argv` (the first item is the program name).
    pub fn try_from_iter<I, T>(argv: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        Ok(Self::from_matches(
            Args::command().try_get_matches_from(argv)?,
        ))
    }

    fn from_matches(m: ArgMatches) -> Self {
        let args = match Args::from_arg_matches(&m) {
            Ok(a) => a,
            Err(e) => e.exit(),
        };
        let given = m
            .ids()
            .filter(|id| m.value_source(id.as_str()) == Some(ValueSource::CommandLine))
            .map(|id| id.as_str().to_owned())
            .collect();
        Self { args, given }
    }

    fn given(&self, id: &str) -> bool {
        self.given.iter().any(|g| g == id)
    }

    /// The configuration: the file (if any) under the flags given on the command line, validated.
    /// Errors that come from the file name its line and key.
    pub fn load(&self) -> Result<Config, ConfigError> {
        self.load_all().map(|(config, _)| config)
    }

    /// Like [`load`](Self::load), also returning the effective flags (the file's values filled in),
    /// for the settings outside [`Config`]: logging.
    pub fn load_all(&self) -> Result<(Config, Args), ConfigError> {
        self.load_checked().map_err(|mut errors| errors.remove(0))
    }

    /// Like [`load_all`](Self::load_all), with every error found rather than the first (`udptee
    /// check`): each bad key, each bad target, then what the whole set breaks. Never empty on `Err`.
    /// Only a file that cannot be read or parsed stops the search at once.
    pub fn load_checked(&self) -> Result<(Config, Args), Vec<ConfigError>> {
        // The file's own errors (bad lines) come first, already located.
        let (file, mut errors) = match &self.args.config {
            Some(path) => {
                let (file, bad) = Loaded::read_all(path);
                let bad: Vec<ConfigError> = bad.into_iter().map(ConfigError::File).collect();
                match file {
                    Some(f) => (Some(f), bad),
                    None => return Err(bad),
                }
            }
            None => (None, Vec::new()),
        };
        let mut found = Vec::new();
        let loaded = self.load_with(file.as_ref(), &mut found);
        errors.extend(found.into_iter().map(|e| match &file {
            Some(f) => locate(f, e),
            None => e,
        }));
        match loaded {
            Some(ok) if errors.is_empty() => Ok(ok),
            _ if errors.is_empty() => Err(vec![ConfigError::NoListen]),
            _ => Err(errors),
        }
    }

    /// Every error goes into `errors`; the configuration comes back when one could be built.
    fn load_with(
        &self,
        file: Option<&Loaded>,
        errors: &mut Vec<ConfigError>,
    ) -> Option<(Config, Args)> {
        let mut a = self.args.clone();
        let mut file_targets = None;
        if let Some(f) = file {
            let c = &f.config;
            // Each key fills its flag unless the command line gave that flag.
            macro_rules! fill {
                ($($field:ident => $value:expr),* $(,)?) => {$(
                    if let Some(v) = c.$field.clone() {
                        if !self.given(stringify!($field)) {
                            match ($value)(v) {
                                Ok(v) => a.$field = v,
                                Err(e) => errors.push(e),
                            }
                        }
                    }
                )*};
            }
            fill!(
                batch => same, queue_depth => same, max_targets => same, admin => same,
                latency => same, log_level => same,
                listen => |v: config::file::OneOrMany| Ok(v.into_vec()),
                max_connections => same, idle_timeout => |v: Dur| Ok(v.0),
                pack_size => |v: Size| Ok(v.0),
                sender_cpus => some, histogram_log => some, allow => same,
                control_socket => some, unix_owner => some,
                unix_mode => |v: String| parse_mode(&v).map_err(|_| ConfigError::BadValue {
                    what: "unix-mode", got: v, expected: "octal permission bits such as 0660",
                }),
                admin_token_file => some, user => some,
                queue_bytes => |v: Size| Ok(v.0), rcvbuf => |v: Size| Ok(v.0),
                max_datagram => |v: Size| Ok(v.0), sndbuf => |v: Size| Ok(Some(v.0)),
                stats_interval => |v: Dur| Ok(v.0), drain_timeout => |v: Dur| Ok(v.0),
                resolve_interval => |v: Dur| Ok(v.0),
                io => |v: String| IoArg::from_str(&v, true).map_err(|_| ConfigError::BadValue {
                    what: "io", got: v, expected: "auto, uring or mmsg",
                }),
                fast_path => |v: String| config::FastPathMode::from_str(&v, true).map_err(|_| ConfigError::BadValue {
                    what: "fast-path", got: v, expected: "off, auto or on",
                }),
                fast_path_interfaces => same,
                log_format => |v: String| LogFormat::from_str(&v, true).map_err(|_| ConfigError::BadValue {
                    what: "log-format", got: v, expected: "text or json",
                }),
            );
            // `workers` and `cpus` choose the receive threads together: a command line that names
            // either overrides both; in the file they exclude each other, as the flags do.
            if !self.given("workers") && !self.given("cpus") {
                if c.workers.is_some() && c.cpus.is_some() {
                    errors.push(ConfigError::BadValue {
                        what: "workers",
                        got: "set together with cpus".into(),
                        expected: "either workers (unpinned threads) or cpus (one pinned per CPU)",
                    });
                }
                if let Some(w) = c.workers {
                    a.workers = w;
                }
                if let Some(cpus) = &c.cpus {
                    a.cpus = Some(cpus.clone());
                }
            }
            if !self.given("targets") {
                file_targets = c.targets.clone();
            }
            if let Some(r) = &c.record {
                macro_rules! fill_record {
                    ($($key:ident => $flag:ident: $value:expr),* $(,)?) => {$(
                        if let Some(v) = r.$key.clone() {
                            if !self.given(stringify!($flag)) {
                                a.$flag = ($value)(v);
                            }
                        }
                    )*};
                }
                fill_record!(
                    path => record: Some, start => record_start: |v| v,
                    max_bytes => record_max_bytes: |v: Size| Some(v.0),
                    rotate => record_rotate: |v: Dur| Some(v.0),
                    keep => record_keep: Some,
                    include => record_include: |v| v, exclude => record_exclude: |v| v,
                    queue_bytes => record_queue_bytes: |v: Size| v.0,
                );
            }
        }
        if let Err(e) = check_log_level(&a.log_level) {
            errors.push(e);
        }
        let mut config = Config::try_from(&a).map_err(|e| errors.push(e)).ok()?;
        if let Some(targets) = file_targets {
            config.targets = targets
                .iter()
                .filter_map(|t| {
                    target_from_table(&config, t, None)
                        .map_err(|e| errors.push(e))
                        .ok()
                })
                .collect();
        }
        if let Err(e) = config.validate() {
            errors.push(e);
        }
        Some((config, a))
    }
}

/// A file value taken as it is.
fn same<T>(v: T) -> Result<T, ConfigError> {
    Ok(v)
}

/// A file value for an optional flag.
fn some<T>(v: T) -> Result<Option<T>, ConfigError> {
    Ok(Some(v))
}

/// Accepts a level (`error` … `trace`, `off`) or a tracing directive list (`udptee=debug,info`);
/// anything else would silently log nothing, the final summary included.
pub fn check_log_level(level: &str) -> Result<(), ConfigError> {
    const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];
    let ok = level.split(',').all(|d| {
        let d = d.trim();
        match d.rsplit_once('=') {
            Some((target, lvl)) => {
                !target.is_empty() && LEVELS.contains(&lvl.to_ascii_lowercase().as_str())
            }
            None => LEVELS.contains(&d.to_ascii_lowercase().as_str()),
        }
    });
    if ok && tracing_subscriber::EnvFilter::try_new(level).is_ok() {
        Ok(())
    } else {
        Err(ConfigError::BadValue {
            what: "--log-level",
            got: level.to_owned(),
            expected: "error, warn, info, debug, trace, off, or directives such as udptee=debug",
        })
    }
}

/// Points a validation error at the file line it came from.
fn locate(file: &Loaded, e: ConfigError) -> ConfigError {
    let (key, value) = e.place();
    if key.is_none() && value.is_none() {
        return e;
    }
    ConfigError::File(file.locate(key.as_deref(), value.as_deref(), &e.to_string()))
}

/// `--to [NAME=]HOST:PORT`.
fn parse_to(config: &Config, spec: &str) -> Result<TargetSpec, ConfigError> {
    let (name, addr) = match spec.split_once('=') {
        Some((name, addr)) => (Some(name), addr),
        None => (None, spec),
    };
    target_from_table(
        config,
        &FileTarget {
            addr: addr.to_owned(),
            ..FileTarget::default()
        },
        name,
    )
}

impl TryFrom<&Args> for Config {
    type Error = ConfigError;

    fn try_from(args: &Args) -> Result<Self, ConfigError> {
        let mut datagrams = Vec::new();
        let mut streams = Vec::new();
        for spec in &args.listen {
            let kind = config::ListenAddr::parse(spec)?;
            if kind.is_datagram() {
                datagrams.push(kind);
            } else {
                streams.push(kind);
            }
        }
        if args.listen.is_empty() {
            return Err(ConfigError::NoListen);
        }
        let mut datagrams = datagrams.into_iter();
        let datagram = datagrams.next();
        let unix_listen = |path: PathBuf| -> Result<config::UnixListen, ConfigError> {
            let owner = args
                .unix_owner
                .as_deref()
                .map(config::RunAs::lookup)
                .transpose()
                .map_err(|reason| ConfigError::User {
                    flag: "--unix-owner",
                    reason,
                })?
                .map(|r| (r.uid, r.gid));
            Ok(config::UnixListen {
                path,
                mode: args.unix_mode,
                owner,
            })
        };
        let mut config = match datagram {
            // Only stream listeners: no first datagram listener (`listen` is a placeholder).
            None => {
                let mut c = Self::new(std::net::SocketAddr::from(([0, 0, 0, 0], 0)), Vec::new());
                c.streams_only = true;
                c
            }
            Some(config::ListenAddr::Unixgram(path)) => {
                let mut c = Self::new(std::net::SocketAddr::from(([0, 0, 0, 0], 0)), Vec::new());
                c.listen_unix = Some(unix_listen(path)?);
                c
            }
            Some(config::ListenAddr::Udp(addr)) => Self::new(config::resolve(&addr)?, Vec::new()),
            Some(_) => unreachable!("a datagram listener"),
        };
        for kind in datagrams {
            config.extra_listen.push(match kind {
                config::ListenAddr::Udp(addr) => {
                    config::DatagramListen::Udp(config::resolve(&addr)?)
                }
                config::ListenAddr::Unixgram(path) => {
                    config::DatagramListen::Unixgram(unix_listen(path)?)
                }
                _ => unreachable!("a datagram listener"),
            });
        }
        for kind in streams {
            config.streams.push(match kind {
                config::ListenAddr::Tcp(addr) => config::StreamListen::Tcp(config::resolve(&addr)?),
                config::ListenAddr::UnixStream(path) => {
                    config::StreamListen::Unix(unix_listen(path)?)
                }
                _ => unreachable!("a stream listener"),
            });
        }
        config.stream = config::StreamSettings {
            max_connections: args.max_connections,
            idle_timeout: args.idle_timeout,
            pack_bytes: args.pack_size,
        };
        config.worker_cpus = match &args.cpus {
            Some(list) => config::parse_cpus("--cpus", list)?
                .into_iter()
                .map(Some)
                .collect(),
            None => vec![None; usize::from(args.workers)],
        };
        if let Some(list) = &args.sender_cpus {
            config.sender_cpus = config::parse_cpus("--sender-cpus", list)?;
        }
        config.batch = args.batch;
        config.queue_depth = args.queue_depth;
        config.queue_bytes = args.queue_bytes;
        config.max_targets = args.max_targets;
        config.resolve_interval = args.resolve_interval;
        config.rcvbuf_bytes = args.rcvbuf;
        config.sndbuf_bytes = args.sndbuf;
        config.max_datagram = args.max_datagram;
        config.stats_interval = args.stats_interval;
        config.drain_timeout = args.drain_timeout;
        config.admin = match args.admin.as_str() {
            "off" => None,
            spec => Some(config::resolve(spec)?),
        };
        if let Some(path) = &args.admin_token_file {
            let token = std::fs::read_to_string(path).map_err(|e| {
                ConfigError::File(format!("--admin-token-file {}: {e}", path.display()))
            })?;
            let token = token.trim().to_owned();
            if token.len() < 16 {
                return Err(ConfigError::File(format!(
                    "--admin-token-file {}: the token must be at least 16 characters",
                    path.display()
                )));
            }
            config.admin_token = Some(token);
        }
        config.user = args
            .user
            .as_deref()
            .map(config::RunAs::lookup)
            .transpose()
            .map_err(|reason| ConfigError::User {
                flag: "--user",
                reason,
            })?;
        // The socket file is udptee's: owned by the user it runs as (unless --unix-owner says
        // otherwise), so that user may remove it at exit, in a sticky directory such as /tmp too.
        if let Some(who) = &config.user {
            let stream_files = config.streams.iter_mut().filter_map(|s| match s {
                config::StreamListen::Unix(u) => Some(u),
                config::StreamListen::Tcp(_) => None,
            });
            let datagram_files = config.extra_listen.iter_mut().filter_map(|d| match d {
                config::DatagramListen::Unixgram(u) => Some(u),
                config::DatagramListen::Udp(_) => None,
            });
            for u in config
                .listen_unix
                .iter_mut()
                .chain(datagram_files)
                .chain(stream_files)
            {
                u.owner.get_or_insert((who.uid, who.gid));
            }
        }
        config.latency = args.latency;
        config.io_backend = match args.io {
            IoArg::Auto => config::IoBackend::Auto,
            IoArg::Uring => config::IoBackend::Uring,
            IoArg::Mmsg => config::IoBackend::Mmsg,
        };
        config.histogram_log = args.histogram_log.clone();
        config.record = args.record.as_ref().map(|path| {
            let mut r = config::RecordSettings::new(path);
            r.max_bytes = args.record_max_bytes.map(|b| b as u64);
            r.rotate = args.record_rotate;
            r.keep = args.record_keep;
            r.include = args.record_include.clone();
            r.exclude = args.record_exclude.clone();
            r.queue_bytes = args.record_queue_bytes;
            r
        });
        config.record_start = args.record_start;
        config.takeover = args.takeover;
        config.fast_path = args.fast_path;
        config.fast_path_interfaces = args.fast_path_interfaces.clone();
        config.control_socket = match args.control_socket.as_deref() {
            Some("off") => None,
            Some(path) => Some(PathBuf::from(path)),
            None => config::settings::default_control_socket(),
        };
        for list in &args.allow {
            config
                .allow
                .extend(crate::net::allow::parse_cidrs(list).map_err(ConfigError::Allow)?);
        }
        config.targets = args
            .targets
            .iter()
            .map(|spec| parse_to(&config, spec))
            .collect::<Result<Vec<_>, ConfigError>>()?;
        Ok(config)
    }
}
