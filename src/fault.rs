//! Fault injection for crash tests: `SHALE_FAULT=<point>` makes the process abort (like `kill -9`: no
//! destructors, no clean close) when it reaches that named point. Unset, every check is one env lookup on
//! cold paths only (start-up steps), never on the request path.

/// Aborts the process if `SHALE_FAULT` names `point`.
pub fn point(point: &str) {
    if std::env::var_os("SHALE_FAULT").is_some_and(|v| v == point) {
        eprintln!("shale: fault injected at {point}; aborting");
        std::process::abort();
    }
}
