//! The store's work per logged batch, for an instruction counter (callgrind counts the same on a noisy machine).
//!
//! ```sh
//! cargo build --release --example commit_cost
//! valgrind --tool=callgrind target/release/examples/commit_cost /dev/shm/cc 8 300   # puts per batch, batches
//! valgrind --tool=callgrind target/release/examples/commit_cost /dev/shm/cc 8 0     # the set-up alone
//! ```
//!
//! (total - set-up) / batches = instructions per batch. It opens a logged store (`DURABILITY=immediate`) in a
//! fresh DIR (removed first; put it on tmpfs so the fdatasync costs nothing), loads 10,000 keys, checkpoints,
//! then commits the batches of puts to random keys among them, with a checkpoint every 200 batches (about what
//! a shard does at `FLUSH_INTERVAL_MS=1000` at a few hundred batches per second). The keys come from a
//! fixed-seed xorshift, so every run does the same work.

use bytes::Bytes;
use shale::command::{Command, Precondition, Space};
use shale::engine::durability::Log;
use shale::engine::store::Store;
use shale::placement::ShardId;

const KEYS: u64 = 10_000;
const CHECKPOINT_EVERY: usize = 200;

fn put(k: u64) -> Command {
    Command::Put {
        space: Space::Kv,
        key: Bytes::from(format!("key{k}")),
        value: Bytes::from_static(&[0x5a; 32]),
        content_type: Bytes::new(),
        precondition: Precondition::NONE,
        skip_if_unchanged: false,
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, dir, per_batch, batches] = &args[..] else {
        eprintln!("usage: commit_cost DIR PUTS_PER_BATCH BATCHES");
        std::process::exit(2);
    };
    let (per_batch, batches): (u64, usize) = (per_batch.parse().expect("a count"), batches.parse().expect("a count"));
    let dir = std::path::PathBuf::from(dir);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create DIR");
    let store = Store::open(dir.join("shard-0.redb"), ShardId(0), 64 << 20, Log::Fsynced).expect("open the store");
    let mut rev = 1;
    let load: Vec<Command> = (0..KEYS).map(put).collect();
    for chunk in load.chunks(1000) {
        store.apply_batch(chunk.iter(), &mut rev, true).expect("load");
    }
    store.flush().expect("checkpoint");
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for b in 0..batches {
        let cmds: Vec<Command> = (0..per_batch)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                put(x % KEYS)
            })
            .collect();
        store.apply_batch(cmds.iter(), &mut rev, true).expect("batch");
        if b % CHECKPOINT_EVERY == CHECKPOINT_EVERY - 1 {
            store.flush().expect("checkpoint");
        }
    }
    store.close();
    let _ = std::fs::remove_dir_all(&dir);
}
