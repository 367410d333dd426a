//! The configuration's unit tests.

use super::*;

fn target(s: &str) -> TargetSpec {
    TargetSpec::new(s, s.parse().unwrap())
}

#[test]
fn the_pool_is_receive_staging_only() {
    let mut c = Config::new(
        "127.0.0.1:0".parse().unwrap(),
        vec![target("127.0.0.1:1"), target("127.0.0.1:2")],
    );
    c.batch = 8;
    c.worker_cpus = vec![None; 3];
    assert_eq!(
        c.pool_slots(false),
        3 * (2 * 8 + 1),
        "W*(2B+1): armed, spares, scratch; targets hold none"
    );
    assert_eq!(
        c.pool_slots(true),
        3 * (2 * 8 + 64 + 1),
        "plus the io_uring ring"
    );
    assert_eq!(c.backlog_bytes(), 2 * DEFAULT_QUEUE_BYTES);
}

#[test]
fn rejects_self_loops_in_every_spelling() {
    let loops = [
        ("0.0.0.0:8125", "127.0.0.1:8125"),
        ("0.0.0.0:8125", "127.0.0.2:8125"),
        ("127.0.0.1:8125", "[::ffff:127.0.0.1]:8125"),
        ("127.0.0.1:8125", "127.0.0.1:8125"),
        ("127.0.0.1:8125", "0.0.0.0:8125"),
        ("[::]:8125", "127.0.0.1:8125"),
        ("[::]:8125", "[::1]:8125"),
        ("[::1]:8125", "[::1]:8125"),
    ];
    for (listen, to) in loops {
        let c = Config::new(listen.parse().unwrap(), vec![target(to)]);
        assert!(
            matches!(c.validate(), Err(ConfigError::Loop { .. })),
            "{to} reaches {listen}"
        );
    }
    // A local interface address on a wildcard listener loops too.
    for ip in local_addresses() {
        let c = Config::new(
            "[::]:8125".parse().unwrap(),
            vec![TargetSpec::new("t", SocketAddr::new(ip, 8125))],
        );
        assert!(
            matches!(c.validate(), Err(ConfigError::Loop { .. })),
            "{ip} is this host's"
        );
    }
    let c = Config::new(
        "127.0.0.1:8125".parse().unwrap(),
        vec![target("127.0.0.1:8126")],
    );
    assert!(c.validate().is_ok(), "another port is not a loop");
}

#[test]
fn rejects_duplicates_port_zero_and_bad_names() {
    let listen: SocketAddr = "0.0.0.0:8125".parse().unwrap();
    let c = Config::new(
        listen,
        vec![
            target("127.0.0.1:8126"),
            TargetSpec::new("b", "[::ffff:127.0.0.1]:8126".parse().unwrap()),
        ],
    );
    assert!(
        matches!(c.validate(), Err(ConfigError::DuplicateTarget { .. })),
        "one socket spelled twice"
    );
    let c = Config::new(
        listen,
        vec![
            TargetSpec::new("a", "127.0.0.1:1".parse().unwrap()),
            TargetSpec::new("a", "127.0.0.1:2".parse().unwrap()),
        ],
    );
    assert!(matches!(
        c.validate(),
        Err(ConfigError::DuplicateName { .. })
    ));
    let c = Config::new(listen, vec![target("127.0.0.1:0")]);
    assert!(matches!(c.validate(), Err(ConfigError::PortZero { .. })));
    for bad in ["", "a b", "a/b", ".", "..", &"x".repeat(129)] {
        assert!(check_name(bad).is_err(), "{bad:?} is refused");
    }
    assert!(
        check_name("[::1]:8126").is_ok(),
        "an address as written is a fine name"
    );
}

#[test]
fn the_largest_valid_pool_still_fits_a_slot_id() {
    let mut c = Config::new(
        "127.0.0.1:0".parse().unwrap(),
        (1..=MAX_TARGETS)
            .map(|p| target(&format!("127.0.0.1:{p}")))
            .collect(),
    );
    c.batch = MAX_BATCH;
    c.worker_cpus = vec![None; 1024];
    assert!(u32::try_from(c.pool_slots(true)).is_ok(), "BufId is a u32");
    assert!(c.validate().is_ok());
    c.targets.push(target("127.0.0.1:60000"));
    assert!(
        matches!(c.validate(), Err(ConfigError::Range { .. })),
        "more than --max-targets targets is refused"
    );
}

#[test]
fn intervals_are_bounded_below() {
    let mut c = Config::new("127.0.0.1:0".parse().unwrap(), vec![target("127.0.0.1:1")]);
    c.stats_interval = Duration::from_nanos(1);
    assert!(matches!(c.validate(), Err(ConfigError::TooShort { .. })));
    c.stats_interval = Duration::ZERO;
    assert!(c.validate().is_ok(), "0 turns the stats line off");
}

#[test]
fn the_default_admin_port_collides_with_no_neighbour() {
    let port: SocketAddr = DEFAULT_ADMIN.parse().unwrap();
    // statsd (8125, its admin 8126), DogStatsD (8125), statsd_exporter (9125 statsd, 9102 web),
    // Prometheus (9090), Alertmanager (9093), node_exporter (9100), Grafana (3000), the Datadog
    // agent (5000-5002, 8126 APM).
    for taken in [
        8125, 8126, 9125, 9102, 9090, 9091, 9093, 9100, 3000, 5000, 5001, 5002,
    ] {
        assert_ne!(port.port(), taken);
    }
    assert!(
        port.ip().is_loopback(),
        "the admin API is loopback-only by default"
    );
}

#[test]
fn sizes_are_whole_bytes() {
    assert_eq!(parse_bytes("1.5KiB"), Ok(1536));
    assert!(parse_bytes("1.5").is_err(), "1.5 bytes is not a size");
    assert_eq!(parse_bytes("8MiB"), Ok(8 << 20));
    assert!(parse_bytes("lots").is_err());
}

#[test]
fn cpu_lists_are_bounded_and_checked() {
    assert!(parse_cpus("--cpus", "0").is_ok(), "CPU 0 always exists");
    assert!(
        parse_cpus("--cpus", "0-4000000000").is_err(),
        "huge ranges are refused before expansion"
    );
    assert!(
        parse_cpus("--cpus", "4000").is_err(),
        "CPUs this host lacks are refused"
    );
    let e = parse_cpus("--cpus", "a").unwrap_err().to_string();
    assert_eq!(e.lines().count(), 1, "one line: {e}");
    assert!(
        parse_cpus("--cpus", "").is_err(),
        "an empty list pins nothing and is refused"
    );
}

#[test]
fn addresses_resolve_in_every_accepted_form() {
    assert!(resolve("no-such-host.invalid:8125").is_err());
    assert!(resolve("127.0.0.1").is_err(), "a port is required");
    assert_eq!(resolve("[::1]:9").unwrap(), "[::1]:9".parse().unwrap());
    assert_eq!(
        resolve(":8125").unwrap(),
        "0.0.0.0:8125".parse().unwrap(),
        "the Go form means every address"
    );
}
