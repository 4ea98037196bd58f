//! Allocation: the pure [`Allocator`] fed from the membership view, served to clients by the
//! coordinator ([`Request::Alloc`], [`Request::Release`]) and run by any client on its own view
//! when no coordinator answers (the same code: [`Allocation::run`]).
//!
//! Every node holds a [`Coordinator`]; it answers allocation requests only while the view names
//! this node as the coordinator. A grant is released when the client reports the job over,
//! when its connection closes, or when it expires ([`GRANT_TTL`]).

use std::collections::{BTreeSet, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use tokio::sync::watch;
use tracing::{debug, info_span, Instrument};

use crate::compiler::toolchain::ToolchainId;
use crate::mesh::alloc::{self, Allocator, GrantId, SplitMix64, Unavailable};
use crate::mesh::election::MemberState;
use crate::mesh::identity::NodeId;
use crate::mesh::proto::{self, AllocRequest, Candidate, Reply, Request};
use crate::mesh::transport::Served;
use crate::mesh::view::{Advert, Snapshot};

/// How long a granted slot counts as taken without news (the worker's gossiped load takes over).
pub const GRANT_TTL: Duration = Duration::from_secs(5);

/// An allocator with its random source and clock, fed from a view.
pub struct Allocation {
    alloc: Allocator,
    rng: SplitMix64,
    started: Instant,
}

/// A successful allocation: candidates with address hints, and the grant to release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Granted {
    /// Best first.
    pub candidates: Vec<Candidate>,
    /// The grant.
    pub grant: GrantId,
    /// The epoch the allocator works for.
    pub epoch: u64,
}

impl Allocation {
    /// An empty allocator; `seed` makes its choices reproducible.
    pub fn new(seed: u64) -> Self {
        Self {
            alloc: Allocator::new(0),
            rng: SplitMix64::new(seed),
            started: Instant::now(),
        }
    }

    /// The allocator a client runs on its own view when no coordinator answers: its grants
    /// carry no coordinator epoch (workers do not check them), so no worker's fence applies.
    pub fn own_view(seed: u64) -> Self {
        let mut a = Self::new(seed);
        a.alloc.set_epoch(u64::MAX);
        a
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Brings the worker table in line with `view` (and this node's own `advert` when it offers
    /// its slots too), then chooses up to three candidates for `client`.
    pub fn run(
        &mut self,
        view: &Snapshot,
        own: Option<(NodeId, &Advert)>,
        client: NodeId,
        toolchain: ToolchainId,
        exclude: &[NodeId],
    ) -> Result<Granted, Unavailable> {
        self.sync(view, own);
        let now = self.now_ms();
        let request = alloc::Request {
            toolchain,
            exclude: exclude.iter().copied().collect::<BTreeSet<_>>(),
            client,
        };
        let a = self.alloc.allocate(
            &request,
            now,
            now + GRANT_TTL.as_millis() as u64,
            &mut self.rng,
        )?;
        let candidates = a
            .candidates
            .iter()
            .map(|id| Candidate {
                node_id: *id,
                addrs: view.member(id).map(|m| m.addrs.clone()).unwrap_or_default(),
            })
            .collect();
        Ok(Granted {
            candidates,
            grant: a.grant,
            epoch: self.alloc.epoch(),
        })
    }

    /// Releases one grant.
    pub fn release(&mut self, grant: GrantId) -> bool {
        self.alloc.release(grant)
    }

    /// Releases one grant held by `client` (another client's grant is left alone).
    pub fn release_of(&mut self, grant: GrantId, client: NodeId) -> bool {
        self.alloc.release_of(grant, client)
    }

    /// Releases every grant of a client that went away.
    pub fn release_client(&mut self, client: NodeId) -> usize {
        self.alloc.release_client(client)
    }

    /// Free slots on a worker as counted here (tests and status).
    pub fn free_slots(&self, id: NodeId) -> Option<u32> {
        self.alloc.free_slots(id)
    }

    fn sync(&mut self, view: &Snapshot, own: Option<(NodeId, &Advert)>) {
        if let Some(c) = view.coordinator {
            self.alloc.set_epoch(c.epoch);
        }
        let mut seen = HashSet::new();
        let members = view
            .members
            .iter()
            .filter_map(|m| m.advert.as_ref().map(|a| (m.id, m.state, a, m.fence)));
        let own = own.map(|(id, a)| (id, MemberState::Alive, a, 0));
        for (id, state, advert, fence) in members.chain(own) {
            seen.insert(id);
            self.alloc.upsert(
                id,
                alloc::Worker {
                    alive: state == MemberState::Alive,
                    toolchains: advert.toolchains.iter().copied().collect(),
                    slots_total: advert.slots_total,
                    slots_busy: advert.slots_busy,
                    speed: advert.speed,
                    fence,
                },
            );
        }
        let gone: Vec<NodeId> = self
            .alloc
            .worker_ids()
            .into_iter()
            .filter(|id| !seen.contains(id))
            .collect();
        for id in gone {
            self.alloc.remove(id);
        }
    }
}

/// This node's allocation service (active while the view names it coordinator).
pub struct Coordinator {
    me: NodeId,
    view: watch::Receiver<Snapshot>,
    advert: watch::Receiver<Advert>,
    state: Mutex<Allocation>,
    watched: Mutex<HashSet<NodeId>>,
}

impl Coordinator {
    /// The service of node `me`, reading the view and this node's own advert; `seed` (mixed
    /// with the node id) drives the allocator's choices.
    pub fn new(
        me: NodeId,
        view: watch::Receiver<Snapshot>,
        advert: watch::Receiver<Advert>,
        seed: u64,
    ) -> Arc<Self> {
        let mine = u64::from_le_bytes(me.0[..8].try_into().unwrap_or([0; 8]));
        Arc::new(Self {
            me,
            view,
            advert,
            state: Mutex::new(Allocation::new(seed ^ mine)),
            watched: Mutex::new(HashSet::new()),
        })
    }

    /// Whether the view names this node as the coordinator.
    pub fn is_coordinator(&self) -> bool {
        self.view
            .borrow()
            .coordinator
            .is_some_and(|c| c.id == self.me)
    }

    /// Allocates for `client` (this node's own client calls it directly).
    pub fn allocate(
        &self,
        client: NodeId,
        toolchain: ToolchainId,
        exclude: &[NodeId],
    ) -> Result<Granted, Unavailable> {
        let view = self.view.borrow().clone();
        let advert = self.advert.borrow().clone();
        let mut state = self.state.lock().map_err(|_| Unavailable::NoWorker)?;
        state.run(&view, Some((self.me, &advert)), client, toolchain, exclude)
    }

    /// Releases a grant.
    pub fn release(&self, grant: GrantId) {
        if let Ok(mut s) = self.state.lock() {
            s.release(grant);
        }
    }

    /// Serves [`Request::Alloc`] and [`Request::Release`] from a peer.
    pub async fn serve(self: Arc<Self>, served: Served) {
        let Served {
            peer,
            conn,
            request,
            mut send,
            ..
        } = served;
        let t = Duration::from_secs(10);
        let reply = match request {
            Request::Alloc(AllocRequest {
                job,
                attempt,
                toolchain,
                exclude,
            }) => {
                let span = info_span!("alloc", job = %format!("{job:016x}"), attempt, client = %peer.short());
                async {
                    if !self.is_coordinator() {
                        return Reply::Error("this node is not the coordinator".into());
                    }
                    self.watch_client(peer, conn.clone());
                    let reply = match self.allocate(peer, toolchain, &exclude) {
                        Ok(g) => Reply::Allocated {
                            epoch: g.epoch,
                            grant: g.grant.0,
                            candidates: g.candidates,
                        },
                        Err(why) => Reply::Unavailable(why),
                    };
                    debug!(?reply, "allocation");
                    reply
                }
                .instrument(span)
                .await
            }
            Request::Release { grant } => {
                if let Ok(mut st) = self.state.lock() {
                    st.release_of(GrantId(grant), peer);
                }
                Reply::Released
            }
            _ => return,
        };
        if proto::write_frame(&mut send, &reply, t).await.is_ok() {
            let _ = send.finish();
        }
    }

    /// Releases a client's grants when its connection closes.
    fn watch_client(self: &Arc<Self>, client: NodeId, conn: quinn::Connection) {
        let fresh = self.watched.lock().is_ok_and(|mut w| w.insert(client));
        if !fresh {
            return;
        }
        let me = Arc::downgrade(self);
        crate::spawn(async move {
            conn.closed().await;
            if let Some(me) = me.upgrade() {
                if let Ok(mut s) = me.state.lock() {
                    let n = s.release_client(client);
                    debug!(client = %client.short(), released = n, "client connection closed");
                }
                if let Ok(mut w) = me.watched.lock() {
                    w.remove(&client);
                }
            }
        });
    }
}

/// A seed that differs between nodes and runs.
pub fn rand_seed() -> u64 {
    let h = blake3::hash(
        format!("{}:{:?}", std::process::id(), std::time::SystemTime::now()).as_bytes(),
    );
    u64::from_le_bytes(h.as_bytes()[..8].try_into().unwrap_or([0; 8]))
}

/// Address hints for a worker: the coordinator's, then this node's view.
pub fn addrs_for(candidate: &Candidate, view: &Snapshot) -> Vec<SocketAddr> {
    let mut addrs = candidate.addrs.clone();
    if let Some(m) = view.member(&candidate.node_id) {
        for a in &m.addrs {
            if !addrs.contains(a) {
                addrs.push(*a);
            }
        }
    }
    addrs
}
