//! Everything about the real compiler: argument classification, response files, toolchain
//! identity, and coloured diagnostics.

pub mod args;
pub mod color;
pub mod rsp;
pub mod toolchain;

use std::path::Path;

/// A file system view relative to a compile's working directory, for [`args::ArgContext`].
pub fn path_kind_in(cwd: &Path) -> impl Fn(&Path) -> args::PathKind + '_ {
    move |p: &Path| match std::fs::metadata(cwd.join(p)) {
        Ok(m) if m.is_dir() => args::PathKind::Dir,
        Ok(_) => args::PathKind::File,
        Err(_) => args::PathKind::Missing,
    }
}

/// What a compiler run printed and how it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ran {
    /// The exit code (128 + the signal when killed by one).
    pub exit_code: i32,
    /// Its standard output.
    pub stdout: Vec<u8>,
    /// Its standard error.
    pub stderr: Vec<u8>,
}

/// Runs a compiler with `args` in `cwd` with exactly the environment `env` (plus `PWD`), its
/// output captured. The child is killed when the returned future is dropped and when the
/// daemon dies, so nothing outlives the job that started it.
pub async fn run(
    program: &Path,
    args: &[String],
    cwd: &Path,
    env: &[(String, String)],
) -> std::io::Result<Ran> {
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .current_dir(cwd)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("PWD", cwd)
        // A compiler that is itself a wrapper calling meshcc runs straight through.
        .env("MESHCC_DISABLE", "1")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    // SAFETY: prctl is async-signal-safe; it only sets a flag of the child process.
    unsafe {
        cmd.pre_exec(|| {
            // The compiler dies with the daemon, so a wrapper that falls back to compiling
            // itself never races a leftover compile writing the same files.
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let out = cmd.output().await?;
    use std::os::unix::process::ExitStatusExt;
    let exit_code = out
        .status
        .code()
        .unwrap_or_else(|| 128 + out.status.signal().unwrap_or(0));
    Ok(Ran {
        exit_code,
        stdout: out.stdout,
        stderr: out.stderr,
    })
}
