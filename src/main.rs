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
    Serve(Box<Config>),
    /// Interactive shell with history; reads one command per line when stdin is not a terminal.
    Cli(shale::cli::Connect),
    #[command(flatten)]
    Client(shale::cli::OneShot),
    /// Ask a running server for a consistent backup of every shard into PATH (on the server's machine).
    Backup {
        #[command(flatten)]
        connect: shale::cli::Connect,
        /// Directory to create (absolute, absent or empty, outside the data dir); a relative path is made
        /// absolute against the current directory.
        #[arg(long)]
        out: std::path::PathBuf,
    },
    /// Restore a backup into a data dir (server stopped): checksums verified, a non-empty dir needs --force.
    Restore {
        /// The backup directory (manifest.json, shard-<i>.redb, SHA256SUMS).
        #[arg(long)]
        from: std::path::PathBuf,
        /// The data dir to restore into.
        #[arg(long, env = "DATA_DIR")]
        data_dir: std::path::PathBuf,
        /// Replace the shard files and manifest of a non-empty data dir.
        #[arg(long)]
        force: bool,
    },
    /// Form, inspect and change a cluster (through any one of its nodes).
    Cluster {
        #[command(subcommand)]
        action: ClusterAction,
    },
    /// Compact every shard file of a data dir (server stopped), reclaiming free space.
    Compact {
        /// The data dir.
        #[arg(long, env = "DATA_DIR")]
        data_dir: std::path::PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum ClusterAction {
    /// Form a new cluster with this node as its first member; the nodes of its JOIN list join it by themselves.
    Init {
        #[command(flatten)]
        connect: shale::cli::Connect,
    },
    /// Nodes, shards, the leader and replicas of each, replication lag, and whether the node is ready.
    Status {
        #[command(flatten)]
        connect: shale::cli::Connect,
        /// Print the JSON of GET /cluster/status.
        #[arg(long)]
        json: bool,
    },
    /// Take a dead or retired node out of every shard (its id as `status` shows it); standby nodes take its place.
    Remove {
        #[command(flatten)]
        connect: shale::cli::Connect,
        /// The node's id (16 hex digits).
        node: String,
    },
}

/// `shale cluster ...`: exit 0 on success, 3 when the node cannot be reached or refuses ([`shale::cli::exit_code`]).
fn run_cluster(action: ClusterAction) -> std::process::ExitCode {
    use std::process::ExitCode;
    let connect = match &action {
        ClusterAction::Init { connect }
        | ClusterAction::Status { connect, .. }
        | ClusterAction::Remove { connect, .. } => connect,
    };
    let client = match connect.client() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("shale: {e}");
            return ExitCode::from(shale::cli::exit_code(&e));
        }
    };
    let done = match &action {
        ClusterAction::Init { .. } => client.cluster_init().map(|made| {
            println!(
                "cluster {} formed with {} as its first node ({} replicas of every shard); the nodes of its JOIN list join it by themselves",
                made["cluster"].as_str().unwrap_or("?"),
                client.url(),
                made["replicas"]
            );
        }),
        ClusterAction::Status { json: true, .. } => {
            client.cluster_status().map(|s| println!("{}", serde_json::to_string_pretty(&s).unwrap_or_default()))
        }
        ClusterAction::Status { .. } => client.cluster_status().map(|s| print!("{}", shale::cli::cluster_status_text(&s))),
        ClusterAction::Remove { node, .. } => client.cluster_remove(node).map(|()| println!("node {node} removed")),
    };
    match done {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shale: {e}");
            ExitCode::from(shale::cli::exit_code(&e))
        }
    }
}

/// `shale backup`, `shale restore`, `shale compact`: exit 0 on success. `backup` exits 2 on a usage error (such
/// as an `--out` that cannot be made absolute) and 3 when the server cannot be reached or answers with an error,
/// a refused request included ([`shale::cli::exit_code`]). `restore` exits 2 when the data dir is not empty and
/// `--force` is absent, 1 on any other failure; `compact` exits 1 on failure.
fn run_operation(cmd: Cmd) -> std::process::ExitCode {
    use std::process::ExitCode;
    let fail = |code: u8, msg: String| {
        eprintln!("shale: {msg}");
        ExitCode::from(code)
    };
    match cmd {
        Cmd::Backup { connect, out } => {
            let out = match std::path::absolute(&out) {
                Ok(p) => p,
                Err(e) => return fail(2, format!("--out {}: {e}", out.display())),
            };
            let client = match connect.client() {
                Ok(c) => c,
                Err(e) => return fail(shale::cli::exit_code(&e), e.to_string()),
            };
            match client.backup(&out) {
                Ok(report) => {
                    println!("{report}");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(shale::cli::exit_code(&e), e.to_string()),
            }
        }
        Cmd::Restore { from, data_dir, force } => match shale::ops::backup::restore(&from, &data_dir, force) {
            Ok(m) => {
                println!("restored {} shards from {} into {}", m.shards, from.display(), data_dir.display());
                ExitCode::SUCCESS
            }
            Err(e @ shale::ops::backup::RestoreError::NotEmpty(_)) => fail(2, e.to_string()),
            Err(e) => fail(1, e.to_string()),
        },
        Cmd::Compact { data_dir } => match shale::ops::backup::compact_dir(&data_dir) {
            Ok(reclaimed) => {
                println!("compacted {}: {reclaimed} bytes reclaimed", data_dir.display());
                ExitCode::SUCCESS
            }
            Err(e) => fail(1, e),
        },
        _ => unreachable!("only operations reach run_operation"),
    }
}

fn init_tracing() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only on a terminal: journald and `docker logs` get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr);
    if std::env::var("LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json")) {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Installs the SIGTERM and SIGINT handlers now, before start-up (a signal that arrives right after the
/// `LISTENING` line must not kill the process), and resolves on the first of them.
/// Both are graceful: finish in-flight requests, commit, close.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("installing a SIGINT handler");
    async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let config = match cli.command {
        None => cli.serve,
        Some(Cmd::Serve(c)) => *c,
        Some(Cmd::Cli(connect)) => return shale::cli::run_shell(&connect),
        Some(Cmd::Client(cmd)) => return shale::cli::run_one(cmd),
        Some(Cmd::Cluster { action }) => return run_cluster(action),
        Some(op @ (Cmd::Backup { .. } | Cmd::Restore { .. } | Cmd::Compact { .. })) => {
            init_tracing();
            return run_operation(op);
        }
    };
    init_tracing();
    let result = actix_web::rt::System::new().block_on(async {
        // Inside the runtime (the handlers need its reactor), before the server starts.
        let shutdown = shutdown_signal();
        shale::server::run(config, shutdown).await
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("shale: {e}");
            std::process::ExitCode::from(1)
        }
    }
}
