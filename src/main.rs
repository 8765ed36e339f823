use clap::Parser;
use nftables_failover::cli::{Cli, Command};
use nftables_failover::{check_config, drain, log, run, status};
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    log::set_verbosity(cli.quiet, cli.verbose);
    ExitCode::from(match &cli.command {
        Some(Command::Status(args)) => status::main(&cli, args),
        Some(Command::CheckConfig) => check_config::main(&cli),
        Some(Command::Drain(args)) => drain::main(&cli, args, true),
        Some(Command::Undrain(args)) => drain::main(&cli, args, false),
        None => run::run(&cli),
    })
}
