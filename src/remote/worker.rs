//! The worker: runs compiles for peers (and gates this node's own local compiles) on a fixed
//! number of slots.
//!
//! A [`Request::RunJob`] is admitted only if the worker has the toolchain (by content identity),
//! the options pass the remote allow-list ([`super::allow`]), the grant's coordinator epoch is
//! not older than the one this node follows, the input fits the size limit, and a slot is free
//! at once (else [`Reply::Busy`]: the client tries its next candidate). The compile runs in a
//! private directory removed afterwards, under a per-job timeout, and is abandoned (the
//! compiler killed, the slot freed) as soon as the client's connection closes: the slot is
//! leased to that connection, so a dead client frees it within the QUIC idle timeout.
//!
//! The slot count and toolchains go into this node's [`Advert`], which membership gossips.

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tracing::{debug, info_span, warn, Instrument};

use super::allow;
use crate::compiler::args::{CompileMode, Language};
use crate::compiler::toolchain::ToolchainId;
use crate::compiler::Ran;
use crate::mesh::proto::{self, InputForm, JobHeader, JobResult, Reply, Request};
use crate::mesh::transport::Served;
use crate::mesh::view::{Advert, Snapshot};
use crate::node::stats::{Event, Stats};

/// Environment variables a client's job may set on the worker (locale and reproducibility);
/// everything else comes from the worker's own environment.
pub const FORWARDED_ENV: &[&str] = &[
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "LC_MESSAGES",
    "SOURCE_DATE_EPOCH",
    "TZ",
];

/// The worker's limits.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// Jobs run at once, local ones included (`MESHCC_SLOTS`; default: the number of cores).
    pub slots: u32,
    /// Longest a single compile may run before it is killed (`MESHCC_JOB_TIMEOUT`).
    pub job_timeout: Duration,
    /// Largest preprocessed input accepted, uncompressed.
    pub max_input: usize,
    /// Largest output returned, uncompressed.
    pub max_output: usize,
    /// Where job directories are made.
    pub scratch: PathBuf,
}

impl WorkerSettings {
    /// The defaults for a node: one slot per core, 10 minutes per job, 512 MiB in and out.
    pub fn new(scratch: PathBuf) -> Self {
        Self {
            slots: std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
            job_timeout: Duration::from_secs(600),
            max_input: 512 << 20,
            max_output: 512 << 20,
            scratch,
        }
    }
}

/// One compile for the [`Executor`]: the compiler, its full argument list, and the job's
/// private directory holding the input; the output must appear at `output`.
#[derive(Debug, Clone)]
pub struct ExecJob {
    /// The client's JobId.
    pub job: u64,
    /// Which attempt of the job this is.
    pub attempt: u32,
    /// The compiler to run (absolute path).
    pub compiler: PathBuf,
    /// Its arguments, input and output included.
    pub args: Vec<String>,
    /// The working directory of the compile, in the job's private directory.
    pub dir: PathBuf,
    /// The output file the compile writes.
    pub output: PathBuf,
    /// The environment.
    pub env: Vec<(String, String)>,
}

/// A future an [`Executor`] returns.
pub type ExecFuture = Pin<Box<dyn Future<Output = std::io::Result<Ran>> + Send>>;

/// Runs one compile. The real one runs the compiler; a simulation plugs in a fake one
/// (durations, failures). Dropping the future must stop the compile.
pub trait Executor: Send + Sync {
    /// Starts the compile.
    fn run(&self, job: ExecJob) -> ExecFuture;
}

/// The executor that runs the real compiler as a child process.
#[derive(Debug, Default)]
pub struct CompilerExecutor;

impl Executor for CompilerExecutor {
    fn run(&self, job: ExecJob) -> ExecFuture {
        Box::pin(
            async move { crate::compiler::run(&job.compiler, &job.args, &job.dir, &job.env).await },
        )
    }
}

/// A node's worker.
pub struct Worker {
    settings: WorkerSettings,
    slots: Arc<Semaphore>,
    toolchains: Mutex<HashMap<ToolchainId, PathBuf>>,
    executor: Arc<dyn Executor>,
    advert: watch::Sender<Advert>,
    view: watch::Receiver<Snapshot>,
    stats: Arc<Stats>,
    next_dir: AtomicU64,
}

/// A slot held by a job; freed (and the advert updated) when dropped.
pub struct Slot {
    _permit: OwnedSemaphorePermit,
    worker: Arc<Worker>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        // The permit is returned after this body; count it as free already.
        self.worker.publish(1);
    }
}

/// Removes a job directory however the job ends.
struct JobDir(PathBuf);

impl Drop for JobDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Worker {
    /// A worker with `settings`, running compiles through `executor`, publishing its advert to
    /// `advert` and reading the coordinator epoch from `view`.
    pub fn new(
        settings: WorkerSettings,
        executor: Arc<dyn Executor>,
        advert: watch::Sender<Advert>,
        view: watch::Receiver<Snapshot>,
        stats: Arc<Stats>,
    ) -> Arc<Self> {
        let worker = Arc::new(Self {
            slots: Arc::new(Semaphore::new(settings.slots as usize)),
            settings,
            toolchains: Mutex::new(HashMap::new()),
            executor,
            advert,
            view,
            stats,
            next_dir: AtomicU64::new(0),
        });
        // Nothing is advertised before a toolchain is known: peers would find nothing to run.
        worker
    }

    /// Lets the worker run `compiler`, whose identity is `id` (announced in the advert).
    pub fn add_toolchain(&self, id: ToolchainId, compiler: PathBuf) {
        self.add_toolchains(vec![(id, compiler)]);
    }

    /// Adds several toolchains and announces them (with the slots) in one advert.
    pub fn add_toolchains(&self, found: Vec<(ToolchainId, PathBuf)>) {
        let added = match self.toolchains.lock() {
            Ok(mut t) => found
                .into_iter()
                .fold(false, |added, (id, c)| t.insert(id, c).is_none() || added),
            Err(_) => false,
        };
        if added {
            self.publish(0);
        }
    }

    /// The compiler for a toolchain identity, if this worker has it.
    pub fn toolchain(&self, id: &ToolchainId) -> Option<PathBuf> {
        self.toolchains.lock().ok()?.get(id).cloned()
    }

    /// The total number of slots.
    pub fn slots_total(&self) -> u32 {
        self.settings.slots
    }

    /// Updates the advert with the slots in use (`freeing` of them are being returned).
    fn publish(&self, freeing: u32) {
        let busy = (self.settings.slots as usize)
            .saturating_sub(self.slots.available_permits())
            .saturating_sub(freeing as usize) as u32;
        let mut toolchains: Vec<ToolchainId> = self
            .toolchains
            .lock()
            .map(|t| t.keys().copied().collect())
            .unwrap_or_default();
        toolchains.sort();
        self.advert.send_if_modified(|a| {
            let changed = a.slots_total != self.settings.slots
                || a.slots_busy != busy
                || a.toolchains != toolchains;
            a.slots_total = self.settings.slots;
            a.slots_busy = busy;
            a.toolchains = toolchains;
            changed
        });
    }

    /// Takes a free slot at once, if there is one.
    pub fn try_slot(self: &Arc<Self>) -> Option<Slot> {
        let permit = self.slots.clone().try_acquire_owned().ok()?;
        self.publish(0);
        Some(Slot {
            _permit: permit,
            worker: self.clone(),
        })
    }

    /// Waits for a free slot.
    pub async fn slot(self: &Arc<Self>) -> Option<Slot> {
        let permit = self.slots.clone().acquire_owned().await.ok()?;
        self.publish(0);
        Some(Slot {
            _permit: permit,
            worker: self.clone(),
        })
    }

    /// Serves one [`Request::RunJob`] from a peer (or from this node through the mesh).
    pub async fn serve(self: Arc<Self>, served: Served) {
        let Served {
            peer,
            conn,
            request,
            mut send,
            mut recv,
        } = served;
        let Request::RunJob(header) = request else {
            return;
        };
        let span = info_span!(
            "worker",
            job = %format!("{:016x}", header.job),
            attempt = header.attempt,
            client = %peer.short()
        );
        let t = Duration::from_secs(30);
        async move {
            let (reply, output) = match self.admit(&header) {
                Err(reply) => (*reply, Vec::new()),
                Ok((slot, compiler)) => {
                    let run = self.run(&header, compiler, &mut recv);
                    let abandoned = send.stopped();
                    tokio::select! {
                        r = run => {
                            drop(slot);
                            r
                        }
                        _ = conn.closed() => {
                            debug!("client connection closed; job abandoned, slot freed");
                            return;
                        }
                        _ = abandoned => {
                            debug!("the client gave the job up; slot freed");
                            return;
                        }
                    }
                }
            };
            if !matches!(reply, Reply::JobDone(_)) {
                debug!(?reply, "job not run");
                // Nothing more of the request is wanted.
                let _ = recv.stop(quinn::VarInt::from_u32(0));
            }
            let sent = async {
                proto::write_frame(&mut send, &reply, t).await?;
                proto::write_bulk(&mut send, &output, t).await?;
                let _ = send.finish();
                Ok::<_, proto::FrameError>(())
            };
            if let Err(e) = sent.await {
                debug!("cannot send the result: {e}");
            }
        }
        .instrument(span)
        .await
    }

    /// Admission: toolchain, allow-list, epoch, size, then a slot at once.
    fn admit(self: &Arc<Self>, h: &JobHeader) -> Result<(Slot, PathBuf), Box<Reply>> {
        let Some(compiler) = self.toolchain(&h.toolchain) else {
            return Err(Box::new(Reply::NoToolchain));
        };
        if let Err(refusal) = allow::check(&h.args) {
            return Err(Box::new(Reply::Refused(refusal.to_string())));
        }
        if preprocessed_language(h.language).is_none() {
            return Err(Box::new(Reply::Refused(format!(
                "{} input is not compiled remotely",
                h.language.as_x_arg()
            ))));
        }
        if let Err(why) = input_of(h) {
            return Err(Box::new(Reply::Refused(why)));
        }
        if h.mode == CompileMode::SyntaxOnly {
            return Err(Box::new(Reply::Refused(
                "-fsyntax-only is not compiled remotely".into(),
            )));
        }
        let followed = self.view.borrow().coordinator.map_or(0, |c| c.epoch);
        if h.epoch.is_some_and(|e| e < followed) {
            return Err(Box::new(Reply::StaleEpoch { epoch: followed }));
        }
        if h.input_len > self.settings.max_input as u64 {
            return Err(Box::new(Reply::Refused(format!(
                "input of {} bytes exceeds this worker's limit of {}",
                h.input_len, self.settings.max_input
            ))));
        }
        match self.try_slot() {
            Some(slot) => Ok((slot, compiler)),
            None => Err(Box::new(Reply::Busy)),
        }
    }

    /// Receives the input, compiles it in a private directory, and makes the reply.
    async fn run(
        &self,
        h: &JobHeader,
        compiler: PathBuf,
        recv: &mut quinn::RecvStream,
    ) -> (Reply, Vec<u8>) {
        let mut compressed = Vec::with_capacity((h.input_len as usize).min(1 << 20));
        if let Err(e) = proto::read_bulk(recv, h.input_len, Duration::from_secs(30), |c| {
            compressed.extend_from_slice(c)
        })
        .await
        {
            return (
                Reply::Error(format!("cannot receive the input: {e}")),
                Vec::new(),
            );
        }
        let input = match zstd::bulk::decompress(&compressed, self.settings.max_input) {
            Ok(i) => i,
            Err(e) => {
                return (
                    Reply::Refused(format!(
                        "the input does not decompress within the limit: {e}"
                    )),
                    Vec::new(),
                )
            }
        };
        drop(compressed);
        match self.compile(h, compiler, &input).await {
            Ok((ran, output)) => {
                let output = match output.map(|o| zstd::bulk::compress(&o, 1)) {
                    Some(Ok(o)) => o,
                    Some(Err(e)) => return (Reply::Error(format!("compress: {e}")), Vec::new()),
                    None => Vec::new(),
                };
                self.stats.count(Event::ServedJob);
                (
                    Reply::JobDone(JobResult {
                        exit_code: ran.exit_code,
                        stdout: ran.stdout,
                        stderr: ran.stderr,
                        output_len: output.len() as u64,
                    }),
                    output,
                )
            }
            Err(e) => {
                warn!("remote compile failed to run: {e}");
                (Reply::Error(e), Vec::new())
            }
        }
    }

    /// Runs the compile in its own directory; the output only when it succeeded.
    async fn compile(
        &self,
        h: &JobHeader,
        compiler: PathBuf,
        input: &[u8],
    ) -> Result<(Ran, Option<Vec<u8>>), String> {
        let n = self.next_dir.fetch_add(1, Ordering::Relaxed);
        let dir = self.settings.scratch.join(format!(
            "job-{}-{:016x}-{}-{n}",
            std::process::id(),
            h.job,
            h.attempt
        ));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let guard = JobDir(dir.clone());
        let input_of_job = input_of(h)?;
        let output_name = if h.mode == CompileMode::Assembly {
            "output.s"
        } else {
            "output.o"
        };
        // Input under the client's name: in a directory of its own, so it never meets the
        // output.
        let (cwd, output_arg) = match h.form {
            InputForm::Preprocessed => (dir.clone(), output_name.to_string()),
            InputForm::RewrittenIncludes { .. } => (dir.join("cwd"), format!("../{output_name}")),
        };
        let input_path = cwd.join(&input_of_job.name);
        if let Some(parent) = input_path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        }
        std::fs::write(&input_path, input).map_err(|e| e.to_string())?;
        let mut args = h.args.clone();
        let input_arg = match &input_of_job.client_name {
            None => input_of_job.name,
            Some(client_name) => {
                let here = std::path::absolute(&input_path)
                    .map_err(|e| e.to_string())?
                    .to_string_lossy()
                    .into_owned();
                if here.contains('=') {
                    return Err(format!("{here}: '=' in the job's path"));
                }
                args.push(format!("-fdebug-prefix-map={here}={client_name}"));
                here
            }
        };
        args.extend([
            "-x".to_string(),
            input_of_job.lang.as_x_arg().to_string(),
            if h.mode == CompileMode::Assembly {
                "-S"
            } else {
                "-c"
            }
            .to_string(),
            input_arg,
            "-o".to_string(),
            output_arg,
        ]);
        let mut env: Vec<(String, String)> = std::env::vars()
            .filter(|(k, _)| k == "PATH" || k == "HOME" || k == "TMPDIR")
            .collect();
        env.extend(
            h.env
                .iter()
                .filter(|(k, _)| FORWARDED_ENV.contains(&k.as_str()))
                .cloned(),
        );
        let output = dir.join(output_name);
        let job = ExecJob {
            job: h.job,
            attempt: h.attempt,
            compiler,
            args,
            dir: cwd,
            output: output.clone(),
            env,
        };
        let ran = tokio::time::timeout(self.settings.job_timeout, self.executor.run(job))
            .await
            .map_err(|_| {
                format!(
                    "the compile ran longer than {:?}",
                    self.settings.job_timeout
                )
            })?
            .map_err(|e| format!("cannot run the compiler: {e}"))?;
        let out = if ran.exit_code == 0 {
            let bytes = read_bounded(&output, self.settings.max_output)?;
            Some(bytes)
        } else {
            None
        };
        drop(guard);
        Ok((ran, out))
    }
}

/// How the worker lays out and names a job's input.
struct JobInput {
    /// The language it is compiled as.
    lang: Language,
    /// Where it is written, relative to the compile's directory.
    name: String,
    /// The client's name for it when that is not `name` (an absolute path, or one with
    /// `..`): clang is given the file by its absolute path here and told to record the
    /// client's name instead (`-fdebug-prefix-map`).
    client_name: Option<String>,
}

/// The language the worker compiles a job's input as, and where the input goes: its
/// preprocessed form under a name of the worker's, or (rewritten includes) the source language
/// under the client's relative name, or under its file name when the client's path leads
/// elsewhere.
fn input_of(h: &JobHeader) -> Result<JobInput, String> {
    match &h.form {
        InputForm::Preprocessed => {
            let lang = preprocessed_language(h.language).unwrap_or(Language::CppOutput);
            let name = if lang == Language::CxxCppOutput {
                "input.ii"
            } else {
                "input.i"
            };
            Ok(JobInput {
                lang,
                name: name.to_string(),
                client_name: None,
            })
        }
        InputForm::RewrittenIncludes { path } => {
            if !matches!(h.language, Language::C | Language::Cxx) {
                return Err(format!(
                    "{} input cannot come with rewritten includes",
                    h.language.as_x_arg()
                ));
            }
            let bad = || format!("input path {path:?} cannot be written in the job");
            if path.len() > 4096 || path.contains('\0') {
                return Err(bad());
            }
            if super::clang::is_plain_relative(path) {
                return Ok(JobInput {
                    lang: h.language,
                    name: path.clone(),
                    client_name: None,
                });
            }
            let name = Path::new(path)
                .file_name()
                .and_then(|n| n.to_str())
                .filter(|n| super::clang::is_plain_relative(n) && !n.contains('='))
                .ok_or_else(bad)?;
            Ok(JobInput {
                lang: h.language,
                name: name.to_string(),
                client_name: Some(path.clone()),
            })
        }
    }
}

fn read_bounded(path: &Path, max: usize) -> Result<Vec<u8>, String> {
    let len = std::fs::metadata(path)
        .map_err(|e| format!("the compile wrote no output: {e}"))?
        .len();
    if len > max as u64 {
        return Err(format!("output of {len} bytes exceeds the limit of {max}"));
    }
    std::fs::read(path).map_err(|e| e.to_string())
}

/// The language a worker compiles for a job's source language: its preprocessed form.
/// `None` for languages that do not go remote.
pub fn preprocessed_language(source: Language) -> Option<Language> {
    match source {
        Language::C | Language::CppOutput => Some(Language::CppOutput),
        Language::Cxx | Language::CxxCppOutput => Some(Language::CxxCppOutput),
        Language::ObjC | Language::ObjCxx | Language::Asm | Language::AsmWithCpp => None,
    }
}
