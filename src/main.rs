//! The udptee binary: parse flags, read the configuration, set up logging, run until SIGINT/SIGTERM.

use std::io::{IsTerminal as _, Write as _};
use std::process::ExitCode;

use tracing_subscriber::EnvFilter;
use udptee::cli::{Command, Invocation, LogFormat};

fn main() -> ExitCode {
    let inv = Invocation::from_env();
    if let Some(Command::Check { config }) = &inv.args.command {
        return check(config);
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

/// `udptee check --config PATH`: exit 0 when the file is valid, 1 with the error otherwise.
fn check(path: &std::path::Path) -> ExitCode {
    let argv = ["udptee", "--config", &path.to_string_lossy()];
    match Invocation::try_from_iter(argv).map(|i| i.load()) {
        Ok(Ok(c)) => {
            let _ = writeln!(
                std::io::stdout(),
                "{}: ok ({} targets, listen {})",
                path.display(),
                c.targets.len(),
                c.listen
            );
            ExitCode::SUCCESS
        }
        Ok(Err(e)) => {
            eprintln!("udptee: {e}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("udptee: {e}");
            ExitCode::FAILURE
        }
    }
}
