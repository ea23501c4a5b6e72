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
mod storage;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // What inkan creates is the operator's alone unless a file says otherwise (certificates and
    // CRLs are written 0644 explicitly): the stores' files 0600, their folders 0700.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    let cli = args::Cli::parse();
    match commands::run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            match e.downcast_ref::<commands::Exit>() {
                Some(exit) => ExitCode::from(exit.0),
                None => ExitCode::FAILURE,
            }
        }
    }
}
