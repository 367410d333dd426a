//! What a package installs beside the binary, generated from the clap definitions so it never
//! drifts from `--help`: shell completions (`udptee completions SHELL`) and man pages (`udptee
//! manpages DIR`, hidden: `udptee.1` and `udptee-SUBCOMMAND.1`), and the `--version` text.

use std::io;
use std::path::{Path, PathBuf};

use clap::CommandFactory as _;

use super::args::Args;

/// Writes the completion script for `shell` to `out`.
pub fn completions(shell: clap_complete::Shell, out: &mut dyn io::Write) {
    clap_complete::generate(shell, &mut Args::command(), "udptee", out);
}

/// Writes `udptee.1` and `udptee-SUBCOMMAND.1` into `dir`; returns the files written.
pub fn manpages(dir: &Path) -> io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    clap_mangen::generate_to(Args::command(), dir)?;
    let mut pages: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "1"))
        .collect();
    pages.sort();
    Ok(pages)
}

/// `udptee --version`: the version, then one line each for the revision it was built from, the
/// kernel fast path and io_uring (built in, and whether this kernel allows it).
pub fn long_version() -> String {
    let revision = match option_env!("UDPTEE_GIT_REV") {
        Some(rev) => format!("revision: {rev}"),
        None => "revision: not built from a git checkout".to_owned(),
    };
    let fast_path = if cfg!(udptee_fastpath) {
        "fast path: built in (--fast-path on|auto)".to_owned()
    } else {
        format!(
            "fast path: not built in: {}",
            option_env!("UDPTEE_FASTPATH_MISSING").unwrap_or("unknown reason")
        )
    };
    let io_uring = match crate::net::uring::probe() {
        Ok(()) => "io_uring: built in; this kernel allows it (--io uring)".to_owned(),
        Err(why) => format!("io_uring: built in; this kernel refuses it ({why}): recvmmsg serves"),
    };
    format!(
        "{}\n{revision}\n{fast_path}\n{io_uring}",
        env!("CARGO_PKG_VERSION")
    )
}
