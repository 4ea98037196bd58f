//! The QUIC transport: one quinn endpoint per node that both accepts and dials, a peer table
//! keyed by [`NodeId`] with one live connection per pair, and requests on bidirectional streams.
//!
//! Every connection, in either direction, goes through the same gate before anything is
//! served: pinned TLS ([`super::tls`]), the allow and deny lists, then the [`Hello`] exchange on
//! the control stream with the cluster-secret proof ([`super::cluster`]), all under
//! `handshake_timeout`. The dialer proves first; the acceptor answers with its own proof only
//! after checking the dialer's, so a non-member learns nothing.
//!
//! Simultaneous dials (quic-p2p.md §3.4): when two authenticated live connections exist for a
//! pair, both sides keep the one dialed by the lower NodeId, and close the other after
//! `duplicate_drain`. A connection that has closed is replaced by any new one.
//!
//! Datagrams (membership gossip) ride on the member connections: every connection in the peer
//! table gets a reader that hands datagrams of at most [`MAX_DATAGRAM`] bytes, tagged with the
//! authenticated sender, to the one sink set by [`Mesh::datagrams`]; the rest are dropped.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use quinn::{Connection, VarInt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use super::cluster::{self, ClusterSecret, Role};
use super::identity::{NodeId, NodeKey};
use super::proto::{
    self, FrameError, Hello, Limit, MemberInfo, Reply, Request, StatusInfo, CHUNK, MAX_BULK,
    PROTOCOL_VERSION,
};
use super::tls::{self, IdentityMismatch, TlsError};

/// The UDP port a node listens on unless told otherwise (`MESHCC_LISTEN`, `[mesh] listen`).
pub const DEFAULT_PORT: u16 = 7471;

/// The largest datagram accepted from a peer (larger ones are dropped and counted).
pub const MAX_DATAGRAM: usize = 1200;

/// Datagrams queued for the sink before new ones are dropped.
const DATAGRAM_QUEUE: usize = 1024;

/// One datagram from an authenticated peer.
pub type Datagram = (NodeId, Bytes);

/// Application close codes on mesh connections.
pub mod close_code {
    /// Orderly shutdown of the node.
    pub const SHUTDOWN: u32 = 0;
    /// The peer broke the protocol (bad Hello, wrong version, no certificate).
    pub const PROTOCOL: u32 = 1;
    /// The peer failed the cluster-secret proof.
    pub const AUTH: u32 = 2;
    /// The peer's NodeId is denied or not allowed.
    pub const NOT_ALLOWED: u32 = 3;
    /// The peer did not finish the Hello exchange in time.
    pub const TIMEOUT: u32 = 4;
    /// A duplicate connection lost the simultaneous-dial tie-break.
    pub const DUPLICATE: u32 = 5;
    /// An ephemeral tool is done.
    pub const DONE: u32 = 6;
    /// The dialer found the connection dead at its old address and dialed the new one.
    pub const STALE: u32 = 7;
    /// This node's address changed: a connection it accepted cannot follow (only the dialing
    /// side of a QUIC connection migrates), so it is closed and the peer dialed from the new one.
    pub const MOVED: u32 = 8;
}

/// What [`Mesh::connect`] does with the live connection it holds to the node it dials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Held {
    /// It goes to the address being dialed: use it.
    Use,
    /// It goes elsewhere (the peer may have moved): use it only if it answers a ping.
    Verify,
}

/// The rule for a held live connection whose remote address is `remote` when `wanted` is
/// dialed. Addresses compare in canonical form (`[::ffff:a.b.c.d]` is `a.b.c.d`), since a
/// dual-stack socket reports IPv4 peers as mapped IPv6.
pub fn held_rule(remote: SocketAddr, wanted: SocketAddr) -> Held {
    let canon = |a: SocketAddr| (a.ip().to_canonical(), a.port());
    if canon(remote) == canon(wanted) {
        Held::Use
    } else {
        Held::Verify
    }
}

/// Settings of a node's transport; every field has a working default.
#[derive(Debug, Clone)]
pub struct TransportConfig {
    /// Where the endpoint binds (default `0.0.0.0:7471`).
    pub listen: SocketAddr,
    /// Keep-alive PING interval.
    pub keep_alive: Duration,
    /// A connection with no traffic for this long is dead (the smaller of both peers' applies).
    pub idle_timeout: Duration,
    /// Deadline for the TLS handshake plus the Hello exchange.
    pub handshake_timeout: Duration,
    /// Deadline for each request header, reply header or bulk chunk.
    pub request_timeout: Duration,
    /// How long the loser of a simultaneous dial stays open before it is closed.
    pub duplicate_drain: Duration,
    /// If set, only these nodes may connect or be connected to.
    pub allow: Option<HashSet<NodeId>>,
    /// Nodes refused in either direction.
    pub deny: HashSet<NodeId>,
    /// SO_RCVBUF / SO_SNDBUF of the UDP socket (capped by the kernel's rmem_max/wmem_max).
    pub socket_buffer: usize,
    /// Concurrent requests a peer may have open on one connection.
    pub max_streams: u32,
    /// Seed for quinn's endpoint RNG, so a simulated run repeats exactly; `None` (the default,
    /// and always in production) draws it from the OS.
    pub rng_seed: Option<[u8; 32]>,
    /// How long a held connection to a peer dialed at another address has to answer a ping
    /// before it counts as dead and is replaced by a new dial.
    pub verify_timeout: Duration,
}

impl Default for TransportConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], DEFAULT_PORT)),
            keep_alive: Duration::from_millis(500),
            idle_timeout: Duration::from_millis(2500),
            handshake_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            duplicate_drain: Duration::from_secs(1),
            allow: None,
            deny: HashSet::new(),
            socket_buffer: 4 << 20,
            max_streams: 1024,
            rng_seed: None,
            verify_timeout: Duration::from_secs(1),
        }
    }
}

impl TransportConfig {
    fn permits(&self, id: &NodeId) -> bool {
        !self.deny.contains(id) && self.allow.as_ref().is_none_or(|a| a.contains(id))
    }

    fn quinn_transport(&self) -> quinn::TransportConfig {
        let mut t = quinn::TransportConfig::default();
        t.keep_alive_interval(Some(self.keep_alive));
        t.max_idle_timeout(quinn::IdleTimeout::try_from(self.idle_timeout).ok());
        t.max_concurrent_bidi_streams(VarInt::from_u32(self.max_streams));
        t.max_concurrent_uni_streams(VarInt::from_u32(0));
        // Bound what one connection may make us buffer (the default is unlimited).
        t.receive_window(VarInt::from_u32(64 << 20));
        t.send_window(64 << 20);
        t.initial_rtt(Duration::from_millis(10));
        // Membership rides in datagrams; a small queue each way (oldest dropped when full).
        t.datagram_receive_buffer_size(Some(256 << 10));
        t.datagram_send_buffer_size(256 << 10);
        t
    }
}

/// Errors of the mesh transport; each says what went wrong and what to do.
#[derive(Debug, thiserror::Error)]
pub enum MeshError {
    /// The UDP socket cannot be opened.
    #[error("cannot open UDP port {addr}: {source}; set MESHCC_LISTEN=HOST:PORT (or [mesh] listen) to use another")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// TLS configuration failed.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The node at that address is not the node the dial expected.
    #[error("{0}: the address now belongs to another node (check the id, or find the node's new address)")]
    IdentityMismatch(IdentityMismatch),
    /// The dial could not start.
    #[error("cannot dial {addr}: {reason}")]
    Connect {
        /// The address.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
    /// The connection failed or was lost.
    #[error("connection to {peer}: {source}")]
    Connection {
        /// The peer's id (short).
        peer: String,
        /// Why.
        source: quinn::ConnectionError,
    },
    /// The peer closed the connection with a reason (e.g. it refused our cluster proof).
    #[error("node {peer} refused the connection: {reason}")]
    Refused {
        /// The peer's id (short).
        peer: String,
        /// Its reason.
        reason: String,
    },
    /// The peer failed our checks.
    #[error("node {peer} was refused: {reason}")]
    PeerRejected {
        /// The peer's id (short).
        peer: String,
        /// Why.
        reason: String,
    },
    /// Nothing came back in time.
    #[error("{what} timed out after {after:?}; is the peer running and reachable over UDP?")]
    Timeout {
        /// What was waited for.
        what: &'static str,
        /// How long.
        after: Duration,
    },
    /// A frame could not be read or written.
    #[error("{0}")]
    Frame(#[from] FrameError),
    /// The peer answered something that makes no sense for the request.
    #[error("unexpected reply: {0}")]
    Protocol(String),
    /// The peer answered with an error.
    #[error("the peer answered with an error: {0}")]
    Remote(String),
    /// This node is closed.
    #[error("the mesh endpoint is closed")]
    Closed,
}

/// One request handed to the node's [`Service`]: the header is read, any bulk bytes are still
/// on `recv`, and the reply goes on `send`.
pub struct Served {
    /// The authenticated peer.
    pub peer: NodeId,
    /// The connection it came on (a slot leased to the peer ends when it closes).
    pub conn: Connection,
    /// The request header.
    pub request: Request,
    /// Where the reply goes.
    pub send: quinn::SendStream,
    /// The rest of the request (bulk bytes).
    pub recv: quinn::RecvStream,
}

/// A future a [`Service`] returns.
pub type ServiceFuture = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// Serves the job-side requests ([`Request::RunJob`], [`Request::Alloc`],
/// [`Request::Release`]); set once with [`Mesh::set_service`].
pub type Service = Arc<dyn Fn(Served) -> ServiceFuture + Send + Sync>;

/// One entry of the peer table.
struct Peer {
    conn: Connection,
    dialed_by: NodeId,
    addrs: Vec<SocketAddr>,
}

/// A mesh node's transport: endpoint, identity, cluster secret and peer table.
pub struct Mesh {
    endpoint: quinn::Endpoint,
    key: Arc<NodeKey>,
    secret: ClusterSecret,
    config: TransportConfig,
    transport: Arc<quinn::TransportConfig>,
    peers: Mutex<HashMap<NodeId, Peer>>,
    dialing: Mutex<HashMap<NodeId, Arc<tokio::sync::Mutex<()>>>>,
    accept_task: Mutex<Option<JoinHandle<()>>>,
    local_addr: Option<SocketAddr>,
    accepting: bool,
    service: std::sync::OnceLock<Service>,
    sink: Arc<Mutex<Option<mpsc::Sender<Datagram>>>>,
    dropped_datagrams: Arc<std::sync::atomic::AtomicU64>,
}

impl std::fmt::Debug for Mesh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mesh")
            .field("id", &self.key.id())
            .field("local_addr", &self.local_addr)
            .finish()
    }
}

/// Opens the UDP socket: wildcard (or the given) address, 4 MiB buffers, dual-stack for `[::]`.
fn open_socket(addr: SocketAddr, buffer: usize) -> Result<std::net::UdpSocket, MeshError> {
    use socket2::{Domain, Protocol, Socket, Type};
    let err = |source| MeshError::Bind { addr, source };
    let s =
        Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP)).map_err(err)?;
    if addr.is_ipv6() {
        let _ = s.set_only_v6(false);
    }
    if let Err(e) = s.set_recv_buffer_size(buffer) {
        warn!("cannot set the UDP receive buffer to {buffer} bytes: {e}");
    }
    if let Err(e) = s.set_send_buffer_size(buffer) {
        warn!("cannot set the UDP send buffer to {buffer} bytes: {e}");
    }
    s.set_nonblocking(true).map_err(err)?;
    s.bind(&addr.into()).map_err(err)?;
    Ok(s.into())
}

impl Mesh {
    /// Binds a node's endpoint on `config.listen` (real UDP, tokio) and starts accepting.
    pub fn bind(
        config: TransportConfig,
        key: Arc<NodeKey>,
        secret: ClusterSecret,
    ) -> Result<Arc<Self>, MeshError> {
        let socket = open_socket(config.listen, config.socket_buffer)?;
        let runtime: Arc<dyn quinn::Runtime> = Arc::new(quinn::TokioRuntime);
        let socket = runtime
            .wrap_udp_socket(socket)
            .map_err(|source| MeshError::Bind {
                addr: config.listen,
                source,
            })?;
        Self::with_socket(config, key, secret, socket, runtime, true)
    }

    /// An endpoint for a short-lived tool (`meshcc ping`): an ephemeral port, dials only.
    pub fn ephemeral(key: Arc<NodeKey>, secret: ClusterSecret) -> Result<Arc<Self>, MeshError> {
        let config = TransportConfig {
            listen: SocketAddr::from(([0, 0, 0, 0], 0)),
            ..TransportConfig::default()
        };
        let socket = open_socket(config.listen, 1 << 20)?;
        let runtime: Arc<dyn quinn::Runtime> = Arc::new(quinn::TokioRuntime);
        let socket = runtime
            .wrap_udp_socket(socket)
            .map_err(|source| MeshError::Bind {
                addr: config.listen,
                source,
            })?;
        Self::with_socket(config, key, secret, socket, runtime, false)
    }

    /// Builds the node on any quinn socket and runtime (a simulated network plugs in here).
    /// With `accept`, the endpoint serves incoming connections.
    pub fn with_socket(
        config: TransportConfig,
        key: Arc<NodeKey>,
        secret: ClusterSecret,
        socket: Arc<dyn quinn::AsyncUdpSocket>,
        runtime: Arc<dyn quinn::Runtime>,
        accept: bool,
    ) -> Result<Arc<Self>, MeshError> {
        let transport = Arc::new(config.quinn_transport());
        let server = if accept {
            let mut s = quinn::ServerConfig::with_crypto(Arc::new(tls::server_config(&key)?));
            s.transport_config(transport.clone());
            s.max_incoming(256);
            Some(s)
        } else {
            None
        };
        let local_addr = socket.local_addr().ok();
        let mut endpoint_config = quinn::EndpointConfig::default();
        endpoint_config.rng_seed(config.rng_seed);
        let endpoint =
            quinn::Endpoint::new_with_abstract_socket(endpoint_config, server, socket, runtime)
                .map_err(|source| MeshError::Bind {
                    addr: config.listen,
                    source,
                })?;
        let mesh = Arc::new(Self {
            endpoint,
            key,
            secret,
            config,
            transport,
            peers: Mutex::new(HashMap::new()),
            dialing: Mutex::new(HashMap::new()),
            accept_task: Mutex::new(None),
            local_addr,
            accepting: accept,
            service: std::sync::OnceLock::new(),
            sink: Arc::new(Mutex::new(None)),
            dropped_datagrams: Arc::default(),
        });
        if accept {
            let task = crate::spawn(accept_loop(Arc::downgrade(&mesh), mesh.endpoint.clone()));
            if let Ok(mut slot) = mesh.accept_task.lock() {
                *slot = Some(task);
            }
            info!(node = %mesh.id(), addr = ?local_addr, "mesh endpoint listening");
        }
        Ok(mesh)
    }

    /// Installs the service for job requests (worker, coordinator); only the first call counts.
    /// Until then such requests are answered with an error.
    pub fn set_service(&self, service: Service) {
        let _ = self.service.set(service);
    }

    /// The transport settings.
    pub fn config(&self) -> &TransportConfig {
        &self.config
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.key.id()
    }

    /// The address the endpoint is bound to.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.endpoint.local_addr().ok().or(self.local_addr)
    }

    /// This node's own address changed: closes the connections peers dialed to it (they cannot
    /// migrate and would die at the idle timeout), so the next message to such a peer dials it
    /// from the new address. Connections this node dialed migrate by themselves.
    pub fn address_changed(&self) {
        let me = self.id();
        let accepted: Vec<Connection> = self
            .peers
            .lock()
            .map(|peers| {
                peers
                    .values()
                    .filter(|p| p.dialed_by != me)
                    .map(|p| p.conn.clone())
                    .collect()
            })
            .unwrap_or_default();
        debug!(
            closed = accepted.len(),
            "this node moved; closing the connections peers dialed to it"
        );
        for c in accepted {
            c.close(VarInt::from_u32(close_code::MOVED), b"moved");
        }
    }

    /// Closes every connection and the endpoint, and waits (briefly) until peers were told.
    pub async fn close(&self) {
        if let Ok(mut t) = self.accept_task.lock() {
            if let Some(t) = t.take() {
                t.abort();
            }
        }
        self.endpoint.close(
            VarInt::from_u32(close_code::SHUTDOWN),
            b"node shutting down",
        );
        if let Ok(mut p) = self.peers.lock() {
            p.clear();
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), self.endpoint.wait_idle()).await;
    }

    /// Takes the datagrams peers send from now on (replacing any earlier receiver). The queue is
    /// bounded: when the receiver falls behind, new datagrams are dropped and counted.
    pub fn datagrams(&self) -> mpsc::Receiver<Datagram> {
        let (tx, rx) = mpsc::channel(DATAGRAM_QUEUE);
        if let Ok(mut sink) = self.sink.lock() {
            *sink = Some(tx);
        }
        rx
    }

    /// Datagrams dropped so far: too large, or arriving with no room in the queue.
    pub fn dropped_datagrams(&self) -> u64 {
        self.dropped_datagrams
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The live connection to `id`, if any.
    pub fn connection(&self, id: &NodeId) -> Option<Connection> {
        let peers = self.peers.lock().ok()?;
        peers
            .get(id)
            .filter(|p| p.conn.close_reason().is_none())
            .map(|p| p.conn.clone())
    }

    /// A connection to `id` at `addr`: the live one from the peer table, or a new dial (dials to
    /// one id are coalesced). The handshake fails unless the node there has key `id`.
    ///
    /// A held connection whose remote address is not `addr` may be stale (the peer moved and
    /// the old path is dead, but the idle timeout has not fired yet): it is used only if it
    /// answers a ping within `verify_timeout`; otherwise it is closed and `addr` dialed anew
    /// ([`held_rule`]).
    pub async fn connect(
        self: &Arc<Self>,
        id: NodeId,
        addr: SocketAddr,
    ) -> Result<Connection, MeshError> {
        if let Some(c) = self.connection(&id) {
            if held_rule(c.remote_address(), addr) == Held::Use {
                return Ok(c);
            }
        }
        let lock = {
            let mut d = self.dialing.lock().map_err(|_| MeshError::Closed)?;
            d.entry(id).or_default().clone()
        };
        let _guard = lock.lock().await;
        let held = match self.connection(&id) {
            Some(c) if held_rule(c.remote_address(), addr) == Held::Verify => {
                self.verify_held(c, id, addr).await
            }
            other => other,
        };
        let result = match held {
            Some(c) => Ok(c),
            None => self.dial(id, addr, !self.accepting).await.map(|conn| {
                if self.accepting {
                    let kept = self.register(id, conn.clone(), self.id());
                    crate::spawn(serve_connection(Arc::downgrade(self), conn, id));
                    kept
                } else {
                    conn
                }
            }),
        };
        if let Ok(mut d) = self.dialing.lock() {
            // Forget the per-id lock once nobody else waits on it.
            if d.get(&id).is_some_and(|l| Arc::strong_count(l) <= 2) {
                d.remove(&id);
            }
        }
        result
    }

    /// Pings a held connection whose address differs from the one being dialed: `Some` if it
    /// answered in time, else it is closed (so the new dial replaces it) and `None`.
    async fn verify_held(
        &self,
        conn: Connection,
        id: NodeId,
        addr: SocketAddr,
    ) -> Option<Connection> {
        let t = self.config.verify_timeout;
        match tokio::time::timeout(t, self.ping(&conn)).await {
            Ok(Ok(_)) => Some(conn),
            outcome => {
                let why = match outcome {
                    Ok(Err(e)) => e.to_string(),
                    _ => format!("no answer in {t:?}"),
                };
                info!(
                    peer = %id.short(),
                    old = %conn.remote_address(),
                    new = %addr,
                    "the connection at the old address is dead ({why}); dialing the new one"
                );
                conn.close(VarInt::from_u32(close_code::STALE), b"stale path");
                None
            }
        }
    }

    /// A connection of this node's own to `id` at `addr`, outside the peer table: dialed and
    /// authenticated like any other, announced as not a member connection (the peer serves it
    /// but does not pool it), never replaced by the duplicate rule. The dispatch client runs its
    /// jobs on such connections: being their dialer, this node keeps them across a change of
    /// its own address (QUIC migration), which an accepted connection would not survive.
    pub async fn dial_private(
        &self,
        id: NodeId,
        addr: SocketAddr,
    ) -> Result<Connection, MeshError> {
        self.dial(id, addr, true).await
    }

    /// Dials and authenticates a connection, without touching the peer table.
    async fn dial(
        &self,
        expected: NodeId,
        addr: SocketAddr,
        ephemeral: bool,
    ) -> Result<Connection, MeshError> {
        if !self.config.permits(&expected) {
            return Err(MeshError::PeerRejected {
                peer: expected.short(),
                reason: "it is on the deny list or not on the allow list".into(),
            });
        }
        let conn = self.tls_dial(expected, addr).await?;
        let hs = self.config.handshake_timeout;
        let result = tokio::time::timeout(hs, self.dialer_hello(&conn, expected, ephemeral)).await;
        let outcome = match result {
            Ok(Ok(())) => return Ok(conn),
            Ok(Err(e)) => e,
            Err(_) => MeshError::Timeout {
                what: "the cluster handshake",
                after: hs,
            },
        };
        // If the peer closed on us, its reason is the better error.
        let err = match conn.close_reason() {
            Some(quinn::ConnectionError::ApplicationClosed(c)) => MeshError::Refused {
                peer: expected.short(),
                reason: String::from_utf8_lossy(&c.reason).into_owned(),
            },
            _ => outcome,
        };
        let code = match err {
            MeshError::PeerRejected { .. } => close_code::AUTH,
            MeshError::Timeout { .. } => close_code::TIMEOUT,
            _ => close_code::PROTOCOL,
        };
        conn.close(VarInt::from_u32(code), err.to_string().as_bytes());
        Err(err)
    }

    /// The TLS part of a dial: pinned to `expected`.
    pub(crate) async fn tls_dial(
        &self,
        expected: NodeId,
        addr: SocketAddr,
    ) -> Result<Connection, MeshError> {
        let (crypto, verifier) = tls::client_config(&self.key, expected)?;
        let mut client = quinn::ClientConfig::new(Arc::new(crypto));
        client.transport_config(self.transport.clone());
        let connecting = self
            .endpoint
            .connect_with(client, addr, &tls::server_name(&expected))
            .map_err(|e| MeshError::Connect {
                addr,
                reason: e.to_string(),
            })?;
        let hs = self.config.handshake_timeout;
        match tokio::time::timeout(hs, connecting).await {
            Ok(Ok(c)) => Ok(c),
            Ok(Err(source)) => Err(match verifier.mismatch() {
                Some(m) => MeshError::IdentityMismatch(m),
                None => MeshError::Connection {
                    peer: expected.short(),
                    source,
                },
            }),
            Err(_) => Err(verifier
                .mismatch()
                .map(MeshError::IdentityMismatch)
                .unwrap_or(MeshError::Timeout {
                    what: "the QUIC handshake",
                    after: hs,
                })),
        }
    }

    fn hello(
        &self,
        conn: &Connection,
        role: Role,
        peer: &NodeId,
        ephemeral: bool,
    ) -> Result<Hello, MeshError> {
        let e =
            cluster::exporter(conn).ok_or_else(|| MeshError::Protocol("no TLS exporter".into()))?;
        Ok(Hello {
            version: PROTOCOL_VERSION,
            node_id: self.id(),
            listen_port: if self.accepting {
                self.local_addr().map(|a| a.port())
            } else {
                None
            },
            ephemeral,
            auth_tag: self.secret.tag(role, &e, &self.id(), peer),
        })
    }

    /// Checks a peer's Hello: version, id matching its TLS key, cluster proof.
    fn check_hello(
        &self,
        conn: &Connection,
        h: &Hello,
        role: Role,
        peer: &NodeId,
    ) -> Result<(), MeshError> {
        let reject = |reason: String| MeshError::PeerRejected {
            peer: peer.short(),
            reason,
        };
        if h.version != PROTOCOL_VERSION {
            return Err(reject(format!(
                "it speaks mesh protocol {} and this node {PROTOCOL_VERSION}; run the same meshcc version on all nodes",
                h.version
            )));
        }
        if h.node_id != *peer {
            return Err(reject("its Hello names another node than its key".into()));
        }
        let e =
            cluster::exporter(conn).ok_or_else(|| MeshError::Protocol("no TLS exporter".into()))?;
        if !self.secret.verify(role, &e, peer, &self.id(), &h.auth_tag) {
            return Err(reject(
                "it failed the cluster-secret proof (wrong or no cluster secret: run `meshcc join TOKEN` there)".into(),
            ));
        }
        Ok(())
    }

    async fn dialer_hello(
        &self,
        conn: &Connection,
        peer: NodeId,
        ephemeral: bool,
    ) -> Result<(), MeshError> {
        let t = self.config.handshake_timeout;
        let (mut send, mut recv) =
            conn.open_bi()
                .await
                .map_err(|source| MeshError::Connection {
                    peer: peer.short(),
                    source,
                })?;
        proto::write_frame(
            &mut send,
            &self.hello(conn, Role::Dialer, &peer, ephemeral)?,
            t,
        )
        .await?;
        let h: Hello = proto::read_frame(&mut recv, Limit::Hello, t).await?;
        self.check_hello(conn, &h, Role::Acceptor, &peer)?;
        let _ = send.finish();
        Ok(())
    }

    /// The acceptor's gate: TLS done; check lists and the dialer's Hello, answer with ours.
    async fn accept_gate(&self, conn: &Connection) -> Result<(NodeId, Hello), (u32, String)> {
        let Some(peer) = tls::peer_node_id(conn) else {
            return Err((
                close_code::PROTOCOL,
                "no usable node certificate or ALPN".into(),
            ));
        };
        if !self.config.permits(&peer) {
            return Err((
                close_code::NOT_ALLOWED,
                format!("node {peer} is not allowed in this cluster"),
            ));
        }
        let t = self.config.handshake_timeout;
        let exchange = async {
            let (mut send, mut recv) = conn
                .accept_bi()
                .await
                .map_err(|e| (close_code::PROTOCOL, e.to_string()))?;
            let h: Hello = proto::read_frame(&mut recv, Limit::Hello, t)
                .await
                .map_err(|e| (close_code::PROTOCOL, format!("bad Hello: {e}")))?;
            self.check_hello(conn, &h, Role::Dialer, &peer)
                .map_err(|e| (close_code::AUTH, e.to_string()))?;
            let mine = self
                .hello(conn, Role::Acceptor, &peer, false)
                .map_err(|e| (close_code::PROTOCOL, e.to_string()))?;
            proto::write_frame(&mut send, &mine, t)
                .await
                .map_err(|e| (close_code::PROTOCOL, e.to_string()))?;
            let _ = send.finish();
            Ok::<_, (u32, String)>(h)
        };
        match tokio::time::timeout(t, exchange).await {
            Ok(Ok(h)) => Ok((peer, h)),
            Ok(Err(e)) => Err(e),
            Err(_) => Err((close_code::TIMEOUT, "no Hello in time".into())),
        }
    }

    /// Puts an authenticated connection in the table, applying the dedupe rules; returns the
    /// connection kept for the pair.
    fn register(&self, peer: NodeId, conn: Connection, dialed_by: NodeId) -> Connection {
        self.read_datagrams(peer, conn.clone());
        let Ok(mut peers) = self.peers.lock() else {
            return conn;
        };
        let addr = conn.remote_address();
        let (kept, loser) = match peers.get_mut(&peer) {
            Some(old)
                if old.conn.close_reason().is_none()
                    && old.conn.stable_id() != conn.stable_id() =>
            {
                // Same direction: a deliberate re-dial replaces. A peer seen at a new address
                // replaces its old path (dead, not yet timed out). Otherwise lower dialer wins.
                let moved = old.conn.remote_address() != addr;
                let new_wins = old.dialed_by == dialed_by || moved || dialed_by < old.dialed_by;
                if new_wins {
                    let loser = std::mem::replace(&mut old.conn, conn.clone());
                    old.dialed_by = dialed_by;
                    push_addr(&mut old.addrs, addr);
                    (conn, Some(loser))
                } else {
                    (old.conn.clone(), Some(conn))
                }
            }
            Some(old) => {
                old.conn = conn.clone();
                old.dialed_by = dialed_by;
                push_addr(&mut old.addrs, addr);
                (conn, None)
            }
            None => {
                peers.insert(
                    peer,
                    Peer {
                        conn: conn.clone(),
                        dialed_by,
                        addrs: vec![addr],
                    },
                );
                (conn, None)
            }
        };
        if let Some(loser) = loser {
            debug!(peer = %peer.short(), "duplicate connection; closing the loser after a drain");
            let drain = self.config.duplicate_drain;
            crate::spawn(async move {
                tokio::time::sleep(drain).await;
                loser.close(
                    VarInt::from_u32(close_code::DUPLICATE),
                    b"duplicate connection",
                );
            });
        }
        kept
    }

    /// Hands the connection's datagrams to the sink until it closes.
    fn read_datagrams(&self, peer: NodeId, conn: Connection) {
        let sink = self.sink.clone();
        let dropped = self.dropped_datagrams.clone();
        crate::spawn(async move {
            while let Ok(d) = conn.read_datagram().await {
                let tx = sink.lock().ok().and_then(|s| s.clone());
                let delivered =
                    d.len() <= MAX_DATAGRAM && tx.is_some_and(|tx| tx.try_send((peer, d)).is_ok());
                if !delivered {
                    dropped.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        });
    }

    fn unregister(&self, peer: &NodeId, conn: &Connection) {
        if let Ok(mut peers) = self.peers.lock() {
            if peers
                .get(peer)
                .is_some_and(|p| p.conn.stable_id() == conn.stable_id())
            {
                peers.remove(peer);
            }
        }
    }

    /// This node's view: its id, address and connected peers.
    pub fn status(&self) -> StatusInfo {
        let members = self
            .peers
            .lock()
            .map(|peers| {
                let mut m: Vec<MemberInfo> = peers
                    .iter()
                    .map(|(id, p)| MemberInfo {
                        node_id: *id,
                        addrs: current_first(&p.addrs, p.conn.remote_address())
                            .iter()
                            .map(|a| a.to_string())
                            .collect(),
                        state: if p.conn.close_reason().is_none() {
                            "connected".into()
                        } else {
                            "closed".into()
                        },
                        connected: p.conn.close_reason().is_none(),
                        slots_total: None,
                        slots_busy: None,
                        class: None,
                    })
                    .collect();
                m.sort_by_key(|m| m.node_id);
                m
            })
            .unwrap_or_default();
        StatusInfo {
            node_id: self.id(),
            listen: self.local_addr().map(|a| a.to_string()),
            members,
            coordinator: None,
            membership: None,
        }
    }

    /// Sends one request without bulk data and reads its reply.
    pub async fn request(&self, conn: &Connection, req: &Request) -> Result<Reply, MeshError> {
        let t = self.config.request_timeout;
        let (mut send, mut recv) = open(conn, t).await?;
        proto::write_frame(&mut send, req, t).await?;
        let _ = send.finish();
        let reply = proto::read_frame(&mut recv, Limit::Reply, t).await?;
        Ok(reply)
    }

    /// Round-trip time of one [`Request::Ping`].
    pub async fn ping(&self, conn: &Connection) -> Result<Duration, MeshError> {
        let nonce = random_nonce();
        let start = Instant::now();
        match self.request(conn, &Request::Ping { nonce }).await? {
            Reply::Pong { nonce: n } if n == nonce => Ok(start.elapsed()),
            other => Err(unexpected(other)),
        }
    }

    /// Streams `data` to the peer and returns the BLAKE3 digest it computed.
    pub async fn upload(&self, conn: &Connection, data: &[u8]) -> Result<[u8; 32], MeshError> {
        let t = self.config.request_timeout;
        let (mut send, mut recv) = open(conn, t).await?;
        proto::write_frame(
            &mut send,
            &Request::Upload {
                len: data.len() as u64,
            },
            t,
        )
        .await?;
        proto::write_bulk(&mut send, data, t).await?;
        let _ = send.finish();
        match proto::read_frame(&mut recv, Limit::Reply, t).await? {
            Reply::Digest(d) => Ok(d),
            other => Err(unexpected(other)),
        }
    }

    /// Fetches `len` pattern bytes from the peer and returns their BLAKE3 digest.
    pub async fn download(
        &self,
        conn: &Connection,
        len: u64,
        seed: u64,
    ) -> Result<[u8; 32], MeshError> {
        let t = self.config.request_timeout;
        let (mut send, mut recv) = open(conn, t).await?;
        proto::write_frame(&mut send, &Request::Download { len, seed }, t).await?;
        let _ = send.finish();
        match proto::read_frame(&mut recv, Limit::Reply, t).await? {
            Reply::Bulk { len: n } if n == len => {
                let mut h = blake3::Hasher::new();
                proto::read_bulk(&mut recv, len, t, |c| {
                    h.update(c);
                })
                .await?;
                Ok(*h.finalize().as_bytes())
            }
            other => Err(unexpected(other)),
        }
    }
}

/// The addresses a peer was seen at, led by the connection's current one (it changes when
/// the peer migrates).
fn current_first(addrs: &[SocketAddr], current: SocketAddr) -> Vec<SocketAddr> {
    let mut v = addrs.to_vec();
    push_addr(&mut v, current);
    v
}

fn push_addr(addrs: &mut Vec<SocketAddr>, a: SocketAddr) {
    addrs.retain(|x| *x != a);
    addrs.insert(0, a);
    addrs.truncate(8);
}

fn unexpected(r: Reply) -> MeshError {
    match r {
        Reply::Error(e) => MeshError::Remote(e),
        other => MeshError::Protocol(format!("{other:?}").chars().take(200).collect()),
    }
}

fn random_nonce() -> [u8; 8] {
    let mut b = [0u8; 8];
    let _ = rustls::crypto::ring::default_provider()
        .secure_random
        .fill(&mut b);
    b
}

async fn open(
    conn: &Connection,
    t: Duration,
) -> Result<(quinn::SendStream, quinn::RecvStream), MeshError> {
    match tokio::time::timeout(t, conn.open_bi()).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(source)) => Err(MeshError::Connection {
            peer: tls::peer_node_id(conn)
                .map(|p| p.short())
                .unwrap_or_default(),
            source,
        }),
        Err(_) => Err(MeshError::Timeout {
            what: "opening a stream",
            after: t,
        }),
    }
}

/// Accepts connections until the endpoint closes; one task per incoming connection, so a
/// slow handshake never holds up the others.
async fn accept_loop(mesh: Weak<Mesh>, endpoint: quinn::Endpoint) {
    while let Some(incoming) = endpoint.accept().await {
        let Some(m) = mesh.upgrade() else { break };
        crate::spawn(async move {
            let remote = incoming.remote_address();
            let t = m.config.handshake_timeout;
            let conn = match tokio::time::timeout(t, incoming).await {
                Ok(Ok(c)) => c,
                Ok(Err(e)) => {
                    debug!(%remote, "incoming handshake failed: {e}");
                    return;
                }
                Err(_) => {
                    debug!(%remote, "incoming handshake timed out");
                    return;
                }
            };
            match m.accept_gate(&conn).await {
                Ok((peer, hello)) => {
                    debug!(peer = %peer.short(), %remote, "peer authenticated");
                    if !hello.ephemeral {
                        m.register(peer, conn.clone(), peer);
                    }
                    let weak = Arc::downgrade(&m);
                    drop(m);
                    serve_connection(weak, conn, peer).await;
                }
                Err((code, reason)) => {
                    info!(%remote, "refused a connection: {reason}");
                    conn.close(VarInt::from_u32(code), reason.as_bytes());
                }
            }
        });
    }
}

/// Serves the peer's requests on an authenticated connection until it closes.
async fn serve_connection(mesh: Weak<Mesh>, conn: Connection, peer: NodeId) {
    loop {
        let (send, recv) = match conn.accept_bi().await {
            Ok(s) => s,
            Err(e) => {
                debug!(peer = %peer.short(), "connection ended: {e}");
                break;
            }
        };
        let Some(m) = mesh.upgrade() else { break };
        let conn = conn.clone();
        crate::spawn(async move {
            if let Err(e) = serve_stream(&m, send, recv, conn, peer).await {
                debug!(peer = %peer.short(), "request failed: {e}");
            }
        });
    }
    if let Some(m) = mesh.upgrade() {
        m.unregister(&peer, &conn);
    }
}

/// Serves one request stream.
async fn serve_stream(
    mesh: &Mesh,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    conn: Connection,
    peer: NodeId,
) -> Result<(), MeshError> {
    let t = mesh.config.request_timeout;
    let req = proto::read_request(&mut recv, t).await?;
    match req {
        Request::RunJob(_) | Request::Alloc(_) | Request::Release { .. } => {
            let Some(service) = mesh.service.get().cloned() else {
                proto::write_frame(
                    &mut send,
                    &Reply::Error("this node serves no jobs yet".into()),
                    t,
                )
                .await?;
                let _ = send.finish();
                return Ok(());
            };
            service(Served {
                peer,
                conn,
                request: req,
                send,
                recv,
            })
            .await;
            return Ok(());
        }
        Request::Ping { nonce } => proto::write_frame(&mut send, &Reply::Pong { nonce }, t).await?,
        Request::Status => proto::write_frame(&mut send, &Reply::Status(mesh.status()), t).await?,
        Request::Upload { len } if len <= MAX_BULK => {
            let mut h = blake3::Hasher::new();
            proto::read_bulk(&mut recv, len, t, |c| {
                h.update(c);
            })
            .await?;
            proto::write_frame(&mut send, &Reply::Digest(*h.finalize().as_bytes()), t).await?;
        }
        Request::Download { len, seed } if len <= MAX_BULK => {
            proto::write_frame(&mut send, &Reply::Bulk { len }, t).await?;
            let mut buf = vec![0u8; CHUNK];
            let mut off = 0u64;
            while off < len {
                let n = ((len - off) as usize).min(CHUNK);
                proto::pattern(seed, off, &mut buf[..n]);
                proto::write_bulk(&mut send, &buf[..n], t).await?;
                off += n as u64;
            }
        }
        Request::Upload { len } | Request::Download { len, .. } => {
            proto::write_frame(
                &mut send,
                &Reply::Error(format!("{len} bytes exceeds the bulk limit of {MAX_BULK}")),
                t,
            )
            .await?
        }
    }
    let _ = send.finish();
    Ok(())
}
