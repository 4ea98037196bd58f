//! Compile jobs in the simulation: a fake compiler ([`FakeCompiler`], the worker's
//! [`Executor`]) whose durations and crashes come from the seed, a [`Ledger`] of every compile
//! it began, and [`Build`]s that push jobs through a node's real dispatch client (allocation,
//! candidates, retries, fallback policy: the code a real node runs).
//!
//! What must hold whatever the network did is checked here: [`Build::check`] (every job
//! completed exactly once, with the right output, from a compile that really ran),
//! [`Ledger::check_capacity`] (no worker ever ran more compiles than its slots) and
//! [`Epochs`] (no node's coordinator epoch ever went back).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use meshcc::compiler::args::{CompileMode, Language};
use meshcc::compiler::toolchain::ToolchainId;
use meshcc::compiler::Ran;
use meshcc::mesh::identity::NodeId;
use meshcc::mesh::proto::InputForm;
use meshcc::remote::client::{Client, Outcome, RemoteJob};
use meshcc::remote::dispatch::FallbackReason;
use meshcc::remote::worker::{ExecFuture, ExecJob, Executor};
use quinn::Runtime;
use tokio::sync::{oneshot, Semaphore};
use tokio::time::Instant;
use tracing::Instrument;

use crate::harness::Sim;
use crate::rng::SimRng;
use crate::runtime::SimRuntime;

/// The toolchain every simulated worker offers and every job asks for.
pub const TOOLCHAIN: ToolchainId = ToolchainId([7; 32]);

/// The path the workers give the fake compiler (never run: [`FakeCompiler`] stands in).
pub const COMPILER: &str = "/sim/bin/cc";

/// How the fake compiler behaves.
#[derive(Debug, Clone, Copy)]
pub struct FakeCompile {
    /// The shortest compile.
    pub min: Duration,
    /// The longest compile (durations are uniform between the two).
    pub max: Duration,
    /// The chance that a compile cannot run at all (the worker answers with an error, which
    /// the client takes as a lost worker and retries elsewhere).
    pub crash_rate: f64,
}

impl Default for FakeCompile {
    fn default() -> Self {
        Self {
            min: Duration::from_millis(200),
            max: Duration::from_millis(1500),
            crash_rate: 0.0,
        }
    }
}

impl FakeCompile {
    fn draw(&self, rng: &mut SimRng) -> (Duration, bool) {
        let spread = self.max.saturating_sub(self.min);
        (self.min + rng.up_to(spread), rng.chance(self.crash_rate))
    }
}

/// The object the fake compiler makes of `input`: a function of the input alone, so any
/// output can be checked against its job.
pub fn fake_object(input: &[u8]) -> Vec<u8> {
    let mut out = b"SIMOBJ\0".to_vec();
    out.extend_from_slice(blake3::hash(input).as_bytes());
    out.extend_from_slice(&(input.len() as u64).to_le_bytes());
    out
}

/// Where a compile ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// On a worker, for a client (possibly the worker's own node, through the mesh).
    Worker,
    /// On the client's own free slot, by choice.
    LocalSlot,
    /// On the client without a slot, because no worker could take it.
    Fallback,
}

/// One compile the fake compiler began.
#[derive(Debug, Clone)]
pub struct Exec {
    /// The node (harness index) it ran on.
    pub node: usize,
    /// That node's boot (start count) at the time.
    pub boot: u64,
    /// The job.
    pub job: u64,
    /// The job's attempt.
    pub attempt: u32,
    /// Where.
    pub place: Place,
    /// When it began (virtual time since the ledger was made).
    pub began: Duration,
    /// When it finished with an output; `None` if it crashed, was abandoned or its host died.
    pub finished: Option<Duration>,
}

#[derive(Debug, Default)]
struct LedgerState {
    execs: Vec<Exec>,
    running: BTreeMap<(usize, u64), u32>,
    peak: BTreeMap<(usize, u64), u32>,
}

/// Every compile begun in the simulation, and how many ran at once on each node (per boot).
#[derive(Debug, Clone)]
pub struct Ledger {
    state: Arc<Mutex<LedgerState>>,
    start: Instant,
}

impl Default for Ledger {
    fn default() -> Self {
        Self {
            state: Arc::default(),
            start: Instant::now(),
        }
    }
}

/// A compile in progress; while it lives it counts against its node's slots (unless it is a
/// fallback, which holds no slot).
#[derive(Debug)]
pub struct Running {
    ledger: Ledger,
    index: usize,
    slot: Option<(usize, u64)>,
}

impl Running {
    /// Marks the compile finished with an output.
    pub fn finish(&self) {
        let at = self.ledger.start.elapsed();
        if let Some(e) = self.ledger.lock().execs.get_mut(self.index) {
            e.finished = Some(at);
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(key) = self.slot {
            if let Some(n) = self.ledger.lock().running.get_mut(&key) {
                *n = n.saturating_sub(1);
            }
        }
    }
}

impl Ledger {
    fn lock(&self) -> MutexGuard<'_, LedgerState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a compile beginning on `node` (at `boot`).
    pub fn begin(&self, node: usize, boot: u64, job: u64, attempt: u32, place: Place) -> Running {
        let mut s = self.lock();
        let index = s.execs.len();
        s.execs.push(Exec {
            node,
            boot,
            job,
            attempt,
            place,
            began: self.start.elapsed(),
            finished: None,
        });
        let slot = (place != Place::Fallback).then_some((node, boot));
        if let Some(key) = slot {
            let n = s.running.entry(key).or_default();
            *n += 1;
            let n = *n;
            let peak = s.peak.entry(key).or_default();
            *peak = (*peak).max(n);
        }
        Running {
            ledger: self.clone(),
            index,
            slot,
        }
    }

    /// Every compile begun so far.
    pub fn execs(&self) -> Vec<Exec> {
        self.lock().execs.clone()
    }

    /// Panics if any node ever ran more compiles at once (on workers and its own slots) than
    /// `slots(node)`.
    pub fn check_capacity(&self, slots: impl Fn(usize) -> u32) {
        for (&(node, boot), &peak) in &self.lock().peak {
            assert!(
                peak <= slots(node),
                "node {node} (boot {boot}) ran {peak} compiles at once with {} slots",
                slots(node)
            );
        }
    }
}

/// Sleeps on a simulated host's clock: the time does not pass while the host is frozen.
pub async fn host_sleep(runtime: &SimRuntime, d: Duration) {
    let mut timer = runtime.new_timer((Instant::now() + d).into_std());
    std::future::poll_fn(|cx| timer.as_mut().poll(cx)).await;
}

/// The worker's executor on one simulated node: a compile is a sleep on the host's clock,
/// then the [`fake_object`] of its input. It runs as a task of the host (killing the host
/// kills it) and stops when the worker drops it (a job abandoned).
#[derive(Debug)]
pub struct FakeCompiler {
    node: usize,
    boot: u64,
    runtime: Arc<SimRuntime>,
    rng: Mutex<SimRng>,
    compile: FakeCompile,
    ledger: Ledger,
}

impl FakeCompiler {
    /// The compiler of node `node` at `boot`, on its host's runtime, drawing from `seed`.
    pub fn new(
        node: usize,
        boot: u64,
        runtime: Arc<SimRuntime>,
        seed: u64,
        compile: FakeCompile,
        ledger: Ledger,
    ) -> Self {
        Self {
            node,
            boot,
            runtime,
            rng: Mutex::new(SimRng::new(seed)),
            compile,
            ledger,
        }
    }
}

/// Reads the job's preprocessed input (`input.i` or `input.ii` in its directory).
fn read_input(dir: &Path) -> std::io::Result<Vec<u8>> {
    std::fs::read(dir.join("input.i")).or_else(|_| std::fs::read(dir.join("input.ii")))
}

impl Executor for FakeCompiler {
    fn run(&self, job: ExecJob) -> ExecFuture {
        let (duration, crash) = {
            let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
            self.compile.draw(&mut rng)
        };
        // The record lives in the returned future, like the worker's slot: both end together.
        let running = self
            .ledger
            .begin(self.node, self.boot, job.job, job.attempt, Place::Worker);
        let (tx, rx) = oneshot::channel::<std::io::Result<Ran>>();
        let runtime = self.runtime.clone();
        self.runtime.spawn(Box::pin(
            async move {
                let mut tx = tx;
                tokio::select! {
                    _ = host_sleep(&runtime, duration) => {}
                    _ = tx.closed() => return,
                }
                let result = if crash {
                    Err(std::io::Error::other("the simulated compiler crashed"))
                } else {
                    read_input(&job.dir)
                        .and_then(|input| std::fs::write(&job.output, fake_object(&input)))
                        .map(|()| Ran {
                            exit_code: 0,
                            stdout: Vec::new(),
                            stderr: Vec::new(),
                        })
                };
                let _ = tx.send(result);
            }
            .in_current_span(),
        ));
        Box::pin(async move {
            let result = rx
                .await
                .unwrap_or_else(|_| Err(std::io::Error::other("the host went down")));
            if result.is_ok() {
                running.finish();
            }
            drop(running);
            result
        })
    }
}

/// What became of one job of a [`Build`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Done {
    /// A worker compiled it, at this attempt.
    Remote {
        /// The worker.
        worker: NodeId,
        /// The accepted attempt.
        attempt: u32,
    },
    /// The client compiled it on its own free slot.
    LocalSlot,
    /// The client compiled it without a slot: no worker could take it.
    Fallback(FallbackReason),
    /// Policy `fail`: the job gave up.
    Failed(FallbackReason),
}

#[derive(Debug, Default)]
struct BuildState {
    done: BTreeMap<u64, Vec<Done>>,
    wrong: Vec<String>,
}

/// A build: `jobs` compile jobs pushed through one node's dispatch client, `parallel` at a
/// time (like `make -j`), as tasks of the client's host.
#[derive(Debug)]
pub struct Build {
    jobs: Vec<u64>,
    state: Arc<Mutex<BuildState>>,
}

/// The figures of a finished, checked build.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BuildReport {
    /// Jobs compiled by workers.
    pub remote: usize,
    /// Jobs compiled on the client's own slots.
    pub local: usize,
    /// Jobs compiled on the client for lack of a worker.
    pub fallbacks: usize,
    /// Jobs that gave up (policy `fail`).
    pub failed: usize,
    /// Jobs whose accepted attempt was not the first (attempts count from 1).
    pub retried: usize,
    /// Jobs per worker node (harness index).
    pub per_worker: BTreeMap<usize, usize>,
}

/// The parts of the client node a build's jobs need.
pub(crate) struct BuildNode {
    pub(crate) index: usize,
    pub(crate) boot: u64,
    pub(crate) client: Arc<Client>,
    pub(crate) runtime: Arc<SimRuntime>,
    pub(crate) ledger: Ledger,
    pub(crate) compile: FakeCompile,
}

impl Build {
    /// Starts `ids.len()` jobs on `node`, `parallel` at a time; `seed` draws local durations.
    pub(crate) fn start(node: BuildNode, ids: Vec<u64>, parallel: usize, seed: u64) -> Self {
        let state = Arc::new(Mutex::new(BuildState::default()));
        let gate = Arc::new(Semaphore::new(parallel.max(1)));
        let node = Arc::new(node);
        let mut rng = SimRng::new(seed);
        for &id in &ids {
            let (local_time, _) = node.compile.draw(&mut rng);
            let (gate, node2, state) = (gate.clone(), node.clone(), state.clone());
            node.runtime.spawn(Box::pin(
                async move {
                    let Ok(_turn) = gate.acquire().await else {
                        return;
                    };
                    let (done, wrong) = run_job(&node2, id, local_time).await;
                    let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
                    s.done.entry(id).or_default().push(done);
                    s.wrong.extend(wrong);
                }
                .instrument(tracing::info_span!("job", job = %format!("{id:016x}"))),
            ));
        }
        Self { jobs: ids, state }
    }

    fn lock(&self) -> MutexGuard<'_, BuildState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether every job has an outcome.
    pub fn finished(&self) -> bool {
        self.lock().done.len() == self.jobs.len()
    }

    /// Jobs with an outcome so far.
    pub fn completed(&self) -> usize {
        self.lock().done.len()
    }

    /// Checks the finished build against the ledger and returns its figures; panics if a job
    /// did not end exactly once, got a wrong output, or was accepted from a compile that never
    /// finished on that worker.
    pub fn check(&self, sim: &Sim, ledger: &Ledger) -> BuildReport {
        let s = self.lock();
        assert!(s.wrong.is_empty(), "wrong outputs: {:#?}", s.wrong);
        let execs = ledger.execs();
        let mut report = BuildReport::default();
        for id in &self.jobs {
            let done = match s.done.get(id).map(Vec::as_slice) {
                Some([one]) => one,
                Some(many) => panic!("job {id:016x} ended {} times: {many:?}", many.len()),
                None => panic!("job {id:016x} never ended"),
            };
            match done {
                Done::Remote { worker, attempt } => {
                    let node = sim
                        .index_of(worker)
                        .unwrap_or_else(|| panic!("job {id:016x}: unknown worker {worker}"));
                    assert!(
                        execs.iter().any(|e| e.job == *id
                            && e.attempt == *attempt
                            && e.node == node
                            && e.place == Place::Worker
                            && e.finished.is_some()),
                        "job {id:016x} accepted from node {node} attempt {attempt}, which never finished it"
                    );
                    report.remote += 1;
                    report.retried += usize::from(*attempt > 1);
                    *report.per_worker.entry(node).or_default() += 1;
                }
                Done::LocalSlot => report.local += 1,
                Done::Fallback(_) => report.fallbacks += 1,
                Done::Failed(_) => report.failed += 1,
            }
        }
        report
    }

    /// Every fallback and failure, with its job (empty when every job found a worker or a
    /// free local slot).
    pub fn fallbacks(&self) -> Vec<(u64, Done)> {
        self.lock()
            .done
            .iter()
            .flat_map(|(id, d)| d.iter().map(|d| (*id, d.clone())))
            .filter(|(_, d)| matches!(d, Done::Fallback(_) | Done::Failed(_)))
            .collect()
    }
}

/// The input of job `id`: a few hundred bytes that name it.
fn job_input(id: u64) -> Vec<u8> {
    let mut src = format!("/* job {id:016x} */\n").into_bytes();
    src.extend((0..256u32).map(|i| (id.rotate_left(i % 64) as u8) ^ (i as u8)));
    src
}

/// Runs one job through the client's dispatch and compiles it where the outcome says.
async fn run_job(node: &BuildNode, id: u64, local_time: Duration) -> (Done, Option<String>) {
    let input = job_input(id);
    let job = RemoteJob {
        job: id,
        toolchain: TOOLCHAIN,
        language: Language::C,
        mode: CompileMode::Object,
        form: InputForm::Preprocessed,
        args: vec!["-O2".into(), "-g0".into()],
        env: Vec::new(),
        input: zstd::bulk::compress(&input, 1).unwrap_or_default(),
    };
    let local = |place| async move {
        let running = node.ledger.begin(node.index, node.boot, id, 0, place);
        host_sleep(&node.runtime, local_time).await;
        running.finish();
    };
    match node.client.dispatch(&job).await {
        Outcome::Remote {
            worker,
            attempt,
            result,
            output,
        } => {
            let wrong = (result.exit_code != 0 || output != fake_object(&input)).then(|| {
                format!(
                    "job {id:016x} from {worker} attempt {attempt}: exit {}, {} bytes of output that are not its object",
                    result.exit_code,
                    output.len()
                )
            });
            (Done::Remote { worker, attempt }, wrong)
        }
        Outcome::LocalSlot(slot) => {
            local(Place::LocalSlot).await;
            drop(slot);
            (Done::LocalSlot, None)
        }
        Outcome::Fallback { reason, .. } => {
            local(Place::Fallback).await;
            (Done::Fallback(reason), None)
        }
        Outcome::Failed(reason) => (Done::Failed(reason), None),
    }
}

/// The highest coordinator epoch each node has followed, per boot; [`Epochs::observe`] panics
/// if one goes back.
#[derive(Debug, Default)]
pub struct Epochs(BTreeMap<(usize, u64), u64>);

impl Epochs {
    /// Looks at every running node's coordinator epoch now.
    pub fn observe(&mut self, sim: &Sim) {
        for i in sim.live() {
            if let Some(c) = sim.coordinator(i) {
                let seen = self.0.entry((i, sim.boots(i))).or_default();
                assert!(
                    c.epoch >= *seen,
                    "node {i}'s coordinator epoch went back from {seen} to {}",
                    c.epoch
                );
                *seen = c.epoch;
            }
        }
    }
}
