//! The layers of `src/` import only downward: a module may name (`crate::...`) only modules of its own layer or
//! of a layer below it, and the two protocols (`api::http`, `api::resp`) never name each other. This test reads
//! every source file and fails on the first import that points up, naming the file, the line and the rule.
//!
//! The layers, bottom to top (`docs/design.md` describes each):
//! 0. the vocabulary every layer shares: `error`, `command`, `record`, `placement`, `config`, `sched`, `fault`,
//!    `random`, `metrics`;
//! 1. `engine`: one shard's storage (redb file, command logic, write-ahead log);
//! 2. `shard`: the worker thread of each shard, its handle, the cache;
//! 3. `node`: the one entry point of every protocol (placement, reads, the write seam);
//! 4. `cluster`: the shards' Raft groups (their logs, and the seam's replicated side);
//! 5. `ops`: manifest, backup, resharding;
//! 6. `api`: HTTP and RESP, with the authentication and TLS they share;
//! 7. `server` and `cli`: start-up, teardown and the client.

use std::path::{Path, PathBuf};

/// The layer of a top-level module of the crate.
fn layer(module: &str) -> Option<usize> {
    Some(match module {
        "error" | "command" | "record" | "placement" | "config" | "sched" | "fault" | "random" | "metrics" => 0,
        "engine" => 1,
        "shard" => 2,
        "node" => 3,
        "cluster" => 4,
        "ops" => 5,
        "api" => 6,
        "server" | "cli" => 7,
        _ => return None,
    })
}

/// Sibling modules that must not name each other, though they share a layer.
const APART: [(&str, &str); 1] = [("api::http", "api::resp")];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src/ is readable") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `src/api/http/kv.rs` -> `api::http::kv`; `src/shard/mod.rs` -> `shard`.
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).expect("under src/").with_extension("");
    let parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    let parts: Vec<&str> = parts.iter().map(String::as_str).filter(|p| *p != "mod").collect();
    parts.join("::")
}

/// Every `crate::a::b` path a line of code names, as `a::b` (or `a`), including `crate::{a, b::c}` groups.
fn named_paths(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        let before = rest[..at].chars().next_back();
        rest = &rest[at + "crate::".len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$') {
            continue; // `$crate::` in a macro, or a longer identifier ending in `crate`
        }
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            out.extend(group[..end].split(',').map(|p| path_head(p.trim())).filter(|p| !p.is_empty()));
            continue;
        }
        out.push(path_head(rest));
    }
    out
}

/// The first two segments of a path that starts at a module name.
fn path_head(path: &str) -> String {
    let segs: Vec<&str> = path
        .split("::")
        .take(2)
        .map(|s| s.split(|c: char| !(c.is_alphanumeric() || c == '_')).next().unwrap_or(""))
        .take_while(|s| !s.is_empty())
        .collect();
    segs.join("::")
}

/// Every import in `src/` that breaks the layering, as `file:line: why`.
fn violations(src: &Path) -> Vec<String> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    files.sort();
    let mut found = Vec::new();
    for file in files {
        let module = module_of(src, &file);
        let top = module.split("::").next().unwrap_or("");
        if top == "lib" || top == "main" {
            continue; // the crate root declares every module; the binary uses the library
        }
        let own =
            layer(top).unwrap_or_else(|| panic!("{}: module `{top}` has no layer in tests/layers.rs", file.display()));
        let text = std::fs::read_to_string(&file).expect("a source file");
        for (n, line) in text.lines().enumerate() {
            let code = line.trim_start();
            if code.starts_with("//") {
                continue;
            }
            for named in named_paths(code) {
                let target = named.split("::").next().unwrap_or("");
                let Some(theirs) = layer(target) else { continue };
                let at = format!("{}:{}", file.display(), n + 1);
                if theirs > own {
                    found.push(format!("{at}: `{module}` (layer {own}) names `crate::{named}` (layer {theirs})"));
                }
                for (a, b) in APART {
                    let (mine, other) = if module.starts_with(a) { (a, b) } else { (b, a) };
                    if module.starts_with(mine) && named.starts_with(other) {
                        found.push(format!("{at}: `{module}` names `crate::{named}`; {a} and {b} stay apart"));
                    }
                }
            }
        }
    }
    found
}

#[test]
fn every_module_imports_only_its_own_layer_or_below() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let found = violations(&src);
    assert!(found.is_empty(), "imports that point up a layer:\n{}", found.join("\n"));
}

#[test]
fn the_check_finds_an_upward_import() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("engine")).expect("mkdir");
    std::fs::create_dir_all(src.join("api/http")).expect("mkdir");
    std::fs::write(src.join("engine/store.rs"), "use crate::error::Error;\nuse crate::node::Node;\n").expect("write");
    std::fs::write(src.join("api/http/kv.rs"), "use crate::{node::Node, api::resp::frame};\n").expect("write");
    let found = violations(&src);
    assert_eq!(found.len(), 2, "{found:#?}");
    assert!(found[0].contains("api/http/kv.rs:1") && found[0].contains("stay apart"), "{found:#?}");
    assert!(found[1].contains("engine/store.rs:2") && found[1].contains("crate::node"), "{found:#?}");
}
