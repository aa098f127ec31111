//! `kyc-relay`, the operator's tool (docs/operations.md). Wiring only: parse the command line, find
//! the relay's resources, run the command, map the outcome to an exit code.

mod args;
mod aws;
mod commands;
mod ctx;
mod error;
mod target;
mod ui;

use args::{Cli, Command};
use clap::Parser;
use error::{CliError, exit};

fn main() {
    // clap exits with 2 on a usage error and 0 for --help/--version.
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("kyc-relay: cannot start the async runtime: {e}");
            std::process::exit(exit::FAILED);
        }
    };
    let json = cli.global.json;
    let (result, json_printed) = runtime.block_on(run(cli));
    let code = match result {
        Ok(()) => exit::OK,
        Err(e) => {
            eprintln!("kyc-relay: {e}");
            if json && !json_printed {
                ui::print_json(&serde_json::json!({
                    "error": {"kind": e.kind.as_str(), "exit_code": e.kind.code(), "message": e.message}
                }));
            }
            e.kind.code()
        }
    };
    std::process::exit(code);
}

async fn run(cli: Cli) -> (Result<(), CliError>, bool) {
    let ctx = match ctx::Ctx::load(&cli.global).await {
        Ok(c) => c,
        Err(e) => return (Err(e), false),
    };
    let result = match &cli.command {
        Command::Resources => commands::resources::run(&ctx),
        Command::Status => commands::status::run(&ctx).await,
        Command::Event(a) => commands::event::run(&ctx, a).await,
        Command::Session(a) => commands::session::run(&ctx, a).await,
        Command::Dlq(c) => commands::dlq::run(&ctx, c).await,
        Command::Replay(c) => commands::replay::run(&ctx, c).await,
        Command::Destinations(c) => commands::destinations::run(&ctx, c).await,
        Command::Erase(a) => commands::erase::run(&ctx, a).await,
    };
    (result, ctx.json_printed())
}
