//! The udptee binary: parse flags, validate, set up logging, run until SIGINT/SIGTERM.

use std::io::IsTerminal as _;
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;
use udptee::Config;
use udptee::cli::{Args, LogFormat};

fn main() -> ExitCode {
    let args = Args::parse();
    let filter = match EnvFilter::try_new(&args.log_level) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("udptee: --log-level {:?}: {e}", args.log_level);
            return ExitCode::from(2);
        }
    };
    // Colour only on a terminal: journald and log shippers get plain text.
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match args.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
    let config = match Config::try_from(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("udptee: {e}");
            return ExitCode::from(2);
        }
    };
    match udptee::run(&config) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("udptee: {e}");
            ExitCode::FAILURE
        }
    }
}
