//! HTTPS: with `--tls-cert`/`--tls-key` the server speaks TLS (rustls); the CLI talks to it over `https://`
//! trusting a self-signed certificate given with `--ca`; bad or missing files are clear start-up errors that
//! change nothing. A TLS server never falls back to plain text, and a bad certificate stops it before it serves.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{temp_dir, Shale};

/// Writes a self-signed certificate for localhost / 127.0.0.1 and its key; returns (cert, key) paths.
fn self_signed(dir: &Path) -> (PathBuf, PathBuf) {
    let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    let rcgen::CertifiedKey { cert, signing_key } = rcgen::generate_simple_self_signed(names).unwrap();
    let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&c, cert.pem()).unwrap();
    std::fs::write(&k, signing_key.serialize_pem()).unwrap();
    (c, k)
}

fn cli(args: &[&str]) -> common::Exited {
    Shale::bare().args(args).run(Duration::from_secs(30))
}

#[test]
fn https_round_trip_with_the_cli() {
    let certs = temp_dir();
    let (cert, key) = self_signed(certs.path());
    let data = temp_dir();
    let server = Shale::serve(data.path())
        .args(["--tls-cert", cert.to_str().unwrap(), "--tls-key", key.to_str().unwrap()])
        .start();
    let url = format!("https://localhost:{}", server.base().rsplit(':').next().unwrap());
    let ca = cert.to_str().unwrap();

    let put = cli(&["put", "--url", &url, "--ca", ca, "greeting", "hello over tls"]);
    assert!(put.status.success(), "{}", put.stderr);
    let get = cli(&["get", "--url", &url, "--ca", ca, "greeting"]);
    assert!(get.status.success(), "{}", get.stderr);
    assert_eq!(get.stdout, "hello over tls");

    // Without --ca the self-signed certificate is not trusted: a clear failure, not a plain-text fallback.
    let untrusted = cli(&["get", "--url", &url, "greeting"]);
    assert_eq!(untrusted.status.code(), Some(3), "{}", untrusted.stderr);
    // Plain HTTP to the TLS port gets no HTTP answer.
    let plain = cli(&["get", "--url", &server.base(), "greeting"]);
    assert_eq!(plain.status.code(), Some(3), "{}", plain.stderr);

    let (status, _) = server.terminate();
    assert!(status.success());
}

#[test]
fn bad_tls_files_are_clear_start_up_errors() {
    let certs = temp_dir();
    let (cert, key) = self_signed(certs.path());
    let garbage = certs.path().join("garbage.pem");
    std::fs::write(&garbage, "not a pem file\n").unwrap();
    let missing = certs.path().join("missing.pem");
    let cases: [(&Path, &Path, &str); 4] = [
        (&missing, &key, "TLS_CERT"),
        (&cert, &missing, "TLS_KEY"),
        (&garbage, &key, "TLS_CERT"),
        (&cert, &garbage, "TLS_KEY"),
    ];
    for (c, k, names) in cases {
        let data = temp_dir();
        let out = Shale::serve(data.path())
            .args(["--tls-cert", c.to_str().unwrap(), "--tls-key", k.to_str().unwrap()])
            .run(Duration::from_secs(30));
        assert!(!out.status.success(), "started with {c:?} {k:?}");
        assert!(out.stderr.contains(names), "{names}: {}", out.stderr);
        assert!(std::fs::read_dir(data.path()).unwrap().next().is_none(), "the data dir was touched");
    }
    // Only one of the pair: refused too.
    let data = temp_dir();
    let out = Shale::serve(data.path()).args(["--tls-cert", cert.to_str().unwrap()]).run(Duration::from_secs(30));
    assert!(!out.status.success());
    assert!(out.stderr.contains("--tls-key"), "{}", out.stderr);
}
