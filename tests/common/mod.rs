//! Shared helpers for meshcc's integration tests: a private `MESHCC_HOME` per test whose daemon
//! is always stopped, commands with a clean environment, outputs compared byte for byte, and the
//! Lua sources as a real-world corpus.
//!
//! Nothing here sleeps to "let things happen": every wait polls for a condition with a generous
//! deadline and fails with a message naming the condition.

#![allow(dead_code)]

pub mod netns;

use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The meshcc binary under test.
pub fn meshcc_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_meshcc"))
}

/// How long any single command may run before the test fails (a hang is a failure).
pub const COMMAND_DEADLINE: Duration = Duration::from_secs(300);
/// How long to wait for a condition to become true (daemon gone, a counter arriving, …).
pub const POLL_DEADLINE: Duration = Duration::from_secs(60);

/// Variables of the test's own environment that must not leak into the commands under test.
fn clean_env(cmd: &mut Command) {
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().into_owned();
        if k.starts_with("MESHCC_")
            || k.starts_with("CCACHE_")
            || matches!(
                k.as_str(),
                "MAKEFLAGS"
                    | "MFLAGS"
                    | "MAKELEVEL"
                    | "CARGO_MAKEFLAGS"
                    | "GCC_COLORS"
                    | "DEPENDENCIES_OUTPUT"
                    | "SUNPRO_DEPENDENCIES"
                    | "SOURCE_DATE_EPOCH"
            )
        {
            cmd.env_remove(&k);
        }
    }
    // Same locale for the direct and the wrapped compiler, and plain quotes in messages.
    cmd.env("LC_ALL", "C");
}

/// Sets the working directory of `cmd` and `PWD` with it (gcc takes `PWD` for debug info when
/// it names the same directory, and so does meshcc).
pub fn in_dir<'a>(cmd: &'a mut Command, dir: &Path) -> &'a mut Command {
    cmd.current_dir(dir).env("PWD", dir)
}

/// Polls `cond` until it holds; panics naming `what` after [`POLL_DEADLINE`].
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + POLL_DEADLINE;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {POLL_DEADLINE:?} waiting for: {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A short description of a command for assertion messages.
pub fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    if let Some(dir) = cmd.get_current_dir() {
        s.push_str(&format!("  (in {})", dir.display()));
    }
    s
}

/// Runs `cmd` to completion with captured stdout and stderr; fails the test if it runs longer
/// than `deadline` (killing it first), so a hang or an endless recursion cannot stall the suite.
pub fn output_within(cmd: &mut Command, deadline: Duration) -> Output {
    let what = describe(cmd);
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start `{what}`: {e}"));
    let drain = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut buf);
            }
            buf
        })
    };
    let out = drain(
        child
            .stdout
            .take()
            .map(|r| Box::new(r) as Box<dyn Read + Send>),
    );
    let err = drain(
        child
            .stderr
            .take()
            .map(|r| Box::new(r) as Box<dyn Read + Send>),
    );
    let end = Instant::now() + deadline;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < end => std::thread::sleep(Duration::from_millis(10)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("`{what}` did not finish within {deadline:?}; killed");
            }
            Err(e) => panic!("cannot wait for `{what}`: {e}"),
        }
    };
    Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    }
}

/// Runs `cmd` (with the default deadline) and returns its output, whatever its exit status.
pub fn output(cmd: &mut Command) -> Output {
    output_within(cmd, COMMAND_DEADLINE)
}

/// Runs `cmd` and asserts it succeeded, showing its stdout and stderr when it did not.
pub fn run(cmd: &mut Command) -> Output {
    let out = output(cmd);
    assert!(
        out.status.success(),
        "`{}` failed with {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        describe(cmd),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Asserts two runs of a compiler (direct and through meshcc) printed the same bytes and ended
/// the same way.
pub fn assert_same_output(what: &str, direct: &Output, mesh: &Output) {
    let show = |o: &Output| {
        format!(
            "status {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    };
    assert!(
        direct.status.code() == mesh.status.code()
            && direct.stdout == mesh.stdout
            && direct.stderr == mesh.stderr,
        "{what}: meshcc's result differs from the direct compiler's\n=== direct: {}\n=== meshcc: {}",
        show(direct),
        show(mesh)
    );
}

/// Exit code of a finished process (signals as 128+n, like a shell).
pub fn code(status: &ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

/// All regular files under `dir`, as paths relative to it, sorted.
pub fn list_files(dir: &Path) -> Vec<PathBuf> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) {
        let entries =
            std::fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
        for entry in entries {
            let entry = entry.unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
            let path = entry.path();
            let kind = entry
                .file_type()
                .unwrap_or_else(|e| panic!("cannot stat {}: {e}", path.display()));
            if kind.is_dir() {
                walk(root, &path, out);
            } else if kind.is_file() {
                out.push(path.strip_prefix(root).expect("under root").to_path_buf());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// Asserts two files hold the same bytes, naming the first differing offset.
pub fn assert_same_file(expected: &Path, actual: &Path) {
    let a = std::fs::read(expected)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", expected.display()));
    let b =
        std::fs::read(actual).unwrap_or_else(|e| panic!("cannot read {}: {e}", actual.display()));
    if a != b {
        let at = a
            .iter()
            .zip(&b)
            .position(|(x, y)| x != y)
            .unwrap_or(a.len().min(b.len()));
        panic!(
            "{} differs from {}: first difference at byte {at} (sizes {} and {})",
            actual.display(),
            expected.display(),
            b.len(),
            a.len()
        );
    }
}

/// Asserts `actual` holds exactly the same files as `expected`, byte for byte; names the first
/// missing, extra or differing file.
pub fn compare_trees(expected: &Path, actual: &Path) {
    let want = list_files(expected);
    let got = list_files(actual);
    for f in &want {
        assert!(
            got.contains(f),
            "{} is missing from {} (present in {})",
            f.display(),
            actual.display(),
            expected.display()
        );
    }
    for f in &got {
        assert!(
            want.contains(f),
            "{} is in {} but not in {}",
            f.display(),
            actual.display(),
            expected.display()
        );
    }
    assert!(
        !want.is_empty(),
        "nothing to compare in {}",
        expected.display()
    );
    for f in &want {
        assert_same_file(&expected.join(f), &actual.join(f));
    }
}

/// Moves the files directly in `from` whose names end with one of `suffixes` into `to` (created
/// if needed); returns how many moved.
pub fn move_outputs(from: &Path, to: &Path, suffixes: &[&str]) -> usize {
    std::fs::create_dir_all(to).unwrap_or_else(|e| panic!("cannot create {}: {e}", to.display()));
    let mut n = 0;
    for name in file_names(from) {
        if suffixes.iter().any(|s| name.ends_with(s)) {
            std::fs::rename(from.join(&name), to.join(&name))
                .unwrap_or_else(|e| panic!("cannot move {name} to {}: {e}", to.display()));
            n += 1;
        }
    }
    n
}

/// Deletes the files directly in `dir` whose names end with one of `suffixes`.
pub fn remove_outputs(dir: &Path, suffixes: &[&str]) {
    for name in file_names(dir) {
        if suffixes.iter().any(|s| name.ends_with(s)) {
            std::fs::remove_file(dir.join(&name))
                .unwrap_or_else(|e| panic!("cannot remove {name}: {e}"));
        }
    }
}

/// Names of the regular files directly in `dir`, sorted.
pub fn file_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Writes `text` to `dir/name`.
pub fn write(dir: &Path, name: &str, text: impl AsRef<[u8]>) {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}

/// Whether process `pid` exists and is not a zombie (a dead daemon nobody has reaped yet).
pub fn pid_alive(pid: i32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state follows the parenthesised command name, which may itself contain ") ".
    let state = stat
        .rfind(')')
        .and_then(|i| stat[i + 1..].split_whitespace().next().map(str::to_owned));
    !matches!(state.as_deref(), Some("Z") | Some("X") | None)
}

/// Pids of the live `meshcc daemon` processes whose environment has `MESHCC_HOME=home`.
pub fn daemons_for(home: &Path) -> Vec<i32> {
    let mut want = b"MESHCC_HOME=".to_vec();
    want.extend_from_slice(home.as_os_str().as_bytes());
    let mut pids = Vec::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return pids;
    };
    for p in procs.filter_map(|e| e.ok()) {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(p.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
        let is_daemon = args.len() >= 2
            && Path::new(OsStr::from_bytes(args[0]))
                .file_name()
                .is_some_and(|n| n.as_bytes().starts_with(b"meshcc"))
            && args[1] == b"daemon";
        if !is_daemon {
            continue;
        }
        let Ok(environ) = std::fs::read(p.path().join("environ")) else {
            continue;
        };
        if environ.split(|&b| b == 0).any(|v| v == want.as_slice()) && pid_alive(pid) {
            pids.push(pid);
        }
    }
    pids
}

/// A private meshcc home (config, data, cache, sockets) and a work directory, both temporary.
/// Dropping it stops the home's daemon: `meshcc stop`, then SIGKILL if it still lives.
pub struct Home {
    _tmp: tempfile::TempDir,
    /// `MESHCC_HOME`.
    pub home: PathBuf,
    /// A scratch directory for sources and outputs.
    pub work: PathBuf,
    /// Extra variables for every command this home makes.
    pub env: Vec<(OsString, OsString)>,
}

impl Default for Home {
    fn default() -> Self {
        Self::new()
    }
}

impl Home {
    /// A new, empty home (no daemon runs yet).
    pub fn new() -> Self {
        let tmp = tempfile::Builder::new()
            .prefix("meshcc-test-")
            .tempdir()
            .expect("cannot create a temporary directory");
        let home = tmp.path().join("home");
        let work = tmp.path().join("work");
        std::fs::create_dir_all(&work).expect("cannot create the work directory");
        Self {
            _tmp: tmp,
            home,
            work,
            env: Vec::new(),
        }
    }

    /// The temporary root holding `home` and `work` (for further scratch directories).
    pub fn root(&self) -> &Path {
        self._tmp.path()
    }

    /// Adds a variable to every command made from now on.
    pub fn set_env(&mut self, k: impl Into<OsString>, v: impl Into<OsString>) {
        self.env.push((k.into(), v.into()));
    }

    /// A command running `program` in `work` with this home and a clean environment.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new(program);
        clean_env(&mut cmd);
        cmd.env("MESHCC_HOME", &self.home);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        in_dir(&mut cmd, &self.work);
        cmd
    }

    /// `meshcc <args>` (a subcommand or a compiler call in prefix mode), in `work`.
    pub fn meshcc<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = self.command(meshcc_bin());
        cmd.args(args);
        cmd
    }

    /// The direct compiler call `compiler <args>` in `work`, same environment as the wrapped one.
    pub fn direct<I, S>(&self, compiler: &str, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = self.command(compiler);
        cmd.args(args);
        cmd
    }

    /// `meshcc <compiler> <args>` in `work`.
    pub fn wrapped<I, S>(&self, compiler: &str, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = self.meshcc([compiler]);
        cmd.args(args);
        cmd
    }

    /// `meshcc stats --json`, parsed.
    pub fn stats(&self) -> serde_json::Value {
        let out = run(&mut self.meshcc(["stats", "--json"]));
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "`meshcc stats --json` printed invalid JSON ({e}):\n{}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    /// A numeric counter of `stats --json` (`cache_hits`, …).
    pub fn stat(&self, key: &str) -> u64 {
        let s = self.stats();
        s.get(key)
            .and_then(|v| v.as_u64())
            .unwrap_or_else(|| panic!("stats --json has no numeric {key:?}: {s}"))
    }

    /// A counter inside one of the by-reason maps (`errors`, `not_compile`, …); 0 when absent.
    pub fn reason(&self, map: &str, reason: &str) -> u64 {
        let s = self.stats();
        let m = s
            .get(map)
            .and_then(|m| m.as_object())
            .unwrap_or_else(|| panic!("stats --json has no map {map:?}: {s}"));
        m.get(reason).and_then(|v| v.as_u64()).unwrap_or(0)
    }

    /// `run/daemon.sock`.
    pub fn socket(&self) -> PathBuf {
        self.home.join("run/daemon.sock")
    }

    /// The pid written in `run/daemon.lock`, if any.
    pub fn daemon_pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.home.join("run/daemon.lock"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
    }

    /// The pid of the running daemon; fails if none runs.
    pub fn running_daemon(&self) -> i32 {
        let pid = self
            .daemon_pid()
            .unwrap_or_else(|| panic!("no pid in {}/run/daemon.lock", self.home.display()));
        assert!(pid_alive(pid), "the daemon (pid {pid}) is not running");
        pid
    }

    /// The daemon log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.home.join("data/daemon.log")).unwrap_or_default()
    }

    /// Stops the daemon with `meshcc stop` and waits until its pid and socket are gone.
    pub fn stop(&self) {
        let pid = self.daemon_pid();
        run(&mut self.meshcc(["stop"]));
        if let Some(pid) = pid {
            wait_until(&format!("daemon pid {pid} to exit"), || !pid_alive(pid));
        }
        assert!(
            !self.socket().exists(),
            "the daemon socket {} is still there after `meshcc stop`",
            self.socket().display()
        );
    }
}

impl Drop for Home {
    fn drop(&mut self) {
        // Never panic here: this also runs while a failed test unwinds.
        let mut stop = self.meshcc(["stop"]);
        let _ = stop.stdout(Stdio::null()).stderr(Stdio::null());
        if let Ok(mut child) = stop.spawn() {
            let end = Instant::now() + Duration::from_secs(30);
            while Instant::now() < end {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        let mut pids = daemons_for(&self.home);
        pids.extend(self.daemon_pid());
        for pid in pids {
            if pid > 1 && pid_alive(pid) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

/// The directory of Lua 5.4's C sources bundled by the `lua-src` dev-dependency.
pub fn lua_sources() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
        let out = run(Command::new(env!("CARGO"))
            .args([
                "metadata",
                "--format-version",
                "1",
                "--offline",
                // Only this platform's packages: others (Windows-only crates) may be missing
                // from an offline registry.
                "--filter-platform",
                &format!("{}-unknown-linux-gnu", std::env::consts::ARCH),
                "--manifest-path",
            ])
            .arg(&manifest));
        let meta: serde_json::Value =
            serde_json::from_slice(&out.stdout).expect("cargo metadata printed invalid JSON");
        let pkg_manifest = meta["packages"]
            .as_array()
            .expect("cargo metadata has no packages")
            .iter()
            .find(|p| p["name"] == "lua-src")
            .and_then(|p| p["manifest_path"].as_str())
            .expect("lua-src is not among the packages (dev-dependency missing?)");
        let root = Path::new(pkg_manifest)
            .parent()
            .expect("manifest has a parent");
        let dir = file_names_and_dirs(root)
            .into_iter()
            .filter(|n| n.starts_with("lua-5.4"))
            .max()
            .unwrap_or_else(|| panic!("no lua-5.4.* directory in {}", root.display()));
        root.join(dir)
    })
}

fn file_names_and_dirs(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// Copies Lua's `.c` and `.h` files into `dst`; returns the names of the `.c` files.
pub fn copy_lua(dst: &Path) -> Vec<String> {
    let src = lua_sources();
    std::fs::create_dir_all(dst).unwrap_or_else(|e| panic!("cannot create {}: {e}", dst.display()));
    let mut sources = Vec::new();
    for name in file_names(src) {
        if name.ends_with(".c") || name.ends_with(".h") {
            std::fs::copy(src.join(&name), dst.join(&name))
                .unwrap_or_else(|e| panic!("cannot copy {name}: {e}"));
            if name.ends_with(".c") {
                sources.push(name);
            }
        }
    }
    assert!(
        sources.len() >= 20,
        "too few Lua sources in {}",
        src.display()
    );
    sources
}

/// Writes a Makefile in `dir` building every `.c` file to a `.o` with `$(CC) <flags> -c`.
/// `flags` is make syntax (it may use `$@`).
pub fn write_makefile(dir: &Path, flags: &str) {
    write(
        dir,
        "Makefile",
        format!(
            "SRCS := $(wildcard *.c)\nOBJS := $(SRCS:.c=.o)\nall: $(OBJS)\n\
             %.o: %.c\n\t$(CC) {flags} -c $< -o $@\n"
        ),
    );
}

/// Runs `make -j<jobs> CC=<cc>` in `dir` with `home`'s environment; asserts it succeeded.
pub fn make(home: &Home, dir: &Path, jobs: u32, cc: &str) -> Output {
    let mut cmd = home.command("make");
    in_dir(&mut cmd, dir)
        .arg(format!("-j{jobs}"))
        .arg("-s")
        .arg(format!("CC={cc}"));
    run(&mut cmd)
}

/// `CC` for make through meshcc: `<meshcc> <compiler>`.
pub fn meshcc_cc(compiler: &str) -> String {
    format!("{} {compiler}", meshcc_bin().display())
}

/// A UDP port free on loopback right now (for a daemon started with discovery off).
pub fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
