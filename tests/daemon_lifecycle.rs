//! The daemon's life: many wrappers starting it at once get one daemon; `meshcc stop` stops
//! it; a daemon killed in the middle of a build costs nothing but time.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Barrier};

use common::*;

const WRAPPERS: usize = 32;

fn source(i: usize) -> String {
    format!(
        "static int table_{i}[{n}];\n\
         int f{i}(int x) {{\n  int s = 0;\n  for (int k = 0; k < {n}; k++) s += table_{i}[k] * x + {i};\n  return s;\n}}\n",
        n = i + 4
    )
}

#[test]
fn concurrent_wrappers_start_exactly_one_daemon() {
    let h = Arc::new(Home::new());
    let direct = h.root().join("direct");
    std::fs::create_dir_all(&direct).expect("create the direct directory");
    for i in 0..WRAPPERS {
        write(&h.work, &format!("f{i}.c"), source(i));
        write(&direct, &format!("f{i}.c"), source(i));
        let mut cmd = h.direct("gcc", ["-O1", "-c", &format!("f{i}.c")]);
        run(in_dir(&mut cmd, &direct));
    }
    assert!(h.daemon_pid().is_none(), "a daemon runs before the test");

    let barrier = Arc::new(Barrier::new(WRAPPERS));
    let threads: Vec<_> = (0..WRAPPERS)
        .map(|i| {
            let (h, barrier) = (h.clone(), barrier.clone());
            std::thread::spawn(move || {
                let mut cmd = h.wrapped("gcc", ["-O1", "-c", &format!("f{i}.c")]);
                barrier.wait();
                output(&mut cmd)
            })
        })
        .collect();
    for (i, t) in threads.into_iter().enumerate() {
        let out = t.join().expect("a wrapper thread panicked");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "wrapper {i} failed or complained ({}):\n{stderr}\n--- daemon log ---\n{}",
            out.status,
            h.log()
        );
        assert_same_file(
            &direct.join(format!("f{i}.o")),
            &h.work.join(format!("f{i}.o")),
        );
    }

    // A daemon that lost the start race may still be on its way out; the winner stays.
    wait_until("at most one daemon for this home", || {
        daemons_for(&h.home).len() <= 1
    });
    let daemons = daemons_for(&h.home);
    let pid = h.running_daemon();
    assert_eq!(
        daemons,
        vec![pid],
        "exactly one daemon, the one in daemon.lock"
    );
    assert_eq!(
        h.stat("cache_misses"),
        WRAPPERS as u64,
        "every wrapper should have been served by the daemon"
    );

    h.stop();
    assert!(
        daemons_for(&h.home).is_empty(),
        "a daemon survived `meshcc stop`"
    );
    assert!(!h.socket().exists(), "daemon.sock survived `meshcc stop`");
    // Stopping again is harmless.
    let out = run(&mut h.meshcc(["stop"]));
    assert!(String::from_utf8_lossy(&out.stdout).contains("no meshcc daemon"));
}

#[test]
fn daemon_killed_mid_build() {
    let h = Arc::new(Home::new());
    let dir = h.work.join("lua");
    let sources = copy_lua(&dir);
    let n = sources.len();
    write_makefile(&dir, "-O2");
    make(&h, &dir, 4, "gcc");
    let direct = h.root().join("direct");
    assert_eq!(move_outputs(&dir, &direct, &[".o"]), n);

    let build = {
        let (h, dir) = (h.clone(), dir.clone());
        std::thread::spawn(move || {
            let mut cmd = h.command("make");
            in_dir(&mut cmd, &dir)
                .arg("-j4")
                .arg(format!("CC={}", meshcc_cc("gcc")));
            output(&mut cmd)
        })
    };
    let has_object = || file_names(&dir).iter().any(|f| f.ends_with(".o"));
    wait_until("the first object of the meshcc build", || {
        has_object() || build.is_finished()
    });
    let killed_mid_build = !build.is_finished();
    let pid = h.running_daemon();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("SIGKILL the daemon");
    wait_until("the killed daemon to disappear", || !pid_alive(pid));

    let out = build.join().expect("the build thread panicked");
    assert!(
        out.status.success(),
        "the build failed after the daemon was killed ({}):\n{}\n--- daemon log ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        h.log()
    );
    let leftovers: Vec<String> = file_names(&dir)
        .into_iter()
        .filter(|f| f.contains(".meshcc-") || f.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    let first = h.root().join("after-kill");
    move_outputs(&dir, &first, &[".o"]);
    compare_trees(&direct, &first);

    // A hot rebuild: the daemon starts again and serves what was stored, nothing corrupt.
    let before = h.stats();
    make(&h, &dir, 4, &meshcc_cc("gcc"));
    let hot = h.root().join("hot");
    move_outputs(&dir, &hot, &[".o"]);
    compare_trees(&direct, &hot);
    let after = h.stats();
    let delta = |k: &str| after[k].as_u64().unwrap_or(0) - before[k].as_u64().unwrap_or(0);
    assert_eq!(
        delta("cache_hits") + delta("cache_misses"),
        n as u64,
        "every file of the rebuild should have gone through the restarted daemon: \
         before {before}, after {after}"
    );
    if killed_mid_build {
        assert!(delta("cache_hits") > 0, "nothing was cached: {after}");
    }
    let new_pid = h.running_daemon();
    assert_ne!(new_pid, pid, "the daemon did not restart");
}

/// Set in the environment of [`other_user_probe`] when it runs as another user.
const PROBE_SOCKET: &str = "MESHCC_TEST_PROBE_SOCKET";

/// The daemon serves only its own user: another uid that reaches the socket (here through
/// directories loosened on purpose, as a careless admin might) is told so and served nothing.
#[test]
fn another_user_is_refused() {
    if !nix::unistd::getuid().is_root() {
        eprintln!("skipped: acting as another user needs root");
        return;
    }
    let h = Home::new();
    write(&h.work, "a.c", "int a(void) { return 1; }\n");
    run(&mut h.wrapped("gcc", ["-c", "a.c"]));
    h.running_daemon();
    let socket = h.socket();
    use std::os::unix::fs::PermissionsExt;
    let mut dir = socket.parent().map(Path::to_path_buf);
    while let Some(d) = dir {
        if d == Path::new("/") || d == std::env::temp_dir() {
            break;
        }
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o711))
            .expect("loosen a directory on the socket's path");
        dir = d.parent().map(Path::to_path_buf);
    }
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666))
        .expect("loosen the socket");

    // The probe is this very test binary, run as `nobody`.
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe().expect("the test binary's path");
    let mut probe = Command::new(exe);
    probe
        .args(["--ignored", "--exact", "other_user_probe", "--nocapture"])
        .env(PROBE_SOCKET, &socket)
        .uid(65534)
        .gid(65534);
    let out = output(&mut probe);
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("1 passed"),
        "the probe as another user was not refused as expected ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        h.log().contains("refused a connection from another user"),
        "the daemon did not log the refusal:\n{}",
        h.log()
    );
    assert_eq!(
        h.stat("cache_misses"),
        1,
        "the probe changed the statistics"
    );
}

/// Run by [`another_user_is_refused`] as another user: asks for the statistics and expects the
/// daemon's refusal instead.
#[test]
#[ignore = "run by another_user_is_refused as another user"]
fn other_user_probe() {
    use meshcc::node::ipc::{Reply, Request};
    let socket = std::env::var_os(PROBE_SOCKET).expect("run by another_user_is_refused");
    assert_ne!(
        nix::unistd::getuid().as_raw(),
        0,
        "the probe must not run as root"
    );
    // What `meshcc stats` does. The daemon refuses and closes before it reads the request, so
    // the request may meet a closed socket: the client reads the refusal all the same.
    let dir = Path::new(&socket).parent().expect("the socket's directory");
    let paths = meshcc::config::Paths {
        config_dir: dir.to_path_buf(),
        data_dir: dir.to_path_buf(),
        cache_dir: dir.to_path_buf(),
        runtime_dir: dir.to_path_buf(),
    };
    assert_eq!(paths.socket(), Path::new(&socket));
    match meshcc::wrapper::client::request(&paths, &Request::Stats, false) {
        Ok(Reply::Error(e)) => assert!(e.contains("serves only its own user"), "{e}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    // The same with the request certainly meeting a closed socket: wait until the daemon has
    // hung up, then ask.
    let mut stream =
        std::os::unix::net::UnixStream::connect(&socket).expect("connect to the loosened socket");
    let mut fd = libc::pollfd {
        fd: std::os::fd::AsRawFd::as_raw_fd(&stream),
        events: libc::POLLRDHUP,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the duration of the call.
    while unsafe { libc::poll(&mut fd, 1, -1) } < 1
        || fd.revents & (libc::POLLRDHUP | libc::POLLHUP) == 0
    {}
    match meshcc::wrapper::client::exchange(&mut stream, &Request::Stats) {
        Ok(Reply::Error(e)) => assert!(e.contains("serves only its own user"), "{e}"),
        other => panic!("expected a refusal after the hang-up, got {other:?}"),
    }
}
