//! The mesh wire protocol: postcard messages in length-prefixed frames on QUIC streams.
//!
//! A frame is a 4-byte little-endian length followed by that many bytes of postcard. Every read
//! names the largest frame it accepts ([`Limit`]), checked before anything is allocated, and
//! runs under a timeout. Bulk payloads never ride inside a message: a header message gives
//! their length and the raw bytes follow on the same stream, moved in [`CHUNK`]-sized pieces.
//!
//! Streams: each connection starts with a control stream (dialer opens it) carrying one
//! [`Hello`] each way; then every request is one bidirectional stream: [`Request`] (+ bulk),
//! then [`Reply`] (+ bulk).

use std::time::Duration;

use serde::{de::DeserializeOwned, Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::election::NodeClass;
use super::identity::NodeId;
use crate::compiler::args::{CompileMode, Language};
use crate::compiler::toolchain::ToolchainId;
use std::net::SocketAddr;

/// Version of the mesh protocol, carried in [`Hello`]; nodes of other versions are refused.
/// Bumped on every wire change (2: `JobHeader::form`, fixed-size ping nonces; 3: membership
/// control messages `Welcome`, `StateRequest` and `State`).
pub const PROTOCOL_VERSION: u32 = 3;

/// Bulk payloads move in pieces of this size.
pub const CHUNK: usize = 64 << 10;

/// Largest bulk payload one request or reply may carry.
pub const MAX_BULK: u64 = 1 << 30;

/// The largest frame accepted for each kind of message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// [`Hello`] on the control stream.
    Hello,
    /// A [`Request`] header.
    Request,
    /// A [`Reply`] header.
    Reply,
    /// A [`Request::RunJob`] header (its arguments).
    Job,
    /// A [`Reply::JobDone`] header (the compiler's stdout and stderr).
    JobReply,
}

impl Limit {
    /// The limit in bytes.
    pub const fn bytes(self) -> usize {
        match self {
            Limit::Hello => 1 << 10,
            Limit::Request => 64 << 10,
            Limit::Reply => 1 << 20,
            Limit::Job => 256 << 10,
            Limit::JobReply => 16 << 20,
        }
    }
}

/// First message on a connection, one each way on the control stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// [`PROTOCOL_VERSION`] of the sender.
    pub version: u32,
    /// The sender's NodeId (must match its TLS key).
    pub node_id: NodeId,
    /// The UDP port the sender accepts connections on, if any (an address hint).
    pub listen_port: Option<u16>,
    /// A short-lived tool (e.g. `meshcc ping`), not a member: served, never put in the peer table.
    pub ephemeral: bool,
    /// HMAC-SHA256 proof of the cluster secret, bound to this TLS session (see `cluster`).
    pub auth_tag: [u8; 32],
}

/// A request on its own bidirectional stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Liveness and round-trip check.
    Ping {
        /// Echoed back. A fixed-size array, so every ping encodes to the same size (a varint
        /// would not: simulated traces stay byte-stable).
        nonce: [u8; 8],
    },
    /// The serving node's view of the mesh.
    Status,
    /// `len` raw bytes follow; the reply is their BLAKE3 digest (diagnostics, benchmarks).
    Upload {
        /// Bytes that follow the header.
        len: u64,
    },
    /// Ask for `len` deterministic bytes made from `seed` ([`pattern`]); the reply header is
    /// [`Reply::Bulk`] and the bytes follow (diagnostics, benchmarks).
    Download {
        /// Bytes wanted.
        len: u64,
        /// Seed of the pattern.
        seed: u64,
    },
    /// Run one compile here; [`JobHeader::input_len`] bytes of zstd-compressed preprocessed
    /// input follow. Answered by [`Reply::JobDone`] (+ the zstd-compressed output),
    /// [`Reply::Busy`], [`Reply::StaleEpoch`] or [`Reply::Refused`].
    RunJob(JobHeader),
    /// Ask the coordinator for ranked workers for one job: [`Reply::Allocated`] or
    /// [`Reply::Unavailable`].
    Alloc(AllocRequest),
    /// The job of this grant is over (done, or given up): the coordinator frees its slot.
    Release {
        /// The grant of [`Reply::Allocated`].
        grant: u64,
    },
}

impl Request {
    /// The largest frame this request may arrive in.
    pub fn limit(&self) -> Limit {
        match self {
            Request::RunJob(_) => Limit::Job,
            _ => Limit::Request,
        }
    }
}

/// What a remote job's input text is, and so how the worker compiles it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum InputForm {
    /// Preprocessed text (`-E`, or gcc's `-E -fdirectives-only`), compiled as the language's
    /// preprocessed form from a file the worker names.
    Preprocessed,
    /// clang's `-E -frewrite-includes` text (includes expanded, macros not), compiled as the
    /// source language from a file at `path`, a plain relative path (the client's name for its
    /// input), so that the names clang records are the client's.
    RewrittenIncludes {
        /// Where the worker writes the text, relative to the compile's directory.
        path: String,
    },
}

/// Header of one remote compile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobHeader {
    /// The client's JobId (for logs on both sides).
    pub job: u64,
    /// Which attempt of the job this is (1 for the first); results are matched to it.
    pub attempt: u32,
    /// The coordinator epoch of the grant, if a coordinator chose this worker.
    pub epoch: Option<u64>,
    /// The toolchain to run, by content identity; refused unless the worker has it.
    pub toolchain: ToolchainId,
    /// The source language of the job (the worker compiles its preprocessed form, or the
    /// language itself for [`InputForm::RewrittenIncludes`]).
    pub language: Language,
    /// Object or assembly.
    pub mode: CompileMode,
    /// What the input text is.
    pub form: InputForm,
    /// The compile's options, checked against the remote allow-list.
    pub args: Vec<String>,
    /// Locale and reproducibility variables of the client's compile (others are ignored).
    pub env: Vec<(String, String)>,
    /// Compressed input bytes that follow the header.
    pub input_len: u64,
}

/// What came of one remote compile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobResult {
    /// The compiler's exit code.
    pub exit_code: i32,
    /// What it printed on stdout.
    pub stdout: Vec<u8>,
    /// What it printed on stderr (diagnostics).
    pub stderr: Vec<u8>,
    /// Compressed output bytes that follow the header (0 when the compile failed).
    pub output_len: u64,
}

/// An allocation request to the coordinator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllocRequest {
    /// The client's JobId (for logs).
    pub job: u64,
    /// The attempt.
    pub attempt: u32,
    /// The toolchain the job needs.
    pub toolchain: ToolchainId,
    /// Workers not to offer (they failed this job already).
    pub exclude: Vec<NodeId>,
}

/// One worker offered by the coordinator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Candidate {
    /// The worker.
    pub node_id: NodeId,
    /// Where the coordinator knows it (hints).
    pub addrs: Vec<SocketAddr>,
}

/// A reply on the request's stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    /// Answer to [`Request::Ping`].
    Pong {
        /// The request's nonce.
        nonce: [u8; 8],
    },
    /// Answer to [`Request::Status`].
    Status(StatusInfo),
    /// BLAKE3 of an upload.
    Digest([u8; 32]),
    /// `len` raw bytes follow.
    Bulk {
        /// Bytes that follow.
        len: u64,
    },
    /// The request was refused or failed.
    Error(String),
    /// A remote compile ran; its output follows.
    JobDone(JobResult),
    /// Every slot is taken: try another worker.
    Busy,
    /// The grant comes from a coordinator older than one this worker follows.
    StaleEpoch {
        /// The newest epoch the worker knows.
        epoch: u64,
    },
    /// The worker does not have the job's toolchain (its advert was stale): try another.
    NoToolchain,
    /// The job is refused and would be anywhere with these arguments.
    Refused(String),
    /// Ranked workers for a job, best first; a slot on the first is reserved.
    Allocated {
        /// The coordinator's epoch.
        epoch: u64,
        /// The grant, to release when the job ends.
        grant: u64,
        /// Up to three workers.
        candidates: Vec<Candidate>,
    },
    /// No worker can be offered, and why.
    Unavailable(super::alloc::Unavailable),
    /// Answer to [`Request::Release`].
    Released,
}

/// One member as a node sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    /// The member's id.
    pub node_id: NodeId,
    /// Addresses it was last seen at.
    pub addrs: Vec<String>,
    /// In the membership view `alive`, `suspect` or `down`; from the transport alone (a peer's
    /// [`Request::Status`]) `connected` or `closed`.
    pub state: String,
    /// Whether this node holds a live connection to it.
    pub connected: bool,
    /// Its worker slots, from its advert.
    pub slots_total: Option<u32>,
    /// Its slots in use, from its advert.
    pub slots_busy: Option<u32>,
    /// Its class, from its advert.
    pub class: Option<NodeClass>,
}

/// The coordinator a node follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CoordinatorInfo {
    /// The coordinating node.
    pub node_id: NodeId,
    /// Its fencing epoch.
    pub epoch: u64,
}

/// A node's view of the mesh.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusInfo {
    /// The node's own id.
    pub node_id: NodeId,
    /// The address its endpoint is bound to.
    pub listen: Option<String>,
    /// Its peers.
    pub members: Vec<MemberInfo>,
    /// The coordinator it follows, once one is known.
    pub coordinator: Option<CoordinatorInfo>,
    /// Membership counters (none from the transport alone).
    pub membership: Option<MembershipCounters>,
}

/// What membership dropped or did since the daemon started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembershipCounters {
    /// Datagrams that did not decode or claimed another sender than their connection's.
    pub malformed: u64,
    /// SWIM packets refused (stale, not for this node, bad gossip item).
    pub refused: u64,
    /// Datagrams dropped before decoding: too large, or the queue was full.
    pub dropped: u64,
    /// Coordinator verifications (direct and indirect probes) started.
    pub verifications: u64,
    /// Times this node found it had stalled (SIGSTOP, suspend, starvation).
    pub stalls: u64,
}

/// Errors in reading or writing frames.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The stream failed or ended early.
    #[error("stream: {0}")]
    Io(#[from] std::io::Error),
    /// The peer announced a frame larger than the limit for its kind.
    #[error("frame of {len} bytes exceeds the {limit:?} limit of {max} bytes")]
    TooLarge {
        /// Announced length.
        len: usize,
        /// Which limit.
        limit: Limit,
        /// The limit.
        max: usize,
    },
    /// The bytes are not a valid message.
    #[error("malformed message: {0}")]
    Decode(#[from] postcard::Error),
    /// Nothing (or not enough) arrived in time.
    #[error("timed out after {0:?} waiting for the peer")]
    Timeout(Duration),
    /// A bulk payload larger than allowed.
    #[error("bulk payload of {0} bytes exceeds the limit of {MAX_BULK} bytes")]
    BulkTooLarge(u64),
}

/// Encodes one message as a frame (length prefix + postcard).
pub fn encode_frame<T: Serialize>(msg: &T) -> Result<Vec<u8>, FrameError> {
    let payload = postcard::to_stdvec(msg)?;
    let mut frame = Vec::with_capacity(payload.len() + 4);
    frame.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    frame.extend_from_slice(&payload);
    Ok(frame)
}

/// Decodes one frame from the start of `buf`: `Ok(None)` if more bytes are needed, otherwise
/// the message and the number of bytes used. Never allocates more than the limit.
pub fn decode_frame<T: DeserializeOwned>(
    buf: &[u8],
    limit: Limit,
) -> Result<Option<(T, usize)>, FrameError> {
    let Some(header) = buf.get(..4) else {
        return Ok(None);
    };
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    check_len(len, limit)?;
    let Some(payload) = buf.get(4..4 + len) else {
        return Ok(None);
    };
    let msg = postcard::from_bytes(payload)?;
    Ok(Some((msg, 4 + len)))
}

fn check_len(len: usize, limit: Limit) -> Result<(), FrameError> {
    if len > limit.bytes() {
        return Err(FrameError::TooLarge {
            len,
            limit,
            max: limit.bytes(),
        });
    }
    Ok(())
}

/// Reads one request frame: bounded by the largest request kind, then by its own kind's limit.
pub async fn read_request(
    r: &mut (impl AsyncRead + Unpin),
    timeout: Duration,
) -> Result<Request, FrameError> {
    let (req, len): (Request, usize) = read_frame_len(r, Limit::Job, timeout).await?;
    check_len(len, req.limit())?;
    Ok(req)
}

/// Reads one frame of kind `limit` within `timeout`. The buffer grows with the bytes that
/// actually arrive, so a peer announcing a large frame and sending little costs little.
pub async fn read_frame<T: DeserializeOwned>(
    r: &mut (impl AsyncRead + Unpin),
    limit: Limit,
    timeout: Duration,
) -> Result<T, FrameError> {
    Ok(read_frame_len(r, limit, timeout).await?.0)
}

/// [`read_frame`], also giving the payload's length.
async fn read_frame_len<T: DeserializeOwned>(
    r: &mut (impl AsyncRead + Unpin),
    limit: Limit,
    timeout: Duration,
) -> Result<(T, usize), FrameError> {
    tokio::time::timeout(timeout, async {
        let mut header = [0u8; 4];
        r.read_exact(&mut header).await?;
        let len = u32::from_le_bytes(header) as usize;
        check_len(len, limit)?;
        let mut payload = Vec::with_capacity(len.min(4096));
        (&mut *r).take(len as u64).read_to_end(&mut payload).await?;
        if payload.len() != len {
            return Err(FrameError::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
        Ok((postcard::from_bytes(&payload)?, len))
    })
    .await
    .map_err(|_| FrameError::Timeout(timeout))?
}

/// Writes one frame within `timeout`.
pub async fn write_frame<T: Serialize>(
    w: &mut (impl AsyncWrite + Unpin),
    msg: &T,
    timeout: Duration,
) -> Result<(), FrameError> {
    let frame = encode_frame(msg)?;
    tokio::time::timeout(timeout, w.write_all(&frame))
        .await
        .map_err(|_| FrameError::Timeout(timeout))??;
    Ok(())
}

/// Reads exactly `len` bulk bytes in [`CHUNK`]s, handing each to `sink`; each chunk must
/// arrive within `timeout` (a stalled peer is cut off, a slow large transfer is not).
pub async fn read_bulk(
    r: &mut (impl AsyncRead + Unpin),
    len: u64,
    timeout: Duration,
    mut sink: impl FnMut(&[u8]),
) -> Result<(), FrameError> {
    if len > MAX_BULK {
        return Err(FrameError::BulkTooLarge(len));
    }
    let mut buf = vec![0u8; CHUNK.min(len as usize)];
    let mut left = len;
    while left > 0 {
        let want = (left as usize).min(buf.len());
        let n = tokio::time::timeout(timeout, r.read(&mut buf[..want]))
            .await
            .map_err(|_| FrameError::Timeout(timeout))??;
        if n == 0 {
            return Err(FrameError::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
        sink(&buf[..n]);
        left -= n as u64;
    }
    Ok(())
}

/// Writes `data` as bulk bytes, each chunk within `timeout`.
pub async fn write_bulk(
    w: &mut (impl AsyncWrite + Unpin),
    data: &[u8],
    timeout: Duration,
) -> Result<(), FrameError> {
    for chunk in data.chunks(CHUNK) {
        tokio::time::timeout(timeout, w.write_all(chunk))
            .await
            .map_err(|_| FrameError::Timeout(timeout))??;
    }
    Ok(())
}

/// The deterministic bytes of [`Request::Download`]: position `i` of `seed`'s pattern, for
/// `out.len()` bytes starting at `offset`.
pub fn pattern(seed: u64, offset: u64, out: &mut [u8]) {
    for (i, b) in out.iter_mut().enumerate() {
        let x = (offset + i as u64)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .wrapping_add(seed);
        *b = (x ^ (x >> 29) ^ (x >> 47)) as u8;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello() -> Hello {
        Hello {
            version: PROTOCOL_VERSION,
            node_id: NodeId([3; 32]),
            listen_port: Some(7471),
            ephemeral: false,
            auth_tag: [9; 32],
        }
    }

    #[test]
    fn frames_round_trip_and_need_more_bytes() {
        let f = encode_frame(&hello()).unwrap();
        for cut in 0..f.len() {
            assert!(decode_frame::<Hello>(&f[..cut], Limit::Hello)
                .unwrap()
                .is_none());
        }
        let (h, used) = decode_frame::<Hello>(&f, Limit::Hello).unwrap().unwrap();
        assert_eq!(h, hello());
        assert_eq!(used, f.len());
    }

    #[test]
    fn limits_apply_per_kind() {
        let big = Reply::Error("x".repeat(100 << 10));
        let f = encode_frame(&big).unwrap();
        assert!(decode_frame::<Reply>(&f, Limit::Reply).unwrap().is_some());
        assert!(matches!(
            decode_frame::<Reply>(&f, Limit::Request),
            Err(FrameError::TooLarge { .. })
        ));
    }

    #[test]
    fn pings_encode_to_one_size_whatever_the_nonce() {
        let size = |nonce| {
            (
                encode_frame(&Request::Ping { nonce }).unwrap().len(),
                encode_frame(&Reply::Pong { nonce }).unwrap().len(),
            )
        };
        assert_eq!(size([0; 8]), size([0xff; 8]));
        assert_eq!(size([0; 8]), size([0x80, 0, 0, 0, 0, 0, 0, 1]));
    }

    #[tokio::test]
    async fn async_reads_time_out_and_bound() {
        let f = encode_frame(&Request::Ping { nonce: [5; 8] }).unwrap();
        let got: Request = read_frame(&mut &f[..], Limit::Request, Duration::from_secs(1))
            .await
            .unwrap();
        assert_eq!(got, Request::Ping { nonce: [5; 8] });
        // A stalled peer: nothing arrives.
        let (mut a, _b) = tokio::io::duplex(64);
        let e = read_frame::<Request>(&mut a, Limit::Request, Duration::from_millis(20))
            .await
            .unwrap_err();
        assert!(matches!(e, FrameError::Timeout(_)), "{e}");
        // A huge announced length is refused before reading the payload.
        let huge = [0xff, 0xff, 0xff, 0x7f, 1, 2, 3];
        let e = read_frame::<Request>(&mut &huge[..], Limit::Request, Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(matches!(e, FrameError::TooLarge { .. }), "{e}");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]
        /// Random bytes never panic the decoder, and whatever it accepts fits the limit.
        #[test]
        fn decoder_survives_random_bytes(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..2048)) {
            for limit in [Limit::Hello, Limit::Request, Limit::Reply] {
                if let Ok(Some((_, used))) = decode_frame::<Hello>(&bytes, limit) {
                    proptest::prop_assert!(used <= 4 + limit.bytes());
                }
                if let Ok(Some((_, used))) = decode_frame::<Request>(&bytes, limit) {
                    proptest::prop_assert!(used <= 4 + limit.bytes());
                }
                let _ = decode_frame::<Reply>(&bytes, limit);
            }
        }

        /// The async reader on random bytes: no panic, and errors rather than hangs.
        #[test]
        fn async_reader_survives_random_bytes(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
            rt.block_on(async {
                let _ = read_frame::<Hello>(&mut &bytes[..], Limit::Hello, Duration::from_secs(1)).await;
                let _ = read_frame::<Request>(&mut &bytes[..], Limit::Request, Duration::from_secs(1)).await;
            });
        }

        /// A valid frame followed by random bytes decodes to the same message.
        #[test]
        fn valid_prefix_decodes(nonce in proptest::array::uniform8(proptest::num::u8::ANY), tail in proptest::collection::vec(proptest::num::u8::ANY, 0..64)) {
            let mut f = encode_frame(&Request::Ping { nonce }).unwrap();
            let n = f.len();
            f.extend_from_slice(&tail);
            let (m, used) = decode_frame::<Request>(&f, Limit::Request).unwrap().unwrap();
            proptest::prop_assert_eq!(m, Request::Ping { nonce });
            proptest::prop_assert_eq!(used, n);
        }
    }
}
