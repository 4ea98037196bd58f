//! The client side of distributed compilation: carries out the [`Dispatch`] state machine's
//! actions for one job — take a local slot, ask for candidates (the coordinator, else the same
//! allocator on this node's own view), send the job to a worker, wait — and reports what came
//! of it. The compile result is returned to the pipeline, which writes, caches and replays it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use quinn::Connection;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, info_span, warn, Instrument};

use super::coordinator::{addrs_for, Allocation, Coordinator};
use super::dispatch::{Action, Dispatch, Event, FallbackReason, NoCandidates, Policy};
use super::worker::{Slot, Worker};
use crate::compiler::args::{CompileMode, Language};
use crate::compiler::toolchain::ToolchainId;
use crate::mesh::alloc::{GrantId, Unavailable};
use crate::mesh::election::MemberState;
use crate::mesh::identity::NodeId;
use crate::mesh::proto::{
    self, AllocRequest, Candidate, InputForm, JobHeader, JobResult, Limit, Reply, Request,
};
use crate::mesh::transport::Mesh;
use crate::mesh::view::Snapshot;
use crate::node::stats::{Event as Stat, Stats};

/// How long to wait for the coordinator's answer before using this node's own view.
const ALLOC_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a dial to a worker or the coordinator may take (a LAN handshake takes milliseconds).
const DIAL_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a worker or coordinator that failed one job is avoided by the others, so that one
/// job finds a dead node for all of them (membership prunes it soon after).
const AVOID_FOR: Duration = Duration::from_secs(5);
/// How long to wait before asking again when every worker is busy.
const BUSY_WAIT: Duration = Duration::from_millis(50);
/// The longest a worker may take to answer a job (its own timeout is shorter).
const JOB_REPLY_TIMEOUT: Duration = Duration::from_secs(660);

/// One job to run remotely.
#[derive(Debug, Clone)]
pub struct RemoteJob {
    /// The client's JobId.
    pub job: u64,
    /// The toolchain identity.
    pub toolchain: ToolchainId,
    /// The source language (the worker compiles its preprocessed form).
    pub language: Language,
    /// Object or assembly.
    pub mode: CompileMode,
    /// What the input text is.
    pub form: InputForm,
    /// The remote compile's options.
    pub args: Vec<String>,
    /// Forwarded environment (locale, reproducibility).
    pub env: Vec<(String, String)>,
    /// The input text, zstd-compressed.
    pub input: Vec<u8>,
}

/// What came of a job.
pub enum Outcome {
    /// A worker compiled it.
    Remote {
        /// The worker.
        worker: NodeId,
        /// Its attempt.
        attempt: u32,
        /// Exit code and diagnostics.
        result: JobResult,
        /// The output (uncompressed), empty when the compile failed.
        output: Vec<u8>,
    },
    /// A local slot is free: compile here (by choice).
    LocalSlot(Slot),
    /// No worker could take it: compile here, counted; `warn` to tell the user.
    Fallback {
        /// Why.
        reason: FallbackReason,
        /// Policy `warn`.
        warn: bool,
    },
    /// Policy `fail`: give up with the reason.
    Failed(FallbackReason),
}

/// Where an allocation's grant lives, to release it; a coordinator's grant carries its epoch.
enum Grant {
    Peer(NodeId, u64, u64),
    Here(GrantId, u64),
    Local(GrantId),
}

impl Grant {
    /// The coordinator epoch a worker checks, when a coordinator made the grant.
    fn epoch(&self) -> Option<u64> {
        match self {
            Grant::Peer(_, _, e) | Grant::Here(_, e) => Some(*e),
            Grant::Local(_) => None,
        }
    }

    /// The coordinator that made it, if any.
    fn coordinator(&self, me: NodeId) -> Option<NodeId> {
        match self {
            Grant::Peer(c, _, _) => Some(*c),
            Grant::Here(..) => Some(me),
            Grant::Local(_) => None,
        }
    }
}

/// What one send to a worker came to.
enum Sent {
    Done(JobResult, Vec<u8>),
    Busy,
    Stale(u64),
    Unusable(String),
    Refused(String),
    Lost(String),
}

/// A node's dispatch client.
pub struct Client {
    mesh: Arc<Mesh>,
    view: watch::Receiver<Snapshot>,
    worker: Arc<Worker>,
    coordinator: Arc<Coordinator>,
    policy: Policy,
    local: Mutex<Allocation>,
    stats: Arc<Stats>,
    /// Nodes that failed a job lately, and until when they are avoided.
    avoid: Mutex<HashMap<NodeId, Instant>>,
    /// This node's own connections for jobs and allocations, by peer (each behind its own
    /// lock, held while it is dialed).
    conns: Mutex<HashMap<NodeId, Arc<tokio::sync::Mutex<Option<Connection>>>>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("node", &self.mesh.id().short())
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// The client of the node with this mesh, view, worker and coordinator service; `seed`
    /// drives the choices of its own allocator (used when no coordinator answers).
    pub fn new(
        mesh: Arc<Mesh>,
        view: watch::Receiver<Snapshot>,
        worker: Arc<Worker>,
        coordinator: Arc<Coordinator>,
        policy: Policy,
        stats: Arc<Stats>,
        seed: u64,
    ) -> Arc<Self> {
        Arc::new(Self {
            mesh,
            view,
            worker,
            coordinator,
            policy,
            local: Mutex::new(Allocation::own_view(!seed)),
            stats,
            avoid: Mutex::new(HashMap::new()),
            conns: Mutex::new(HashMap::new()),
        })
    }

    /// The node's worker (its local slots).
    pub fn worker(&self) -> &Arc<Worker> {
        &self.worker
    }

    /// Runs the dispatch of one job to its outcome.
    pub async fn dispatch(&self, job: &RemoteJob) -> Outcome {
        let local = self.worker.try_slot();
        let (mut d, mut action) = Dispatch::start(self.policy, local.is_some());
        let mut local = local;
        let mut grant: Option<Grant> = None;
        let mut hints: HashMap<NodeId, Vec<SocketAddr>> = HashMap::new();
        loop {
            action = match action {
                Action::LocalSlot => match local.take() {
                    Some(slot) => return Outcome::LocalSlot(slot),
                    None => d.on(Event::NoCandidates(NoCandidates::AllBusy)),
                },
                Action::Allocate { attempt, exclude } => {
                    self.release(grant.take()).await;
                    let (event, g) = self.allocate(job, attempt, exclude, &mut hints).await;
                    grant = g;
                    d.on(event)
                }
                Action::Send { worker, attempt } => {
                    let span = info_span!("send", worker = %worker.short(), attempt);
                    let epoch = grant.as_ref().and_then(Grant::epoch);
                    let sent = self
                        .send(job, worker, attempt, epoch, &hints)
                        .instrument(span)
                        .await;
                    match sent {
                        Sent::Done(result, output) => match d.on(Event::Done(worker, attempt)) {
                            Action::Accept => {
                                self.release(grant.take()).await;
                                return Outcome::Remote {
                                    worker,
                                    attempt,
                                    result,
                                    output,
                                };
                            }
                            other => other,
                        },
                        Sent::Busy => d.on(Event::Busy(worker)),
                        Sent::Stale(epoch) => {
                            // The coordinator is stale, not the worker: skip the coordinator.
                            let me = self.mesh.id();
                            if let Some(c) = grant.as_ref().and_then(|g| g.coordinator(me)) {
                                debug!(coordinator = %c.short(), epoch, "stale coordinator; allocating from this node's view");
                                self.avoid(c);
                            }
                            d.on(Event::Busy(worker))
                        }
                        Sent::Unusable(why) => {
                            debug!(worker = %worker.short(), "worker unusable: {why}");
                            d.on(Event::Unusable(worker))
                        }
                        Sent::Refused(why) => {
                            warn!(worker = %worker.short(), "job refused: {why}");
                            d.on(Event::Refused(worker))
                        }
                        Sent::Lost(why) => {
                            self.avoid(worker);
                            warn!(worker = %worker.short(), attempt, "worker lost mid-job ({why}); running the job again elsewhere");
                            let next = d.on(Event::Lost(worker, attempt));
                            if matches!(next, Action::Allocate { .. }) {
                                self.stats.count(Stat::Retry);
                            }
                            next
                        }
                    }
                }
                Action::Wait => {
                    tokio::select! {
                        slot = self.worker.slot() => match slot {
                            Some(slot) => {
                                self.release(grant.take()).await;
                                return Outcome::LocalSlot(slot);
                            }
                            None => d.on(Event::Waited),
                        },
                        _ = tokio::time::sleep(BUSY_WAIT) => d.on(Event::Waited),
                    }
                }
                Action::Fallback { reason, warn } => {
                    self.release(grant.take()).await;
                    return Outcome::Fallback { reason, warn };
                }
                Action::Fail(reason) => {
                    self.release(grant.take()).await;
                    return Outcome::Failed(reason);
                }
                // Results are matched as they arrive; nothing else is pending here.
                Action::Accept | Action::Discard => d.on(Event::Waited),
            };
        }
    }

    fn avoid(&self, node: NodeId) {
        if let Ok(mut a) = self.avoid.lock() {
            a.insert(node, Instant::now() + AVOID_FOR);
        }
    }

    fn avoided(&self, node: &NodeId) -> bool {
        self.avoid
            .lock()
            .is_ok_and(|a| a.get(node).is_some_and(|until| *until > Instant::now()))
    }

    /// Asks for candidates, first without the nodes other jobs found failing lately; if that
    /// leaves nothing, with them (they may be back).
    async fn allocate(
        &self,
        job: &RemoteJob,
        attempt: u32,
        exclude: Vec<NodeId>,
        hints: &mut HashMap<NodeId, Vec<SocketAddr>>,
    ) -> (Event, Option<Grant>) {
        let mut wider = exclude.clone();
        if let Ok(mut a) = self.avoid.lock() {
            let now = Instant::now();
            a.retain(|_, until| *until > now);
            wider.extend(a.keys().filter(|id| !exclude.contains(id)));
        }
        if wider.len() > exclude.len() {
            let (event, grant) = self.allocate_once(job, attempt, wider, hints).await;
            let emptied = matches!(
                event,
                Event::NoCandidates(NoCandidates::Fallback(
                    FallbackReason::AllFailed | FallbackReason::NoWorker
                ))
            );
            if !emptied {
                return (event, grant);
            }
        }
        self.allocate_once(job, attempt, exclude, hints).await
    }

    /// Asks the coordinator (or, failing that, this node's own view) for candidates.
    async fn allocate_once(
        &self,
        job: &RemoteJob,
        attempt: u32,
        mut exclude: Vec<NodeId>,
        hints: &mut HashMap<NodeId, Vec<SocketAddr>>,
    ) -> (Event, Option<Grant>) {
        let me = self.mesh.id();
        exclude.push(me);
        let coordinator = self.view.borrow().coordinator;
        let granted = match coordinator {
            Some(c) if c.id == me && !self.avoided(&me) => Some(
                self.coordinator
                    .allocate(me, job.toolchain, &exclude)
                    .map(|g| (g.candidates, Grant::Here(g.grant, g.epoch))),
            ),
            Some(c) if self.avoided(&c.id) => None,
            Some(c) => {
                let asked =
                    tokio::time::timeout(ALLOC_TIMEOUT, self.ask(c.id, job, attempt, &exclude))
                        .await
                        .ok()
                        .flatten();
                if asked.is_none() {
                    self.avoid(c.id);
                }
                asked
            }
            None => None,
        };
        let granted = match granted {
            Some(Err(Unavailable::Fenced)) | None => {
                let view = self.view.borrow().clone();
                let result = self
                    .local
                    .lock()
                    .map_err(|_| Unavailable::NoWorker)
                    .and_then(|mut l| l.run(&view, None, me, job.toolchain, &exclude));
                debug!(?result, "allocated from this node's view");
                result.map(|g| (g.candidates, Grant::Local(g.grant)))
            }
            Some(other) => other,
        };
        match granted {
            Ok((candidates, grant)) => {
                let view = self.view.borrow().clone();
                let ids = candidates
                    .iter()
                    .map(|c| {
                        hints.insert(c.node_id, addrs_for(c, &view));
                        c.node_id
                    })
                    .collect();
                (Event::Candidates(ids), Some(grant))
            }
            Err(why) => (Event::NoCandidates(no_candidates(why)), None),
        }
    }

    /// One allocation request to a remote coordinator; `None` when it cannot answer.
    async fn ask(
        &self,
        coordinator: NodeId,
        job: &RemoteJob,
        attempt: u32,
        exclude: &[NodeId],
    ) -> Option<Result<(Vec<Candidate>, Grant), Unavailable>> {
        let addrs = self
            .view
            .borrow()
            .member(&coordinator)
            .map(|m| m.addrs.clone())
            .unwrap_or_default();
        let conn = self.connection(coordinator, &addrs).await.ok()?;
        let req = Request::Alloc(AllocRequest {
            job: job.job,
            attempt,
            toolchain: job.toolchain,
            exclude: exclude.to_vec(),
        });
        match self.mesh.request(&conn, &req).await {
            Ok(Reply::Allocated {
                grant,
                candidates,
                epoch,
            }) => Some(Ok((candidates, Grant::Peer(coordinator, grant, epoch)))),
            Ok(Reply::Unavailable(why)) => Some(Err(why)),
            other => {
                debug!(
                    ?other,
                    "the coordinator did not allocate; using this node's view"
                );
                None
            }
        }
    }

    async fn release(&self, grant: Option<Grant>) {
        match grant {
            None => {}
            Some(Grant::Here(g, _)) => self.coordinator.release(g),
            Some(Grant::Local(g)) => {
                if let Ok(mut l) = self.local.lock() {
                    l.release(g);
                }
            }
            Some(Grant::Peer(id, grant, _)) => {
                // Best effort: the grant also ends with its expiry or our connection.
                let cell = self.conns.lock().ok().and_then(|c| c.get(&id).cloned());
                // A connection being dialed right now carries no grant of ours.
                let held = cell.and_then(|c| c.try_lock().ok().and_then(|g| g.clone()));
                if let Some(conn) = held {
                    let mesh = self.mesh.clone();
                    crate::spawn(async move {
                        let _ = tokio::time::timeout(
                            ALLOC_TIMEOUT,
                            mesh.request(&conn, &Request::Release { grant }),
                        )
                        .await;
                    });
                }
            }
        }
    }

    /// This node's own live connection to `id` (see [`Mesh::dial_private`]): kept from an earlier
    /// job, or dialed to the address of the membership connection and the hints. Jobs that
    /// need the same peer at once share one dial: a second connection would replace the first
    /// in the table, and closing the first would end the leases and grants it carries.
    async fn connection(&self, id: NodeId, addrs: &[SocketAddr]) -> Result<Connection, String> {
        let cell = self
            .conns
            .lock()
            .map_err(|_| "the connection table is poisoned".to_string())?
            .entry(id)
            .or_default()
            .clone();
        let mut held = cell.lock().await;
        if let Some(c) = held.as_ref().filter(|c| c.close_reason().is_none()) {
            return Ok(c.clone());
        }
        let mut tries: Vec<SocketAddr> = self
            .mesh
            .connection(&id)
            .map(|c| c.remote_address())
            .into_iter()
            .collect();
        for a in addrs {
            if !tries.contains(a) {
                tries.push(*a);
            }
        }
        let mut last = format!("no address known for {}", id.short());
        for addr in tries {
            match tokio::time::timeout(DIAL_TIMEOUT, self.mesh.dial_private(id, addr)).await {
                Ok(Ok(c)) => {
                    *held = Some(c.clone());
                    return Ok(c);
                }
                Ok(Err(e)) => last = e.to_string(),
                Err(_) => last = format!("no answer from {addr} within {DIAL_TIMEOUT:?}"),
            }
        }
        Err(last)
    }

    /// Sends the job to one worker and waits for its answer, watching the connection and the
    /// member's state.
    async fn send(
        &self,
        job: &RemoteJob,
        worker: NodeId,
        attempt: u32,
        epoch: Option<u64>,
        hints: &HashMap<NodeId, Vec<SocketAddr>>,
    ) -> Sent {
        let addrs = hints.get(&worker).cloned().unwrap_or_default();
        let conn = match self.connection(worker, &addrs).await {
            Ok(c) => c,
            Err(e) => {
                self.avoid(worker);
                return Sent::Unusable(e);
            }
        };
        let header = JobHeader {
            job: job.job,
            attempt,
            epoch,
            toolchain: job.toolchain,
            language: job.language,
            mode: job.mode,
            form: job.form.clone(),
            args: job.args.clone(),
            env: job.env.clone(),
            input_len: job.input.len() as u64,
        };
        let t = self.mesh.config().request_timeout;
        let exchange = async {
            let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
            // If the worker refuses at once it stops reading: its reply says why.
            let wrote = async {
                proto::write_frame(&mut send, &Request::RunJob(header), t).await?;
                proto::write_bulk(&mut send, &job.input, t).await?;
                let _ = send.finish();
                Ok::<_, proto::FrameError>(())
            }
            .await;
            let reply: Reply = proto::read_frame(&mut recv, Limit::JobReply, JOB_REPLY_TIMEOUT)
                .await
                .map_err(|e| match &wrote {
                    Err(w) => format!("{e} (after {w})"),
                    Ok(()) => e.to_string(),
                })?;
            let output = match &reply {
                Reply::JobDone(r) if r.output_len > 0 => {
                    let mut out = Vec::with_capacity((r.output_len as usize).min(1 << 20));
                    proto::read_bulk(&mut recv, r.output_len, t, |c| out.extend_from_slice(c))
                        .await
                        .map_err(|e| e.to_string())?;
                    out
                }
                _ => Vec::new(),
            };
            Ok::<_, String>((reply, output))
        };
        let down = self.member_down(worker);
        let (reply, output) = tokio::select! {
            r = exchange => match r {
                Ok(x) => x,
                Err(e) => return Sent::Lost(e),
            },
            _ = down => return Sent::Lost("the membership declared it down".into()),
        };
        match reply {
            Reply::JobDone(result) => {
                let output = if result.output_len > 0 {
                    match zstd::stream::decode_all(&output[..]) {
                        Ok(o) => o,
                        Err(e) => return Sent::Lost(format!("undecodable output: {e}")),
                    }
                } else {
                    output
                };
                Sent::Done(result, output)
            }
            Reply::Busy => Sent::Busy,
            Reply::StaleEpoch { epoch } => Sent::Stale(epoch),
            Reply::NoToolchain => Sent::Unusable("it does not have the toolchain".into()),
            Reply::Refused(why) => Sent::Refused(why),
            Reply::Error(e) => Sent::Lost(e),
            other => Sent::Lost(format!("unexpected reply {other:?}")),
        }
    }

    /// Resolves when the view says `worker` is down.
    async fn member_down(&self, worker: NodeId) {
        let mut view = self.view.clone();
        loop {
            let down = view
                .borrow_and_update()
                .member(&worker)
                .is_some_and(|m| m.state == MemberState::Down);
            if down {
                return;
            }
            if view.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

fn no_candidates(why: Unavailable) -> NoCandidates {
    match why {
        Unavailable::AllBusy => NoCandidates::AllBusy,
        Unavailable::NoWorker => NoCandidates::Fallback(FallbackReason::NoWorker),
        Unavailable::NoToolchain => NoCandidates::Fallback(FallbackReason::NoToolchain),
        Unavailable::AllExcluded => NoCandidates::Fallback(FallbackReason::AllFailed),
        Unavailable::Fenced => NoCandidates::Fallback(FallbackReason::Fenced),
    }
}
