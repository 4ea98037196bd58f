//! Real hosts in network namespaces for end-to-end tests: a guard over `netsim/ns/lab.sh`, the
//! single source of truth for making, renumbering, cutting and removing a lab.
//!
//! ```ignore
//! let Some(lab) = Lab::new(3) else { return }; // skipped (message printed) without root or ip
//! let home = Home::new();
//! let daemon = lab.start_daemon(1, &home);      // `meshcc daemon` inside host 1, port 7471
//! let out = output(lab.host(2).enter(&mut other.meshcc(["ping", &target])));
//! lab.renumber(1, lab.net_addr(101));
//! ```
//!
//! Host `i` (1-based) has one interface `eth0` in its own namespace; every process a test starts
//! there sees only the lab. Dropping the [`Lab`] kills everything running inside it and removes
//! every namespace, also when the test panicked; [`Daemon`]s are killed when dropped.

use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use super::{describe, output, pid_alive, run, wait_until, Home};

/// The lab script.
pub fn lab_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("netsim/ns/lab.sh")
}

/// The UDP port daemons in a lab listen on.
pub const MESH_PORT: u16 = 7471;

/// Why labs cannot run here, if they cannot (not root, or no `ip`).
pub fn unsupported() -> Option<String> {
    if !nix::unistd::getuid().is_root() {
        return Some("network namespaces need root".into());
    }
    match Command::new("ip")
        .args(["netns", "list"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(s) if s.success() => None,
        _ => Some("`ip netns` does not work (install iproute2)".into()),
    }
}

/// Namespaces that belong to the lab `name` (its switch and hosts), as `ip netns list` shows.
pub fn namespaces_of(name: &str) -> Vec<String> {
    let out = run(Command::new("ip").args(["netns", "list"]));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|ns| {
            ns.strip_prefix(name)
                .and_then(|rest| rest.strip_prefix('-'))
                .is_some_and(|rest| {
                    rest == "sw"
                        || rest
                            .strip_prefix('h')
                            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
                })
        })
        .map(str::to_owned)
        .collect()
}

/// A unique lab name for this process: `mc<pid>x<counter>`.
pub fn unique_name() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    format!(
        "mc{}x{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Makes a cluster: `meshcc init` in `homes[0]`, `meshcc join` in the others; returns their
/// node ids, in order.
pub fn cluster(homes: &[&Home]) -> Vec<String> {
    let out = run(&mut homes[0].meshcc(["init"]));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let token = text
        .split_whitespace()
        .find(|w| w.starts_with("meshcc1:"))
        .unwrap_or_else(|| panic!("no join token in:\n{text}"))
        .to_owned();
    for h in &homes[1..] {
        run(&mut h.meshcc(["join", &token]));
    }
    homes.iter().map(|h| node_id(h)).collect()
}

/// `meshcc id` of a home.
pub fn node_id(h: &Home) -> String {
    let out = run(&mut h.meshcc(["id"]));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A lab of `n` hosts on one bridge; removed when dropped.
pub struct Lab {
    name: String,
    n: usize,
}

impl Lab {
    /// Brings up `n` hosts, or prints why labs cannot run here and returns `None` (the caller
    /// then skips its test).
    pub fn new(n: usize) -> Option<Self> {
        if let Some(why) = unsupported() {
            eprintln!("skipped: {why}");
            return None;
        }
        let name = unique_name();
        // The guard exists before `up` runs, so a failing `up` is cleaned up twice, not never.
        let lab = Self { name, n };
        lab.script(&["up", &lab.name, &n.to_string()]);
        Some(lab)
    }

    fn script(&self, args: &[&str]) -> String {
        let out = run(Command::new(lab_script()).args(args));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// The lab's name (its namespaces are `NAME-sw` and `NAME-h1..`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How many hosts it has.
    pub fn len(&self) -> usize {
        self.n
    }

    /// Host `i` (1-based).
    pub fn host(&self, i: usize) -> Host<'_> {
        assert!(
            (1..=self.n).contains(&i),
            "lab {} has hosts 1..={}, not {i}",
            self.name,
            self.n
        );
        Host { lab: self, i }
    }

    /// An address in the lab's subnet with the given last octet (for [`Lab::renumber`]).
    pub fn net_addr(&self, last: u8) -> Ipv4Addr {
        let [a, b, c, _] = self.host(1).addr().octets();
        Ipv4Addr::new(a, b, c, last)
    }

    /// Moves host `i` to `addr` (the new address is added before the old one goes).
    pub fn renumber(&self, i: usize, addr: Ipv4Addr) {
        self.script(&["renumber", &self.name, &i.to_string(), &addr.to_string()]);
    }

    /// Unplugs host `i` (its switch port goes down; its own configuration stays).
    pub fn cut(&self, i: usize) {
        self.script(&["cut", &self.name, &i.to_string()]);
    }

    /// Plugs host `i` back in.
    pub fn heal(&self, i: usize) {
        self.script(&["heal", &self.name, &i.to_string()]);
    }

    /// Starts `meshcc daemon` inside host `i` with `home`'s environment, listening on
    /// `0.0.0.0:7471` (inside the namespace: this host's addresses only, also after a
    /// renumbering); waits until it serves its socket and, with a cluster secret, its port.
    pub fn start_daemon(&self, i: usize, home: &Home) -> Daemon {
        let log = home.root().join(format!("daemon-{}-h{i}.log", self.name));
        let file = std::fs::File::create(&log)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", log.display()));
        let mut cmd = home.meshcc(["daemon"]);
        cmd.env("MESHCC_LISTEN", format!("0.0.0.0:{MESH_PORT}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file);
        let what = describe(&cmd);
        let child = self
            .host(i)
            .enter(&mut cmd)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start `{what}` in host {i}: {e}"));
        let daemon = Daemon {
            child,
            home: home.home.clone(),
            log,
        };
        let clustered = home.home.join("data/cluster.secret").exists();
        wait_until(&format!("the daemon in host {i} to serve"), || {
            assert!(
                pid_alive(daemon.pid()),
                "the daemon in host {i} died:\n{}",
                daemon.log()
            );
            let out = output(&mut home.meshcc(["status", "--json"]));
            let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
            out.status.success()
                && home.socket().exists()
                && (!clustered || status["listen"].as_str().is_some())
        });
        daemon
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Never panic here: this also runs while a failed test unwinds. `down` kills every
        // process still inside the lab, then removes its namespaces.
        let status = Command::new(lab_script())
            .args(["down", &self.name])
            .stdout(Stdio::null())
            .status();
        if !matches!(status, Ok(s) if s.success()) {
            eprintln!("lab.sh down {} failed: {status:?}", self.name);
        }
    }
}

/// One host of a [`Lab`].
pub struct Host<'a> {
    lab: &'a Lab,
    i: usize,
}

impl Host<'_> {
    /// Its namespace's name.
    pub fn netns(&self) -> String {
        format!("{}-h{}", self.lab.name, self.i)
    }

    /// Its IPv4 address now.
    pub fn addr(&self) -> Ipv4Addr {
        let s = self
            .lab
            .script(&["addr", &self.lab.name, &self.i.to_string()]);
        s.parse()
            .unwrap_or_else(|_| panic!("lab.sh addr printed {s:?}, not an IPv4 address"))
    }

    /// `program` run inside this host.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new(program);
        self.enter(&mut cmd);
        cmd
    }

    /// Makes `cmd` run inside this host (its network namespace); the rest of its set-up stays.
    pub fn enter<'c>(&self, cmd: &'c mut Command) -> &'c mut Command {
        let path = format!("/run/netns/{}", self.netns());
        let ns = std::fs::File::open(&path).unwrap_or_else(|e| panic!("cannot open {path}: {e}"));
        // SAFETY: between fork and exec the child only makes the setns system call, which is
        // async-signal-safe; `ns` lives in the closure, so its descriptor is open in the child.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
        cmd
    }
}

/// A `meshcc daemon` running in a lab host; killed (SIGKILL) when dropped.
pub struct Daemon {
    child: Child,
    home: PathBuf,
    log: PathBuf,
}

impl Daemon {
    /// Its pid.
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Its `MESHCC_HOME`.
    pub fn home(&self) -> &Path {
        &self.home
    }

    /// What it wrote to stderr (its log), for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn signal(&self, sig: nix::sys::signal::Signal) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig);
    }

    /// Kills it (SIGKILL) and waits until it is gone: a crash, nothing said to peers.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stops it (SIGSTOP): alive but silent, like a sleeping laptop. Not `meshcc stop`.
    pub fn stop(&self) {
        self.signal(nix::sys::signal::Signal::SIGSTOP);
    }

    /// Wakes it after [`Daemon::stop`] (SIGCONT).
    pub fn cont(&self) {
        self.signal(nix::sys::signal::Signal::SIGCONT);
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

/// This test binary run again as a probe: only the `#[ignore]`d test `name`, output shown.
/// Its stdout then contains `1 passed` when the probe succeeded.
pub fn probe(name: &str) -> Command {
    let exe = std::env::current_exe().expect("the test binary's path");
    let mut cmd = Command::new(exe);
    cmd.args([
        "--ignored",
        "--exact",
        name,
        "--nocapture",
        "--test-threads=1",
    ]);
    cmd
}

/// A running probe (see [`probe`]) that the test talks to: it prints `PROBE …` lines when it
/// reaches a step and reads a line on stdin when it must wait for the test. Killed if dropped
/// unfinished.
pub struct ProbeRun {
    child: Child,
    what: String,
    lines: std::sync::mpsc::Receiver<String>,
    seen: Vec<String>,
    stdin: Option<std::process::ChildStdin>,
    stderr: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
}

impl ProbeRun {
    /// Starts `cmd` (already entered in a host, with its environment) with piped stdio.
    pub fn spawn(cmd: &mut Command) -> Self {
        use std::io::{BufRead, Read};
        let what = describe(cmd);
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start `{what}`: {e}"));
        let (tx, lines) = std::sync::mpsc::channel();
        let out = child.stdout.take().expect("piped stdout");
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut err = child.stderr.take().expect("piped stderr");
        let sink = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                if let Ok(mut s) = sink.lock() {
                    s.extend_from_slice(&buf[..n]);
                }
            }
        });
        let stdin = child.stdin.take();
        Self {
            child,
            what,
            lines,
            seen: Vec::new(),
            stdin,
            stderr,
        }
    }

    fn transcript(&self) -> String {
        let err = self
            .stderr
            .lock()
            .map(|s| String::from_utf8_lossy(&s).into_owned())
            .unwrap_or_default();
        format!(
            "--- stdout of `{}` ---\n{}\n--- stderr ---\n{err}",
            self.what,
            self.seen.join("\n")
        )
    }

    /// Waits for a line with `PROBE <step>…` and returns what follows `<step>`; panics with the
    /// probe's output if it ends or takes longer than [`POLL_DEADLINE`](super::POLL_DEADLINE).
    pub fn expect(&mut self, step: &str) -> String {
        let tag = format!("PROBE {step}");
        let end = std::time::Instant::now() + super::POLL_DEADLINE;
        loop {
            let left = end.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    // The test harness may have printed `test NAME ... ` before it.
                    if let Some(at) = line.find(&tag) {
                        return line[at + tag.len()..].trim().to_owned();
                    }
                }
                Err(e) => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    // Let the reader threads drain what the probe printed last.
                    while let Ok(line) = self.lines.recv_timeout(std::time::Duration::from_secs(1))
                    {
                        self.seen.push(line);
                    }
                    panic!("no `{tag}` from the probe ({e}):\n{}", self.transcript());
                }
            }
        }
    }

    /// Sends the probe one line on its stdin.
    pub fn say(&mut self, line: &str) {
        use std::io::Write;
        let ok = self
            .stdin
            .as_mut()
            .is_some_and(|s| writeln!(s, "{line}").and_then(|_| s.flush()).is_ok());
        assert!(ok, "cannot write to the probe:\n{}", self.transcript());
    }

    /// Waits for the probe to end and asserts it passed.
    pub fn finish(mut self) {
        self.stdin = None;
        let status = self.child.wait().expect("wait for the probe");
        while let Ok(line) = self.lines.recv_timeout(std::time::Duration::from_secs(5)) {
            self.seen.push(line);
        }
        assert!(
            status.success() && self.seen.iter().any(|l| l.contains("1 passed")),
            "the probe failed ({status}):\n{}",
            self.transcript()
        );
    }
}

impl Drop for ProbeRun {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
