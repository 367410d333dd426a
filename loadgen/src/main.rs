//! udptee-loadgen binary: parse, run, report errors in one line.

use std::process::ExitCode;

use clap::Parser;
use udptee_loadgen::cli::Cli;

fn main() -> ExitCode {
    match Cli::parse().run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("udptee-loadgen: {e:#}");
            ExitCode::FAILURE
        }
    }
}
