//! `--user NAME`: after every socket is bound, give up root for good.
//!
//! udptee needs privileges only while it starts: CAP_NET_BIND_SERVICE for a port below 1024 and
//! CAP_NET_ADMIN to force a receive buffer above `net.core.rmem_max`. Once the listen group, the
//! admin listener and the targets' sockets exist, nothing it does needs them: new targets bind
//! ephemeral ports, and a reload that would need a new listen socket needs a restart anyway. So with
//! `--user` it sets its supplementary groups to the user's primary group, then its real, effective and
//! saved group and user IDs to the user's (setresgid/setresuid, which glibc applies to every thread).
//! Leaving uid 0 clears every capability, permitted and effective, and the saved IDs make it
//! impossible to get them back.
//!
//! Floor 1 (plain data and leaves): imports only `config::RunAs`.

use nix::unistd::{Gid, Uid};

pub use crate::config::RunAs;

/// Becomes `who` for good. Already being that user is fine; any other user needs root.
pub fn drop_to(who: &RunAs) -> Result<(), String> {
    let (uid, gid) = (Uid::from_raw(who.uid), Gid::from_raw(who.gid));
    if Uid::current() == uid && Uid::effective() == uid {
        return Ok(());
    }
    if !Uid::effective().is_root() {
        return Err(format!(
            "--user {}: switching to another user needs root (running as uid {})",
            who.name,
            Uid::effective()
        ));
    }
    let fail = |what: &str, e: nix::Error| format!("--user {}: {what}: {e}", who.name);
    nix::unistd::setgroups(&[gid]).map_err(|e| fail("setgroups", e))?;
    nix::unistd::setresgid(gid, gid, gid).map_err(|e| fail("setresgid", e))?;
    nix::unistd::setresuid(uid, uid, uid).map_err(|e| fail("setresuid", e))?;
    let root = Uid::from_raw(0);
    if who.uid != 0 && nix::unistd::setresuid(root, root, root).is_ok() {
        return Err(format!("--user {}: root could be regained", who.name));
    }
    Ok(())
}
