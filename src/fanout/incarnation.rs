//! Starts one incarnation of a target: a plain target's socket, ring and sender; or a group's
//! members (each one like a plain target), its sharding sender and its health checks. A failure
//! leaves nothing running.

use std::sync::Arc;
use std::thread::JoinHandle;

use super::change::{ChangeError, SenderSettings};
use super::health;
use super::sender::{Role, TargetSender};
use super::target::{Group, TargetCore};
use super::threads::Threads;
use crate::config::TargetSpec;
use crate::metrics::counters::TargetCounterSet;

/// A started incarnation: its core and every thread to join at shutdown.
pub(crate) struct Started {
    pub(crate) core: Arc<TargetCore>,
    pub(crate) handles: Vec<JoinHandle<()>>,
}

/// Starts `spec` with `counters` (kept for its name); `cpu` gives each sender thread its CPU.
/// `previous` is the group this one replaces, whose members' counters carry over by address.
pub(crate) fn start(
    spec: &TargetSpec,
    counters: Arc<TargetCounterSet>,
    settings: &SenderSettings,
    threads: &Arc<Threads>,
    mut cpu: impl FnMut() -> Option<usize>,
    previous: Option<&Group>,
) -> Result<Started, ChangeError> {
    let Some(g) = &spec.group else {
        let (core, h) = TargetSender::start(spec, counters, settings, threads, cpu(), Role::Plain)?;
        return Ok(Started {
            core,
            handles: vec![h],
        });
    };
    let mut cores: Vec<Arc<TargetCore>> = Vec::with_capacity(g.members.len());
    let mut handles = Vec::with_capacity(g.members.len() + 1);
    let close = |cores: &[Arc<TargetCore>]| cores.iter().for_each(|c| c.close());
    for m in &g.members {
        let member = TargetSpec {
            name: format!("{}/{}", spec.name, m.addr),
            addr: m.addr.clone(),
            resolved: m.resolved,
            lines: Default::default(),
            parity: false,
            group: None,
            unix: None,
            enabled: true,
            ..spec.clone()
        };
        let books = previous
            .and_then(|p| p.members.iter().find(|x| x.spec.addr == m.addr))
            .map_or_else(
                || Arc::new(TargetCounterSet::new(1)),
                |x| Arc::clone(&x.core.counters),
            );
        match TargetSender::start(&member, books, settings, threads, cpu(), Role::Member) {
            Ok((core, h)) => {
                cores.push(core);
                handles.push(h);
            }
            Err(e) => {
                close(&cores);
                return Err(e);
            }
        }
    }
    let group = Arc::new(Group::new(
        spec.name.as_str().into(),
        g.clone(),
        cores.clone(),
    ));
    let role = Role::Group(Arc::clone(&group));
    let (core, h) = match TargetSender::start(spec, counters, settings, threads, cpu(), role) {
        Ok(started) => started,
        Err(e) => {
            close(&cores);
            return Err(e);
        }
    };
    handles.push(h);
    if let Err(source) = health::spawn(&group) {
        // Dropping the core's last producer would close it; close it now, members follow.
        core.close();
        return Err(ChangeError::Spawn {
            name: spec.name.clone(),
            source,
        });
    }
    Ok(Started { core, handles })
}
