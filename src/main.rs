//! The udptee binary: parse flags, read the configuration, set up logging, run until SIGINT/SIGTERM.

use std::io::{IsTerminal as _, Write as _};
use std::process::ExitCode;

use tracing_subscriber::EnvFilter;
use udptee::cli::{Command, Invocation, LogFormat};

fn main() -> ExitCode {
    let inv = Invocation::from_env();
    match &inv.args.command {
        Some(Command::Check { config }) => return check(config),
        Some(Command::Replay(args)) => return replay(args),
        Some(Command::Tap(args)) => return tap(args),
        Some(Command::Top(args)) => {
            return match udptee::cli::top(args) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("udptee top: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        Some(Command::Ring(args)) => return ring(args),
        Some(Command::Completions(args)) => {
            udptee::cli::completions(args.shell, &mut std::io::stdout());
            return ExitCode::SUCCESS;
        }
        Some(Command::Manpages(args)) => return manpages(&args.dir),
        None => {}
    }
    let (config, args) = match inv.load_all() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("udptee: {e}");
            return ExitCode::from(2);
        }
    };
    // Validated by `load`: only levels and directive lists get here.
    let filter = EnvFilter::try_new(&args.log_level).unwrap_or_else(|_| EnvFilter::new("info"));
    // Colour only on a terminal; a failed write (a closed pipe, a full disk) is dropped and counted,
    // never a panic on a data thread.
    let (writer, _flush_at_exit) = udptee::logging::non_blocking();
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(std::io::stderr().is_terminal());
    match args.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
    let reload = inv.clone();
    let loader: udptee::control::Loader = Box::new(move || reload.load());
    match udptee::run(&config, inv.args.config.is_some().then_some(loader)) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// `udptee manpages DIR`: the pages written, one per line; exit 1 when the directory cannot be written.
fn manpages(dir: &std::path::Path) -> ExitCode {
    match udptee::cli::manpages(dir) {
        Ok(pages) => {
            for p in pages {
                let _ = writeln!(std::io::stdout(), "{}", p.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("udptee: writing man pages into {}: {e}", dir.display());
            ExitCode::FAILURE
        }
    }
}

/// `udptee check --config PATH`: exit 0 when the file is valid, 1 with every error found otherwise.
fn check(path: &std::path::Path) -> ExitCode {
    let argv = ["udptee", "--config", &path.to_string_lossy()];
    match Invocation::try_from_iter(argv).map(|i| i.load_checked()) {
        Ok(Ok((c, _))) => {
            for w in udptee::fanout::origin_warnings(&c) {
                eprintln!("udptee: warning: {w}");
            }
            let _ = writeln!(
                std::io::stdout(),
                "{}: ok ({} targets, listen {})",
                path.display(),
                c.targets.len(),
                c.listener_names().join(", ")
            );
            ExitCode::SUCCESS
        }
        Ok(Err(errors)) => {
            for e in &errors {
                eprintln!("udptee: {e}");
            }
            if errors.len() > 1 {
                eprintln!("udptee: {}: {} errors", path.display(), errors.len());
            }
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("udptee: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `udptee ring --config PATH [KEY...]`: exit 0 with a line per group and key, 1 when the file has
/// no such group, 2 when it does not load.
fn ring(args: &udptee::cli::RingArgs) -> ExitCode {
    let argv = ["udptee", "--config", &args.config.to_string_lossy()];
    let config = match Invocation::try_from_iter(argv).map(|i| i.load()) {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            eprintln!("udptee: {e}");
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("udptee: {e}");
            return ExitCode::from(2);
        }
    };
    let keys: Vec<String> = if args.keys.is_empty() {
        std::io::stdin()
            .lines()
            .map_while(Result::ok)
            .filter(|l| !l.is_empty())
            .collect()
    } else {
        args.keys.clone()
    };
    match udptee::cli::ring_lines(&config, args.group.as_deref(), &keys) {
        Ok(lines) => {
            let mut out = std::io::stdout().lock();
            for l in lines {
                if writeln!(out, "{l}").is_err() {
                    break;
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("udptee: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `udptee replay FILE... --to ADDR`: a progress bar on a terminal, then one summary line on stdout;
/// exit 0, 1 when a file is corrupt or truncated (after what was sent before it), 2 for bad flags,
/// 130 when SIGINT or SIGTERM stopped it (after the summary of what was sent).
fn replay(args: &udptee::cli::ReplayArgs) -> ExitCode {
    let plan = match args.plan() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("udptee replay: {e}");
            return ExitCode::from(2);
        }
    };
    let bar = if std::io::stderr().is_terminal() {
        let b = indicatif::ProgressBar::new_spinner();
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} {elapsed} {pos} datagrams, {per_sec}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
        b
    } else {
        indicatif::ProgressBar::hidden()
    };
    // SIGINT/SIGTERM stop the replay between datagrams, so the summary still says what was sent.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        if let Err(e) = signal_hook::flag::register(signal, std::sync::Arc::clone(&stop)) {
            eprintln!("udptee replay: installing signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    }
    let result = udptee::replay::replay_until(&plan, |n| bar.set_position(n), &stop);
    bar.finish_and_clear();
    match result {
        Ok(report) => {
            let _ = writeln!(std::io::stdout(), "{report}");
            if report.interrupted {
                eprintln!("udptee replay: stopped by a signal");
                return ExitCode::from(130);
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            let _ = writeln!(std::io::stdout(), "{}", e.report);
            eprintln!("udptee replay: {}", e.message);
            ExitCode::FAILURE
        }
    }
}

/// `udptee tap`: copies the tap's lines to stdout until the count is reached, the server closes, or
/// stdout goes away (exit 0); 1 when it cannot connect or is refused.
fn tap(args: &udptee::cli::TapArgs) -> ExitCode {
    let reader = match args.connect() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("udptee tap: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut out = std::io::stdout().lock();
    for line in std::io::BufRead::lines(reader) {
        let Ok(line) = line else { break };
        if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
            break;
        }
    }
    ExitCode::SUCCESS
}
