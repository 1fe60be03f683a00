//! The write-ahead log's durable append alone (`shale::log_writer`): one frame written and made durable, as a
//! logged batch does before its answers.
//!
//! - `log/append/direct/{256,4096}`: `O_DIRECT | O_DSYNC` writes of whole blocks (the default where the file
//!   system takes them).
//! - `log/append/fdatasync/{256,4096}`: the fallback, `pwrite` into the page cache and `fdatasync`.
//!
//! Frames of 256 bytes are about a batch of four 32-byte puts; 4096 bytes about sixty. The log restarts from
//! offset 0 every `REWIND_EVERY` frames, as it does after a checkpoint, so the file stays small and is
//! overwritten. The data dir is a fresh temp dir inside `SHALE_BENCH_DIR` when set, else the system temp dir:
//! put it on the disk you want to measure.

mod common;

use std::fs::OpenOptions;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use shale::log_writer::LogWriter;

use common::temp_dir;

/// Frames between two returns to offset 0.
const REWIND_EVERY: u64 = 2_000;

fn bench_log(c: &mut Criterion) {
    let mut group = c.benchmark_group("log/append");
    group.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    for direct in [true, false] {
        let dir = temp_dir();
        let path = dir.path().join("shard-0.wal");
        let file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).expect("open");
        let writer = LogWriter::new(file, &path);
        let mut writer = if direct { writer } else { writer.without_direct() };
        if direct && !writer.is_direct() {
            eprintln!("log/append/direct skipped: {} refuses O_DIRECT", dir.path().display());
            continue;
        }
        let name = if direct { "direct" } else { "fdatasync" };
        for size in [256usize, 4096] {
            let frame = vec![0x5a_u8; size];
            let (mut pos, mut frames) = (0u64, 0u64);
            group.throughput(Throughput::Bytes(size as u64));
            group.bench_function(format!("{name}/{size}"), |b| {
                b.iter(|| {
                    writer.write_durably(&frame, pos).expect("durable write");
                    frames += 1;
                    pos = if frames.is_multiple_of(REWIND_EVERY) { 0 } else { pos + size as u64 };
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench_log);
criterion_main!(benches);
