//! Settings types that the modules acting on them import from here, never the other way round: the
//! receive backend, the fast path's mode, the user to run as and what to record. Floor 1: nothing of
//! udptee's is imported but the configuration's own modules.

use std::path::PathBuf;
use std::time::Duration;

use nix::unistd::{Uid, User};

use super::lines::LineSettings;

/// Default `--record-queue-bytes`: 8 MiB, about 80 ms at 100k/s of 1 KiB datagrams.
pub const DEFAULT_RECORD_QUEUE_BYTES: usize = 8 << 20;
/// Smallest `--record-max-bytes`: a largest datagram and its headers must fit in a file.
pub const MIN_RECORD_FILE_BYTES: u64 = 128 << 10;
/// Shortest `--record-rotate`.
pub const MIN_RECORD_ROTATE: Duration = Duration::from_secs(1);

/// Which receive backend to use (`--io`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IoBackend {
    /// Probe io_uring at start-up and use it when it works and measured faster here; otherwise
    /// recvmmsg, with one log line saying why.
    #[default]
    Auto,
    /// io_uring multishot recvmsg; start-up fails with a clear error if the kernel refuses it.
    Uring,
    /// recvmmsg.
    Mmsg,
}

/// `--fast-path`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum FastPathMode {
    /// Serve every target from user space.
    #[default]
    Off,
    /// Use the kernel path when it loads; otherwise say why once and serve everything from user space.
    Auto,
    /// Use the kernel path, or refuse to start.
    On,
}

/// The user to run as, looked up when the configuration is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAs {
    /// The name given.
    pub name: String,
    /// Its user ID.
    pub uid: u32,
    /// Its primary group ID.
    pub gid: u32,
}

impl RunAs {
    /// Looks `name` up in the user database (a name or a numeric ID).
    pub fn lookup(name: &str) -> Result<Self, String> {
        let user = match name.parse::<u32>() {
            Ok(id) => User::from_uid(Uid::from_raw(id)),
            Err(_) => User::from_name(name),
        }
        .map_err(|e| format!("looking up user {name:?}: {e}"))?
        .ok_or_else(|| format!("no such user: {name:?}"))?;
        Ok(Self {
            name: name.to_owned(),
            uid: user.uid.as_raw(),
            gid: user.gid.as_raw(),
        })
    }
}

/// What and where to record (`--record*` flags, `[record]`, `POST /record/start`).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RecordSettings {
    /// The file; with rotation, `STEM.NNNNNN.EXT` beside it.
    pub path: PathBuf,
    /// Rotate before a file would exceed this many bytes.
    pub max_bytes: Option<u64>,
    /// Rotate when a file is this old.
    #[serde(with = "humantime_serde_opt")]
    pub rotate: Option<Duration>,
    /// Keep at most this many rotated files (the oldest are deleted).
    pub keep: Option<usize>,
    /// Only lines whose metric name matches one of these globs (none: every line).
    pub include: Vec<String>,
    /// Not lines whose metric name matches one of these.
    pub exclude: Vec<String>,
    /// Bytes the recorder may fall behind by before it counts `queue_full`.
    pub queue_bytes: usize,
}

mod humantime_serde_opt {
    pub(super) fn serialize<S: serde::Serializer>(
        v: &Option<std::time::Duration>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match v {
            Some(d) => s.serialize_str(&humantime::format_duration(*d).to_string()),
            None => s.serialize_none(),
        }
    }
}

impl RecordSettings {
    /// Settings for `path` with the defaults: one file, no filter.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            max_bytes: None,
            rotate: None,
            keep: None,
            include: Vec::new(),
            exclude: Vec::new(),
            queue_bytes: DEFAULT_RECORD_QUEUE_BYTES,
        }
    }

    /// Rotating: by size or by age.
    pub fn rotates(&self) -> bool {
        self.max_bytes.is_some() || self.rotate.is_some()
    }

    /// Checks the settings; the error names the flag.
    pub fn validate(&self) -> Result<(), String> {
        if self.path.as_os_str().as_encoded_bytes().contains(&0) {
            return Err("--record: a path cannot hold a NUL byte".into());
        }
        if self.path.as_os_str().is_empty() || self.path.file_name().is_none() {
            return Err(format!(
                "--record {}: expected a file path",
                self.path.display()
            ));
        }
        if let Some(m) = self.max_bytes {
            if m < MIN_RECORD_FILE_BYTES {
                return Err(format!(
                    "--record-max-bytes {m}: at least {MIN_RECORD_FILE_BYTES} (a largest datagram must fit)"
                ));
            }
        }
        if let Some(r) = self.rotate {
            if r < MIN_RECORD_ROTATE {
                return Err(format!(
                    "--record-rotate {}: at least 1s",
                    humantime::format_duration(r)
                ));
            }
        }
        match self.keep {
            Some(0) => return Err("--record-keep 0: keep at least 1 file".into()),
            Some(_) if !self.rotates() => {
                return Err(
                    "--record-keep needs --record-max-bytes or --record-rotate (one file is never deleted)"
                        .into(),
                );
            }
            _ => {}
        }
        if !(super::limits::MIN_QUEUE_BYTES..=super::limits::MAX_QUEUE_BYTES)
            .contains(&self.queue_bytes)
        {
            return Err(format!(
                "--record-queue-bytes {}: expected {} to {}",
                self.queue_bytes,
                super::limits::MIN_QUEUE_BYTES,
                super::limits::MAX_QUEUE_BYTES
            ));
        }
        self.line_settings()
            .validate()
            .map_err(|e| format!("--record-{e}"))?;
        Ok(())
    }

    /// The name filter as line settings (the recorder's `include`/`exclude`).
    pub fn line_settings(&self) -> LineSettings {
        LineSettings {
            include: self.include.clone(),
            exclude: self.exclude.clone(),
            ..LineSettings::default()
        }
    }
}

/// The control socket path: `--control-socket`, else `$RUNTIME_DIRECTORY/control.sock`, else
/// `/run/udptee/control.sock` when that directory exists.
pub fn default_control_socket() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("RUNTIME_DIRECTORY") {
        let dir = dir.to_string_lossy().split(':').next()?.to_owned();
        return Some(std::path::Path::new(&dir).join("control.sock"));
    }
    let run = std::path::Path::new("/run/udptee");
    run.is_dir().then(|| run.join("control.sock"))
}
