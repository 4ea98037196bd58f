//! The on-disk format of one cache entry (`shared/research/wrapper.md` §6.3).
//!
//! Layout, all integers little-endian:
//!
//! | bytes | content                                              |
//! |-------|------------------------------------------------------|
//! | 0..7  | magic `MSHCENT`                                      |
//! | 7     | format version ([`FORMAT_VERSION`])                  |
//! | 8..16 | length of the uncompressed payload (u64)             |
//! | 16..48| BLAKE3 of the compressed payload                     |
//! | 48..  | zstd (level 1) of postcard([`Entry`])                |
//!
//! Files are untrusted: [`decode`] checks every field, bounds every allocation by
//! [`MAX_PAYLOAD_LEN`], and verifies the checksum before it parses the payload, so damage yields
//! [`EntryError::Corrupt`], never a panic or a wrong entry.
//!
//! Level 1 rather than 3, measured with zstd 1.5 on gcc 12 objects (2 vCPU VM): `-O2` objects
//! compress x2.63 at 340 MB/s (level 3: x2.76 at 211 MB/s); `-O0 -g` objects x5.28 at 549 MB/s
//! (level 3: x5.50 at 378 MB/s). Decompression runs at 1.2-1.7 GB/s for both.

use std::io::{self, Read, Write};

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use zstd::stream::raw::{InBuffer, Operation, OutBuffer};

use crate::compiler::args::OutputKind;

/// The first seven bytes of every entry file.
const MAGIC: &[u8; 7] = b"MSHCENT";
/// The version of the layout described in the module documentation.
pub const FORMAT_VERSION: u8 = 1;
/// Bytes before the compressed payload: magic, version, length, checksum.
const HEADER_LEN: usize = 48;
/// The largest uncompressed payload accepted on either side (4 GiB).
pub const MAX_PAYLOAD_LEN: u64 = 4 << 30;
/// zstd level: see the module documentation for the measurement behind it.
const ZSTD_LEVEL: i32 = 1;
/// Most bytes reserved up front for a payload whose length the header claims; larger (real)
/// payloads grow the buffer as they decompress, so a lying header cannot force a huge allocation.
const MAX_PREALLOC: u64 = 64 << 20;

/// What a compile produced: its diagnostics and its output files.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Entry {
    /// The compiler's standard output, replayed on a hit.
    pub stdout: Vec<u8>,
    /// The compiler's standard error, replayed on a hit.
    pub stderr: Vec<u8>,
    /// The contents of each output file, by kind.
    pub outputs: Vec<(OutputKind, Vec<u8>)>,
}

/// Why an entry could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum EntryError {
    /// The bytes are not a valid entry (truncated, damaged, foreign or from another version).
    #[error("corrupt cache entry: {0}")]
    Corrupt(String),
    /// The entry is too large to be stored.
    #[error("cache entry too large: {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The size of the uncompressed entry, or a lower bound of it.
        size: u64,
        /// [`MAX_PAYLOAD_LEN`].
        limit: u64,
    },
    /// Reading the entry's source (not its content) failed, or compression failed.
    #[error("cache entry I/O error: {0}")]
    Io(#[source] io::Error),
}

/// A byte slice serialized as one postcard byte string, not as a sequence of `u8`s.
struct Bytes<'a>(&'a [u8]);

impl Serialize for Bytes<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(self.0)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Bytes<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        <&'a [u8]>::deserialize(deserializer).map(Bytes)
    }
}

/// The serialized form of an [`Entry`], borrowing its bytes on both sides.
#[derive(Serialize, Deserialize)]
struct Wire<'a> {
    #[serde(borrow)]
    stdout: Bytes<'a>,
    #[serde(borrow)]
    stderr: Bytes<'a>,
    #[serde(borrow)]
    outputs: Vec<(OutputKind, Bytes<'a>)>,
}

/// A writer that counts the bytes passed through it.
struct Counting<W> {
    inner: W,
    count: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Encodes an entry into the on-disk format.
///
/// Memory use is the compressed size plus zstd's window; the entry is streamed, not copied.
pub fn encode(entry: &Entry) -> Result<Vec<u8>, EntryError> {
    let datas = || {
        [&entry.stdout, &entry.stderr]
            .into_iter()
            .chain(entry.outputs.iter().map(|(_, data)| data))
    };
    let data_len = datas().fold(0u64, |sum, data| sum.saturating_add(data.len() as u64));
    if data_len > MAX_PAYLOAD_LEN {
        return Err(EntryError::TooLarge {
            size: data_len,
            limit: MAX_PAYLOAD_LEN,
        });
    }
    // Each byte string costs at most 10 bytes of length and 1 of variant; the list 10 of count.
    let estimate = data_len.saturating_add(10 + 11 * datas().count() as u64);
    let wire = Wire {
        stdout: Bytes(&entry.stdout),
        stderr: Bytes(&entry.stderr),
        outputs: entry
            .outputs
            .iter()
            .map(|(kind, data)| (*kind, Bytes(data)))
            .collect(),
    };
    let capacity = usize::try_from(estimate)
        .map(|n| HEADER_LEN + zstd::zstd_safe::compress_bound(n))
        .unwrap_or(HEADER_LEN);
    let mut out = Vec::with_capacity(capacity);
    out.extend_from_slice(MAGIC);
    out.push(FORMAT_VERSION);
    out.resize(HEADER_LEN, 0);
    let encoder = zstd::Encoder::new(out, ZSTD_LEVEL).map_err(EntryError::Io)?;
    let counting = postcard::to_io(
        &wire,
        Counting {
            inner: encoder,
            count: 0,
        },
    )
    .map_err(|e| EntryError::Io(io::Error::other(e)))?;
    let len = counting.count;
    let mut out = counting.inner.finish().map_err(EntryError::Io)?;
    if len > MAX_PAYLOAD_LEN {
        return Err(EntryError::TooLarge {
            size: len,
            limit: MAX_PAYLOAD_LEN,
        });
    }
    let checksum = blake3::hash(&out[HEADER_LEN..]);
    out[8..16].copy_from_slice(&len.to_le_bytes());
    out[16..HEADER_LEN].copy_from_slice(checksum.as_bytes());
    Ok(out)
}

/// Decodes an entry from its on-disk bytes.
pub fn decode(bytes: &[u8]) -> Result<Entry, EntryError> {
    decode_from(bytes)
}

/// A reader that hashes what passes through it once `hashing` is set, and keeps the first error
/// of the underlying reader so that it is not mistaken for corruption.
struct Source<R> {
    inner: R,
    hasher: blake3::Hasher,
    hashing: bool,
    failure: Option<io::Error>,
}

impl<R: Read> Read for Source<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inner.read(buf) {
            Ok(n) => {
                if self.hashing {
                    self.hasher.update(&buf[..n]);
                }
                Ok(n)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Err(e),
            Err(e) => {
                let kind = e.kind();
                self.failure.get_or_insert(e);
                Err(io::Error::new(kind, "reading the entry source failed"))
            }
        }
    }
}

impl<R> Source<R> {
    /// The error to report for a failed read: the source's own error if it had one, else
    /// corruption described by `what`.
    fn error(&mut self, what: &str, e: &io::Error) -> EntryError {
        match self.failure.take() {
            Some(failure) => EntryError::Io(failure),
            None => EntryError::Corrupt(format!("{what}: {e}")),
        }
    }
}

/// Decodes an entry from a reader (such as an open entry file), without buffering the
/// compressed bytes: peak memory is the uncompressed entry plus a copy of all but its largest
/// field.
///
/// An error of the reader itself is [`EntryError::Io`]; anything wrong with the bytes is
/// [`EntryError::Corrupt`].
pub fn decode_from<R: Read>(reader: R) -> Result<Entry, EntryError> {
    let mut source = Source {
        inner: reader,
        hasher: blake3::Hasher::new(),
        hashing: false,
        failure: None,
    };
    let mut header = [0u8; HEADER_LEN];
    if let Err(e) = source.read_exact(&mut header) {
        return Err(source.error("truncated header", &e));
    }
    if &header[..7] != MAGIC {
        return Err(EntryError::Corrupt("bad magic bytes".into()));
    }
    if header[7] != FORMAT_VERSION {
        return Err(EntryError::Corrupt(format!(
            "unsupported format version {} (expected {FORMAT_VERSION})",
            header[7]
        )));
    }
    let mut len_bytes = [0u8; 8];
    len_bytes.copy_from_slice(&header[8..16]);
    let len = u64::from_le_bytes(len_bytes);
    if len > MAX_PAYLOAD_LEN {
        return Err(EntryError::Corrupt(format!(
            "declared length {len} exceeds the limit of {MAX_PAYLOAD_LEN} bytes"
        )));
    }
    let mut expected = [0u8; 32];
    expected.copy_from_slice(&header[16..HEADER_LEN]);

    let limit = usize::try_from(len)
        .map_err(|_| EntryError::Corrupt(format!("declared length {len} too large here")))?;
    source.hashing = true;
    let payload = decompress(&mut source, limit)?;
    if source.hasher.finalize() != blake3::Hash::from_bytes(expected) {
        return Err(EntryError::Corrupt("checksum mismatch".into()));
    }
    if payload.len() != limit {
        return Err(EntryError::Corrupt(format!(
            "payload is {} bytes, header declares {len}",
            payload.len()
        )));
    }
    into_entry(payload)
}

/// Decompresses the single zstd frame that must make up the rest of `source`, into a buffer
/// that never grows beyond `limit + 1` bytes (one more than declared, so that an overlong payload
/// is detected without decompressing it all).
///
/// Output goes straight into the buffer's spare capacity, sparing the zero-filling and extra
/// pass of a `Read`-based copy.
fn decompress<R: Read>(source: &mut Source<R>, limit: usize) -> Result<Vec<u8>, EntryError> {
    let bound = limit.saturating_add(1);
    let prealloc = usize::try_from(MAX_PREALLOC).map_or(bound, |max| bound.min(max));
    let mut out = Vec::with_capacity(prealloc);
    let mut input = vec![0u8; zstd::zstd_safe::DCtx::in_size()];
    let (mut start, mut end) = (0, 0);
    let mut decoder = zstd::stream::raw::Decoder::new().map_err(EntryError::Io)?;
    let corrupt = |e: io::Error| EntryError::Corrupt(format!("bad compressed payload: {e}"));
    let mut output_full = false;
    loop {
        if start == end && !output_full {
            end = loop {
                match source.read(&mut input) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(source.error("cannot read payload", &e)),
                }
            };
            start = 0;
            if end == 0 {
                return Err(EntryError::Corrupt("truncated compressed payload".into()));
            }
        }
        if out.len() == out.capacity() {
            let room = bound.saturating_sub(out.len());
            if room == 0 {
                return Err(EntryError::Corrupt(format!(
                    "payload is longer than the declared {limit} bytes"
                )));
            }
            out.reserve_exact(room.min(out.capacity().max(1 << 16)));
        }
        let mut inbuf = InBuffer::around(&input[start..end]);
        let pos = out.len();
        let mut outbuf = OutBuffer::around_pos(&mut out, pos);
        let hint = decoder.run(&mut inbuf, &mut outbuf).map_err(corrupt)?;
        output_full = outbuf.pos() == outbuf.capacity();
        start += inbuf.pos;
        if hint == 0 {
            break;
        }
    }
    // The frame is complete: nothing may follow it. Reading on also feeds the checksum.
    let trailing = start < end
        || loop {
            match source.read(&mut input) {
                Ok(n) => break n > 0,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(source.error("cannot read payload", &e)),
            }
        };
    if trailing {
        return Err(EntryError::Corrupt(
            "trailing bytes after the compressed payload".into(),
        ));
    }
    Ok(out)
}

/// Parses a decompressed payload. The largest byte string takes over the payload's buffer
/// instead of being copied, so an entry with one big object costs one buffer, not two.
fn into_entry(mut payload: Vec<u8>) -> Result<Entry, EntryError> {
    let (wire, rest) = postcard::take_from_bytes::<Wire<'_>>(&payload)
        .map_err(|e| EntryError::Corrupt(format!("bad payload: {e}")))?;
    if !rest.is_empty() {
        return Err(EntryError::Corrupt(format!(
            "{} trailing bytes after the payload",
            rest.len()
        )));
    }
    // Where each byte string lies in `payload`: stdout, stderr, then the outputs in order.
    let base = payload.as_ptr() as usize;
    let span = |bytes: &Bytes<'_>| {
        let start = (bytes.0.as_ptr() as usize).wrapping_sub(base);
        start..start.wrapping_add(bytes.0.len())
    };
    let spans: Vec<_> = [&wire.stdout, &wire.stderr]
        .into_iter()
        .chain(wire.outputs.iter().map(|(_, data)| data))
        .map(span)
        .collect();
    let kinds: Vec<OutputKind> = wire.outputs.iter().map(|(kind, _)| *kind).collect();
    let largest = (0..spans.len())
        .max_by_key(|&i| spans[i].len())
        .unwrap_or(0);
    let misplaced = || EntryError::Corrupt("byte string outside the payload".into());
    let mut fields = Vec::with_capacity(spans.len());
    for (i, range) in spans.iter().enumerate() {
        let bytes = payload.get(range.clone()).ok_or_else(misplaced)?;
        fields.push(if i == largest {
            Vec::new()
        } else {
            bytes.to_vec()
        });
    }
    if let (Some(range), Some(field)) = (spans.get(largest), fields.get_mut(largest)) {
        payload.truncate(range.end);
        payload.drain(..range.start);
        *field = payload;
    }
    let mut fields = fields.into_iter();
    let mut next = || fields.next().ok_or_else(misplaced);
    let stdout = next()?;
    let stderr = next()?;
    let outputs = kinds
        .into_iter()
        .map(|kind| Ok((kind, next()?)))
        .collect::<Result<_, EntryError>>()?;
    Ok(Entry {
        stdout,
        stderr,
        outputs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Deterministic incompressible bytes.
    fn noise(seed: u8, len: usize) -> Vec<u8> {
        let mut out = vec![0u8; len];
        blake3::Hasher::new()
            .update(&[seed])
            .finalize_xof()
            .fill(&mut out);
        out
    }

    fn small() -> Entry {
        Entry {
            stdout: b"out\n".to_vec(),
            stderr: b"foo.c:1:1: warning: empty\n".to_vec(),
            outputs: vec![
                (OutputKind::Primary, noise(1, 300)),
                (OutputKind::Dependency, b"foo.o: foo.c foo.h\n".to_vec()),
                (OutputKind::SplitDwarf, Vec::new()),
            ],
        }
    }

    fn is_corrupt(r: Result<Entry, EntryError>) -> bool {
        matches!(r, Err(EntryError::Corrupt(_)))
    }

    #[test]
    fn round_trip_empty() {
        let entry = Entry::default();
        assert_eq!(decode(&encode(&entry).unwrap()).unwrap(), entry);
    }

    #[test]
    fn round_trip_several_outputs() {
        let entry = small();
        let bytes = encode(&entry).unwrap();
        assert_eq!(&bytes[..7], MAGIC);
        assert_eq!(bytes[7], FORMAT_VERSION);
        assert_eq!(decode(&bytes).unwrap(), entry);
    }

    #[test]
    fn round_trip_large_incompressible() {
        let entry = Entry {
            stdout: Vec::new(),
            stderr: Vec::new(),
            outputs: vec![(OutputKind::Primary, noise(2, 20 << 20))],
        };
        let bytes = encode(&entry).unwrap();
        assert!(bytes.len() < (20 << 20) + 4096, "{}", bytes.len());
        assert_eq!(decode(&bytes).unwrap(), entry);
    }

    #[test]
    fn round_trip_beyond_preallocation() {
        let mut big = vec![0u8; (MAX_PREALLOC as usize) + (3 << 20)];
        big[12345] = 1;
        let entry = Entry {
            stdout: b"x".to_vec(),
            stderr: Vec::new(),
            outputs: vec![
                (OutputKind::Primary, big),
                (OutputKind::Dependency, b"d".to_vec()),
            ],
        };
        assert_eq!(decode(&encode(&entry).unwrap()).unwrap(), entry);
    }

    #[test]
    fn round_trip_through_tiny_reads() {
        struct Trickle<'a>(&'a [u8]);
        impl Read for Trickle<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                let n = buf.len().min(self.0.len()).min(1);
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let entry = small();
        let bytes = encode(&entry).unwrap();
        assert_eq!(decode_from(Trickle(&bytes)).unwrap(), entry);
    }

    #[test]
    fn largest_field_may_be_a_diagnostic() {
        let entry = Entry {
            stdout: b"o".to_vec(),
            stderr: noise(6, 5000),
            outputs: vec![(OutputKind::Primary, noise(7, 100))],
        };
        assert_eq!(decode(&encode(&entry).unwrap()).unwrap(), entry);
    }

    #[test]
    fn compresses_compressible_data() {
        let entry = Entry {
            outputs: vec![(OutputKind::Primary, vec![7u8; 1 << 20])],
            ..Entry::default()
        };
        assert!(encode(&entry).unwrap().len() < 4096);
    }

    #[test]
    fn every_truncation_is_corrupt() {
        let bytes = encode(&small()).unwrap();
        for n in 0..bytes.len() {
            assert!(is_corrupt(decode(&bytes[..n])), "truncated to {n}");
        }
    }

    #[test]
    fn trailing_bytes_are_corrupt() {
        let mut bytes = encode(&small()).unwrap();
        bytes.push(0);
        assert!(is_corrupt(decode(&bytes)));
    }

    #[test]
    fn garbage_is_corrupt() {
        assert!(is_corrupt(decode(b"")));
        assert!(is_corrupt(decode(&noise(3, 10_000))));
        let mut bytes = noise(4, 10_000);
        bytes[..7].copy_from_slice(MAGIC);
        bytes[7] = FORMAT_VERSION;
        bytes[8..16].copy_from_slice(&1000u64.to_le_bytes());
        assert!(is_corrupt(decode(&bytes)));
    }

    #[test]
    fn other_version_is_corrupt() {
        let mut bytes = encode(&small()).unwrap();
        bytes[7] = FORMAT_VERSION + 1;
        match decode(&bytes) {
            Err(EntryError::Corrupt(msg)) => assert!(msg.contains("version"), "{msg}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn huge_declared_length_is_rejected_before_allocating() {
        let mut bytes = encode(&small()).unwrap();
        for len in [MAX_PAYLOAD_LEN + 1, u64::MAX] {
            bytes[8..16].copy_from_slice(&len.to_le_bytes());
            match decode(&bytes) {
                Err(EntryError::Corrupt(msg)) => assert!(msg.contains("exceeds"), "{msg}"),
                other => panic!("{other:?}"),
            }
        }
        // At the limit the header is accepted but the payload does not match it.
        bytes[8..16].copy_from_slice(&MAX_PAYLOAD_LEN.to_le_bytes());
        assert!(is_corrupt(decode(&bytes)));
    }

    #[test]
    fn reader_errors_are_io_not_corrupt() {
        struct Failing;
        impl Read for Failing {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::other("disk on fire"))
            }
        }
        assert!(matches!(decode_from(Failing), Err(EntryError::Io(_))));
        let bytes = encode(&small()).unwrap();
        let failing_later = (&bytes[..HEADER_LEN + 4]).chain(Failing);
        assert!(matches!(decode_from(failing_later), Err(EntryError::Io(_))));
    }

    proptest! {
        #[test]
        fn any_bit_flip_is_corrupt(bit in any::<usize>(), out in any::<Vec<u8>>(), err in any::<Vec<u8>>()) {
            let entry = Entry {
                stdout: out,
                stderr: err,
                outputs: vec![(OutputKind::Primary, noise(5, 100)), (OutputKind::StackUsage, b"f 16 static".to_vec())],
            };
            let mut bytes = encode(&entry).unwrap();
            let bit = bit % (bytes.len() * 8);
            bytes[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(is_corrupt(decode(&bytes)));
        }

        #[test]
        fn any_entry_round_trips(
            stdout in proptest::collection::vec(any::<u8>(), 0..300),
            stderr in proptest::collection::vec(any::<u8>(), 0..300),
            outputs in proptest::collection::vec(
                (prop_oneof![Just(OutputKind::Primary), Just(OutputKind::Dependency), Just(OutputKind::CallGraphInfo)],
                 proptest::collection::vec(any::<u8>(), 0..300)),
                0..5),
        ) {
            let entry = Entry { stdout, stderr, outputs };
            prop_assert_eq!(decode(&encode(&entry).unwrap()).unwrap(), entry);
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            prop_assert!(is_corrupt(decode(&bytes)));
        }
    }
}
