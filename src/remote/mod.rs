//! Distributed compilation: the worker that runs compiles for peers, the coordinator's
//! allocation service, the client's dispatch of a job to workers, and the rules both sides
//! share (the remote allow-list).
//!
//! See `docs/architecture.md`, section "Distributed compilation".

pub mod allow;
pub mod clang;
pub mod client;
pub mod coordinator;
pub mod dispatch;
pub mod worker;

use std::sync::Arc;
use std::time::Duration;

use tracing::{debug, info};

use crate::compiler::args::{CompileJob, CompilerFamily};
use crate::compiler::toolchain::Toolchains;
use crate::mesh::transport::{Mesh, Served};
use crate::mesh::view::ViewHandles;
use crate::node::stats::Stats;
use client::Client;
use coordinator::Coordinator;
use dispatch::{FallbackPolicy, Policy, RetryLimit};
use worker::{CompilerExecutor, Executor, Worker, WorkerSettings};

/// The options a worker is sent for `job`: its remote options, with colour forced (stripped on
/// replay as wanted) unless the compiler records its command line.
pub fn remote_args(job: &CompileJob) -> Vec<String> {
    let mut args = job.remote_args.clone();
    if !job.records_command_line {
        args.push(crate::compiler::color::FORCE_COLOR_FLAG.to_string());
    }
    args
}

/// Whether a cacheable compile may go to a worker (pure), given the options it would be sent
/// with (`remote_args`): `Ok` with how clang's text is made (`Some`: rewritten includes), else
/// why not, as a statistics key.
pub fn distribution(
    job: &CompileJob,
    family: CompilerFamily,
    cwd: &str,
    remote_args: &[String],
) -> Result<Option<clang::Rewrite>, &'static str> {
    if let Err(why) = &job.distributable {
        return Err(why.reason());
    }
    let rewrite = if family == CompilerFamily::Clang {
        // The recorded command line would be the worker's.
        if job.records_command_line {
            return Err("clang_records_command_line");
        }
        // With debug information only rewritten includes are faithful; without, the fully
        // preprocessed text does when they cannot be sent.
        match clang::rewrite(job, cwd) {
            Ok(r) => Some(r),
            Err(why) if job.key_includes_cwd => return Err(why),
            Err(_) => None,
        }
    } else {
        None
    };
    // The dependency file of an already preprocessed input comes only from its compile.
    if !job.language.needs_preprocessing() && !job.dependency_args.is_empty() {
        return Err("dependency_file_of_preprocessed_input");
    }
    if worker::preprocessed_language(job.language).is_none() {
        return Err("local_only_language");
    }
    let extra: &[String] = rewrite.as_ref().map_or(&[], |r| &r.extra_args);
    match allow::check(remote_args).and_then(|()| allow::check(extra)) {
        Ok(()) => Ok(rewrite),
        Err(refusal) => {
            debug!("not distributable: {refusal}");
            Err("refused_option")
        }
    }
}

/// The node's distributed-compilation settings, from the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteSettings {
    /// Worker slots (`MESHCC_SLOTS`; default: the number of cores).
    pub slots: Option<u32>,
    /// Per-job timeout on the worker (`MESHCC_JOB_TIMEOUT`, seconds; default 600).
    pub job_timeout: Duration,
    /// The client's dispatch policy (`MESHCC_RETRY_LIMIT`, `MESHCC_FALLBACK`).
    pub policy: Policy,
    /// Seed of the allocators' random choices; `None` (a real node): different per node and
    /// run. A simulation sets it so that a run replays.
    pub rng_seed: Option<u64>,
}

impl Default for RemoteSettings {
    fn default() -> Self {
        Self {
            slots: None,
            job_timeout: Duration::from_secs(600),
            policy: Policy::default(),
            rng_seed: None,
        }
    }
}

impl RemoteSettings {
    /// Reads the `MESHCC_*` variables; the error names the variable and what it expects.
    pub fn resolve(get: &dyn Fn(&str) -> Option<String>) -> Result<Self, String> {
        let d = Self::default();
        let number = |name: &str| -> Result<Option<u64>, String> {
            get(name)
                .map(|v| {
                    v.parse()
                        .map_err(|_| format!("{name} = {v:?}: expected a whole number"))
                })
                .transpose()
        };
        Ok(Self {
            slots: number("MESHCC_SLOTS")?.map(|n| n.min(u64::from(u32::MAX)) as u32),
            job_timeout: number("MESHCC_JOB_TIMEOUT")?.map_or(d.job_timeout, Duration::from_secs),
            policy: Policy {
                retry_limit: get("MESHCC_RETRY_LIMIT")
                    .map(|v| v.parse::<RetryLimit>())
                    .transpose()?
                    .unwrap_or(d.policy.retry_limit),
                fallback: get("MESHCC_FALLBACK")
                    .map(|v| v.parse::<FallbackPolicy>())
                    .transpose()?
                    .unwrap_or(d.policy.fallback),
            },
            rng_seed: None,
        })
    }
}

/// Compiler names a worker looks for on its `PATH` at start, to offer them to peers.
const COMPILER_NAMES: &[&str] = &["cc", "c++", "gcc", "g++", "clang", "clang++"];

/// Starts the node's worker, coordinator service and dispatch client on `mesh`, sharing
/// `handles` with membership; `executor` runs the compiles.
pub fn start(
    mesh: Arc<Mesh>,
    handles: &ViewHandles,
    settings: &RemoteSettings,
    scratch: std::path::PathBuf,
    stats: Arc<Stats>,
    executor: Arc<dyn Executor>,
) -> Arc<Client> {
    let mut ws = WorkerSettings::new(scratch);
    if let Some(n) = settings.slots {
        ws.slots = n;
    }
    ws.job_timeout = settings.job_timeout;
    let worker = Worker::new(
        ws,
        executor,
        handles.advert.clone(),
        handles.view.subscribe(),
        stats.clone(),
    );
    let seed = settings.rng_seed.unwrap_or_else(coordinator::rand_seed);
    let coordinator = Coordinator::new(
        mesh.id(),
        handles.view.subscribe(),
        handles.advert.subscribe(),
        seed,
    );
    let service = {
        let worker = worker.clone();
        let coordinator = coordinator.clone();
        Arc::new(
            move |served: Served| -> crate::mesh::transport::ServiceFuture {
                match served.request {
                    crate::mesh::proto::Request::RunJob(_) => {
                        Box::pin(worker.clone().serve(served))
                    }
                    _ => Box::pin(coordinator.clone().serve(served)),
                }
            },
        )
    };
    mesh.set_service(service);
    info!(slots = worker.slots_total(), "worker ready");
    Client::new(
        mesh,
        handles.view.subscribe(),
        worker,
        coordinator,
        settings.policy,
        stats,
        seed,
    )
}

/// Finds the compilers on `path` and offers their toolchains through the worker (blocking:
/// each is hashed). Entries that are meshcc itself are skipped.
pub fn offer_path_compilers(worker: &Worker, path: Option<&std::ffi::OsStr>) {
    let toolchains = Toolchains::new();
    let me = std::env::current_exe().unwrap_or_default();
    let cwd = std::path::PathBuf::from("/");
    let mut offered = Vec::new();
    for name in COMPILER_NAMES {
        let Ok(found) = crate::wrapper::locate::find_compiler(
            std::ffi::OsStr::new(name),
            path,
            "PATH",
            &cwd,
            &me,
        ) else {
            continue;
        };
        match toolchains.identify(&found, CompilerFamily::from_name(name)) {
            Ok(id) => {
                debug!(compiler = %found.display(), "offering toolchain");
                offered.push((id, found));
            }
            Err(e) => debug!("{e}"),
        }
    }
    info!(
        toolchains = offered.len(),
        "worker offers its compilers to the mesh"
    );
    worker.add_toolchains(offered);
}

/// The executor of a real node.
pub fn real_executor() -> Arc<dyn Executor> {
    Arc::new(CompilerExecutor)
}

#[cfg(test)]
mod tests;
