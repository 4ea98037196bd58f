//! The `meshcc` binary: a compiler wrapper (by argv[0] or first argument) or a subcommand.

use std::ffi::OsString;
use std::path::Path;
use std::process::ExitCode;

use clap::Parser;
use meshcc::cli::{self, Cli, SUBCOMMANDS};
use meshcc::wrapper::{self, locate::is_meshcc_name, Invocation};

fn main() -> ExitCode {
    let argv: Vec<OsString> = std::env::args_os().collect();
    let Some(argv0) = argv.first() else {
        return ExitCode::FAILURE;
    };
    // Masquerade mode: called as `gcc`, `cc`, `clang++`, … through a symlink.
    if !is_meshcc_name(argv0) {
        let name = Path::new(argv0)
            .file_name()
            .map(OsString::from)
            .unwrap_or_else(|| argv0.clone());
        return wrapper::run(Invocation {
            compiler: name,
            args: argv[1..].to_vec(),
        });
    }
    // Prefix mode: `meshcc gcc …` (`meshcc meshcc gcc` collapses).
    let first = argv
        .iter()
        .skip(1)
        .position(|a| !is_meshcc_name(a))
        .map(|i| i + 1);
    if let Some(i) = first {
        let word = argv[i].to_string_lossy();
        if i > 1 || !(word.starts_with('-') || SUBCOMMANDS.contains(&word.as_ref())) {
            return wrapper::run(Invocation {
                compiler: argv[i].clone(),
                args: argv[i + 1..].to_vec(),
            });
        }
        if word == "-s" {
            return cli::run(Cli::parse_from(["meshcc", "stats"]));
        }
    }
    cli::run(Cli::parse_from(argv))
}
