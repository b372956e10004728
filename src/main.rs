//! The `locksup` binary: parse the command line, dispatch, exit.

use std::ffi::OsString;
use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use clap::error::ErrorKind;
use locksup::cli::{Cli, Command};
use locksup::exit;

fn main() -> ExitCode {
    // locksup owns its signal mask: whatever it inherited, its timers,
    // reaping and cancel handling must work (the command gets the
    // inherited mask back).
    if let Err(e) = locksup::sys::unblock_all_signals() {
        let _ = writeln!(std::io::stderr(), "locksup: cannot unblock signals: {e}");
        return code(exit::FAILURE);
    }
    let args: Vec<OsString> = std::env::args_os().collect();
    let cli = Cli::try_parse_from(&args);
    // The daemon says what it does (listening, containment, reloads) by
    // default; the other commands only warn.
    let level = match &cli {
        Ok(Cli {
            command: Command::Serve(_),
            ..
        }) => "info",
        _ => "warn",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level)).init();
    let cli = match cli {
        Ok(cli) => cli,
        Err(e) => return usage_error(&e),
    };
    let result = match cli.command {
        Command::Run(run) if run.daemon => locksup::client::run(&run, &args, cli.config.as_deref()),
        Command::Run(run) => locksup::run::main(run, cli.config.as_deref()),
        Command::Serve(serve) => locksup::serve::main(serve, cli.config.as_deref()),
        Command::Status(args) => locksup::status::main(args, cli.config.as_deref()),
        Command::Watch(args) => locksup::watch::main(args, cli.config.as_deref()),
        Command::Cancel(args) => locksup::cancel::main(args, cli.config.as_deref()),
        Command::Timeline(args) => locksup::timeline::main(args),
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
            let msg = locksup::error::clap_message(e);
            let args: Vec<OsString> = std::env::args_os().collect();
            let help = locksup::error::clap_help_command(&args);
            let _ = writeln!(std::io::stderr(), "locksup: {msg} (see '{help} --help')");
            code(exit::FAILURE)
        }
    }
}

fn code(c: i32) -> ExitCode {
    ExitCode::from(u8::try_from(c).unwrap_or(exit::FAILURE as u8))
}
