//! The `locksup` binary: parse the command line, dispatch, exit.

use std::ffi::OsString;
use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use clap::error::ErrorKind;
use locksup::entry::{self, Cli, Command};

fn main() -> ExitCode {
    // locksup owns its signal mask: whatever it inherited, its timers,
    // reaping and cancel handling must work (the command gets the
    // inherited mask back).
    if let Err(e) = entry::unblock_all_signals() {
        let _ = writeln!(std::io::stderr(), "locksup: cannot unblock signals: {e}");
        return code(entry::FAILURE);
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
        Command::Run(run) if run.daemon => entry::run_daemon(&run, &args, cli.config.as_deref()),
        Command::Run(run) => entry::run(run, cli.config.as_deref()),
        Command::Serve(serve) => entry::serve(serve, cli.config.as_deref()),
        Command::Status(args) if args.daemon => entry::status_daemon(&args, cli.config.as_deref()),
        Command::Status(args) => entry::status(args, cli.config.as_deref()),
        Command::Watch(args) => entry::watch(args, cli.config.as_deref()),
        Command::Cancel(args) if args.daemon => entry::cancel_daemon(&args, cli.config.as_deref()),
        Command::Cancel(args) => entry::cancel(args, cli.config.as_deref()),
        Command::Timeline(args) => entry::timeline(args),
        Command::Completions { shell } => {
            let script = entry::completion_script(shell);
            match std::io::stdout().write_all(&script) {
                Ok(()) => Ok(0),
                Err(e) => Err(entry::Error::io(format!("cannot write: {e}"))),
            }
        }
    };
    match result {
        Ok(c) => code(c),
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "locksup: {e}");
            code(e.code())
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
            code(entry::FAILURE)
        }
        _ => {
            let msg = entry::clap_message(e);
            let args: Vec<OsString> = std::env::args_os().collect();
            let help = entry::clap_help_command(&args);
            let _ = writeln!(std::io::stderr(), "locksup: {msg} (see '{help} --help')");
            code(entry::FAILURE)
        }
    }
}

fn code(c: i32) -> ExitCode {
    u8::try_from(c)
        .or(u8::try_from(entry::FAILURE))
        .map_or(ExitCode::FAILURE, ExitCode::from)
}
