//! Random ids: a node's id, a shard file's log epoch.

/// A random 128-bit id in hex, from the OS's randomness where available.
pub fn hex_id() -> String {
    let mut bytes = [0u8; 16];
    let from_os = std::fs::File::open("/dev/urandom").and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes));
    if from_os.is_err() {
        let seed = format!("{:?}{}", std::time::SystemTime::now(), std::process::id());
        bytes[..8].copy_from_slice(&xxhash_rust::xxh3::xxh3_64(seed.as_bytes()).to_le_bytes());
        bytes[8..].copy_from_slice(&xxhash_rust::xxh3::xxh3_64_with_seed(seed.as_bytes(), 1).to_le_bytes());
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
