use clap::Parser;
use nftables_failover::{cli::Cli, run};

fn main() -> std::process::ExitCode {
    run::main(Cli::parse())
}
