//! Whether a target incarnation keeps its copies' origin (`preserve-source`), decided once when it
//! starts, with the kernel asked for the privilege rather than guessed from the user id.
//!
//! A Unix target fed by a Unix listener keeps it by default when udptee may send other processes'
//! credentials (the alternative silently tags every metric with udptee's own container); without
//! that privilege it relays, says so once in the log and as `origin: "relayed"` on `/targets`.
//! A UDP target keeps it only when asked, through a raw socket (CAP_NET_RAW). Asked for without
//! the privilege, it is one error, at start and at reload alike (the running set stays).

use std::os::fd::OwnedFd;

use super::change::{ChangeError, SenderSettings};
use crate::config::{Config, ConfigError, Origins, TargetSpec};
use crate::net::origin::{self, Way};

/// How an incarnation's copies carry their origin.
#[derive(Debug, Default)]
pub(crate) struct Keeping {
    /// How, when kept (none: relayed, the copy is udptee's own).
    pub(crate) way: Option<Way>,
    /// The raw socket of a UDP target that keeps its clients' addresses.
    pub(crate) raw: Option<OwnedFd>,
    /// Why a Unix target that would keep it by default relays instead.
    pub(crate) relayed_because: Option<String>,
}

impl Keeping {
    /// `"kept"` or `"relayed"`, as `/targets` says.
    pub(crate) fn as_str(&self) -> &'static str {
        if self.way.is_some() {
            "kept"
        } else {
            "relayed"
        }
    }
}

/// What a credentials-keeping target needs, and what udptee lacks of it, if anything.
fn credentials_refused(gives_up_privileges: bool) -> Option<String> {
    if gives_up_privileges {
        return Some(
            "udptee gives up its privileges after start (--user), and the kernel checks them at \
             every send of another process's credentials"
                .into(),
        );
    }
    origin::probe_credentials().err().map(|e| {
        format!(
            "the kernel refused to send another process's credentials ({e}): that needs \
             CAP_SYS_ADMIN (pid), CAP_SETUID (uid) and CAP_SETGID (gid)"
        )
    })
}

/// What `udptee check` warns of: each Unix target that would keep its senders' credentials by
/// default, but will relay for lack of the privilege.
pub fn warnings(config: &Config) -> Vec<String> {
    let unix_targets = config
        .targets
        .iter()
        .filter(|t| t.unix.is_some() && t.preserve_source.is_none());
    if config.listening().origins() != Origins::Credentials || unix_targets.clone().next().is_none()
    {
        return Vec::new();
    }
    let Some(why) = credentials_refused(config.user.is_some()) else {
        return Vec::new();
    };
    unix_targets
        .map(|t| {
            format!(
                "target {:?}: origin relayed: its receiver will see udptee's credentials on every \
                 copy, not its senders' ({why}); set preserve-source = false to accept that",
                t.name
            )
        })
        .collect()
}

/// Decides how `spec`'s new incarnation treats origins.
pub(crate) fn resolve(
    spec: &TargetSpec,
    settings: &SenderSettings,
) -> Result<Keeping, ChangeError> {
    let refuse = |reason: String| {
        ChangeError::Invalid(ConfigError::Origin {
            target: spec.name.clone(),
            reason,
        })
    };
    if spec.group.is_some() || spec.preserve_source == Some(false) {
        return Ok(Keeping::default());
    }
    match (settings.own.origins(), spec.unix.is_some()) {
        (Origins::Credentials, true) => match (
            credentials_refused(settings.gives_up_privileges),
            spec.preserve_source,
        ) {
            (None, _) => Ok(Keeping {
                way: Some(Way::Credentials),
                ..Keeping::default()
            }),
            (Some(why), Some(true)) => Err(refuse(why)),
            (Some(why), _) => {
                tracing::warn!(target_name = %spec.name, reason = %why,
                    "this Unix target gets udptee's own credentials on every copy, not its senders' (origin: relayed); give udptee the privilege, or set preserve-source = false to say so");
                Ok(Keeping {
                    relayed_because: Some(why),
                    ..Keeping::default()
                })
            }
        },
        (Origins::Addresses, false) if spec.preserve_source == Some(true) => {
            let raw = origin::raw_socket(spec.resolved).map_err(|e| {
                refuse(format!(
                    "sending from the clients' own addresses needs a raw socket, and the kernel \
                     refused one ({e}): that needs CAP_NET_RAW"
                ))
            })?;
            Ok(Keeping {
                way: Some(Way::Raw(spec.resolved)),
                raw: Some(raw),
                relayed_because: None,
            })
        }
        _ => Ok(Keeping::default()),
    }
}
