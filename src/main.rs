use clap::Parser;
use nftables_failover::cli::{Cli, Command};
use nftables_failover::{check_config, drain, log, run, status, watch};
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    log::set_verbosity(cli.quiet, cli.verbose);
    ExitCode::from(match &cli.command {
        Some(Command::Status(args)) => status::main(&cli, args),
        Some(Command::CheckConfig) => check_config::main(&cli),
        Some(Command::Drain(args)) => drain::main(&cli, args, true),
        Some(Command::Undrain(args)) => drain::main(&cli, args, false),
        Some(Command::Watch(args)) => watch::main(&cli, args),
        None => run::run(&cli),
    })
}
