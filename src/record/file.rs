//! The recorder's files: naming, rotation, `keep`, and writes that are undone when they fail.
//!
//! Without rotation the recording is the one file asked for (overwritten, as `tcpdump -w` does). With
//! rotation it is `STEM.NNNNNN.EXT` beside it, numbered on from the highest number already there, so
//! a restart never overwrites an earlier recording and `ls` sorts the files in time order.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::pcap::header_bytes;
use crate::config::RecordSettings;

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
    pub(super) fn open(&mut self) -> Result<u64, String> {
        if self.rotates() {
            let first = self.rotated().last().map_or(0, |(n, _)| n + 1);
            self.next_seq = Some(first);
        }
        self.next()
    }

    /// Closes the current file and opens the next (the same path without rotation); deletes the
    /// oldest rotated files beyond `keep`. Returns the bytes written (the header).
    pub(super) fn next(&mut self) -> Result<u64, String> {
        self.close();
        let path = match self.next_seq {
            Some(seq) => {
                let (dir, stem, ext) = self.parts();
                self.next_seq = Some(seq + 1);
                dir.join(format!("{stem}.{seq:06}.{ext}"))
            }
            None => self.path.clone(),
        };
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(|e| format!("creating {}: {e}", path.display()))?;
        let header = header_bytes();
        file.write_all(&header)
            .map_err(|e| format!("writing {}: {e}", path.display()))?;
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
