//! The wrapper: the short-lived process a build runs in place of the compiler.
//!
//! It classifies the call. Anything that is not a cacheable compile runs the real compiler with
//! the original arguments by `exec` (no daemon round trip; only a fire-and-forget counter). A
//! cacheable compile goes to the node daemon, started on first use; if the daemon cannot be
//! reached or fails mid-job, the wrapper compiles directly and says so on stderr, so a build
//! never fails because of meshcc.

pub mod client;
pub mod locate;

use std::ffi::{OsStr, OsString};
use std::io::{IsTerminal, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::compiler::args::{self, ArgContext, CompilerFamily, Uncacheable, Verdict};
use crate::compiler::path_kind_in;
use crate::compiler::rsp;
use crate::config::Config;
use crate::node::ipc::{CompileRequest, CounterEvent, Reply, Request};

/// One call of the compiler, as the build made it.
#[derive(Debug, Clone)]
pub struct Invocation {
    /// The compiler as named: `gcc`, `/usr/bin/gcc`, or argv[0]'s name in masquerade mode.
    pub compiler: OsString,
    /// The arguments after it, unchanged.
    pub args: Vec<OsString>,
}

/// Exit code when the real compiler cannot be found or run (as a shell reports it).
const EXIT_NOT_FOUND: u8 = 127;

/// The apparent working directory: `$PWD` when it names the same directory as the real one
/// (as gcc computes it for debug info), else the real one.
pub fn apparent_cwd() -> std::io::Result<PathBuf> {
    let real = std::env::current_dir()?;
    if let Some(pwd) = std::env::var_os("PWD").map(PathBuf::from) {
        if pwd.is_absolute() {
            if let (Ok(a), Ok(b)) = (std::fs::metadata(&pwd), std::fs::metadata(&real)) {
                if a.dev() == b.dev() && a.ino() == b.ino() {
                    return Ok(pwd);
                }
            }
        }
    }
    Ok(real)
}

/// Runs the wrapper for one call; returns only when it did not `exec` the compiler.
pub fn run(inv: Invocation) -> ExitCode {
    let config = match Config::load() {
        Ok(c) => Some(c),
        Err(e) => {
            eprintln!("meshcc: warning: {e}; compiling directly");
            None
        }
    };
    let cwd = match apparent_cwd() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("meshcc: error: cannot read the current directory: {e}");
            return ExitCode::FAILURE;
        }
    };
    let self_exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("meshcc"));
    let (search, var) = match config.as_ref().and_then(|c| c.compiler_path.clone()) {
        Some(p) => (Some(OsString::from(p)), "MESHCC_PATH"),
        None => (std::env::var_os("PATH"), "PATH"),
    };
    let compiler =
        match locate::find_compiler(&inv.compiler, search.as_deref(), var, &cwd, &self_exe) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("meshcc: error: {e}");
                return ExitCode::from(EXIT_NOT_FOUND);
            }
        };
    let Some(config) = config.filter(|c| !c.disabled) else {
        return exec(&compiler, &inv.args);
    };
    match try_daemon(&config, &inv, &compiler, &cwd) {
        Outcome::Exec => exec(&compiler, &inv.args),
        Outcome::Done(code) => code,
        Outcome::Fallback(reason) => {
            eprintln!("meshcc: warning: {reason}; compiling directly");
            exec(&compiler, &inv.args)
        }
    }
}

enum Outcome {
    /// Not for the daemon: run the compiler unchanged.
    Exec,
    /// The daemon answered; exit with this.
    Done(ExitCode),
    /// Something went wrong: run the compiler unchanged, after saying why.
    Fallback(String),
}

fn try_daemon(config: &Config, inv: &Invocation, compiler: &Path, cwd: &Path) -> Outcome {
    let paths = &config.paths;
    let Some(raw) = inv
        .args
        .iter()
        .map(|a| a.to_str().map(str::to_owned))
        .collect::<Option<Vec<String>>>()
    else {
        client::count(
            paths,
            &CounterEvent::Uncacheable(Uncacheable::NonUtf8Argument),
        );
        return Outcome::Exec;
    };
    let read = |name: &str| std::fs::read_to_string(cwd.join(name));
    let Ok(args) = rsp::expand_response_files(&raw, &read) else {
        client::count(
            paths,
            &CounterEvent::Uncacheable(Uncacheable::BadArguments("response file".into())),
        );
        return Outcome::Exec;
    };
    match classify_here(&args, cwd, compiler, &inv.compiler) {
        Verdict::NotCompile(why) => {
            client::count(paths, &CounterEvent::NotCompile(why));
            return Outcome::Exec;
        }
        Verdict::Uncacheable(why) => {
            client::count(paths, &CounterEvent::Uncacheable(why));
            return Outcome::Exec;
        }
        Verdict::Cacheable(_) => {}
    }
    let (Some(compiler_str), Some(cwd_str)) = (compiler.to_str(), cwd.to_str()) else {
        client::count(
            paths,
            &CounterEvent::Uncacheable(Uncacheable::NonUtf8Argument),
        );
        return Outcome::Exec;
    };
    let umask = {
        let old = nix::sys::stat::umask(nix::sys::stat::Mode::empty());
        nix::sys::stat::umask(old);
        old.bits()
    };
    let req = Request::Compile(CompileRequest {
        compiler: compiler_str.to_string(),
        compiler_name: Path::new(&inv.compiler)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        args,
        cwd: cwd_str.to_string(),
        env: std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .collect(),
        stderr_is_tty: std::io::stderr().is_terminal(),
        umask: umask as u32,
    });
    match client::request(paths, &req, true) {
        Ok(Reply::Compiled {
            exit_code,
            stdout,
            stderr,
        }) => {
            // stderr first, as a compiler prints diagnostics before a listing on stdout.
            let _ = std::io::stderr().write_all(&stderr);
            let _ = std::io::stdout().write_all(&stdout);
            let _ = std::io::stdout().flush();
            Outcome::Done(ExitCode::from(exit_code.clamp(0, 255) as u8))
        }
        Ok(Reply::RunLocally { reason }) => Outcome::Fallback(reason),
        Ok(Reply::Error(e)) => Outcome::Fallback(format!("the daemon refused the job: {e}")),
        Ok(other) => Outcome::Fallback(format!("unexpected reply from the daemon: {other:?}")),
        Err(e) => Outcome::Fallback(e.to_string()),
    }
}

/// The family of the compiler at `compiler` (invoked as `invoked`): by the name of the file it
/// resolves to (`cc` → `gcc-12`), else by the invoked name.
pub fn family_of(compiler: &Path, invoked: &OsStr) -> CompilerFamily {
    let name = compiler
        .canonicalize()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| invoked.to_string_lossy().into_owned());
    CompilerFamily::from_name(&name)
}

/// Classifies `args` for the compiler at `compiler` (invoked as `invoked`) against the file
/// system under `cwd` and this process's environment.
pub fn classify_here(args: &[String], cwd: &Path, compiler: &Path, invoked: &OsStr) -> Verdict {
    let path_kind = path_kind_in(cwd);
    let ctx = ArgContext {
        family: family_of(compiler, invoked),
        path_kind: &path_kind,
        dependency_env_set: std::env::var_os("DEPENDENCIES_OUTPUT").is_some()
            || std::env::var_os("SUNPRO_DEPENDENCIES").is_some(),
    };
    args::classify(args, &ctx)
}

/// Replaces this process with the real compiler and the original arguments.
fn exec(compiler: &Path, args: &[OsString]) -> ExitCode {
    let err = std::process::Command::new(compiler).args(args).exec();
    eprintln!("meshcc: error: cannot run {}: {err}", compiler.display());
    ExitCode::from(EXIT_NOT_FOUND)
}
