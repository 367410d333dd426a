//! A group's health checks, as proxy.js does them after its PR #665: every `health-interval`, each
//! member with an `admin` address gets a TCP connection and `health\r\n`; it is up if and only if
//! the first reply contains `up` (stock statsd answers `health: up`, or `health: down` once an
//! operator drained it). A timeout of one interval, any error, or another answer takes it out of the
//! ring at the first failure; the first success puts it back. One thread per checked member, so a
//! member that hangs delays no other check; they stop when the group's sender exits.

use std::io::{Read as _, Write as _};
use std::net::{TcpStream, ToSocketAddrs as _};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::target::Group;

/// Starts a check thread for every member of `group` with an `admin` address.
pub(crate) fn spawn(group: &Arc<Group>) -> std::io::Result<()> {
    for (i, m) in group.members.iter().enumerate() {
        let Some(admin) = m.spec.admin.clone() else {
            continue;
        };
        let g = Arc::clone(group);
        let mut name = format!("udptee-hc:{}", group.name);
        name.truncate(15);
        let handle = std::thread::Builder::new()
            .name(name)
            .spawn(move || check_loop(&g, i, &admin))?;
        group
            .checkers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(handle.thread().clone());
    }
    Ok(())
}

fn check_loop(group: &Group, i: usize, admin: &str) {
    let interval = group.spec.health_interval;
    while !group.stopped.load(Ordering::Acquire) {
        let start = Instant::now();
        let result = check(admin, interval);
        if group.stopped.load(Ordering::Acquire) {
            return;
        }
        group.observe(i, result);
        while !group.stopped.load(Ordering::Acquire) {
            let left = interval.saturating_sub(start.elapsed());
            if left.is_zero() {
                break;
            }
            std::thread::park_timeout(left);
        }
    }
}

/// One check of statsd's admin port at `admin` within `timeout`: `Ok` with the answer when it
/// contains `up`, else why not.
pub(super) fn check(admin: &str, timeout: Duration) -> Result<String, String> {
    let deadline = Instant::now() + timeout;
    let left = || {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| format!("no answer within {timeout:?}"))
    };
    let addr = admin
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {admin}: {e}"))?
        .next()
        .ok_or_else(|| format!("{admin} resolves to no address"))?;
    let mut s = TcpStream::connect_timeout(&addr, left()?)
        .map_err(|e| format!("connect to {addr}: {e}"))?;
    s.set_write_timeout(Some(left()?))
        .and_then(|()| s.write_all(b"health\r\n"))
        .map_err(|e| format!("write to {addr}: {e}"))?;
    s.set_read_timeout(Some(left()?))
        .map_err(|e| format!("read from {addr}: {e}"))?;
    // The answer up to its newline (statsd writes it at once; a split reply is read whole), the
    // connection's end, or 256 bytes.
    let mut buf = [0u8; 256];
    let mut n = 0;
    while n < buf.len() && !buf[..n].contains(&b'\n') {
        match s.read(&mut buf[n..]) {
            Ok(0) if n == 0 => return Err(format!("{addr} closed without an answer")),
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                if n == 0 {
                    return Err(format!("no answer within {timeout:?}"));
                }
                break;
            }
            Err(e) => return Err(format!("read from {addr}: {e}")),
        }
    }
    let answer = String::from_utf8_lossy(&buf[..n]).trim().to_owned();
    if buf[..n].windows(2).any(|w| w == b"up") {
        Ok(answer)
    } else {
        Err(format!("answered {answer:?}"))
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use super::*;

    fn answering(reply: &'static [u8]) -> String {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            if let Ok((mut s, _)) = l.accept() {
                let mut buf = [0u8; 64];
                let n = s.read(&mut buf).unwrap_or(0);
                assert_eq!(&buf[..n], b"health\r\n");
                let _ = s.write_all(reply);
            }
        });
        addr
    }

    #[test]
    fn up_down_refused_and_silent_members() {
        let t = Duration::from_millis(500);
        assert_eq!(
            check(&answering(b"health: up\n"), t),
            Ok("health: up".into())
        );
        let down = check(&answering(b"health: down\n"), t).unwrap_err();
        assert!(down.contains("health: down"), "{down}");
        let refused = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().to_string()
        };
        assert!(check(&refused, t).unwrap_err().contains("connect"));
        let silent = TcpListener::bind("127.0.0.1:0").unwrap();
        let start = Instant::now();
        let e = check(&silent.local_addr().unwrap().to_string(), t).unwrap_err();
        assert!(
            e.contains("no answer") && start.elapsed() < Duration::from_secs(2),
            "{e}"
        );
    }
}
