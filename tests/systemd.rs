//! udptee under systemd, without systemd: the notify protocol through a NOTIFY_SOCKET the test binds
//! (READY=1 after binding, STATUS=, WATCHDOG=1 pings, RELOADING=1 with MONOTONIC_USEC then READY=1
//! on SIGHUP, STOPPING=1 on SIGTERM), and the shipped unit checked by `systemd-analyze verify` where
//! systemd is installed.

mod util;

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use util::*;

/// Receives notify messages until one contains `want`, failing after 10 s; returns them all.
fn until(sock: &UnixDatagram, want: &str, seen: &mut Vec<String>) -> String {
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no {want:?} in {seen:?}"
        );
        if let Ok(n) = sock.recv(&mut buf) {
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            seen.push(msg.clone());
            if msg.contains(want) {
                return msg;
            }
        }
    }
}

#[test]
fn the_notify_protocol_is_spoken() {
    let dir = std::env::temp_dir().join(format!("udptee-notify-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("notify.sock");
    let _ = std::fs::remove_file(&path);
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let sink = Sink::new(false);
    let listen = free_addr();
    let config = dir.join("udptee.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"{listen}\"\nadmin = \"off\"\n[[target]]\naddr = \"{}\"\n",
            sink.addr
        ),
    )
    .unwrap();
    // systemd sets WATCHDOG_PID to the service's pid: the shell's, which exec keeps.
    let mut child = Command::new("sh")
        .args(["-c", "WATCHDOG_PID=$$ exec \"$0\" \"$@\""])
        .arg(env!("CARGO_BIN_EXE_udptee"))
        .args([
            "--config",
            config.to_str().unwrap(),
            "--stats-interval",
            "200ms",
        ])
        .env("NOTIFY_SOCKET", &path)
        .env("WATCHDOG_USEC", "400000")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut seen = Vec::new();
    let ready = until(&sock, "READY=1", &mut seen);
    assert!(ready.contains("STATUS=forwarding"), "{ready}");
    assert!(
        procfs::net::udp()
            .unwrap()
            .iter()
            .any(|e| e.local_address == listen),
        "READY=1 only once the listen socket is bound"
    );
    until(&sock, "WATCHDOG=1", &mut seen);
    until(&sock, "WATCHDOG=1", &mut seen);
    until(&sock, "STATUS=rx", &mut seen);
    signal(&child, "-HUP");
    let reloading = until(&sock, "RELOADING=1", &mut seen);
    let usec: u64 = reloading
        .lines()
        .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
        .unwrap_or_else(|| panic!("MONOTONIC_USEC with RELOADING=1: {reloading}"))
        .parse()
        .unwrap();
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).unwrap();
    let now_usec = now.tv_sec() as u64 * 1_000_000 + now.tv_nsec() as u64 / 1000;
    assert!(
        usec <= now_usec && now_usec - usec < 5_000_000,
        "CLOCK_MONOTONIC: {usec} vs {now_usec}"
    );
    let after = until(&sock, "READY=1", &mut seen);
    assert!(after.contains("reloaded"), "{after}");
    signal(&child, "-TERM");
    until(&sock, "STOPPING=1", &mut seen);
    assert!(child.wait().unwrap().success());
    let _ = std::fs::remove_dir_all(&dir);
    let _ = sink.finish();
}

#[test]
fn the_shipped_unit_passes_systemd_analyze_verify() {
    let Ok(out) = Command::new("systemd-analyze").arg("--version").output() else {
        skip_witness("skipped: systemd-analyze is not installed (Debian's systemd package)");
        return;
    };
    assert!(out.status.success());
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/dist/systemd/udptee.service"
    ))
    .unwrap();
    assert!(
        unit.contains("Type=notify")
            && unit.contains("WatchdogSec=")
            && unit.contains("ExecReload=")
    );
    // verify checks that ExecStart's binary exists: point it at the one just built.
    let dir = std::env::temp_dir().join(format!("udptee-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("udptee.service");
    std::fs::write(
        &path,
        unit.replace("/usr/local/bin/udptee", env!("CARGO_BIN_EXE_udptee")),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.trim().is_empty(), "no warning: {err}");
    let _ = std::fs::remove_dir_all(&dir);
}
