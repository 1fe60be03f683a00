//! The `shale` binary: `shale` or `shale serve` runs the server; other subcommands are clients.

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use shale::config::Config;

/// shale: a persistent, self-sharding key-value database served over HTTP.
#[derive(Debug, Parser)]
#[command(name = "shale", version, about, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,
    /// Server settings when no subcommand is given (`shale` = `shale serve`).
    #[command(flatten)]
    serve: Config,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run the server (the default).
    Serve(Config),
    /// Interactive shell with history; reads one command per line when stdin is not a terminal.
    Cli(shale::cli::Connect),
    #[command(flatten)]
    Client(shale::cli::OneShot),
}

fn init_tracing() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if std::env::var("LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json")) {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Resolves on SIGTERM or SIGINT: both are graceful (finish in-flight requests, commit, close).
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("installing a SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let config = match cli.command {
        None => cli.serve,
        Some(Cmd::Serve(c)) => c,
        Some(Cmd::Cli(connect)) => return shale::cli::run_shell(&connect),
        Some(Cmd::Client(cmd)) => return shale::cli::run_one(cmd),
    };
    init_tracing();
    let result = actix_web::rt::System::new().block_on(shale::server::run(config, shutdown_signal()));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("shale: {e}");
            std::process::ExitCode::from(1)
        }
    }
}
