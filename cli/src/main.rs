//! `inkan`: flags → typed settings → library calls. Nothing else happens here.

#![forbid(unsafe_code)]

mod args;
mod commands;
mod config;
mod logging;
mod passphrase;
mod process;
mod sandbox;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = args::Cli::parse();
    match commands::run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
