//! Prometheus metrics: one process-wide recorder (the `metrics` facade, usable from the shard OS threads), and
//! the gauges that are read at scrape time (queue depths, cache size, keys and file bytes per shard, uptime).
//!
//! Labels name route patterns (`/kv/{key:.*}`) and shard ids, never keys, so cardinality stays bounded.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
static STARTED: OnceLock<Instant> = OnceLock::new();

/// Latency buckets in seconds: 50 µs to 5 s.
const SECONDS: [f64; 14] =
    [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0];
/// Batch-size buckets (requests per transaction).
const BATCH: [f64; 10] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

/// How often the recorder's histogram samples are folded into their buckets when nobody scrapes `/metrics`.
pub const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Installs the process-wide recorder on first use (later calls, e.g. a second in-process server in a test,
/// share it) and returns its handle.
///
/// The exporter keeps every histogram sample (each request's duration, each batch's size and commit time) until
/// an upkeep folds them into the buckets; only `install()` runs that upkeep by itself, and it needs a tokio
/// runtime at hand. So a thread of ours runs it every [`UPKEEP_INTERVAL`]: without it, a server that is never
/// scraped grew by about 16 bytes per request (10 MB per 10 s at 60k GET/s).
pub fn init() -> &'static PrometheusHandle {
    STARTED.get_or_init(Instant::now);
    HANDLE.get_or_init(|| {
        let handle = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &SECONDS)
            .and_then(|b| b.set_buckets_for_metric(Matcher::Full("shale_shard_batch_size".into()), &BATCH))
            .expect("bucket lists are non-empty")
            .install_recorder()
            .expect("no other metrics recorder is installed in this process");
        metrics::gauge!("shale_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
        let upkeep = handle.clone();
        let spawned = std::thread::Builder::new().name("metrics-upkeep".into()).spawn(move || loop {
            std::thread::sleep(UPKEEP_INTERVAL);
            upkeep.run_upkeep();
        });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start the metrics upkeep thread; histograms grow until scraped");
        }
        handle
    })
}

/// The Prometheus text exposition. The node's scrape-time gauges (`Node::record_gauges`) are set first by the
/// caller.
pub fn render() -> String {
    let handle = init();
    let uptime = STARTED.get().map(|s| s.elapsed().as_secs_f64()).unwrap_or(0.0);
    metrics::gauge!("shale_uptime_seconds").set(uptime);
    handle.run_upkeep();
    handle.render()
}
