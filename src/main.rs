use clap::Parser;
use nftables_failover::cli::{Cli, Command, EXIT_FAILED};
use nftables_failover::options::Options;
use nftables_failover::{check_config, drain, log, run, runtime, status, watch};
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    log::set_verbosity(cli.quiet, cli.verbose);
    // The process's one runtime (see runtime.rs). A run, `status` and the other one-shot
    // commands run on this thread and drive it as they need it; `watch` lives on it.
    let runtime = match runtime::build() {
        Ok(r) => r,
        Err(e) => {
            log::error(&format!("cannot start the async runtime: {e}"));
            return ExitCode::from(EXIT_FAILED);
        }
    };
    let (command, opts) = cli.into_parts();
    let code = match command {
        Some(Command::Watch(args)) => runtime.block_on(watch::main(opts, args)),
        command => dispatch(command, &opts),
    };
    ExitCode::from(code)
}

fn dispatch(command: Option<Command>, opts: &Options) -> u8 {
    match &command {
        Some(Command::Status(args)) => status::main(opts, args),
        Some(Command::CheckConfig) => check_config::main(opts),
        Some(Command::Drain(args)) => drain::main(opts, args, true),
        Some(Command::Undrain(args)) => drain::main(opts, args, false),
        Some(Command::Watch(_)) => unreachable!("watch runs on the runtime itself"),
        None => run::run(opts),
    }
}
