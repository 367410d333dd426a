//! The systemd notify protocol (`Type=notify`), through the sd-notify crate (no libsystemd needed):
//! `READY=1` once every socket is bound and every thread runs, `RELOADING=1` with `MONOTONIC_USEC`
//! around a reload (what `Type=notify-reload` on systemd 253+ requires) then `READY=1`,
//! `STOPPING=1` at shutdown, `STATUS=` with the current rates, and `WATCHDOG=1` at half of
//! `WatchdogSec` only while every receive worker keeps turning and the forwarder is ready, so a
//! stuck data thread stops the pings and systemd restarts the service. Without `NOTIFY_SOCKET`
//! every call does nothing.
//!
//! Floor 1 (plain data and leaves): imports nothing of udptee's.

use std::time::Duration;

use sd_notify::NotifyState;

/// The service manager's end, if there is one.
#[derive(Debug)]
pub struct Systemd {
    enabled: bool,
    watchdog: Option<Duration>,
    last_beats: Vec<u64>,
    withheld: bool,
}

impl Systemd {
    /// Reads `NOTIFY_SOCKET` and `WATCHDOG_USEC`/`WATCHDOG_PID` (left in the environment).
    pub fn from_env() -> Self {
        let mut usec = 0;
        let watchdog = sd_notify::watchdog_enabled(false, &mut usec)
            .then(|| Duration::from_micros(usec / 2).max(Duration::from_millis(10)));
        Self {
            enabled: std::env::var_os("NOTIFY_SOCKET").is_some(),
            watchdog,
            last_beats: Vec::new(),
            withheld: false,
        }
    }

    fn send(&self, states: &[NotifyState<'_>]) {
        if self.enabled {
            if let Err(e) = sd_notify::notify(false, states) {
                tracing::debug!(error = %e, "sd_notify failed");
            }
        }
    }

    /// How often to call [`watchdog`](Self::watchdog), when systemd asked for pings.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog.filter(|_| self.enabled)
    }

    /// Start-up is complete.
    pub fn ready(&self, status: &str) {
        self.send(&[NotifyState::Ready, NotifyState::Status(status)]);
    }

    /// A reload begins.
    pub fn reloading(&self) {
        match NotifyState::monotonic_usec_now() {
            Ok(now) => self.send(&[NotifyState::Reloading, now]),
            Err(_) => self.send(&[NotifyState::Reloading]),
        }
    }

    /// The reload is over (applied or refused: the service runs either way).
    pub fn reloaded(&self, status: &str) {
        self.send(&[NotifyState::Ready, NotifyState::Status(status)]);
    }

    /// Shutdown begins.
    pub fn stopping(&self) {
        self.send(&[NotifyState::Stopping, NotifyState::Status("draining")]);
    }

    /// A status line for `systemctl status`.
    pub fn status(&self, status: &str) {
        self.send(&[NotifyState::Status(status)]);
    }

    /// Pings the watchdog if every worker turned since the last call and `healthy` holds; returns
    /// whether it pinged.
    pub fn watchdog(&mut self, beats: Vec<u64>, healthy: Result<(), String>) -> bool {
        let moved = self.last_beats.len() != beats.len()
            || self.last_beats.iter().zip(&beats).all(|(a, b)| b > a);
        self.last_beats = beats;
        let why = match healthy {
            Ok(()) if moved => None,
            Ok(()) => Some("a receive worker made no progress".to_owned()),
            Err(why) => Some(why),
        };
        match why {
            None => {
                self.withheld = false;
                self.send(&[NotifyState::Watchdog]);
                true
            }
            Some(why) => {
                if !self.withheld {
                    tracing::error!(reason = %why, "withholding the systemd watchdog ping");
                }
                self.withheld = true;
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_that_stops_turning_stops_the_pings() {
        let mut s = Systemd {
            enabled: false,
            watchdog: Some(Duration::from_secs(1)),
            last_beats: Vec::new(),
            withheld: false,
        };
        assert!(s.watchdog(vec![5, 9], Ok(())), "the first look pings");
        assert!(s.watchdog(vec![6, 10], Ok(())), "both turned");
        assert!(!s.watchdog(vec![7, 10], Ok(())), "worker 1 is stuck");
        assert!(s.watchdog(vec![8, 11], Ok(())), "it moves again");
        assert!(
            !s.watchdog(vec![9, 12], Err("a data thread died".into())),
            "not ready"
        );
    }
}
