//! The recorder's files: naming, rotation, `keep`, and writes that are undone when they fail.
//!
//! Without rotation the recording is the one file asked for. With rotation it is `STEM.NNNNNN.EXT`
//! beside it, numbered on from the highest number already there, so a restart never overwrites an
//! earlier recording and `ls` sorts the files in time order.
//!
//! udptee runs as root, in a directory others may write to: it never truncates or writes through a
//! file it did not create. Every file is created new (`O_CREAT | O_EXCL`, which also refuses to
//! follow a symbolic link, even a dangling one). A name that is a symbolic link is refused; a file
//! already there (an earlier run's recording) is left alone and this recording goes to the next
//! free `STEM.NNNNNN.EXT` beside it, with a warning.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::pcap::header_bytes;
use crate::config::RecordSettings;

/// Names tried in a row before giving up (others creating files under our names as fast as we try).
const MAX_TAKEN: usize = 1000;

/// Why a recording file could not be created.
#[derive(Debug)]
pub(super) enum OpenError {
    /// The name asked for is a symbolic link (refused: a client error).
    Link(String),
    /// The file system refused (a full disk, a missing directory, permissions).
    Io(String),
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Link(m) | Self::Io(m) => f.write_str(m),
        }
    }
}

/// Creates `path` new, never through a symbolic link and never over an existing file
/// (`O_CREAT | O_EXCL | O_NOFOLLOW`, close-on-exec).
fn create_new(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .mode(0o640)
        .open(path)
}

/// What one write put in the file.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Written {
    pub(super) records: u64,
    pub(super) bytes: u64,
}

/// The files of one recording.
pub(super) struct Files {
    path: PathBuf,
    max_bytes: Option<u64>,
    rotate: Option<Duration>,
    keep: Option<usize>,
    /// The file being written, its path, bytes in it and when it was opened.
    file: Option<File>,
    current: PathBuf,
    size: u64,
    opened: Instant,
    next_seq: Option<u64>,
}

impl Files {
    pub(super) fn new(s: &RecordSettings) -> Self {
        Self {
            path: s.path.clone(),
            max_bytes: s.max_bytes,
            rotate: s.rotate,
            keep: s.keep,
            file: None,
            current: s.path.clone(),
            size: 0,
            opened: Instant::now(),
            next_seq: None,
        }
    }

    pub(super) fn rotates(&self) -> bool {
        self.max_bytes.is_some() || self.rotate.is_some()
    }

    pub(super) fn current_path(&self) -> &Path {
        &self.current
    }

    /// The stem, extension and directory rotated names are built from.
    fn parts(&self) -> (PathBuf, String, String) {
        let dir = self
            .path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
        let stem = self
            .path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let ext = self
            .path
            .extension()
            .map_or_else(|| "pcap".to_owned(), |e| e.to_string_lossy().into_owned());
        (dir, stem, ext)
    }

    /// Rotated files of this recording's name in its directory, by number.
    fn rotated(&self) -> Vec<(u64, PathBuf)> {
        let (dir, stem, ext) = self.parts();
        let mut v: Vec<(u64, PathBuf)> = std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let seq = name
                    .strip_prefix(&stem)?
                    .strip_prefix('.')?
                    .strip_suffix(&ext)?
                    .strip_suffix('.')?;
                (seq.len() == 6 && seq.bytes().all(|b| b.is_ascii_digit()))
                    .then(|| Some((seq.parse().ok()?, e.path())))?
            })
            .collect();
        v.sort();
        v
    }

    /// Opens the first file; returns the bytes written (the pcap header).
    pub(super) fn open(&mut self) -> Result<u64, OpenError> {
        if self.rotates() {
            let first = self.rotated().last().map_or(0, |(n, _)| n + 1);
            self.next_seq = Some(first);
        }
        self.next()
    }

    /// Closes the current file and opens the next (the same path without rotation); deletes the
    /// oldest rotated files beyond `keep`. Returns the bytes written (the header).
    pub(super) fn next(&mut self) -> Result<u64, OpenError> {
        self.close();
        let (path, mut file) = self.create()?;
        let header = header_bytes();
        file.write_all(&header)
            .map_err(|e| OpenError::Io(format!("writing {}: {e}", path.display())))?;
        self.file = Some(file);
        self.current = path;
        self.size = header.len() as u64;
        self.opened = Instant::now();
        if let Some(keep) = self.keep {
            let files = self.rotated();
            let excess = files.len().saturating_sub(keep);
            for (_, old) in files.into_iter().take(excess) {
                if let Err(e) = std::fs::remove_file(&old) {
                    tracing::warn!(path = %old.display(), error = %e, "recorder: deleting an old file failed");
                }
            }
        }
        Ok(self.size)
    }

    /// Creates the next file: the path asked for, or the next rotated name; a name already taken
    /// moves on to the next number, a symbolic link where the recording was asked for is refused.
    fn create(&mut self) -> Result<(PathBuf, File), OpenError> {
        for _ in 0..MAX_TAKEN {
            let path = match self.next_seq {
                Some(seq) => {
                    let (dir, stem, ext) = self.parts();
                    self.next_seq = Some(seq + 1);
                    dir.join(format!("{stem}.{seq:06}.{ext}"))
                }
                None => self.path.clone(),
            };
            match create_new(&path) {
                Ok(file) => return Ok((path, file)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let link =
                        std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink());
                    if link && self.next_seq.is_none() {
                        return Err(OpenError::Link(format!(
                            "{} is a symbolic link: udptee records only into files it creates",
                            path.display()
                        )));
                    }
                    if self.next_seq.is_none() {
                        // An earlier recording: kept, and this one is numbered on beside it.
                        let first = self.rotated().last().map_or(0, |(n, _)| n + 1);
                        self.next_seq = Some(first);
                        tracing::warn!(path = %path.display(),
                            "recorder: a file is already there; it is kept, and this recording goes to the next numbered name beside it");
                    }
                }
                Err(e) => {
                    let why = if e.raw_os_error() == Some(libc::ELOOP) {
                        "a symbolic link".to_owned()
                    } else {
                        e.to_string()
                    };
                    return Err(OpenError::Io(format!("creating {}: {why}", path.display())));
                }
            }
        }
        Err(OpenError::Io(format!(
            "creating {}: {MAX_TAKEN} names in a row were taken",
            self.path.display()
        )))
    }

    /// The current file is old enough to rotate.
    pub(super) fn due(&self, now: Instant) -> bool {
        self.rotate
            .is_some_and(|r| now.saturating_duration_since(self.opened) >= r)
    }

    /// Adding a record of `record` bytes after `pending` bytes not yet written would take a file
    /// that already holds a record past `max_bytes` (a first record always goes in).
    pub(super) fn would_overflow(&self, pending: u64, record: u64) -> bool {
        let header = 24;
        self.max_bytes
            .is_some_and(|m| self.size + pending > header && self.size + pending + record > m)
    }

    /// Appends `bytes`, records ending at `ends`. On a failure the file keeps the whole records
    /// that made it and is cut back to the last of them; returns what was written either way.
    pub(super) fn write(&mut self, bytes: &[u8], ends: &[usize]) -> (Written, Result<(), String>) {
        let Some(file) = self.file.as_mut() else {
            return (Written::default(), Err("no file open".into()));
        };
        let mut done = 0;
        let mut failure = None;
        while done < bytes.len() {
            match file.write(&bytes[done..]) {
                Ok(0) => {
                    failure = Some(std::io::Error::from(std::io::ErrorKind::WriteZero));
                    break;
                }
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        let Some(e) = failure else {
            self.size += bytes.len() as u64;
            return (
                Written {
                    records: ends.len() as u64,
                    bytes: bytes.len() as u64,
                },
                Ok(()),
            );
        };
        let whole = ends.iter().take_while(|&&end| end <= done).count();
        let keep = if whole == 0 { 0 } else { ends[whole - 1] };
        self.size += keep as u64;
        let _ = file.set_len(self.size);
        let _ = std::io::Seek::seek(file, std::io::SeekFrom::Start(self.size));
        (
            Written {
                records: whole as u64,
                bytes: keep as u64,
            },
            Err(format!("writing {}: {e}", self.current.display())),
        )
    }

    /// Closes the current file.
    pub(super) fn close(&mut self) {
        self.file = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotated_names_number_on_and_keep_deletes_the_oldest() {
        let dir = std::env::temp_dir().join(format!("udptee-files-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("rec.000007.pcap"), b"older run").unwrap();
        std::fs::write(dir.join("rec.x.pcap"), b"not ours").unwrap();
        let mut s = RecordSettings::new(dir.join("rec.pcap"));
        s.max_bytes = Some(1 << 20);
        s.keep = Some(2);
        let mut f = Files::new(&s);
        f.open().unwrap();
        assert_eq!(f.current_path(), dir.join("rec.000008.pcap"));
        f.next().unwrap();
        f.next().unwrap();
        let left: Vec<u64> = f.rotated().into_iter().map(|(n, _)| n).collect();
        assert_eq!(left, vec![9, 10], "at most 2 kept, the newest");
        assert!(
            dir.join("rec.x.pcap").exists(),
            "other files are left alone"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
