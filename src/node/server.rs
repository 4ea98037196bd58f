//! The node daemon's local side: the Unix socket server that wrappers and CLI commands talk
//! to, the datagram socket wrappers count direct calls on, and the daemon's life cycle (one
//! per home, graceful stop on request or signal).

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::{UnixDatagram, UnixListener, UnixStream};
use tokio::sync::watch;
use tracing::{debug, error, info, warn};

use crate::cache::store::LocalStore;
use crate::config::{ensure_private_dir, Config};
use crate::mesh::view::ViewHandles;
use crate::node::ipc::{self, CounterEvent, Reply, Request};
use crate::node::pipeline::Pipeline;
use crate::node::stats::{Event, Stats, StatsSnapshot};

/// How long a connection may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a graceful stop waits for running jobs.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(60);

/// Why the daemon did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Another daemon already serves this home.
    #[error("another meshcc daemon is already running for {0} (stop it with `meshcc stop`)")]
    AlreadyRunning(String),
}

/// Everything the request handlers share.
struct Node {
    pipeline: Pipeline,
    stats: Arc<Stats>,
    store: Option<Arc<LocalStore>>,
    uid: u32,
    shutdown: watch::Sender<bool>,
    /// The mesh endpoint and membership, when a cluster is configured.
    mesh: Option<crate::mesh::Started>,
    /// The membership view and this node's advert, shared with the job side.
    views: ViewHandles,
}

impl Node {
    fn snapshot(&self) -> StatsSnapshot {
        let mut s = self.stats.snapshot();
        if let Some(store) = &self.store {
            let usage = store.usage();
            s.cache_entries = usage.entries;
            s.cache_bytes = usage.bytes;
            s.cache_max_bytes = usage.max_bytes;
        }
        s
    }
}

/// Runs the daemon until it is stopped. Holds the home's daemon lock for its whole life.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let uid = nix::unistd::getuid().as_raw();
    let paths = &config.paths;
    ensure_private_dir(&paths.runtime_dir, uid)?;
    ensure_private_dir(&paths.data_dir, uid)?;

    let lock_file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(paths.daemon_lock())
        .with_context(|| format!("cannot open {}", paths.daemon_lock().display()))?;
    let mut lock = nix::fcntl::Flock::lock(lock_file, nix::fcntl::FlockArg::LockExclusiveNonblock)
        .map_err(|_| StartError::AlreadyRunning(paths.runtime_dir.display().to_string()))?;
    // The lock file names the daemon's pid, for operators and tests.
    {
        use std::io::Write;
        lock.set_len(0)?;
        write!(lock, "{}", std::process::id())?;
    }

    // We hold the lock: any socket file left is from a daemon that died.
    let socket = paths.socket();
    let stats_socket = paths.stats_socket();
    let _ = std::fs::remove_file(&socket);
    let _ = std::fs::remove_file(&stats_socket);

    let store = match LocalStore::open(paths.cache_dir.clone(), config.cache_max_bytes) {
        Ok(s) => Some(Arc::new(s)),
        Err(e) => {
            error!("the cache cannot be used, every compile will run uncached: {e}");
            None
        }
    };
    let stats = Arc::new(Stats::load(paths.data_dir.join("stats.json")));
    let (shutdown, mut stopping) = watch::channel(false);
    // The mesh endpoint (only with a cluster secret); its failure leaves the local cache working.
    let views = ViewHandles::new();
    let mesh = crate::mesh::start(&config, &views)
        .await
        .unwrap_or_else(|e| {
            error!("the mesh endpoint cannot start, this node works alone: {e:#}");
            None
        });
    let node = Arc::new(Node {
        pipeline: Pipeline::new(store.clone(), stats.clone()),
        stats: stats.clone(),
        store,
        uid,
        shutdown,
        mesh,
        views,
    });

    // Bind the counter socket first: a wrapper that can reach the stream socket finds it.
    let counters = UnixDatagram::bind(&stats_socket)
        .with_context(|| format!("cannot bind {}", stats_socket.display()))?;
    let listener =
        UnixListener::bind(&socket).with_context(|| format!("cannot bind {}", socket.display()))?;
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600))?;
    info!(socket = %socket.display(), pid = std::process::id(), "meshcc daemon ready");

    let flusher = tokio::spawn({
        let stats = stats.clone();
        async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                if let Err(e) = stats.flush() {
                    warn!("cannot save statistics: {e}");
                }
            }
        }
    });
    let counter_task = tokio::spawn(count_datagrams(counters, stats.clone()));

    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let mut jobs = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let node = node.clone();
                    jobs.spawn(async move { serve(node, stream).await });
                }
                Err(e) => warn!("accept failed: {e}"),
            },
            Some(_) = jobs.join_next(), if !jobs.is_empty() => {}
            _ = stopping.changed() => break,
            _ = sigterm.recv() => break,
            _ = sigint.recv() => break,
        }
    }

    info!(running = jobs.len(), "stopping");
    drop(listener);
    let _ = std::fs::remove_file(&socket);
    let _ = std::fs::remove_file(&stats_socket);
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while jobs.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        warn!("jobs still running after {DRAIN_TIMEOUT:?}; stopping anyway");
    }
    if let Some(mesh) = &node.mesh {
        mesh.close().await;
    }
    flusher.abort();
    counter_task.abort();
    stats.flush()?;
    info!("stopped");
    Ok(())
}

/// Serves one connection: one request, one reply.
async fn serve(node: Arc<Node>, mut stream: UnixStream) {
    match stream.peer_cred() {
        Ok(cred) if cred.uid() == node.uid => {}
        Ok(cred) => {
            warn!(uid = cred.uid(), "refused a connection from another user");
            let _ = ipc::write_async(
                &mut stream,
                &Reply::Error("this daemon serves only its own user".into()),
            )
            .await;
            return;
        }
        Err(e) => {
            warn!("cannot check the peer of a connection: {e}");
            return;
        }
    }
    let request = match tokio::time::timeout(
        REQUEST_TIMEOUT,
        ipc::read_async::<Request>(&mut stream, ipc::MAX_REQUEST),
    )
    .await
    {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            debug!("bad request: {e}");
            node.stats.count(Event::Error("bad_request"));
            let _ = ipc::write_async(&mut stream, &Reply::Error(e.to_string())).await;
            return;
        }
        Err(_) => {
            debug!("request timed out");
            node.stats.count(Event::Error("bad_request"));
            return;
        }
    };
    let reply = match request {
        Request::Compile(req) => node.pipeline.compile(req).await,
        Request::Stats => Reply::Stats(Box::new(node.snapshot())),
        Request::ZeroStats => {
            node.stats.zero();
            Reply::Done
        }
        Request::Stop => {
            let _ = node.shutdown.send(true);
            Reply::Done
        }
        Request::MeshStatus => {
            Reply::MeshStatus(node.mesh.as_ref().map(|m| Box::new(m.status(&node.views))))
        }
    };
    if let Err(e) = ipc::write_async(&mut stream, &reply).await {
        debug!("cannot send the reply (the wrapper went away?): {e}");
    }
}

/// Counts the direct calls wrappers report on the datagram socket. Untrusted bytes: anything
/// that does not decode is dropped.
async fn count_datagrams(socket: UnixDatagram, stats: Arc<Stats>) {
    let mut buf = vec![0u8; 4096];
    loop {
        let Ok(n) = socket.recv(&mut buf).await else {
            continue;
        };
        match ipc::decode::<CounterEvent>(&buf[..n]) {
            Ok(CounterEvent::NotCompile(why)) => stats.count(Event::NotCompile(why.reason())),
            Ok(CounterEvent::Uncacheable(why)) => stats.count(Event::Uncacheable(why.reason())),
            Err(e) => debug!("dropped a malformed counter datagram: {e}"),
        }
    }
}
