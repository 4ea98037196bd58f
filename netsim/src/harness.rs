//! The scenario harness: complete meshcc nodes on a simulated network, in one process.
//!
//! Each node is a simulated host (address `10.0.x.y`, port [`PORT`]) running the real
//! transport ([`Mesh`]) on a [`SimSocket`] and its host's [`crate::SimRuntime`]. Keys, the
//! cluster secret and quinn's RNG seeds all come from the network's seeded RNG, so a seed
//! names the whole run. Nodes take their network and clock from the harness, nothing global.
//!
//! With [`Sim::with_membership`] each node also runs the real membership layer
//! ([`Membership`]: foca SWIM over the mesh's datagrams, gossiped adverts, the election) with
//! its own [`ViewHandles`]; discovery is the harness: a new node is given the addresses of the
//! first live nodes as seeds ([`SEEDS_PER_NODE`]), and scenarios may suggest more.
//!
//! With [`Sim::with_jobs`] each node also runs the real distributed-compilation side
//! ([`meshcc::remote::start`]: worker, coordinator service, dispatch client) with a
//! [`FakeCompiler`] as its executor, and scenarios push [`Build`]s through any node's client.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use meshcc::mesh::cluster::ClusterSecret;
use meshcc::mesh::election::{MemberState, NodeClass};
use meshcc::mesh::identity::{NodeId, NodeKey};
use meshcc::mesh::membership::core::Settings as MemberSettings;
use meshcc::mesh::membership::{Membership, Start, Suggestion};
use meshcc::mesh::transport::{Mesh, TransportConfig};
use meshcc::mesh::view::{Advert, Coordinator, Snapshot, ViewHandles};
use meshcc::node::stats::Stats;
use meshcc::remote::client::Client;
use meshcc::remote::dispatch::Policy;
use meshcc::remote::RemoteSettings;
use tokio::sync::mpsc;

use crate::jobs::{Build, BuildNode, FakeCompile, FakeCompiler, Ledger, COMPILER, TOOLCHAIN};
use crate::net::{HostId, Net};

/// The UDP port every simulated node listens on.
pub const PORT: u16 = 7471;

/// How many live nodes a new node is given as seeds (the lowest-numbered ones).
pub const SEEDS_PER_NODE: usize = 3;

/// Worker slots of a node added without saying how many.
pub const DEFAULT_SLOTS: u32 = 2;

/// The PKCS#8 (v1) wrapping of an ed25519 private key seed.
const ED25519_PKCS8_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// A node key made from 32 seed bytes (so a simulation seed fixes every NodeId).
pub fn key_from_seed(seed: [u8; 32]) -> Arc<NodeKey> {
    let mut der = ED25519_PKCS8_PREFIX.to_vec();
    der.extend_from_slice(&seed);
    Arc::new(
        NodeKey::from_pkcs8(&der)
            .unwrap_or_else(|e| panic!("an ed25519 seed always makes a key: {e}")),
    )
}

/// One node of the simulation.
#[derive(Debug)]
pub struct SimNode {
    /// Its host on the network.
    pub host: HostId,
    /// Its identity (kept across a restart).
    pub key: Arc<NodeKey>,
    /// Its transport, while it runs.
    pub mesh: Option<Arc<Mesh>>,
    /// Its view and advert, shared by membership and the job side.
    pub views: ViewHandles,
    /// Its membership layer, while it runs (with [`Sim::with_membership`]).
    pub membership: Option<Membership>,
    /// Its dispatch client (worker and coordinator service behind it), while it runs (with
    /// [`Sim::with_jobs`]).
    pub client: Option<Arc<Client>>,
    /// Its counters (remote jobs, retries, fallbacks), for the current boot.
    pub stats: Option<Arc<Stats>>,
    /// Its worker slots (0: it only sends jobs).
    pub slots: u32,
    /// Discovery: suggestions handed to its membership.
    suggest: Option<mpsc::Sender<Suggestion>>,
    /// Starts so far (membership's boot counter).
    boots: u64,
}

/// The distributed-compilation side of a simulation's nodes.
#[derive(Debug)]
struct Jobs {
    compile: FakeCompile,
    policy: Policy,
    ledger: Ledger,
    scratch: std::path::PathBuf,
}

impl Drop for Jobs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.scratch);
    }
}

/// A set of meshcc nodes on one simulated network (see the module docs).
#[derive(Debug)]
pub struct Sim {
    net: Net,
    secret: ClusterSecret,
    config: TransportConfig,
    membership: Option<MemberSettings>,
    jobs: Option<Jobs>,
    nodes: Vec<SimNode>,
}

impl Sim {
    /// An empty simulation for `seed`, with the transport's default timeouts.
    pub fn new(seed: u64) -> Self {
        Self::with_config(seed, TransportConfig::default())
    }

    /// An empty simulation whose nodes use `config` (its `listen` and `rng_seed` are set per
    /// node by the harness).
    pub fn with_config(seed: u64, config: TransportConfig) -> Self {
        let net = Net::new(seed);
        let secret = ClusterSecret::from_bytes(net.with_rng(|r| r.bytes32()));
        Self {
            net,
            secret,
            config,
            membership: None,
            jobs: None,
            nodes: Vec::new(),
        }
    }

    /// An empty simulation whose nodes also run membership with `settings` (each node's foca
    /// seed is drawn from the simulation's seed).
    pub fn with_membership(seed: u64, config: TransportConfig, settings: MemberSettings) -> Self {
        Self {
            membership: Some(settings),
            ..Self::with_config(seed, config)
        }
    }

    /// An empty simulation whose nodes run membership with `settings` and the real
    /// distributed-compilation side with `policy`, compiling with a [`FakeCompiler`] that
    /// behaves as `compile` says. Job directories go under a temporary folder removed with
    /// the simulation.
    pub fn with_jobs(
        seed: u64,
        config: TransportConfig,
        settings: MemberSettings,
        compile: FakeCompile,
        policy: Policy,
    ) -> Self {
        static RUNS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let run = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let scratch =
            std::env::temp_dir().join(format!("meshcc-netsim-{}-{seed}-{run}", std::process::id()));
        Self {
            jobs: Some(Jobs {
                compile,
                policy,
                ledger: Ledger::default(),
                scratch,
            }),
            ..Self::with_membership(seed, config, settings)
        }
    }

    /// The network, to shape links, partition, move or freeze hosts, and read the trace.
    pub fn net(&self) -> &Net {
        &self.net
    }

    /// The default address of the `i`-th host made: `10.0.x.y`.
    pub fn ip_for(i: usize) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, 0, (i / 250) as u8, (i % 250) as u8 + 1))
    }

    /// Adds and starts a node with a fresh key on a fresh host; returns its index.
    pub fn add_node(&mut self) -> usize {
        let ip = Self::ip_for(self.nodes.len());
        self.add_node_at(ip)
    }

    /// Adds and starts a node with a fresh key at `ip` (which may be a dead node's address).
    pub fn add_node_at(&mut self, ip: IpAddr) -> usize {
        self.add_node_as(ip, NodeClass::Desktop)
    }

    /// Adds and starts a node of this class (server, desktop, laptop) at `ip`.
    pub fn add_node_as(&mut self, ip: IpAddr, class: NodeClass) -> usize {
        self.add_node_with(ip, class, DEFAULT_SLOTS)
    }

    /// Adds and starts a node of this class at `ip` with `slots` worker slots (0: a node that
    /// only sends jobs; slots matter with [`Sim::with_jobs`]).
    pub fn add_node_with(&mut self, ip: IpAddr, class: NodeClass, slots: u32) -> usize {
        let i = self.nodes.len();
        tracing::info!(n = i, %ip, ?class, slots, "harness: node added");
        let host = self
            .net
            .add_host(&format!("n{i}"), ip)
            .unwrap_or_else(|e| panic!("adding node {i} at {ip}: {e}"));
        let key = key_from_seed(self.net.with_rng(|r| r.bytes32()));
        let views = ViewHandles::new();
        views.advert.send_modify(|a: &mut Advert| a.class = class);
        self.nodes.push(SimNode {
            host,
            key,
            mesh: None,
            views,
            membership: None,
            client: None,
            stats: None,
            slots,
            suggest: None,
            boots: 0,
        });
        self.start(i);
        i
    }

    fn start(&mut self, i: usize) {
        // Every task the node spawns logs under this span.
        let _span = tracing::info_span!("node", n = i).entered();
        let node = &self.nodes[i];
        let socket = self
            .net
            .bind(node.host, PORT)
            .unwrap_or_else(|e| panic!("binding node {i}: {e}"));
        let runtime = self
            .net
            .runtime(node.host)
            .unwrap_or_else(|e| panic!("node {i}: {e}"));
        let config = TransportConfig {
            listen: SocketAddr::new(
                self.net
                    .ip(node.host)
                    .unwrap_or_else(|e| panic!("node {i}: {e}")),
                PORT,
            ),
            rng_seed: Some(self.net.with_rng(|r| r.bytes32())),
            ..self.config.clone()
        };
        let mesh = Mesh::with_socket(
            config,
            node.key.clone(),
            self.secret.clone(),
            socket,
            runtime,
            true,
        )
        .unwrap_or_else(|e| panic!("starting node {i}: {e}"));
        self.nodes[i].boots += 1;
        if let Some(settings) = &self.membership {
            let settings = MemberSettings {
                seed: self.net.with_rng(|r| r.next_u64()),
                ..settings.clone()
            };
            let start = Start {
                boot: self.nodes[i].boots,
                joined: self.net.elapsed().as_millis() as u64,
            };
            let (tx, rx) = mpsc::channel(64);
            let seeds: Vec<Suggestion> = (0..self.nodes.len())
                .filter(|&j| j != i && self.nodes[j].mesh.is_some())
                .take(SEEDS_PER_NODE)
                .map(|j| Suggestion {
                    id: self.id(j),
                    addr: self.addr(j),
                })
                .collect();
            for s in seeds {
                let _ = tx.try_send(s);
            }
            let views = self.nodes[i].views.clone();
            self.nodes[i].membership =
                Some(Membership::start(mesh.clone(), views, settings, start, rx));
            self.nodes[i].suggest = Some(tx);
        }
        if let Some(jobs) = &self.jobs {
            let node = &self.nodes[i];
            let runtime = self
                .net
                .runtime(node.host)
                .unwrap_or_else(|e| panic!("node {i}: {e}"));
            let executor = FakeCompiler::new(
                i,
                node.boots,
                runtime,
                self.net.with_rng(|r| r.next_u64()),
                jobs.compile,
                jobs.ledger.clone(),
            );
            let scratch = jobs.scratch.join(format!("n{i}-b{}", node.boots));
            let stats = Arc::new(Stats::load(scratch.join("stats")));
            let settings = RemoteSettings {
                slots: Some(node.slots),
                policy: jobs.policy,
                rng_seed: Some(self.net.with_rng(|r| r.next_u64())),
                ..RemoteSettings::default()
            };
            let client = meshcc::remote::start(
                mesh.clone(),
                &node.views,
                &settings,
                scratch,
                stats.clone(),
                Arc::new(executor),
            );
            if node.slots > 0 {
                client
                    .worker()
                    .add_toolchain(TOOLCHAIN, std::path::PathBuf::from(COMPILER));
            }
            self.nodes[i].client = Some(client);
            self.nodes[i].stats = Some(stats);
        }
        self.nodes[i].mesh = Some(mesh);
    }

    /// Starts a build of `jobs` jobs on node `client`'s dispatch, `parallel` at a time (needs
    /// [`Sim::with_jobs`]; job ids are drawn from the seed).
    pub fn build(&self, client: usize, jobs: usize, parallel: usize) -> Build {
        let setup = self
            .jobs
            .as_ref()
            .unwrap_or_else(|| panic!("Sim::build needs Sim::with_jobs"));
        let node = &self.nodes[client];
        let ids = (0..jobs)
            .map(|_| self.net.with_rng(|r| r.next_u64()))
            .collect();
        let build_node = BuildNode {
            index: client,
            boot: node.boots,
            client: node
                .client
                .clone()
                .unwrap_or_else(|| panic!("node {client} is not running")),
            runtime: self
                .net
                .runtime(node.host)
                .unwrap_or_else(|e| panic!("node {client}: {e}")),
            ledger: setup.ledger.clone(),
            compile: setup.compile,
        };
        let _span = tracing::info_span!("node", n = client).entered();
        Build::start(
            build_node,
            ids,
            parallel,
            self.net.with_rng(|r| r.next_u64()),
        )
    }

    /// The ledger of every compile begun (with [`Sim::with_jobs`]).
    pub fn ledger(&self) -> Option<&Ledger> {
        self.jobs.as_ref().map(|j| &j.ledger)
    }

    /// The harness index of the node with this id.
    pub fn index_of(&self, id: &NodeId) -> Option<usize> {
        self.nodes.iter().position(|n| n.key.id() == *id)
    }

    /// How many times node `i` has started.
    pub fn boots(&self, i: usize) -> u64 {
        self.nodes[i].boots
    }

    /// Worker slots node `i` has in use now (from its advert).
    pub fn busy_slots(&self, i: usize) -> u32 {
        self.nodes[i].views.advert.borrow().slots_busy
    }

    /// Tells node `i`'s membership that node `j` may be reached at its current address.
    pub fn suggest(&self, i: usize, j: usize) {
        if let Some(tx) = &self.nodes[i].suggest {
            let _ = tx.try_send(Suggestion {
                id: self.id(j),
                addr: self.addr(j),
            });
        }
    }

    /// Node `i`'s current view of the mesh.
    pub fn view(&self, i: usize) -> Snapshot {
        self.nodes[i].views.view.borrow().clone()
    }

    /// Reads node `i`'s current view in place (a 200-node view is costly to copy).
    pub fn with_view<T>(&self, i: usize, f: impl FnOnce(&Snapshot) -> T) -> T {
        f(&self.nodes[i].views.view.borrow())
    }

    /// The coordinator node `i` follows, if any.
    pub fn coordinator(&self, i: usize) -> Option<Coordinator> {
        self.nodes[i].views.view.borrow().coordinator
    }

    /// True when every node of `group` sees every other one of `group` alive.
    pub fn all_alive(&self, group: &[usize]) -> bool {
        let ids: BTreeSet<NodeId> = group.iter().map(|&i| self.id(i)).collect();
        group.iter().all(|&i| self.alive_among(i, &ids))
    }

    /// True when node `i` sees every other node of `group` alive (cheaper than
    /// [`Sim::all_alive`], which a 200-node scenario cannot afford to poll every 10 ms).
    pub fn knows_all(&self, i: usize, group: &[usize]) -> bool {
        let ids: BTreeSet<NodeId> = group.iter().map(|&j| self.id(j)).collect();
        self.alive_among(i, &ids)
    }

    /// True when node `i` sees all of `ids` but itself alive.
    fn alive_among(&self, i: usize, ids: &BTreeSet<NodeId>) -> bool {
        let others = ids.len() - usize::from(ids.contains(&self.id(i)));
        self.with_view(i, |v| {
            v.members
                .iter()
                .filter(|m| m.state == MemberState::Alive && ids.contains(&m.id))
                .count()
                == others
        })
    }

    /// The coordinators the nodes of `group` follow (ids, with epochs).
    pub fn coordinators(&self, group: &[usize]) -> BTreeSet<Option<(NodeId, u64)>> {
        group
            .iter()
            .map(|&i| self.coordinator(i).map(|c| (c.id, c.epoch)))
            .collect()
    }

    /// The one coordinator all of `group` follow, if they agree on one and it is one of them.
    pub fn one_coordinator(&self, group: &[usize]) -> Option<(NodeId, u64)> {
        let c = self.coordinators(group);
        match c.iter().next() {
            Some(Some((id, epoch))) if c.len() == 1 && group.iter().any(|&i| self.id(i) == *id) => {
                Some((*id, *epoch))
            }
            _ => None,
        }
    }

    /// Indices of the nodes running now.
    pub fn live(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].mesh.is_some())
            .collect()
    }

    /// Number of nodes made (live or dead).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// True before the first node is added.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Node `i`.
    pub fn node(&self, i: usize) -> &SimNode {
        &self.nodes[i]
    }

    /// Node `i`'s transport; panics if it is dead (a scenario bug).
    pub fn mesh(&self, i: usize) -> &Arc<Mesh> {
        self.nodes[i]
            .mesh
            .as_ref()
            .unwrap_or_else(|| panic!("node {i} is not running"))
    }

    /// Node `i`'s id.
    pub fn id(&self, i: usize) -> NodeId {
        self.nodes[i].key.id()
    }

    /// Node `i`'s current address and port.
    pub fn addr(&self, i: usize) -> SocketAddr {
        let ip = self
            .net
            .ip(self.nodes[i].host)
            .unwrap_or_else(|e| panic!("node {i}: {e}"));
        SocketAddr::new(ip, PORT)
    }

    /// Kills node `i`: its host goes down (sockets closed, tasks aborted), its address is free.
    pub fn kill(&mut self, i: usize) {
        tracing::info!(n = i, "harness: node killed");
        // Membership first (dropping it aborts its task without a goodbye), then the host.
        self.nodes[i].client = None;
        self.nodes[i].stats = None;
        self.nodes[i].membership = None;
        self.nodes[i].suggest = None;
        self.nodes[i].mesh = None;
        self.net
            .kill(self.nodes[i].host)
            .unwrap_or_else(|e| panic!("node {i}: {e}"));
    }

    /// Restarts a killed node on its host, with its old key.
    pub fn restart(&mut self, i: usize) {
        tracing::info!(n = i, "harness: node restarted");
        self.net
            .revive(self.nodes[i].host)
            .unwrap_or_else(|e| panic!("node {i}: {e}"));
        self.start(i);
    }

    /// Moves node `i` to a new address (its connections may migrate).
    pub fn move_to(&self, i: usize, ip: IpAddr) {
        tracing::info!(n = i, %ip, "harness: node moved");
        self.net
            .set_ip(self.nodes[i].host, ip)
            .unwrap_or_else(|e| panic!("node {i}: {e}"));
    }

    /// Closes every running node (tells peers, waits briefly for them to hear).
    pub async fn shutdown(&mut self) {
        for n in &mut self.nodes {
            n.client = None;
            n.stats = None;
            n.membership = None;
            n.suggest = None;
            if let Some(m) = n.mesh.take() {
                m.close().await;
            }
        }
    }

    /// Polls `f` every 10 ms of virtual time until it holds, or panics after `deadline`.
    pub async fn eventually(&self, what: &str, deadline: Duration, mut f: impl FnMut() -> bool) {
        let end = tokio::time::Instant::now() + deadline;
        while !f() {
            if tokio::time::Instant::now() >= end {
                panic!("never happened within {deadline:?} of virtual time: {what}");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
