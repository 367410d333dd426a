//! Command line: a clap derive whose doc comments are the `--help` text, and its mapping to the
//! configuration.
//!
//! `Args` is converted into a validated [`Config`](crate::config::Config); the rest of the library never sees clap types.
//! Sizes take suffixes (`8M`, `512KiB`), durations take units (`10s`, `250ms`), CPU lists the kernel's
//! cpulist syntax (`0-3,6`).

//!
//! Floor 5 (the edges): `args` defines the flags, `load` maps them (over the file) to a `Config`,
//! `replay`, `ring`, `tap` and `top` are the subcommands' (`client` the admin listener's HTTP
//! client that `tap` and `top` share); `generate` the completions, the man pages and
//! the `--version` text. Imported by `main` only.

mod args;
mod client;
mod generate;
mod load;
mod replay;
mod ring;
mod tap;
mod top;

pub use self::args::{Args, Command, CompletionsArgs, IoArg, LogFormat, ManpagesArgs};
pub use self::generate::{completions, long_version, manpages};
pub use self::load::{Invocation, check_log_level};
pub use self::replay::{ReplayArgs, ReplaySpeed};
pub use self::ring::{RingArgs, ring_lines};
pub use self::tap::TapArgs;
pub use self::top::{TopArgs, run as top};

#[cfg(test)]
mod tests;
