//! The client side of the `shale` binary: `shale cli` (an interactive shell, or a script reader when stdin is not
//! a terminal) and the one-shot commands `shale get|put|delete|keys|incr|count`.
//!
//! # Layout
//! - [`parse`]: one line of the shell -> [`Action`], pure, no I/O.
//! - [`client`]: one method per HTTP route of `docs/api.md` it uses, blocking, with one-line errors.
//! - this file: the clap arguments, the shell loop, the one-shot commands and how answers are printed.
//!
//! # Exit codes (one-shot commands and piped `shale cli`)
//! [`EXIT_OK`] 0 success, [`EXIT_NOT_FOUND`] 1 key absent, [`EXIT_USAGE`] 2 usage error,
//! [`EXIT_FAILED`] 3 server unreachable or server error. A piped `shale cli` runs every line, then exits with the
//! worst of 0, 2 and 3 it met (a key that is absent is an answer there, not a failure).
//!
//! `https://` URLs use rustls; `--ca FILE` (or `SHALE_CA`) names the PEM certificate(s) to trust, e.g. a
//! self-signed server's.

pub mod client;
pub mod parse;

use std::ffi::OsString;
use std::io::{self, BufRead, IsTerminal, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};

pub use client::{Client, Error, DEFAULT_URL};
pub use parse::{parse_line, Action, ParseError, HELP};

/// Success.
pub const EXIT_OK: u8 = 0;
/// The key (or document) is absent.
pub const EXIT_NOT_FOUND: u8 = 1;
/// The command line or a command is malformed (clap uses 2 for its own usage errors too).
pub const EXIT_USAGE: u8 = 2;
/// The server is unreachable, answered an error, or a local read/write failed.
pub const EXIT_FAILED: u8 = 3;

/// Which server to talk to, and as whom.
#[derive(Debug, Clone, Args)]
pub struct Connect {
    /// Server URL: http://HOST:PORT or https://HOST:PORT.
    #[arg(long, env = "SHALE_URL", default_value = DEFAULT_URL)]
    pub url: String,
    /// Bearer token sent with every request (the first one if the variable holds a comma-separated list).
    #[arg(long = "auth-token", env = "AUTH_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// PEM file of the certificate(s) to trust for an https:// server (e.g. a self-signed one).
    #[arg(long, env = "SHALE_CA")]
    pub ca: Option<std::path::PathBuf>,
}

impl Connect {
    /// A [`Client`] for these settings.
    pub fn client(&self) -> Result<Client, Error> {
        Client::with_ca(&self.url, self.token.as_deref(), self.ca.as_deref())
    }
}

/// The one-shot commands: each runs one request, prints the answer raw on stdout and exits with its code.
#[derive(Debug, Subcommand)]
pub enum OneShot {
    /// Print the value of KEY on stdout, as stored (exit 1 when absent).
    Get {
        /// The key.
        key: String,
        #[command(flatten)]
        connect: Connect,
    },
    /// Store VALUE under KEY; a VALUE of `-` reads the value from stdin (any bytes).
    Put {
        /// The key.
        key: String,
        /// The value, or `-` to read it from stdin.
        #[arg(allow_hyphen_values = true)]
        value: OsString,
        /// Content-Type stored with the value (the server's default is application/octet-stream).
        #[arg(long)]
        content_type: Option<String>,
        #[command(flatten)]
        connect: Connect,
    },
    /// Delete KEY (exit 1 when absent).
    Delete {
        /// The key.
        key: String,
        #[command(flatten)]
        connect: Connect,
    },
    /// List the keys, one per line, in byte order.
    Keys {
        /// Only keys starting with this.
        #[arg(long)]
        prefix: Option<String>,
        #[command(flatten)]
        connect: Connect,
    },
    /// Add DELTA (default 1, may be negative) to counter NAME.
    Incr {
        /// The counter.
        name: String,
        /// How much to add.
        #[arg(default_value_t = 1, allow_negative_numbers = true)]
        delta: i64,
        #[command(flatten)]
        connect: Connect,
    },
    /// Print the value of counter NAME (0 when never incremented).
    Count {
        /// The counter.
        name: String,
        #[command(flatten)]
        connect: Connect,
    },
}

/// The exit code for a failure.
pub fn exit_code(e: &Error) -> u8 {
    match e {
        Error::Usage(_) => EXIT_USAGE,
        Error::Unreachable { .. } | Error::Server { .. } | Error::Protocol(_) | Error::Io(_) => EXIT_FAILED,
    }
}

/// Whether `e` is stdout closed by its reader (`shale keys | head`): not worth a message.
fn is_broken_pipe(e: &Error) -> bool {
    matches!(e, Error::Io(io) if io.kind() == io::ErrorKind::BrokenPipe)
}

// ---- one-shot commands ----

/// Runs one one-shot command: the answer on stdout, errors on stderr, the exit code of the module doc.
pub fn run_one(cmd: OneShot) -> ExitCode {
    match one_shot(cmd) {
        Ok(code) => ExitCode::from(code),
        Err(e) if is_broken_pipe(&e) => ExitCode::from(EXIT_OK),
        Err(e) => {
            eprintln!("shale: {e}");
            ExitCode::from(exit_code(&e))
        }
    }
}

fn one_shot(cmd: OneShot) -> Result<u8, Error> {
    match cmd {
        OneShot::Get { key, connect } => match connect.client()?.get(&key)? {
            Some(value) => write_value(&value).map(|()| EXIT_OK),
            None => Ok(not_found(&key)),
        },
        OneShot::Put { key, value, content_type, connect } => {
            let client = connect.client()?;
            let value = if value == "-" {
                let mut buf = Vec::new();
                io::stdin().lock().read_to_end(&mut buf).map_err(Error::Io)?;
                buf
            } else {
                std::os::unix::ffi::OsStringExt::into_vec(value)
            };
            client.put(&key, &value, content_type.as_deref())?;
            Ok(EXIT_OK)
        }
        OneShot::Delete { key, connect } => match connect.client()?.delete(&key)? {
            true => Ok(EXIT_OK),
            false => Ok(not_found(&key)),
        },
        OneShot::Keys { prefix, connect } => {
            let mut out = io::BufWriter::new(io::stdout().lock());
            connect.client()?.for_each_key_page(prefix.as_deref(), |keys| {
                keys.iter().try_for_each(|k| writeln!(out, "{k}"))?;
                out.flush()
            })?;
            Ok(EXIT_OK)
        }
        OneShot::Incr { name, delta, connect } => {
            connect.client()?.incr(&name, delta)?;
            Ok(EXIT_OK)
        }
        OneShot::Count { name, connect } => {
            let value = connect.client()?.count(&name)?;
            write_value(value.to_string().as_bytes()).map(|()| EXIT_OK)
        }
    }
}

fn not_found(key: &str) -> u8 {
    eprintln!("shale: not found: {key}");
    EXIT_NOT_FOUND
}

/// Writes a value to stdout as stored; a newline is added only for a person at a terminal.
fn write_value(value: &[u8]) -> Result<(), Error> {
    let mut out = io::stdout().lock();
    out.write_all(value).map_err(Error::Io)?;
    if out.is_terminal() && !value.ends_with(b"\n") {
        out.write_all(b"\n").map_err(Error::Io)?;
    }
    out.flush().map_err(Error::Io)
}

// ---- the shell ----

/// `shale cli`: an interactive shell when stdin is a terminal, else a reader of one command per line.
pub fn run_shell(connect: &Connect) -> ExitCode {
    let client = match connect.client() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("shale: {e}");
            return ExitCode::from(exit_code(&e));
        }
    };
    if io::stdin().is_terminal() {
        interactive(&client)
    } else {
        ExitCode::from(piped(&client, io::stdin().lock()))
    }
}

/// Runs one shell command and prints its short answer on `out` (`OK`, the value, `(not found)`, ...).
/// `pretty` indents JSON documents over several lines.
pub fn run_action(client: &Client, action: &Action, out: &mut dyn Write, pretty: bool) -> Result<(), Error> {
    let line = match action {
        Action::Put { key, value } => {
            client.put(key, value, None)?;
            "OK".to_string()
        }
        Action::Get { key } => match client.get(key)? {
            Some(value) => show_value(&value),
            None => "(not found)".into(),
        },
        Action::Delete { key } => match client.delete(key)? {
            true => "OK".into(),
            false => "(not found)".into(),
        },
        Action::Keys { prefix } => {
            let mut count = 0usize;
            client.for_each_key_page(prefix.as_deref(), |keys| {
                count += keys.len();
                keys.iter().try_for_each(|k| writeln!(out, "{k}"))
            })?;
            if count > 0 {
                return out.flush().map_err(Error::Io);
            }
            "(no keys)".into()
        }
        Action::Incr { name, delta } => {
            client.incr(name, *delta)?;
            "OK".into()
        }
        Action::Count { name } => client.count(name)?.to_string(),
        Action::DocGet { id } => match client.doc_get(*id)? {
            Some(data) if pretty => serde_json::to_string_pretty(&data).unwrap_or_default(),
            Some(data) => data.to_string(),
            None => "(not found)".into(),
        },
        Action::DocPut { id, data } => format!("OK id={}", client.doc_put(*id, data)?),
        Action::Help => HELP.into(),
        Action::Quit => return Ok(()),
    };
    writeln!(out, "{line}").and_then(|()| out.flush()).map_err(Error::Io)
}

/// A value as a person reads it: the text, `(empty)`, or the size of a binary value.
fn show_value(value: &[u8]) -> String {
    match std::str::from_utf8(value) {
        Ok("") => "(empty)".into(),
        Ok(text) => text.strip_suffix('\n').unwrap_or(text).to_string(),
        Err(_) => format!("(binary value, {} bytes)", value.len()),
    }
}

/// Reads commands from `input`, one per line, until its end or `quit`. Answers go to stdout, errors to stderr
/// as `error (line N): ...`. Returns the exit code: the worst of 0, [`EXIT_USAGE`] and [`EXIT_FAILED`] seen.
pub fn piped(client: &Client, input: impl BufRead) -> u8 {
    let pretty = io::stdout().is_terminal();
    let mut out = io::stdout().lock();
    let mut worst = EXIT_OK;
    for (index, line) in input.split(b'\n').enumerate() {
        let n = index + 1;
        let line = match line {
            Ok(line) => line,
            Err(e) => {
                eprintln!("shale: cannot read stdin: {e}");
                return EXIT_FAILED;
            }
        };
        let line = line.strip_suffix(b"\r").unwrap_or(&line);
        let Ok(text) = std::str::from_utf8(line) else {
            eprintln!("error (line {n}): the line is not UTF-8 text");
            worst = worst.max(EXIT_USAGE);
            continue;
        };
        match parse_line(text) {
            Ok(None) => {}
            Ok(Some(Action::Quit)) => break,
            Ok(Some(action)) => match run_action(client, &action, &mut out, pretty) {
                Ok(()) => {}
                Err(e) if is_broken_pipe(&e) => break,
                Err(e) => {
                    eprintln!("error (line {n}): {e}");
                    worst = worst.max(exit_code(&e));
                }
            },
            Err(e) => {
                eprintln!("error (line {n}): {e}");
                worst = worst.max(EXIT_USAGE);
            }
        }
    }
    worst
}

/// The interactive shell: line editing, persistent history, a prompt naming the server.
fn interactive(client: &Client) -> ExitCode {
    use rustyline::error::ReadlineError;

    let config = rustyline::Config::builder()
        .auto_add_history(true)
        .history_ignore_space(true)
        .max_history_size(1000)
        .and_then(|b| b.history_ignore_dups(true))
        .map(|b| b.build());
    let editor = config.and_then(rustyline::DefaultEditor::with_config);
    let mut editor = match editor {
        Ok(editor) => editor,
        Err(e) => {
            eprintln!("shale: cannot open the terminal for editing ({e}); reading plain lines");
            return ExitCode::from(piped(client, io::stdin().lock()));
        }
    };
    let history = history_path();
    if let Some(path) = &history {
        // A missing history file is the normal first run.
        let _ = editor.load_history(path);
    }
    println!("shale cli on {} - type help for the commands, Ctrl-D to leave", client.url());
    if let Err(e) = client.ping() {
        eprintln!("warning: {e}");
    }
    let prompt = format!("shale {}> ", client.authority());
    let pretty = io::stdout().is_terminal();
    loop {
        let line = match editor.readline(&prompt) {
            Ok(line) => line,
            // Ctrl-C drops the line being typed, as in a shell.
            Err(ReadlineError::Interrupted) => continue,
            Err(ReadlineError::Eof) => break,
            Err(e) => {
                eprintln!("shale: cannot read the terminal: {e}");
                break;
            }
        };
        match parse_line(&line) {
            Ok(None) => {}
            Ok(Some(Action::Quit)) => break,
            Ok(Some(action)) => {
                if let Err(e) = run_action(client, &action, &mut io::stdout().lock(), pretty) {
                    eprintln!("error: {e}");
                }
            }
            Err(e) => eprintln!("error: {e}"),
        }
    }
    if let Some(path) = &history {
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        if let Err(e) = editor.save_history(path) {
            eprintln!("warning: cannot save the history to {}: {e}", path.display());
        }
    }
    ExitCode::from(EXIT_OK)
}

/// Where the shell keeps its history: `$SHALE_HISTORY`, else `$XDG_DATA_HOME/shale/history` when that variable
/// is set, else `$HOME/.shale_history`; none when neither is known.
pub fn history_path() -> Option<PathBuf> {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(path) = var("SHALE_HISTORY") {
        return Some(path);
    }
    if let Some(data) = var("XDG_DATA_HOME") {
        return Some(data.join("shale").join("history"));
    }
    var("HOME").map(|home| home.join(".shale_history"))
}

/// `shale cluster status` for a person: the cluster, each node, and each shard's leader, replicas and lag.
pub fn cluster_status_text(status: &serde_json::Value) -> String {
    use std::fmt::Write as _;
    let text = |v: &serde_json::Value| v.as_str().map_or_else(|| v.to_string(), str::to_string);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "cluster {}  replicas {}  this node {}  {}",
        text(&status["cluster"]),
        text(&status["replicas"]),
        text(&status["node"]),
        text(&status["ready"])
    );
    let _ = writeln!(out, "\n{:<18} {:<24} {:<24} REACHABLE", "NODE", "CLUSTER ADDR", "API ADDR");
    for n in status["nodes"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "{:<18} {:<24} {:<24} {}",
            text(&n["id"]),
            text(&n["cluster_addr"]),
            text(&n["api_addr"]),
            text(&n["reachable"])
        );
    }
    let _ = writeln!(
        out,
        "\n{:<6} {:<18} {:>6} {:>10} {:>10}  VOTERS / LEARNERS / LAG",
        "SHARD", "LEADER", "TERM", "COMMITTED", "APPLIED"
    );
    for s in status["shards"].as_array().into_iter().flatten() {
        let list = |v: &serde_json::Value| {
            v.as_array().map_or_else(String::new, |a| a.iter().map(text).collect::<Vec<_>>().join(","))
        };
        let lag = s["lag"].as_object().map_or_else(
            || "-".to_string(),
            |m| m.iter().map(|(id, n)| format!("{id}:{n}")).collect::<Vec<_>>().join(","),
        );
        let _ = writeln!(
            out,
            "{:<6} {:<18} {:>6} {:>10} {:>10}  {} / {} / {}",
            text(&s["shard"]),
            text(&s["leader"]),
            text(&s["term"]),
            text(&s["committed"]),
            text(&s["applied"]),
            list(&s["voters"]),
            list(&s["learners"]),
            lag
        );
    }
    out
}
