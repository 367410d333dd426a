//! The command line's unit tests.

use std::path::PathBuf;
use std::time::Duration;

use super::*;
use crate::config::Config;

fn parse(args: &[&str]) -> Result<Config, String> {
    Invocation::try_from_iter(std::iter::once("udptee").chain(args.iter().copied()))
        .map_err(|e| e.to_string())?
        .load()
        .map_err(|e| e.to_string())
}

fn file(text: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!(
        "udptee-cli-{}-{}.toml",
        std::process::id(),
        text.len()
    ));
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn names_come_from_to_or_default_to_the_address() {
    let c = parse(&[
        "-l",
        "127.0.0.1:0",
        "--to",
        "statsd=127.0.0.1:9",
        "--to",
        "127.0.0.1:10",
    ])
    .unwrap();
    assert_eq!(c.targets[0].name, "statsd");
    assert_eq!(c.targets[1].name, "127.0.0.1:10", "the address as written");
}

#[test]
fn the_file_fills_in_and_flags_override_it() {
    let path = file(
        "listen = \"127.0.0.1:0\"\nbatch = 8\nqueue-depth = 100\n[[target]]\nname = \"a\"\naddr = \"127.0.0.1:9\"\nqueue-depth = 5\n[[target]]\naddr = \"127.0.0.1:10\"\nenabled = false\n",
    );
    let p = path.to_str().unwrap();
    let c = parse(&["--config", p, "--batch", "16"]).unwrap();
    assert_eq!(c.batch, 16, "the command line wins");
    assert_eq!(c.queue_depth, 100, "the file fills in");
    assert_eq!(c.targets.len(), 2);
    assert_eq!(c.targets[0].queue_depth, 5, "a target's own setting wins");
    assert_eq!(c.targets[1].queue_depth, 100, "else the default");
    assert!(!c.targets[1].enabled);
    let c = parse(&["--config", p, "--to", "127.0.0.1:11"]).unwrap();
    assert_eq!(c.targets.len(), 1, "--to replaces the file's targets");
    let _ = std::fs::remove_file(path);
}

#[test]
fn logging_and_worker_keys_follow_the_same_rules() {
    let path = file(
        "listen = \"127.0.0.1:0\"\nlog-level = \"warn\"\nlog-format = \"json\"\nworkers = 2\n[[target]]\naddr = \"127.0.0.1:9\"\n",
    );
    let p = path.to_str().unwrap();
    let inv = Invocation::try_from_iter(["udptee", "--config", p]).unwrap();
    let (c, a) = inv.load_all().unwrap();
    assert_eq!(a.log_level, "warn", "the file's log-level is the one used");
    assert_eq!(a.log_format, LogFormat::Json);
    assert_eq!(c.worker_cpus.len(), 2);
    let c = parse(&["--config", p, "--cpus", "0"]).unwrap();
    assert_eq!(
        c.worker_cpus,
        [Some(0)],
        "--cpus on the command line overrides the file's workers"
    );
    let _ = std::fs::remove_file(path);
    let path = file(
        "listen = \"127.0.0.1:0\"\nworkers = 2\ncpus = \"0\"\n[[target]]\naddr = \"127.0.0.1:9\"\n",
    );
    let e = parse(&["--config", path.to_str().unwrap()]).unwrap_err();
    assert!(e.contains(".toml:2:") && e.contains("workers"), "{e}");
    let _ = std::fs::remove_file(path);
}

#[test]
fn the_fast_path_keys_are_read_and_checked() {
    let path = file(
        "listen = \"127.0.0.1:0\"\nfast-path = \"auto\"\nfast-path-interfaces = [\"lo\", \"eth0\"]\n[[target]]\naddr = \"127.0.0.1:9\"\n",
    );
    let p = path.to_str().unwrap();
    let c = parse(&["--config", p]).unwrap();
    assert_eq!(c.fast_path, crate::fastpath::Mode::Auto);
    assert_eq!(c.fast_path_interfaces, ["lo", "eth0"]);
    let c = parse(&["--config", p, "--fast-path", "off"]).unwrap();
    assert_eq!(c.fast_path, crate::fastpath::Mode::Off, "the flag wins");
    let c = parse(&["--listen", "127.0.0.1:0", "--to", "127.0.0.1:9"]).unwrap();
    assert_eq!(c.fast_path, crate::fastpath::Mode::Off, "off by default");
    let _ = std::fs::remove_file(path);
    let path =
        file("listen = \"127.0.0.1:0\"\nfast-path = \"yes\"\n[[target]]\naddr = \"127.0.0.1:9\"\n");
    let e = parse(&["--config", path.to_str().unwrap()]).unwrap_err();
    assert!(
        e.contains(":2:") && e.contains("fast-path") && e.contains("off, auto or on"),
        "{e}"
    );
    let _ = std::fs::remove_file(path);
}

#[test]
fn file_value_errors_name_line_and_key() {
    let path = file("listen = \"127.0.0.1:0\"\n\nbatch = 0\n[[target]]\naddr = \"127.0.0.1:9\"\n");
    let e = parse(&["--config", path.to_str().unwrap()]).unwrap_err();
    assert!(e.contains(":3:1: key `batch`"), "{e}");
    let _ = std::fs::remove_file(path);
    let path = file("listen = \"127.0.0.1:0\"\n[[target]]\naddr = \"nowhere.invalid:9\"\n");
    let e = parse(&["--config", path.to_str().unwrap()]).unwrap_err();
    assert!(e.contains(":3:") && e.contains("addr"), "{e}");
    let _ = std::fs::remove_file(path);
}

#[test]
fn flag_edges_are_refused() {
    for (flag, value) in [
        ("--max-datagram", "1.5"),
        ("--rcvbuf", "0"),
        ("--stats-interval", "1ns"),
        ("--log-level", "nonsense"),
        ("--cpus", "a"),
    ] {
        let e = parse(&["-l", "127.0.0.1:0", "--to", "127.0.0.1:9", flag, value]).unwrap_err();
        let lines: Vec<&str> = e
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with("For more information"))
            .collect();
        assert_eq!(lines.len(), 1, "{flag} {value}: one line: {e}");
        assert!(lines[0].contains(flag), "{flag} is named: {e}");
    }
}

#[test]
fn sizes_and_durations_take_units() {
    let c = parse(&[
        "-l",
        "127.0.0.1:0",
        "--to",
        "127.0.0.1:9",
        "--rcvbuf",
        "4MiB",
        "--max-datagram",
        "1k",
        "--stats-interval",
        "250ms",
    ])
    .unwrap();
    assert_eq!(c.rcvbuf_bytes, 4 << 20);
    assert_eq!(c.max_datagram, 1024, "k is binary");
    assert_eq!(c.stats_interval, Duration::from_millis(250));
    assert!(c.latency, "latency is recorded by default");
    let c = parse(&[
        "-l",
        "127.0.0.1:0",
        "--to",
        "127.0.0.1:9",
        "--latency",
        "off",
        "--admin",
        "off",
    ])
    .unwrap();
    assert!(!c.latency && c.admin.is_none(), "on/off flags take a value");
}

#[test]
fn bad_values_name_the_flag() {
    let e = parse(&["-l", "127.0.0.1:0", "--to", "127.0.0.1:9", "--batch", "0"]).unwrap_err();
    assert!(e.contains("--batch"), "{e}");
    let e = parse(&[
        "-l",
        "127.0.0.1:0",
        "--to",
        "127.0.0.1:9",
        "--rcvbuf",
        "lots",
    ])
    .unwrap_err();
    assert!(e.contains("--rcvbuf"), "{e}");
    let e = parse(&["-l", "nonsense", "--to", "127.0.0.1:9"]).unwrap_err();
    assert!(e.contains("nonsense"), "{e}");
    let e = parse(&["-l", "127.0.0.1:0"]).unwrap_err();
    assert!(e.contains("--to"), "{e}");
    let e = parse(&["--to", "127.0.0.1:9"]).unwrap_err();
    assert!(e.contains("--listen"), "{e}");
    let e = parse(&[
        "-l",
        "127.0.0.1:0",
        "--to",
        "127.0.0.1:9",
        "--workers",
        "2",
        "--cpus",
        "0",
    ])
    .unwrap_err();
    assert!(e.contains("cannot be used with"), "{e}");
}
