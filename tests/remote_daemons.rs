//! clang and clang++ jobs through two real daemons on loopback (`MESHCC_DISCOVERY=off`, the
//! worker joined with the client's token): a client without slots of its own sends every job
//! that may leave to the worker, and the objects are the direct compiler's; clang with DWARF 5
//! debug info stays on the client, counted with its reason.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_meshcc");

fn meshcc(home: &Path) -> Command {
    let mut c = Command::new(BIN);
    c.env("MESHCC_HOME", home)
        .env_remove("MESHCC_LISTEN")
        .env_remove("MESHCC_CONFIG")
        .env("MESHCC_DISCOVERY", "off");
    c
}

fn ok(mut cmd: Command) -> Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A daemon stopped (and reaped) when dropped.
struct Daemon(Child, PathBuf);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = meshcc(&self.1).arg("stop").output();
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn daemon(home: &Path, port: u16, slots: u32) -> Daemon {
    let child = meshcc(home)
        .arg("daemon")
        .env("MESHCC_LISTEN", format!("127.0.0.1:{port}"))
        .env("MESHCC_SLOTS", slots.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Daemon(child, home.to_path_buf())
}

fn stats(home: &Path) -> serde_json::Value {
    let mut c = meshcc(home);
    c.args(["stats", "--json"]);
    serde_json::from_slice(&ok(c).stdout).unwrap()
}

#[test]
fn clang_jobs_run_on_a_worker_daemon_and_match_direct_compiles() {
    let dir = tempfile::tempdir().unwrap();
    let (client_home, worker_home) = (dir.path().join("client"), dir.path().join("worker"));
    let (client_port, worker_port) = (common::free_udp_port(), common::free_udp_port());
    let mut init = meshcc(&client_home);
    init.args(["init", "--advertise", &format!("127.0.0.1:{client_port}")]);
    let token = String::from_utf8_lossy(&ok(init).stdout)
        .split_whitespace()
        .find(|w| w.starts_with("meshcc1:"))
        .expect("a join token")
        .to_string();
    let mut join = meshcc(&worker_home);
    join.args(["join", &token]);
    ok(join);
    let _client = daemon(&client_home, client_port, 0);
    let _worker = daemon(&worker_home, worker_port, 2);

    // Until the client sees the worker alive with its slots (its compilers are offered then).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut c = meshcc(&client_home);
        c.args(["status", "--json"]);
        let out = c.output().unwrap();
        let status: serde_json::Value =
            serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
        let ready = status["members"].as_array().is_some_and(|m| {
            m.iter()
                .any(|m| m["state"] == "alive" && m["slots_total"].as_u64() > Some(0))
        });
        if ready {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the worker never joined: {status}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let project = dir.path().join("project");
    std::fs::create_dir_all(project.join("src")).unwrap();
    std::fs::write(
        project.join("src/m.h"),
        "#define CUBE(x) ((x) * (x) * (x))\nstatic inline int twice(int v) { return v + v; }\n",
    )
    .unwrap();
    std::fs::write(
        project.join("src/a.c"),
        "#include \"m.h\"\nint a(int x) { return CUBE(x) + twice(x); }\n",
    )
    .unwrap();
    std::fs::write(
        project.join("src/b.cc"),
        "#include <vector>\n#include \"m.h\"\nint b(const std::vector<int> &v) { int s = 0; for (int x : v) s += CUBE(x); return s + twice(s); }\n",
    )
    .unwrap();
    let absolute_b = project.join("src/b.cc").display().to_string();
    // (compiler, flags, source, goes remote)
    let jobs: [(&str, &[&str], &str, bool); 4] = [
        ("clang", &["-O2", "-g0", "-DN=1"], "src/a.c", true),
        ("clang", &["-O2", "-gdwarf-4", "-DN=1"], "src/a.c", true),
        ("clang++", &["-O2", "-gdwarf-4"], &absolute_b, true),
        ("clang", &["-O2", "-g"], "src/a.c", false),
    ];
    for (cc, flags, source, _) in jobs {
        let mut args: Vec<&str> = flags.to_vec();
        args.extend(["-c", source, "-o", "out.o"]);
        let mut direct = Command::new(cc);
        direct
            .args(&args)
            .current_dir(&project)
            .env("PWD", &project);
        ok(direct);
        let want = std::fs::read(project.join("out.o")).unwrap();
        std::fs::remove_file(project.join("out.o")).unwrap();
        let mut through = meshcc(&client_home);
        through
            .arg(cc)
            .args(&args)
            .current_dir(&project)
            .env("PWD", &project);
        let out = ok(through);
        assert!(
            out.stderr.is_empty(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            std::fs::read(project.join("out.o")).unwrap() == want,
            "{cc} {flags:?} {source}: the object differs from the direct compile's"
        );
    }
    let s = stats(&client_home);
    let remote = jobs.iter().filter(|j| j.3).count() as u64;
    assert_eq!(s["remote_compiles"].as_u64(), Some(remote), "{s}");
    assert_eq!(s["local_fallbacks"].as_u64(), Some(0), "{s}");
    assert_eq!(
        s["not_distributable"]["clang_debug_dwarf5"].as_u64(),
        Some(1),
        "{s}"
    );
    assert_eq!(stats(&worker_home)["served_jobs"].as_u64(), Some(remote));
}
