//! The wrapper's side of the daemon socket: connect, start the daemon when none runs (race-free
//! when many wrappers start at once), send one request and read the reply.

use std::io::{Read, Write};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::config::{ensure_private_dir, ConfigError, Paths};
use crate::node::ipc::{self, CounterEvent, IpcError, Reply, Request};

/// How long a wrapper waits for a daemon it started to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the daemon could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No daemon runs and auto-start was not asked for.
    #[error("no meshcc daemon is running")]
    NotRunning,
    /// The runtime directory is unusable.
    #[error(transparent)]
    Dir(#[from] ConfigError),
    /// The daemon could not be started; says where its log is.
    #[error("cannot start the meshcc daemon: {reason} (see {log})")]
    Start {
        /// What went wrong.
        reason: String,
        /// The daemon log.
        log: String,
    },
    /// The conversation failed (the daemon died, or spoke nonsense).
    #[error(transparent)]
    Ipc(#[from] IpcError),
}

fn connect(paths: &Paths) -> std::io::Result<UnixStream> {
    UnixStream::connect(paths.socket())
}

/// Connects to the daemon, starting it first if `autostart` and none runs.
pub fn connect_or_start(paths: &Paths, autostart: bool) -> Result<UnixStream, ClientError> {
    if let Ok(s) = connect(paths) {
        return Ok(s);
    }
    if !autostart {
        return Err(ClientError::NotRunning);
    }
    let uid = nix::unistd::getuid().as_raw();
    ensure_private_dir(&paths.runtime_dir, uid)?;
    ensure_private_dir(&paths.data_dir, uid)?;
    let start_err = |reason: String| ClientError::Start {
        reason,
        log: paths.daemon_log().display().to_string(),
    };
    // One wrapper at a time starts the daemon; the others wait here, then find it running.
    let lock_file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(paths.start_lock())
        .map_err(|e| start_err(format!("cannot open {}: {e}", paths.start_lock().display())))?;
    let _lock = nix::fcntl::Flock::lock(lock_file, nix::fcntl::FlockArg::LockExclusive).map_err(
        |(_, e)| start_err(format!("cannot lock {}: {e}", paths.start_lock().display())),
    )?;
    if let Ok(s) = connect(paths) {
        return Ok(s);
    }
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(paths.daemon_log())
        .map_err(|e| start_err(format!("cannot open the log: {e}")))?;
    let exe = std::env::current_exe().map_err(|e| start_err(format!("cannot find meshcc: {e}")))?;
    let mut cmd = Command::new(exe);
    cmd.arg("daemon")
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    // SAFETY: setsid and close_range are async-signal-safe system calls.
    unsafe {
        cmd.pre_exec(|| {
            // Own session: the daemon outlives the build and ignores its terminal's signals.
            libc::setsid();
            // Do not hold the build's pipes (make's jobserver, a test's stdout) open.
            libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| start_err(format!("cannot run it: {e}")))?;
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Ok(s) = connect(paths) {
            return Ok(s);
        }
        if let Ok(Some(status)) = child.try_wait() {
            // Lost a race with a daemon started by hand? Then it answers now.
            return connect(paths).map_err(|_| start_err(format!("it exited at once ({status})")));
        }
        if Instant::now() > deadline {
            return Err(start_err(format!(
                "it did not answer within {START_TIMEOUT:?}"
            )));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Sends one request and waits for the reply.
pub fn request(paths: &Paths, req: &Request, autostart: bool) -> Result<Reply, ClientError> {
    let mut stream = connect_or_start(paths, autostart)?;
    exchange(&mut stream, req)
}

/// Sends `req` on `stream` and reads the reply. A daemon that refuses the connection (another
/// user's) answers and closes without reading, so the write may fail (broken pipe) while its
/// answer waits in the socket: the answer is read even then, and the write's error is returned
/// only when none came.
pub fn exchange(stream: &mut (impl Read + Write), req: &Request) -> Result<Reply, ClientError> {
    let written = ipc::write_sync(stream, req);
    match (written, ipc::read_sync(stream, ipc::MAX_REPLY)) {
        (_, Ok(reply)) => Ok(reply),
        (Err(e), Err(_)) | (Ok(()), Err(e)) => Err(e.into()),
    }
}

/// Reports a call the wrapper ran directly; fire-and-forget, never blocks, never fails.
pub fn count(paths: &Paths, event: &CounterEvent) {
    let Ok(bytes) = ipc::encode_payload(event) else {
        return;
    };
    if let Ok(sock) = UnixDatagram::unbound() {
        let _ = sock.set_nonblocking(true);
        let _ = sock.send_to(&bytes, paths.stats_socket());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_sent_before_the_request_is_read_is_returned() {
        let (mut client, mut daemon) = UnixStream::pair().unwrap();
        let refusal = Reply::Error("this daemon serves only its own user".into());
        ipc::write_sync(&mut daemon, &refusal).unwrap();
        // Closed unread: the client's write meets a closed socket (broken pipe).
        drop(daemon);
        assert!(ipc::write_sync(&mut client.try_clone().unwrap(), &Request::Stats).is_err());
        match exchange(&mut client, &Request::Stats) {
            Ok(Reply::Error(e)) => assert!(e.contains("only its own user"), "{e}"),
            other => panic!("expected the refusal, got {other:?}"),
        }
    }

    #[test]
    fn with_no_answer_the_write_error_is_returned() {
        let (mut client, daemon) = UnixStream::pair().unwrap();
        drop(daemon);
        match exchange(&mut client, &Request::Stats) {
            Err(ClientError::Ipc(IpcError::Io(e))) => {
                assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "{e}")
            }
            other => panic!("expected a broken pipe, got {other:?}"),
        }
    }
}
