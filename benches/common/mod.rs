//! Pieces shared by the criterion benches: a fixed-seed key generator, the put command they time, and a data
//! dir that is never the repository root.
#![allow(dead_code)] // each bench uses a different part

use bytes::Bytes;
use shale::command::{Command, Precondition, Space};

/// The value every bench writes: 32 bytes, as in the HTTP benchmarks.
pub const VALUE: [u8; 32] = [0x5a; 32];
/// Fixed seed, so every run draws the same keys.
pub const SEED: u64 = 0x9E37_79B9_7F4A_7C15;

/// Marsaglia's xorshift64: deterministic and good enough to scatter keys.
pub struct XorShift(pub u64);

impl XorShift {
    /// A generator for stream `stream` (tasks draw different keys).
    pub fn new(stream: u64) -> XorShift {
        // Any non-zero state works; mix the stream number in.
        XorShift((SEED ^ stream.wrapping_mul(0x2545_F491_4F6C_DD1D)) | 1)
    }

    /// The next number.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A random key among `space` keys.
    pub fn key(&mut self, space: u64) -> Bytes {
        key_of(self.next() % space)
    }
}

/// The key numbered `i`: `k{i}`.
pub fn key_of(i: u64) -> Bytes {
    Bytes::from(format!("k{i}"))
}

/// An unconditional put of [`VALUE`] to `key`.
pub fn put(key: Bytes) -> Command {
    put_value(key, Bytes::from_static(&VALUE))
}

/// An unconditional put of `value` to `key`.
pub fn put_value(key: Bytes, value: Bytes) -> Command {
    Command::Put {
        space: Space::Kv,
        key,
        value,
        content_type: Bytes::new(),
        precondition: Precondition::NONE,
        skip_if_unchanged: false,
    }
}

/// A fresh temp dir under `SHALE_BENCH_DIR` when set, else under the system temp dir.
pub fn temp_dir() -> tempfile::TempDir {
    match std::env::var_os("SHALE_BENCH_DIR") {
        Some(base) => {
            std::fs::create_dir_all(&base).expect("SHALE_BENCH_DIR can be created");
            tempfile::tempdir_in(base).expect("temp dir inside SHALE_BENCH_DIR")
        }
        None => tempfile::tempdir().expect("temp dir"),
    }
}
