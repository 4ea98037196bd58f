//! The job pipeline of one compile on the node: classify, identify the toolchain, preprocess,
//! derive the key, look in the cache, and on a miss compile and store the result.
//!
//! The pipeline owns its job: whatever fails on the way (the toolchain, the cache, the
//! preprocessor), the caller gets exactly what the direct compiler would have given, or is told
//! to run the compiler itself.

use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tracing::{debug, info_span, warn, Instrument};

use crate::cache::entry::Entry;
use crate::cache::key::{self, KeyInputs};
use crate::cache::store::{LocalStore, StoreError};
use crate::compiler::args::{self, ArgContext, CompileJob, CompilerFamily, Verdict};
use crate::compiler::toolchain::Toolchains;
use crate::compiler::{color, path_kind_in, Ran};
use crate::mesh::proto::InputForm;
use crate::node::ipc::{CompileRequest, Reply};
use crate::node::stats::{Event, Stats};
use crate::remote::client::{Client, Outcome, RemoteJob};
use crate::remote::worker::FORWARDED_ENV;
use crate::remote::{self, clang};

/// Identifies one job in logs; unique within a daemon's life, and random across restarts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct JobId(pub u64);

impl std::fmt::Display for JobId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// The shared state every job of a node uses.
pub struct Pipeline {
    store: Option<Arc<LocalStore>>,
    toolchains: Arc<Toolchains>,
    stats: Arc<Stats>,
    next_job: AtomicU64,
    /// The dispatch client, when this node is part of a mesh.
    remote: std::sync::OnceLock<Arc<Client>>,
}

/// What a worker is sent for a job (see [`Pipeline::remote_input`]).
struct RemoteInput {
    /// The text it compiles.
    text: Vec<u8>,
    /// The local preprocessor's diagnostics, printed before the worker's.
    cpp_stderr: Vec<u8>,
    /// Options added to the remote ones for this text.
    extra_args: Vec<String>,
    /// What the text is.
    form: InputForm,
}

/// Where a cache miss compiled.
enum Compiled {
    /// Here; `notice` is printed before the diagnostics but never cached.
    Local { ran: Ran, notice: Option<String> },
    /// On a worker, which already wrote the primary output in place.
    Remote(Ran),
}

impl Pipeline {
    /// Creates the pipeline. `store` is `None` when the cache cannot be used: every compile
    /// then runs locally.
    pub fn new(store: Option<Arc<LocalStore>>, stats: Arc<Stats>) -> Self {
        let seed = blake3::hash(
            format!("{}:{:?}", std::process::id(), std::time::SystemTime::now()).as_bytes(),
        );
        let mut start = [0u8; 8];
        start.copy_from_slice(&seed.as_bytes()[..8]);
        Self {
            store,
            toolchains: Arc::new(Toolchains::new()),
            stats,
            next_job: AtomicU64::new(u64::from_le_bytes(start) >> 16 << 16),
            remote: std::sync::OnceLock::new(),
        }
    }

    /// Lets cache misses go to the mesh through `client` (set once, when the mesh starts).
    pub fn set_remote(&self, client: Arc<Client>) {
        let _ = self.remote.set(client);
    }

    /// Runs one compile request to its reply.
    pub async fn compile(&self, req: CompileRequest) -> Reply {
        let job = JobId(self.next_job.fetch_add(1, Ordering::Relaxed));
        let span = info_span!("job", %job, input = tracing::field::Empty);
        self.compile_job(req, job, &span)
            .instrument(span.clone())
            .await
    }

    async fn compile_job(&self, req: CompileRequest, job_id: JobId, span: &tracing::Span) -> Reply {
        let cwd = PathBuf::from(&req.cwd);
        let family = crate::wrapper::family_of(
            Path::new(&req.compiler),
            std::ffi::OsStr::new(&req.compiler_name),
        );
        let env_get = |k: &str| {
            req.env
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.as_str())
        };
        let verdict = {
            let path_kind = path_kind_in(&cwd);
            let ctx = ArgContext {
                family,
                path_kind: &path_kind,
                dependency_env_set: env_get("DEPENDENCIES_OUTPUT").is_some()
                    || env_get("SUNPRO_DEPENDENCIES").is_some(),
            };
            args::classify(&req.args, &ctx)
        };
        let job = match verdict {
            Verdict::Cacheable(job) => job,
            // The wrapper classified this as cacheable; the file system changed since. Run it.
            Verdict::Uncacheable(why) => {
                self.stats.count(Event::Uncacheable(why.reason()));
                return self.run_uncached(&req).await;
            }
            Verdict::NotCompile(why) => {
                self.stats.count(Event::NotCompile(why.reason()));
                return self.run_uncached(&req).await;
            }
        };
        span.record("input", job.input.as_str());
        let Some(store) = self.store.clone() else {
            self.stats.count(Event::Error("cache_unavailable"));
            return self.run_uncached(&req).await;
        };

        let toolchains = self.toolchains.clone();
        let compiler = PathBuf::from(&req.compiler);
        let native_args: Vec<String> = job
            .key_args
            .iter()
            .filter(|a| a.ends_with("=native"))
            .cloned()
            .collect();
        let identity = tokio::task::spawn_blocking(move || {
            let id = toolchains.identify(&compiler, family)?;
            let native = if native_args.is_empty() {
                String::new()
            } else {
                toolchains.native_expansion(&compiler, &native_args)?
            };
            Ok::<_, crate::compiler::toolchain::ToolchainError>((id, native))
        })
        .await;
        let (toolchain, native) = match identity {
            Ok(Ok(found)) => {
                if let Some(remote) = self.remote.get() {
                    remote
                        .worker()
                        .add_toolchain(found.0, PathBuf::from(&req.compiler));
                }
                found
            }
            Ok(Err(e)) => {
                warn!("{e}");
                self.stats.count(Event::Error("toolchain"));
                return self.run_uncached(&req).await;
            }
            Err(e) => {
                warn!("toolchain task failed: {e}");
                self.stats.count(Event::Error("internal"));
                return self.run_uncached(&req).await;
            }
        };

        let remote_args = remote::remote_args(&job);
        // Whether a miss may compile on a worker (and how clang's text is made); why not,
        // counted, when it may not.
        let (remote, rewrite) = match self.remote.get().map(|r| {
            (
                r,
                remote::distribution(&job, family, &req.cwd, &remote_args),
            )
        }) {
            None => (None, None),
            Some((r, Ok(rewrite))) => (Some(r.clone()), rewrite),
            Some((_, Err(why))) => {
                self.stats.count(Event::NotDistributable(why));
                (None, None)
            }
        };
        let input_path = cwd.join(&job.input);
        let input_before = input_stamp(&input_path);
        // A job that may compile elsewhere gets its dependency file from the preprocessor.
        let preprocess_args = match &remote {
            Some(_) => [&job.preprocess_args[..], &job.dependency_args[..]].concat(),
            None => job.preprocess_args.clone(),
        };
        let (source, cpp_stderr) = if job.language.needs_preprocessing() {
            match run(&req, &req.compiler, &preprocess_args).await {
                Ok(ran) if ran.exit_code == 0 => (ran.stdout, ran.stderr),
                Ok(_) => {
                    // Let the real compile report the preprocessor's error exactly.
                    self.stats.count(Event::Uncacheable("preprocessor_error"));
                    return self.run_uncached(&req).await;
                }
                Err(e) => return self.cannot_run(&req, e),
            }
        } else {
            match tokio::fs::read(cwd.join(&job.input)).await {
                Ok(bytes) => (bytes, Vec::new()),
                Err(_) => {
                    self.stats.count(Event::Uncacheable("input_unreadable"));
                    return self.run_uncached(&req).await;
                }
            }
        };
        let env = key::keyed_env(env_get);
        let mut key_args = job.key_args.clone();
        if !native.is_empty() {
            key_args.push(format!("native-expansion={native}"));
        }
        let key = key::derive(&KeyInputs {
            toolchain: &toolchain.0,
            compiler_name: &req.compiler_name,
            key_args: &key_args,
            cwd: job.key_includes_cwd.then_some(req.cwd.as_str()),
            env: &env,
            source: &source,
            preprocessor_stderr: &cpp_stderr,
        });
        debug!(%key, "key derived");

        let lookup_store = store.clone();
        let found = tokio::task::spawn_blocking(move || lookup_store.get(&key)).await;
        match found {
            Ok(Ok(Some(entry))) => match write_outputs(&cwd, &job, &entry, req.umask) {
                Ok(()) => {
                    debug!("cache hit");
                    self.stats.count(Event::Hit);
                    return self.replay(&req, &job, 0, entry.stdout, entry.stderr);
                }
                Err(e) => {
                    warn!("cannot write cached outputs: {e}");
                    self.stats.count(Event::Error("output_write"));
                }
            },
            Ok(Ok(None)) => {}
            Ok(Err(StoreError::Corrupt { path, reason })) => {
                warn!(path = %path.display(), %reason, "corrupt cache entry dropped");
                self.stats.count(Event::Error("corrupt_entry"));
            }
            Ok(Err(e)) => {
                warn!("cache read failed: {e}");
                self.stats.count(Event::Error("cache_read"));
            }
            Err(e) => {
                warn!("cache task failed: {e}");
                self.stats.count(Event::Error("internal"));
            }
        }

        debug!("cache miss");
        self.stats.count(Event::Miss);
        let idle = remote
            .as_ref()
            .and_then(|r| r.worker().try_slot().map(|slot| (r.clone(), slot)));
        // The text a worker would compile, unless an idle local slot takes the job.
        let prepared = match (&remote, &idle) {
            (Some(_), None) => {
                match self
                    .remote_input(&req, &job, family, rewrite.as_ref(), source, &cpp_stderr)
                    .await
                {
                    Ok(p) => Some(p),
                    Err(why) => {
                        debug!("not distributable: {why}");
                        self.stats.count(Event::NotDistributable(why));
                        None
                    }
                }
            }
            _ => {
                drop(source);
                None
            }
        };
        let compiled = match (remote, prepared) {
            (Some(remote), Some(input)) => {
                let spec = RemoteJob {
                    job: job_id.0,
                    toolchain,
                    language: job.language,
                    mode: job.mode,
                    form: input.form,
                    args: [remote_args, input.extra_args].concat(),
                    env: req
                        .env
                        .iter()
                        .filter(|(k, _)| FORWARDED_ENV.contains(&k.as_str()))
                        .cloned()
                        .collect(),
                    input: match zstd::bulk::compress(&input.text, 1) {
                        Ok(c) => c,
                        Err(e) => {
                            warn!("cannot compress the input: {e}");
                            self.stats.count(Event::Error("internal"));
                            return self.run_uncached(&req).await;
                        }
                    },
                };
                match self
                    .dispatch(&remote, &spec, &req, &job, &input.cpp_stderr)
                    .await
                {
                    Ok(c) => c,
                    Err(reply) => return reply,
                }
            }
            _ => {
                let ran = self.compile_here(&req, &job).await;
                drop(idle);
                match ran {
                    Ok(ran) => Compiled::Local { ran, notice: None },
                    Err(e) => return self.cannot_run(&req, e),
                }
            }
        };
        let (ran, notice) = match compiled {
            Compiled::Local { ran, notice } => {
                self.stats.count(Event::LocalCompile);
                (ran, notice)
            }
            Compiled::Remote(ran) => (ran, None),
        };
        let with_notice = |stderr: Vec<u8>| match &notice {
            Some(n) => [n.as_bytes(), &stderr].concat(),
            None => stderr,
        };
        if ran.exit_code != 0 {
            self.stats.count(Event::CompileFailed);
            return self.replay(
                &req,
                &job,
                ran.exit_code,
                ran.stdout,
                with_notice(ran.stderr),
            );
        }
        if input_changed(&input_path, input_before) {
            // Edited while we compiled: the object may not match the text the key was made
            // from. Reply with it, but never store it.
            debug!("input modified during the compile; not stored");
            self.stats.count(Event::Uncacheable("modified_input_file"));
            return self.replay(&req, &job, 0, ran.stdout, with_notice(ran.stderr));
        }
        match read_outputs(&cwd, &job) {
            Ok(outputs) => {
                let entry = Entry {
                    stdout: ran.stdout,
                    stderr: ran.stderr,
                    outputs,
                };
                let stored = tokio::task::spawn_blocking(move || {
                    let result = store.put(&key, &entry);
                    (result, entry)
                })
                .await;
                match stored {
                    Ok((result, entry)) => {
                        if let Err(e) = result {
                            warn!("cannot store in the cache: {e}");
                            self.stats.count(Event::Error("cache_write"));
                        }
                        self.replay(&req, &job, 0, entry.stdout, with_notice(entry.stderr))
                    }
                    Err(e) => {
                        warn!("cache task failed: {e}");
                        self.stats.count(Event::Error("internal"));
                        Reply::RunLocally {
                            reason: "internal error while storing the result".into(),
                        }
                    }
                }
            }
            Err(e) => {
                warn!("compile succeeded but its outputs are unreadable: {e}");
                self.stats.count(Event::Error("output_missing"));
                self.replay(&req, &job, 0, ran.stdout, with_notice(ran.stderr))
            }
        }
    }

    /// The text a worker compiles, with what goes along with it; `Err` (a stats key) when the
    /// job cannot be sent faithfully after all.
    ///
    /// clang with debug information: the `-frewrite-includes` text ([`clang::rewrite`]).
    /// gcc with debug information: the `-fdirectives-only` output (macros expanded on the
    /// worker), which keeps the line tables identical to a local compile
    /// (research/wrapper.md §4.2). Otherwise, or if the gcc run fails, the fully preprocessed
    /// text the key was made from (identical objects without debug information, and no second
    /// preprocessor run).
    async fn remote_input(
        &self,
        req: &CompileRequest,
        job: &CompileJob,
        family: CompilerFamily,
        rewrite: Option<&clang::Rewrite>,
        source: Vec<u8>,
        cpp_stderr: &[u8],
    ) -> Result<RemoteInput, &'static str> {
        if let Some(rewrite) = rewrite {
            let mut args = job.preprocess_args.clone();
            args.push("-frewrite-includes".to_string());
            let rewritten = match run(req, &req.compiler, &args).await {
                Ok(ran) if ran.exit_code == 0 => {
                    rewrite.check_text(&ran.stdout).map(|()| ran.stdout)
                }
                _ => Err("clang_rewrite_includes_failed"),
            };
            match rewritten {
                Ok(text) => {
                    return Ok(RemoteInput {
                        text,
                        // The text keeps #warning, so the worker prints it again (and a
                        // remote compile that prints anything is compiled here anyway).
                        cpp_stderr: Vec::new(),
                        extra_args: rewrite.extra_args.clone(),
                        form: InputForm::RewrittenIncludes {
                            path: rewrite.path.clone(),
                        },
                    });
                }
                // Without debug information the full text is as good for the object.
                Err(why) if job.key_includes_cwd => return Err(why),
                Err(why) => debug!("{why}; sending the full -E text"),
            }
        }
        // -fdirectives-only refuses -Wunused-macros and is unreliable with -pedantic
        // (icecream and sccache avoid it there too).
        let directives_only = family == CompilerFamily::Gcc
            && job.key_includes_cwd
            && job.language.needs_preprocessing()
            && !job.remote_args.iter().any(|a| {
                a == "-Wunused-macros" || a.starts_with("-pedantic") || a == "-traditional"
            });
        if directives_only {
            let mut args = job.preprocess_args.clone();
            args.push("-fdirectives-only".to_string());
            match run(req, &req.compiler, &args).await {
                Ok(ran) if ran.exit_code == 0 => {
                    return Ok(RemoteInput {
                        text: ran.stdout,
                        cpp_stderr: ran.stderr,
                        extra_args: vec!["-fdirectives-only".to_string()],
                        form: InputForm::Preprocessed,
                    });
                }
                _ => debug!("-fdirectives-only preprocessing failed; sending the full -E text"),
            }
        }
        Ok(RemoteInput {
            text: source,
            cpp_stderr: cpp_stderr.to_vec(),
            extra_args: Vec::new(),
            form: InputForm::Preprocessed,
        })
    }

    /// Runs the compile here as given (colour forced, stripped on replay as wanted).
    async fn compile_here(&self, req: &CompileRequest, job: &CompileJob) -> std::io::Result<Ran> {
        let mut compile_args = req.args.clone();
        if !job.records_command_line {
            compile_args.push(color::FORCE_COLOR_FLAG.to_string());
        }
        run(req, &req.compiler, &compile_args).await
    }

    /// Sends a cache miss through the mesh: a local slot if one is idle, else a worker, else
    /// the local fallback under the policy. A remote object is written in place here.
    async fn dispatch(
        &self,
        remote: &Client,
        spec: &RemoteJob,
        req: &CompileRequest,
        job: &CompileJob,
        cpp_stderr: &[u8],
    ) -> Result<Compiled, Reply> {
        let here = |notice| async move {
            match self.compile_here(req, job).await {
                Ok(ran) => Ok(Compiled::Local { ran, notice }),
                Err(e) => Err(self.cannot_run(req, e)),
            }
        };
        match remote.dispatch(spec).await {
            Outcome::LocalSlot(slot) => {
                debug!("compiling on a local slot");
                let r = here(None).await;
                drop(slot);
                r
            }
            Outcome::Fallback { reason, warn } => {
                self.stats.count(Event::LocalFallback(reason.key()));
                tracing::warn!(
                    reason = reason.key(),
                    "no worker could take the job; compiling locally (local fallback)"
                );
                here(warn.then(|| {
                    format!(
                        "meshcc: warning: compiled locally, no worker could take it ({}); MESHCC_FALLBACK=warn\n",
                        reason.key()
                    )
                }))
                .await
            }
            Outcome::Failed(reason) => {
                self.stats.count(Event::LocalFallback(reason.key()));
                tracing::warn!(
                    reason = reason.key(),
                    "no worker could take the job; failing (MESHCC_FALLBACK=fail)"
                );
                Err(Reply::Compiled {
                    exit_code: 1,
                    stdout: Vec::new(),
                    stderr: format!(
                        "meshcc: error: no worker could take the job ({}) and MESHCC_FALLBACK=fail forbids compiling locally\n",
                        reason.key()
                    )
                    .into_bytes(),
                })
            }
            Outcome::Remote {
                worker,
                attempt,
                result,
                output,
            } => {
                debug!(worker = %worker.short(), attempt, exit = result.exit_code, "compiled remotely");
                self.stats.count(Event::RemoteCompile(&worker.short()));
                if !result.stderr.is_empty() {
                    // Caret lines need the sources, which the worker does not have: the
                    // local compiler gives the exact diagnostics (icecream does the same).
                    debug!("the remote compile printed diagnostics; compiling here for exact ones");
                    self.stats.count(Event::DiagnosticsRerun);
                    return here(None).await;
                }
                let ran = Ran {
                    exit_code: result.exit_code,
                    stdout: result.stdout,
                    // The preprocessor's own diagnostics (#warning) came from the local step.
                    stderr: [cpp_stderr, &result.stderr].concat(),
                };
                if ran.exit_code == 0 {
                    let entry = Entry {
                        stdout: Vec::new(),
                        stderr: Vec::new(),
                        outputs: vec![(args::OutputKind::Primary, output)],
                    };
                    let cwd = PathBuf::from(&req.cwd);
                    if let Err(e) = write_outputs(&cwd, job, &entry, req.umask) {
                        warn!("cannot write the remote output: {e}");
                        self.stats.count(Event::Error("output_write"));
                        return here(None).await;
                    }
                }
                Ok(Compiled::Remote(ran))
            }
        }
    }

    /// Runs the compile as given, uncached, capturing its output exactly as the wrapper would
    /// have seen it.
    async fn run_uncached(&self, req: &CompileRequest) -> Reply {
        match run(req, &req.compiler, &req.args).await {
            Ok(ran) => {
                self.stats.count(Event::LocalCompile);
                if ran.exit_code != 0 {
                    self.stats.count(Event::CompileFailed);
                }
                Reply::Compiled {
                    exit_code: ran.exit_code,
                    stdout: ran.stdout,
                    stderr: ran.stderr,
                }
            }
            Err(e) => self.cannot_run(req, e),
        }
    }

    fn cannot_run(&self, req: &CompileRequest, e: std::io::Error) -> Reply {
        warn!(compiler = %req.compiler, "cannot run the compiler: {e}");
        self.stats.count(Event::Error("compiler_run"));
        Reply::RunLocally {
            reason: format!("the daemon cannot run {}: {e}", req.compiler),
        }
    }

    /// Builds the reply, colouring stderr as the direct compiler would have.
    fn replay(
        &self,
        req: &CompileRequest,
        job: &CompileJob,
        exit_code: i32,
        stdout: Vec<u8>,
        stderr: Vec<u8>,
    ) -> Reply {
        let env_get = |k: &str| {
            req.env
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.as_str())
        };
        let colour = color::wanted(
            job.color,
            req.stderr_is_tty,
            env_get("TERM"),
            env_get("GCC_COLORS"),
        );
        Reply::Compiled {
            exit_code,
            stdout,
            stderr: if colour {
                stderr
            } else {
                color::strip(&stderr)
            },
        }
    }
}

/// Runs the compiler with `args` in the caller's directory and environment.
async fn run(req: &CompileRequest, program: &str, args: &[String]) -> std::io::Result<Ran> {
    crate::compiler::run(Path::new(program), args, Path::new(&req.cwd), &req.env).await
}

/// What identifies a version of the input file.
type InputStamp = Option<(u64, u64, std::time::SystemTime)>;

fn input_stamp(path: &Path) -> InputStamp {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some((m.ino(), m.size(), m.modified().ok()?))
}

/// Whether the input changed since `before` was taken (its inode, size or nanosecond mtime).
/// An edit within the same kernel clock tick and of the same size would go unseen; header
/// edits are not checked (see docs/architecture.md).
fn input_changed(path: &Path, before: InputStamp) -> bool {
    before.is_none() || input_stamp(path) != before
}

/// Reads the outputs a successful compile wrote. The primary output must exist; side outputs
/// that the compiler chose not to write are left out.
fn read_outputs(cwd: &Path, job: &CompileJob) -> std::io::Result<Vec<(args::OutputKind, Vec<u8>)>> {
    let mut outputs = Vec::with_capacity(job.outputs.len());
    for out in &job.outputs {
        match std::fs::read(cwd.join(&out.path)) {
            Ok(bytes) => outputs.push((out.kind, bytes)),
            Err(e)
                if e.kind() == std::io::ErrorKind::NotFound
                    && out.kind != args::OutputKind::Primary => {}
            Err(e) => return Err(std::io::Error::new(e.kind(), format!("{}: {e}", out.path))),
        }
    }
    Ok(outputs)
}

/// Distinguishes temporary output files of concurrent jobs.
static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Writes a cached entry's outputs where the compile would have: each to a temporary file in
/// the same directory, renamed into place, so a reader never sees half a file.
fn write_outputs(cwd: &Path, job: &CompileJob, entry: &Entry, umask: u32) -> std::io::Result<()> {
    use std::io::Write;
    for (kind, bytes) in &entry.outputs {
        let Some(out) = job.outputs.iter().find(|o| o.kind == *kind) else {
            continue;
        };
        let dest = cwd.join(&out.path);
        if out.path == "/dev/null" {
            continue;
        }
        let dir = dest.parent().unwrap_or(cwd);
        let name = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = dir.join(format!(
            ".{name}.meshcc-{}-{}.tmp",
            std::process::id(),
            TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let result = (|| {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o666 & !umask)
                .open(&tmp)?;
            f.write_all(bytes)?;
            // The mode given to open is masked by the daemon's umask; set the caller's.
            f.set_permissions(std::fs::Permissions::from_mode(0o666 & !umask))?;
            std::fs::rename(&tmp, &dest)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result.map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", dest.display())))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_input_edited_during_the_job_is_seen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.c");
        std::fs::write(&path, "int a;").unwrap();
        let before = input_stamp(&path);
        assert!(!input_changed(&path, before));

        std::fs::write(&path, "int b; int c;").unwrap();
        assert!(input_changed(&path, before), "edited");

        let now = input_stamp(&path);
        std::fs::remove_file(&path).unwrap();
        assert!(input_changed(&path, now), "removed");
        assert!(input_changed(&path, None), "unreadable at the start");
    }
}
