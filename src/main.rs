use clap::Parser;
use nftables_failover::cli::{Cli, Command, EXIT_FAILED};
use nftables_failover::{check_config, drain, log, run, runtime, status, watch};
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    log::set_verbosity(cli.quiet, cli.verbose);
    // The process's one runtime (see runtime.rs): this thread drives it to the end, the
    // synchronous work runs on a worker thread beside it.
    let runtime = match runtime::build() {
        Ok(r) => r,
        Err(e) => {
            log::error(&format!("cannot start the async runtime: {e}"));
            return ExitCode::from(EXIT_FAILED);
        }
    };
    let code = runtime.block_on(async move {
        if let Some(Command::Watch(args)) = &cli.command {
            let args = args.clone();
            return watch::main(cli, args).await;
        }
        match runtime::Worker::start("run") {
            Ok(worker) => worker.run(move || dispatch(&cli)).await,
            Err(e) => {
                log::error(&format!("cannot start a thread: {e}"));
                EXIT_FAILED
            }
        }
    });
    // Do not wait for a name lookup (MQTT) still running on a blocking thread.
    runtime.shutdown_background();
    ExitCode::from(code)
}

fn dispatch(cli: &Cli) -> u8 {
    match &cli.command {
        Some(Command::Status(args)) => status::main(cli, args),
        Some(Command::CheckConfig) => check_config::main(cli),
        Some(Command::Drain(args)) => drain::main(cli, args, true),
        Some(Command::Undrain(args)) => drain::main(cli, args, false),
        Some(Command::Watch(_)) => unreachable!("watch runs on the runtime itself"),
        None => run::run(cli),
    }
}
