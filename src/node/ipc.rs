//! The local protocol between wrappers (and CLI commands) and the node daemon, over the
//! daemon's Unix socket: one request and one reply per connection, each a postcard message in a
//! length-prefixed frame. The socket is private to the user (0700 directory, peer uid checked),
//! but frames are still bounded and decoded defensively.

use std::io::{Read, Write};

use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::compiler::args::{NotCompile, Uncacheable};
use crate::node::stats::StatsSnapshot;

/// Version of this local protocol; wrapper and daemon of different versions do not talk.
pub const IPC_VERSION: u32 = 1;

/// Largest request frame (arguments and environment of one compile).
pub const MAX_REQUEST: usize = 16 << 20;
/// Largest reply frame (stdout and stderr of one compile).
pub const MAX_REPLY: usize = 256 << 20;

/// A compile the wrapper hands to the daemon.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CompileRequest {
    /// Absolute path of the real compiler.
    pub compiler: String,
    /// The name the compiler was invoked by (`gcc`, `g++`, `cc`, …).
    pub compiler_name: String,
    /// Arguments after the compiler, response files expanded.
    pub args: Vec<String>,
    /// The caller's apparent working directory (`$PWD` when it names the real one).
    pub cwd: String,
    /// The caller's environment (UTF-8 variables only).
    pub env: Vec<(String, String)>,
    /// Whether the caller's stderr is a terminal (decides colour replay).
    pub stderr_is_tty: bool,
    /// The caller's umask, applied to files written for it.
    pub umask: u32,
}

/// A request on the daemon socket.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Request {
    /// Run (or fetch from the cache) one compile.
    Compile(CompileRequest),
    /// Report the statistics.
    Stats,
    /// Zero the statistics.
    ZeroStats,
    /// Shut the daemon down gracefully.
    Stop,
    /// Report the mesh: this node and its peers.
    MeshStatus,
}

/// The daemon's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Reply {
    /// The compile ran or came from the cache: replay this and exit with `exit_code`.
    Compiled {
        /// Exit code for the wrapper.
        exit_code: i32,
        /// Bytes for the wrapper's stdout.
        stdout: Vec<u8>,
        /// Bytes for the wrapper's stderr.
        stderr: Vec<u8>,
    },
    /// The daemon could not handle the compile: the wrapper runs the compiler itself.
    RunLocally {
        /// Why, for the wrapper's warning.
        reason: String,
    },
    /// Statistics.
    Stats(Box<StatsSnapshot>),
    /// The command was done.
    Done,
    /// The request was refused or failed.
    Error(String),
    /// The mesh as this node sees it; `None` when no cluster is configured.
    MeshStatus(Option<Box<crate::mesh::proto::StatusInfo>>),
}

/// A frame with the protocol version, so a stale wrapper and a new daemon fail cleanly.
#[derive(Debug, Serialize, Deserialize)]
struct Envelope<T> {
    version: u32,
    body: T,
}

/// Errors on the local socket.
#[derive(Debug, thiserror::Error)]
pub enum IpcError {
    /// The socket failed.
    #[error("daemon socket: {0}")]
    Io(#[from] std::io::Error),
    /// A frame was larger than allowed.
    #[error("frame of {0} bytes exceeds the limit")]
    TooLarge(usize),
    /// A frame could not be decoded.
    #[error("malformed message: {0}")]
    Decode(#[from] postcard::Error),
    /// The peer speaks another protocol version.
    #[error(
        "protocol version {0} (expected {IPC_VERSION}): restart the daemon with `meshcc stop`"
    )]
    Version(u32),
}

/// Encodes `body` as a versioned payload without a length prefix (one datagram).
pub fn encode_payload<T: Serialize>(body: &T) -> Result<Vec<u8>, IpcError> {
    Ok(postcard::to_stdvec(&Envelope {
        version: IPC_VERSION,
        body,
    })?)
}

/// Encodes `body` as one length-prefixed frame.
pub fn encode<T: Serialize>(body: &T) -> Result<Vec<u8>, IpcError> {
    let payload = encode_payload(body)?;
    let mut frame = Vec::with_capacity(payload.len() + 4);
    frame.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    frame.extend_from_slice(&payload);
    Ok(frame)
}

/// Decodes a frame's payload (without the length prefix).
pub fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<T, IpcError> {
    let env: Envelope<T> = postcard::from_bytes(payload)?;
    if env.version != IPC_VERSION {
        return Err(IpcError::Version(env.version));
    }
    Ok(env.body)
}

fn check_len(header: [u8; 4], max: usize) -> Result<usize, IpcError> {
    let len = u32::from_le_bytes(header) as usize;
    if len > max {
        return Err(IpcError::TooLarge(len));
    }
    Ok(len)
}

/// Writes one frame (blocking).
pub fn write_sync<T: Serialize>(w: &mut impl Write, body: &T) -> Result<(), IpcError> {
    w.write_all(&encode(body)?)?;
    w.flush()?;
    Ok(())
}

/// Reads one frame of at most `max` bytes (blocking).
pub fn read_sync<T: DeserializeOwned>(r: &mut impl Read, max: usize) -> Result<T, IpcError> {
    let mut header = [0u8; 4];
    r.read_exact(&mut header)?;
    let len = check_len(header, max)?;
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload)?;
    decode(&payload)
}

/// Writes one frame (async).
pub async fn write_async<T: Serialize>(
    w: &mut (impl tokio::io::AsyncWrite + Unpin),
    body: &T,
) -> Result<(), IpcError> {
    use tokio::io::AsyncWriteExt;
    w.write_all(&encode(body)?).await?;
    w.flush().await?;
    Ok(())
}

/// Reads one frame of at most `max` bytes (async).
pub async fn read_async<T: DeserializeOwned>(
    r: &mut (impl tokio::io::AsyncRead + Unpin),
    max: usize,
) -> Result<T, IpcError> {
    use tokio::io::AsyncReadExt;
    let mut header = [0u8; 4];
    r.read_exact(&mut header).await?;
    let len = check_len(header, max)?;
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload).await?;
    decode(&payload)
}

/// A counter event a wrapper sends, fire-and-forget, on the daemon's datagram socket for calls
/// it ran directly without asking the daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CounterEvent {
    /// A call that was not a compile.
    NotCompile(NotCompile),
    /// A compile that cannot be cached.
    Uncacheable(Uncacheable),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let frame = encode(&Request::Stats).unwrap();
        let back: Request = read_sync(&mut &frame[..], MAX_REQUEST).unwrap();
        assert!(matches!(back, Request::Stats));
    }

    #[test]
    fn oversized_and_garbage_frames_are_errors() {
        let mut big = (MAX_REQUEST as u32 + 1).to_le_bytes().to_vec();
        big.extend_from_slice(&[0; 16]);
        assert!(matches!(
            read_sync::<Request>(&mut &big[..], MAX_REQUEST),
            Err(IpcError::TooLarge(_))
        ));
        let garbage = [5u8, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff];
        assert!(read_sync::<Request>(&mut &garbage[..], MAX_REQUEST).is_err());
        let short = [9u8, 0, 0, 0, 1];
        assert!(read_sync::<Request>(&mut &short[..], MAX_REQUEST).is_err());
    }

    #[test]
    fn other_versions_are_refused() {
        let payload = postcard::to_stdvec(&Envelope {
            version: IPC_VERSION + 1,
            body: Request::Stats,
        })
        .unwrap();
        assert!(matches!(
            decode::<Request>(&payload),
            Err(IpcError::Version(_))
        ));
    }

    proptest::proptest! {
        #[test]
        fn decoding_random_bytes_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..256)) {
            let _ = decode::<Request>(&bytes);
            let _ = decode::<Reply>(&bytes);
            let _ = decode::<CounterEvent>(&bytes);
        }
    }
}
