//! `udptee ring --config F [KEY...]`: where each key goes in the file's groups, offline, with every
//! member up (as a running udptee starts), so an operator can check a migration before making it.

use std::path::PathBuf;

use clap::Args as ClapArgs;

use crate::config::Config;
use crate::statsd::ring::{Ring, hash};

/// `udptee ring`'s arguments.
#[derive(Debug, Clone, ClapArgs)]
pub struct RingArgs {
    /// The configuration file whose groups to use.
    #[arg(long, short = 'c', value_name = "PATH")]
    pub config: PathBuf,
    /// Only this group (by default every group in the file).
    #[arg(long, value_name = "NAME")]
    pub group: Option<String>,
    /// The keys (metric names: the text of a line before its first `:`); none: one per line on
    /// standard input.
    #[arg(value_name = "KEY")]
    pub keys: Vec<String>,
}

/// One line per group and key: `GROUP<TAB>KEY<TAB>MEMBER<TAB>HASH`; an error when the file has no
/// group (or none of that name).
pub fn ring_lines(
    config: &Config,
    group: Option<&str>,
    keys: &[String],
) -> Result<Vec<String>, String> {
    let groups: Vec<_> = config
        .targets
        .iter()
        .filter(|t| group.is_none_or(|g| g == t.name))
        .filter_map(|t| Some((t.name.as_str(), t.group.as_ref()?)))
        .collect();
    if groups.is_empty() {
        return Err(match group {
            Some(g) => format!("no group named {g:?} in the file"),
            None => "the file has no group (a [[target]] with `members`)".into(),
        });
    }
    let mut out = Vec::with_capacity(groups.len() * keys.len());
    for (name, g) in groups {
        let ring = Ring::new(
            g.members
                .iter()
                .enumerate()
                .map(|(i, m)| (i, m.addr.as_str())),
        );
        for key in keys {
            let h = hash(key.as_bytes());
            let member = ring
                .locate(h)
                .map_or("-", |(_, m)| g.members[m].addr.as_str());
            out.push(format!("{name}\t{key}\t{member}\t{h}"));
        }
    }
    Ok(out)
}
