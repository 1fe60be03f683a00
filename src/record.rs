//! The stored record: a small versioned header before the value bytes.
//!
//! # Format (version 1)
//! ```text
//! [0]        format byte = 1
//! [1..9]     revision, u64 little-endian (unique per shard, grows with every write; the ETag)
//! [9]        content-type length N (0..=255; 0 = the default type)
//! [10..10+N] content type (ASCII)
//! [10+N..]   value bytes
//! ```
//! The same bytes are stored in redb and kept in the cache, so a disk read becomes a cached value without
//! re-encoding, and reading a field is a slice of a shared [`Bytes`]. New formats get a new first byte, so old
//! files stay readable without a migration.

use bytes::{BufMut, Bytes, BytesMut};

/// The only format written today.
pub const FORMAT_V1: u8 = 1;
const HEADER: usize = 10;
/// Content type reported when a value was stored without one.
pub const DEFAULT_CONTENT_TYPE: &str = "application/octet-stream";
/// Longest content type a record can hold.
pub const MAX_CONTENT_TYPE: usize = u8::MAX as usize;

/// An encoded record. Cloning is a reference-count increment.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Record(Bytes);

impl Record {
    /// Encodes a record. `content_type` must be at most [`MAX_CONTENT_TYPE`] bytes (checked by the caller).
    pub fn encode(rev: u64, content_type: &[u8], value: &[u8]) -> Record {
        debug_assert!(content_type.len() <= MAX_CONTENT_TYPE);
        let mut buf = BytesMut::with_capacity(HEADER + content_type.len() + value.len());
        buf.put_u8(FORMAT_V1);
        buf.put_u64_le(rev);
        buf.put_u8(content_type.len() as u8);
        buf.put_slice(content_type);
        buf.put_slice(value);
        Record(buf.freeze())
    }

    /// Wraps bytes read from disk, checking the header so a damaged record is an error, not garbage.
    pub fn decode(bytes: Bytes) -> Result<Record, String> {
        RecordView::parse(&bytes)?;
        Ok(Record(bytes))
    }

    /// The revision: unique within its shard for the life of the data dir.
    pub fn rev(&self) -> u64 {
        u64::from_le_bytes(self.0[1..9].try_into().expect("header length checked on construction"))
    }

    fn ct_len(&self) -> usize {
        self.0[9] as usize
    }

    /// The content type as stored (empty when the writer sent none).
    pub fn content_type_raw(&self) -> &[u8] {
        &self.0[HEADER..HEADER + self.ct_len()]
    }

    /// The content type to answer with.
    pub fn content_type(&self) -> &str {
        match std::str::from_utf8(self.content_type_raw()) {
            Ok("") | Err(_) => DEFAULT_CONTENT_TYPE,
            Ok(ct) => ct,
        }
    }

    /// The value bytes, shared with the record.
    pub fn value(&self) -> Bytes {
        self.0.slice(HEADER + self.ct_len()..)
    }

    /// The value bytes, borrowed.
    pub fn value_ref(&self) -> &[u8] {
        &self.0[HEADER + self.ct_len()..]
    }

    /// The whole encoded record, as stored on disk.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Bytes this record occupies (for the cache weigher).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Never true: a record always has a header.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The strong ETag of this record, quoted as HTTP wants it.
    pub fn etag(&self) -> String {
        etag_of(self.rev())
    }
}

/// The quoted ETag for a revision.
pub fn etag_of(rev: u64) -> String {
    let mut tag = Vec::with_capacity(18);
    tag.push(b'"');
    push_hex(&mut tag, rev, 1);
    tag.push(b'"');
    String::from_utf8(tag).expect("quotes and hex digits are ASCII")
}

/// Appends `v` in lowercase hex to `out`, zero-padded to at least `min_digits` digits (and at least one), as
/// `format!("{v:0w$x}")` does, but without the formatting machinery: that cost more than the rest of building an
/// ETag or a request-id header.
pub fn push_hex(out: &mut Vec<u8>, v: u64, min_digits: usize) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let significant = (64 - v.leading_zeros() as usize).div_ceil(4);
    for i in (0..significant.max(min_digits).max(1)).rev() {
        let nibble = if i < 16 { (v >> (4 * i)) & 0xf } else { 0 };
        out.push(DIGITS[nibble as usize]);
    }
}

/// The fields of an encoded record, borrowed (e.g. from a redb guard) without copying it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordView<'a> {
    /// The revision.
    pub rev: u64,
    /// The content type as stored (empty = default).
    pub content_type: &'a [u8],
    /// The value bytes.
    pub value: &'a [u8],
}

impl<'a> RecordView<'a> {
    /// Checks the header of `bytes` and splits it into its fields.
    pub fn parse(bytes: &'a [u8]) -> Result<RecordView<'a>, String> {
        if bytes.len() < HEADER || bytes[0] != FORMAT_V1 {
            return Err(format!("unknown record format (length {}, first byte {:?})", bytes.len(), bytes.first()));
        }
        let ct_end = HEADER + bytes[9] as usize;
        if bytes.len() < ct_end {
            return Err("record shorter than its content type".into());
        }
        let rev = u64::from_le_bytes(bytes[1..9].try_into().expect("header length checked above"));
        Ok(RecordView { rev, content_type: &bytes[HEADER..ct_end], value: &bytes[ct_end..] })
    }
}

/// The value of a counter record (8 bytes, little-endian i64).
pub fn counter_value(rec: &Record) -> Option<i64> {
    counter_of(rec.value_ref())
}

/// A counter's value from its record's value bytes (8 bytes, little-endian i64).
pub fn counter_of(value: &[u8]) -> Option<i64> {
    value.try_into().ok().map(i64::from_le_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let r = Record::encode(0x1234, b"text/plain", b"hello");
        let d = Record::decode(Bytes::copy_from_slice(r.as_bytes())).unwrap();
        assert_eq!(d.rev(), 0x1234);
        assert_eq!(d.content_type(), "text/plain");
        assert_eq!(&d.value()[..], b"hello");
        assert_eq!(d.etag(), "\"1234\"");
        let v = RecordView::parse(r.as_bytes()).unwrap();
        assert_eq!((v.rev, v.content_type, v.value), (0x1234, &b"text/plain"[..], &b"hello"[..]));
    }

    #[test]
    fn hex_is_what_format_writes() {
        for v in [0, 1, 0xf, 0x10, 0x1234, 0xdead_beef, u64::MAX >> 4, u64::MAX] {
            for width in [0, 1, 8, 12, 20] {
                let mut out = Vec::new();
                push_hex(&mut out, v, width);
                assert_eq!(String::from_utf8(out).unwrap(), format!("{v:0width$x}"), "{v:#x} width {width}");
            }
            assert_eq!(etag_of(v), format!("\"{v:x}\""));
        }
    }

    #[test]
    fn empty_value_and_default_type() {
        let r = Record::encode(7, b"", b"");
        assert_eq!(r.content_type(), DEFAULT_CONTENT_TYPE);
        assert!(r.value().is_empty());
    }

    #[test]
    fn damaged_records_are_rejected() {
        assert!(Record::decode(Bytes::from_static(b"")).is_err());
        assert!(Record::decode(Bytes::from_static(&[2, 0, 0, 0, 0, 0, 0, 0, 0, 0])).is_err());
        assert!(Record::decode(Bytes::from_static(&[1, 0, 0, 0, 0, 0, 0, 0, 0, 5, b'a'])).is_err());
    }
}
