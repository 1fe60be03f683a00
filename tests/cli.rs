//! The `shale` client commands end to end: the real binary as a server on port 0 in a fresh temp dir, and the
//! real binary as the client (one-shot commands and `shale cli` fed through a pipe), checking stdout bytes,
//! stderr and exit codes (0 ok, 1 not found, 2 usage, 3 unreachable or server error).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_shale");
/// Longest wait for the server to print `LISTENING` and answer `/readyz`.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A `shale serve` child process, killed on drop.
struct Server {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start() -> Server {
        Server::start_with(&[])
    }

    fn start_with(extra: &[&str]) -> Server {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut child = Command::new(BIN)
            .arg("serve")
            .args(["--port", "0", "--resp-port", "off", "--data-dir"])
            .arg(dir.path())
            .args(extra)
            .env_remove("AUTH_TOKEN")
            .env_remove("AUTH_READ_TOKEN")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn shale serve");
        // Read stdout on a thread (and keep draining it), so a silent server cannot hang the test.
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(addr) = line.strip_prefix("LISTENING ") {
                    let _ = tx.send(addr.trim().to_string());
                }
            }
        });
        let mut server = Server { child, url: String::new(), _dir: dir };
        let addr = rx.recv_timeout(START_TIMEOUT).expect("the server printed no LISTENING line in time");
        server.url = format!("http://{addr}");
        wait_ready(&addr);
        server
    }

    /// A client command aimed at this server.
    fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = shale(args);
        cmd.env("SHALE_URL", &self.url);
        cmd
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `GET /readyz` until 200, bounded by [`START_TIMEOUT`].
fn wait_ready(addr: &str) {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Ok(mut stream) = TcpStream::connect(addr) {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let _ = stream.write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            let mut answer = String::new();
            let _ = stream.read_to_string(&mut answer);
            if answer.starts_with("HTTP/1.1 200") {
                return;
            }
        }
        assert!(Instant::now() < deadline, "the server at {addr} did not become ready in time");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A client command with a clean environment (no token, no URL, no history file of the user's).
fn shale(args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args).env_remove("AUTH_TOKEN").env_remove("SHALE_URL").env("SHALE_HISTORY", "/dev/null");
    cmd
}

/// Runs `cmd` with `input` on stdin (closed afterwards) and returns what it printed and its exit code.
fn run(mut cmd: Command, input: &[u8]) -> Output {
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn shale client");
    let mut stdin = child.stdin.take().expect("piped stdin");
    let input = input.to_vec();
    // Write on a thread: a large input must not block while the child fills its stdout.
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().expect("wait for shale client");
    writer.join().expect("stdin writer");
    out
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Asserts the exit code, with both streams in the message when it differs.
#[track_caller]
fn assert_code(out: &Output, code: i32) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "exit code; stdout: {:?}; stderr: {:?}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// A port on 127.0.0.1 that nothing listens on.
fn dead_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    let port = listener.local_addr().expect("local addr").port();
    drop(listener);
    format!("http://127.0.0.1:{port}")
}

// ---- one-shot commands ----

#[test]
fn one_shot_put_get_delete_with_exit_codes() {
    let server = Server::start();

    let out = run(server.cmd(&["put", "greeting", "hello world"]), b"");
    assert_code(&out, 0);
    assert!(out.stdout.is_empty() && out.stderr.is_empty(), "put prints nothing: {out:?}");

    // Raw value, no newline added: stdout is a pipe here.
    let out = run(server.cmd(&["get", "greeting"]), b"");
    assert_code(&out, 0);
    assert_eq!(out.stdout, b"hello world");

    let out = run(server.cmd(&["get", "nope"]), b"");
    assert_code(&out, 1);
    assert!(out.stdout.is_empty());
    assert!(text(&out.stderr).contains("not found"), "{}", text(&out.stderr));

    let out = run(server.cmd(&["delete", "greeting"]), b"");
    assert_code(&out, 0);
    assert_code(&run(server.cmd(&["delete", "greeting"]), b""), 1);
    assert_code(&run(server.cmd(&["get", "greeting"]), b""), 1);

    // --url wins over SHALE_URL.
    let mut cmd = server.cmd(&["put", "k", "v"]);
    cmd.env("SHALE_URL", dead_url());
    assert_code(&run(cmd, b""), 3);
    let mut cmd = shale(&["get", "k", "--url", &server.url]);
    cmd.env("SHALE_URL", dead_url());
    assert_code(&run(cmd, b""), 1);
}

#[test]
fn put_dash_reads_stdin_and_binary_values_round_trip() {
    let server = Server::start();
    // Every byte value, newlines, NULs and invalid UTF-8, about 300 KB.
    let value: Vec<u8> = (0..300_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    assert!(std::str::from_utf8(&value).is_err());

    let out = run(server.cmd(&["put", "blob", "-"]), &value);
    assert_code(&out, 0);
    let out = run(server.cmd(&["get", "blob"]), b"");
    assert_code(&out, 0);
    assert!(out.stdout == value, "binary value differs: {} bytes back for {}", out.stdout.len(), value.len());

    // An empty stdin is an empty value, which exists.
    assert_code(&run(server.cmd(&["put", "empty", "-"]), b""), 0);
    let out = run(server.cmd(&["get", "empty"]), b"");
    assert_code(&out, 0);
    assert!(out.stdout.is_empty());

    // A value that starts with a dash is a value.
    assert_code(&run(server.cmd(&["put", "neg", "-5"]), b""), 0);
    assert_eq!(run(server.cmd(&["get", "neg"]), b"").stdout, b"-5");
}

#[test]
fn keys_with_special_characters_round_trip() {
    let server = Server::start();
    let keys = ["a/b c?%+é#&=", "shopping//milk", "x/../y", "..", "./z", "tab\there"];
    for (i, key) in keys.iter().enumerate() {
        let value = format!("value {i}");
        assert_code(&run(server.cmd(&["put", key, &value]), b""), 0);
    }
    for (i, key) in keys.iter().enumerate() {
        let out = run(server.cmd(&["get", key]), b"");
        assert_code(&out, 0);
        assert_eq!(text(&out.stdout), format!("value {i}"), "key {key:?}");
    }
    let out = run(server.cmd(&["keys"]), b"");
    assert_code(&out, 0);
    let mut expected: Vec<&str> = keys.to_vec();
    expected.sort();
    assert_eq!(text(&out.stdout), expected.iter().map(|k| format!("{k}\n")).collect::<String>());

    let out = run(server.cmd(&["keys", "--prefix", "a/b c?%+"]), b"");
    assert_eq!(text(&out.stdout), "a/b c?%+é#&=\n");
}

#[test]
fn keys_page_through_every_page() {
    let server = Server::start_with(&["--durability", "eventual"]);
    // 2,100 keys under p/ (more than two pages of 1,000) and a few around them, in one piped session.
    let mut script = String::new();
    for i in 0..2100 {
        script.push_str(&format!("put p/{i:05} {i}\n"));
    }
    script.push_str("put o last-before\nput q first-after\nput p 'the prefix itself'\n");
    let out = run(server.cmd(&["cli"]), script.as_bytes());
    assert_code(&out, 0);
    assert_eq!(text(&out.stdout).lines().filter(|l| *l == "OK").count(), 2103);

    let out = run(server.cmd(&["keys", "--prefix", "p/"]), b"");
    assert_code(&out, 0);
    let listed = text(&out.stdout);
    let expected: String = (0..2100).map(|i| format!("p/{i:05}\n")).collect();
    assert!(listed == expected, "listed {} lines, expected 2100", listed.lines().count());

    let out = run(server.cmd(&["keys"]), b"");
    let all: Vec<String> = text(&out.stdout).lines().map(String::from).collect();
    assert_eq!(all.len(), 2103);
    assert_eq!((all[0].as_str(), all[1].as_str(), all[2].as_str()), ("o", "p", "p/00000"));
    assert_eq!(all.last().map(String::as_str), Some("q"));

    let out = run(server.cmd(&["keys", "--prefix", "none/"]), b"");
    assert_code(&out, 0);
    assert!(out.stdout.is_empty());
}

#[test]
fn counters_one_shot() {
    let server = Server::start();
    let out = run(server.cmd(&["count", "hits"]), b"");
    assert_code(&out, 0);
    assert_eq!(out.stdout, b"0");

    assert_code(&run(server.cmd(&["incr", "hits"]), b""), 0);
    assert_code(&run(server.cmd(&["incr", "hits", "5"]), b""), 0);
    assert_code(&run(server.cmd(&["incr", "hits", "-2"]), b""), 0);
    assert_eq!(run(server.cmd(&["count", "hits"]), b"").stdout, b"4");

    // A name with a slash is one counter.
    assert_code(&run(server.cmd(&["incr", "a/b", "7"]), b""), 0);
    assert_eq!(run(server.cmd(&["count", "a/b"]), b"").stdout, b"7");

    // Overflow is the server's 400: exit 3 with its message on stderr.
    assert_code(&run(server.cmd(&["incr", "big", &i64::MAX.to_string()]), b""), 0);
    let out = run(server.cmd(&["incr", "big"]), b"");
    assert_code(&out, 3);
    assert!(text(&out.stderr).contains("400"), "{}", text(&out.stderr));
    assert_eq!(run(server.cmd(&["count", "big"]), b"").stdout, i64::MAX.to_string().as_bytes());
}

#[test]
fn server_errors_exit_3_with_the_message() {
    let server = Server::start();
    let too_big = vec![b'x'; 1024 * 1024 + 1];
    let out = run(server.cmd(&["put", "big", "-"]), &too_big);
    assert_code(&out, 3);
    let err = text(&out.stderr);
    assert!(err.contains("413") && err.contains("payload_too_large"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert_code(&run(server.cmd(&["get", "big"]), b""), 1);
}

#[test]
fn bearer_token_from_auth_token() {
    let server = Server::start_with(&["--auth-token", "s3cret"]);
    let out = run(server.cmd(&["put", "k", "v"]), b"");
    assert_code(&out, 3);
    assert!(text(&out.stderr).contains("401"), "{}", text(&out.stderr));

    let mut cmd = server.cmd(&["put", "k", "v"]);
    cmd.env("AUTH_TOKEN", "s3cret");
    assert_code(&run(cmd, b""), 0);
    let mut cmd = server.cmd(&["get", "k"]);
    cmd.env("AUTH_TOKEN", "s3cret,other");
    let out = run(cmd, b"");
    assert_code(&out, 0);
    assert_eq!(out.stdout, b"v");
    let mut cmd = server.cmd(&["keys"]);
    cmd.env("AUTH_TOKEN", "wrong");
    assert_code(&run(cmd, b""), 3);
}

#[test]
fn unreachable_server_is_one_line_and_exit_3() {
    let url = dead_url();
    for args in [
        vec!["get", "k"],
        vec!["put", "k", "v"],
        vec!["delete", "k"],
        vec!["keys"],
        vec!["incr", "n"],
        vec!["count", "n"],
    ] {
        let mut cmd = shale(&args);
        cmd.env("SHALE_URL", &url);
        let out = run(cmd, b"");
        assert_code(&out, 3);
        let err = text(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains("cannot reach") && err.contains(&url), "{args:?}: {err}");
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn usage_errors_exit_2() {
    for args in [vec!["get"], vec!["put", "k"], vec!["incr", "n", "x"], vec!["keys", "extra"], vec!["frob"]] {
        let out = run(shale(&args), b"");
        assert_code(&out, 2);
    }
    let out = run(shale(&["get", "k", "--url", "ftp://127.0.0.1:1"]), b"");
    assert_code(&out, 2);
    assert!(text(&out.stderr).contains("https://"), "{}", text(&out.stderr));
    let out = run(shale(&["get", "k", "--url", "https://127.0.0.1:1", "--ca", "/nonexistent/ca.pem"]), b"");
    assert_code(&out, 2);
    assert!(text(&out.stderr).contains("--ca"), "{}", text(&out.stderr));
    let out = run(shale(&["get", "", "--url", &dead_url()]), b"");
    assert_code(&out, 2);
}

// ---- pipe mode ----

#[test]
fn piped_cli_runs_a_script() {
    let server = Server::start();
    let script = "put a 1\n\
                  get a\n\
                  get missing\n\
                  # a comment\n\
                  \n\
                  put \"my key\" \"a value with spaces\"\n\
                  get 'my key'\n\
                  put e ''\n\
                  get e\n\
                  delete a\n\
                  delete a\n\
                  get a\n\
                  keys\n\
                  keys my\n\
                  keys zzz\n\
                  help\n\
                  quit\n\
                  put after-quit x\n";
    let out = run(server.cmd(&["cli"]), script.as_bytes());
    assert_code(&out, 0);
    let stdout = text(&out.stdout);
    let (answers, help) = stdout.split_once("commands:\n").expect("help output");
    assert_eq!(
        answers,
        "OK\n1\n(not found)\nOK\na value with spaces\nOK\n(empty)\nOK\n(not found)\n(not found)\ne\nmy key\nmy key\n(no keys)\n"
    );
    assert!(help.contains("doc put [ID] JSON"));
    assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
    assert_code(&run(server.cmd(&["get", "after-quit"]), b""), 1);

    // CRLF line ends work too.
    let out = run(server.cmd(&["cli"]), b"put crlf yes\r\nget crlf\r\n");
    assert_eq!(text(&out.stdout), "OK\nyes\n");
}

#[test]
fn piped_cli_keeps_going_after_errors_and_reports_the_worst() {
    let server = Server::start();
    // A parse error is exit 2, and the lines after it still run.
    let out = run(server.cmd(&["cli"]), b"put a\nput \"x 1\nfrob\nput a 1\nget a\n");
    assert_code(&out, 2);
    assert_eq!(text(&out.stdout), "OK\n1\n");
    let err = text(&out.stderr);
    assert_eq!(err.lines().count(), 3, "{err}");
    assert!(err.starts_with("error (line 1): usage: put KEY VALUE\n"), "{err}");
    assert!(err.contains("error (line 3): unknown command `frob`"), "{err}");

    // A server error is exit 3.
    let out = run(server.cmd(&["cli"]), b"incr n 9223372036854775807\nincr n\ncount n\n");
    assert_code(&out, 3);
    assert_eq!(text(&out.stdout), "OK\n9223372036854775807\n");
    assert!(text(&out.stderr).starts_with("error (line 2): "), "{}", text(&out.stderr));
}

#[test]
fn piped_cli_against_a_dead_server_says_so_per_line() {
    let url = dead_url();
    let out = run(shale(&["cli", "--url", &url]), b"put a 1\nget a\nhelp\n");
    assert_code(&out, 3);
    let err = text(&out.stderr);
    assert_eq!(err.lines().count(), 2, "{err}");
    assert!(err.lines().all(|l| l.contains("cannot reach")), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    // The shell went on to the next command.
    assert!(text(&out.stdout).starts_with("commands:"));

    let out = run(shale(&["cli", "--url", "ftp://127.0.0.1:1"]), b"get a\n");
    assert_code(&out, 2);
}

#[test]
fn piped_cli_counters_and_documents() {
    let server = Server::start();
    let script = r#"incr c
incr c 2
incr c -10
count c
count never
doc put {"name": "ada", "tags": ["x", "y z"]}
doc put '{"n": 2}'
doc get 1
doc get 2
doc put 1 {"name": "grace"}
doc get 1
doc get 99
doc put 0 {}
doc put {broken
"#;
    let out = run(server.cmd(&["cli"]), script.as_bytes());
    assert_code(&out, 2);
    assert_eq!(
        text(&out.stdout),
        "OK\nOK\nOK\n-7\n0\nOK id=1\nOK id=2\n{\"name\":\"ada\",\"tags\":[\"x\",\"y z\"]}\n{\"n\":2}\nOK id=1\n{\"name\":\"grace\"}\n(not found)\n"
    );
    let err = text(&out.stderr);
    assert_eq!(err.lines().count(), 2, "{err}");
    assert!(err.contains("(line 13)") && err.contains("positive"), "{err}");
    assert!(err.contains("(line 14)") && err.contains("not valid JSON"), "{err}");
}
