//! The `locksup` binary: parse the command line, dispatch, exit.

use std::ffi::OsString;
use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use clap::error::ErrorKind;
use locksup::cli::{Cli, Command};
use locksup::exit;

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().collect();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = match Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        Err(e) => return usage_error(&e),
    };
    let result = match cli.command {
        Command::Run(run) => locksup::run::main(run, cli.config.as_deref()),
        Command::Status(args) => locksup::status::main(args, cli.config.as_deref()),
        Command::Watch(args) => locksup::watch::main(args, cli.config.as_deref()),
        Command::Cancel(args) => locksup::cancel::main(args, cli.config.as_deref()),
        Command::Completions { shell } => {
            let script = locksup::cli::completion_script(shell);
            match std::io::stdout().write_all(&script) {
                Ok(()) => Ok(0),
                Err(e) => Err(locksup::error::Error::usage(format!("cannot write: {e}"))),
            }
        }
    };
    match result {
        Ok(c) => code(c),
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "locksup: {e}");
            code(e.code)
        }
    }
}

/// Help and version go to stdout with status 0; anything else is a usage
/// error: one line on stderr, status 125.
fn usage_error(e: &clap::Error) -> ExitCode {
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = e.print();
            ExitCode::SUCCESS
        }
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand | ErrorKind::MissingSubcommand => {
            let _ = writeln!(
                std::io::stderr(),
                "locksup: a subcommand is required (see 'locksup --help')"
            );
            code(exit::FAILURE)
        }
        _ => {
            // clap's message is a paragraph (the error, continued on
            // indented lines), then usage; keep the first paragraph, on one line.
            let text = e.to_string();
            let para: Vec<&str> = text
                .lines()
                .map(str::trim)
                .skip_while(|l| l.is_empty())
                .take_while(|l| !l.is_empty())
                .collect();
            let joined = para.join(" ");
            let msg = joined.strip_prefix("error: ").unwrap_or(&joined);
            let _ = writeln!(std::io::stderr(), "locksup: {msg} (see 'locksup --help')");
            code(exit::FAILURE)
        }
    }
}

fn code(c: i32) -> ExitCode {
    ExitCode::from(u8::try_from(c).unwrap_or(exit::FAILURE as u8))
}
