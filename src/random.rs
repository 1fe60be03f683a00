//! Random ids and nonces: a node's id, a shard file's log epoch, the cluster handshake's challenge.

/// A random 128-bit id in hex, from the OS's randomness where available.
pub fn hex_id() -> String {
    let bytes = os_bytes::<16>().unwrap_or_else(|| {
        let seed = format!("{:?}{}", std::time::SystemTime::now(), std::process::id());
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&xxhash_rust::xxh3::xxh3_64(seed.as_bytes()).to_le_bytes());
        bytes[8..].copy_from_slice(&xxhash_rust::xxh3::xxh3_64_with_seed(seed.as_bytes(), 1).to_le_bytes());
        bytes
    });
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `N` random bytes from the OS (`/dev/urandom`); `None` when it cannot be read.
pub fn os_bytes<const N: usize>() -> Option<[u8; N]> {
    let mut bytes = [0u8; N];
    std::fs::File::open("/dev/urandom").and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes)).ok()?;
    Some(bytes)
}
