//! `inkan`: flags → typed settings → library calls. `serve` is a supervisor over two children
//! of the same binary (`inkan signer`, `inkan worker`); see `docs/ARCHITECTURE.md` in the
//! repository for the process model.

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
