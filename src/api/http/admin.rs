//! `/admin/*`: operations that need a read-write token when tokens are configured.
//!
//! `POST /admin/backup` with an optional JSON body `{"path": "/absolute/dir"}` takes a consistent snapshot of
//! every shard into that directory on the server's machine (default: `BACKUP_DIR/backup-<UTC timestamp>`) and
//! answers with what it wrote.

use std::path::PathBuf;

use actix_web::{web, HttpRequest, HttpResponse};

use super::kv::read_body;
use super::AppState;
use crate::error::{Error, Result};

/// Body of `POST /admin/backup`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct BackupBody {
    path: Option<PathBuf>,
}

/// `POST /admin/backup` -> 200 `{"path", "shards", "entries", "bytes", "pause_ms", "ms"}`.
pub async fn handle_backup(req: HttpRequest, body: web::Payload, state: web::Data<AppState>) -> Result<HttpResponse> {
    let body = read_body(&req, body, 64 * 1024).await?;
    let parsed: BackupBody = if body.iter().all(u8::is_ascii_whitespace) {
        BackupBody::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| Error::BadRequest(format!("malformed backup request: {e}")))?
    };
    let out = match parsed.path {
        Some(p) => p,
        None => {
            let dir = std::path::absolute(&state.config.backup_dir)
                .map_err(|e| Error::Internal(format!("BACKUP_DIR: {e}")))?;
            std::fs::create_dir_all(&dir).map_err(|e| Error::storage("cannot create BACKUP_DIR", e))?;
            dir.join(format!("backup-{}", utc_stamp(std::time::SystemTime::now())))
        }
    };
    let node = state.node.clone();
    let data_dir = state.config.data_dir.clone();
    let report = web::block(move || crate::ops::backup::take(&node, &data_dir, &out))
        .await
        .map_err(|e| Error::Internal(format!("backup task failed: {e}")))??;
    tracing::info!(path = %report.path, entries = report.entries, pause_ms = report.pause_ms, ms = report.ms, "backup written");
    Ok(HttpResponse::Ok().json(report))
}

/// `YYYYMMDDTHHMMSSZ` in UTC, for file names.
pub fn utc_stamp(t: std::time::SystemTime) -> String {
    let secs = t.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps() {
        let t = |s| std::time::UNIX_EPOCH + std::time::Duration::from_secs(s);
        assert_eq!(utc_stamp(t(0)), "19700101T000000Z");
        assert_eq!(utc_stamp(t(951_782_400)), "20000229T000000Z");
        assert_eq!(utc_stamp(t(1_795_261_500)), "20261121T114500Z");
    }
}
