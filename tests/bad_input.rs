//! Bad input never breaks a build: garbage on the daemon's sockets, corrupt cache entries, an
//! unusable cache directory, a missing compiler, and meshcc switched off.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;

const SRC: &str = "int twice(int x) { return 2 * x; }\nint thrice(int x) { return 3 * x; }\n";

/// Compiles `src` to `obj` directly, and returns where the object was put aside.
fn direct_object(h: &Home, src: &str, obj: &str) -> PathBuf {
    run(&mut h.direct("gcc", ["-O2", "-c", src, "-o", obj]));
    let aside = h.root().join(format!("direct-{obj}"));
    std::fs::rename(h.work.join(obj), &aside).expect("move the direct object aside");
    aside
}

/// Compiles through meshcc and checks the result is the direct compiler's (quietly).
fn wrapped_object(h: &Home, src: &str, obj: &str, expected: &Path) {
    let out = run(&mut h.wrapped("gcc", ["-O2", "-c", src, "-o", obj]));
    assert!(
        out.stderr.is_empty(),
        "meshcc printed something:\n{}\n--- daemon log ---\n{}",
        String::from_utf8_lossy(&out.stderr),
        h.log()
    );
    assert_same_file(expected, &h.work.join(obj));
    std::fs::remove_file(h.work.join(obj)).expect("remove the object");
}

/// Sends raw bytes on the daemon socket and reads until the daemon closes the connection.
fn send_raw(h: &Home, bytes: &[u8]) -> Vec<u8> {
    let mut s = UnixStream::connect(h.socket()).expect("connect to daemon.sock");
    s.set_read_timeout(Some(Duration::from_secs(60)))
        .expect("set a read timeout");
    // The daemon may close as soon as it sees a bad header; a failed write is fine.
    let _ = s.write_all(bytes);
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut reply = Vec::new();
    let _ = s.read_to_end(&mut reply);
    reply
}

#[test]
fn garbage_on_the_sockets_is_survived() {
    let h = Home::new();
    write(&h.work, "a.c", SRC);
    write(&h.work, "b.c", "int b = 7;\n");
    let a = direct_object(&h, "a.c", "a.o");
    let b = direct_object(&h, "b.c", "b.o");
    wrapped_object(&h, "a.c", "a.o", &a);
    let pid = h.running_daemon();

    send_raw(&h, &[5, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xde, 0xad]);
    send_raw(&h, b"GET / HTTP/1.1\r\nHost: meshcc\r\n\r\n");
    // A length prefix far beyond the limit, then a little payload.
    let mut big = u32::MAX.to_le_bytes().to_vec();
    big.extend_from_slice(&[0u8; 64]);
    send_raw(&h, &big);
    // A frame that promises more than it sends, then hangs up.
    send_raw(&h, &[0, 1, 0, 0, 1, 2, 3]);
    // Nothing at all.
    send_raw(&h, &[]);
    // Garbage counters.
    let d = UnixDatagram::unbound().expect("a datagram socket");
    for junk in [&b""[..], b"\xff\xff\xff", &[0u8; 2000]] {
        let _ = d.send_to(junk, h.home.join("run/stats.sock"));
    }

    assert!(pid_alive(pid), "the daemon died of garbage input");
    assert_eq!(h.running_daemon(), pid, "the daemon was replaced");
    // A client that stalls mid-frame does not hold up the others.
    let mut stalled = UnixStream::connect(h.socket()).expect("connect to daemon.sock");
    stalled
        .write_all(&[100, 0, 0, 0, 1])
        .expect("write a partial frame");
    wrapped_object(&h, "b.c", "b.o", &b);
    drop(stalled);
    wrapped_object(&h, "a.c", "a.o", &a);
    assert_eq!(h.running_daemon(), pid, "the daemon was replaced");
    let s = h.stats();
    assert_eq!(
        (s["cache_misses"].as_u64(), s["cache_hits"].as_u64()),
        (Some(2), Some(1)),
        "{s}"
    );
    assert!(
        s["errors"]["bad_request"].as_u64().unwrap_or(0) >= 3,
        "bad requests should be counted: {s}"
    );
}

/// Cache entry files: everything under `cache/` but its `tmp/`.
fn entry_files(cache: &Path) -> Vec<PathBuf> {
    list_files(cache)
        .into_iter()
        .filter(|p| !p.starts_with("tmp"))
        .map(|p| cache.join(p))
        .collect()
}

#[test]
fn truncated_cache_entry_is_a_miss_and_counted() {
    let h = Home::new();
    write(&h.work, "a.c", SRC);
    let a = direct_object(&h, "a.c", "a.o");
    wrapped_object(&h, "a.c", "a.o", &a);
    let entries = entry_files(&h.home.join("cache"));
    assert_eq!(entries.len(), 1, "expected one entry file: {entries:?}");
    let len = std::fs::metadata(&entries[0])
        .expect("stat the entry")
        .len();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&entries[0])
        .expect("open the entry");
    f.set_len(len / 2).expect("truncate the entry");
    drop(f);

    wrapped_object(&h, "a.c", "a.o", &a);
    let s = h.stats();
    assert_eq!(s["errors"]["corrupt_entry"].as_u64(), Some(1), "{s}");
    assert_eq!(
        s["cache_hits"].as_u64(),
        Some(0),
        "a corrupt entry was a hit: {s}"
    );
    // Stored again, and served whole.
    wrapped_object(&h, "a.c", "a.o", &a);
    assert_eq!(h.stat("cache_hits"), 1);

    // Garbage of full length, and an empty file.
    for content in [vec![0x5au8; len as usize], Vec::new()] {
        let entries = entry_files(&h.home.join("cache"));
        assert_eq!(entries.len(), 1, "expected one entry file: {entries:?}");
        std::fs::write(&entries[0], content).expect("overwrite the entry");
        wrapped_object(&h, "a.c", "a.o", &a);
    }
    assert_eq!(h.reason("errors", "corrupt_entry"), 3);
}

#[test]
fn unusable_cache_dir_still_compiles() {
    let mut h = Home::new();
    write(&h.work, "a.c", SRC);
    let blocker = h.root().join("blocker");
    std::fs::write(&blocker, b"a regular file").expect("create the blocking file");
    h.set_env("MESHCC_CACHE_DIR", blocker.join("sub"));
    let a = direct_object(&h, "a.c", "a.o");
    for _ in 0..2 {
        wrapped_object(&h, "a.c", "a.o", &a);
    }
    let s = h.stats();
    assert_eq!(s["cache_hits"].as_u64(), Some(0), "{s}");
    assert!(
        s["errors"]["cache_unavailable"].as_u64().unwrap_or(0) >= 2,
        "an unusable cache should be counted: {s}"
    );
    // Warnings still reach the caller with an unusable cache.
    write(&h.work, "w.c", "int f(int a) { int unused; return a; }\n");
    let args = ["-Wall", "-c", "w.c"];
    let direct = run(&mut h.direct("gcc", args));
    assert!(!direct.stderr.is_empty());
    let mesh = run(&mut h.wrapped("gcc", args));
    assert_same_output("warnings with an unusable cache", &direct, &mesh);
}

#[test]
fn missing_compiler_exits_127() {
    let h = Home::new();
    write(&h.work, "a.c", SRC);
    for name in ["nosuchcc", "./nosuchcc", "/nonexistent/bin/gcc"] {
        let out = output(&mut h.wrapped(name, ["-c", "a.c"]));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(code(&out.status), 127, "meshcc {name}: stderr:\n{stderr}");
        assert!(
            stderr.contains(name),
            "meshcc {name}: the message should name the compiler:\n{stderr}"
        );
        assert!(!h.work.join("a.o").exists());
    }
}

#[test]
fn disabled_runs_the_compiler_directly() {
    let mut h = Home::new();
    write(&h.work, "a.c", SRC);
    write(&h.work, "w.c", "int f(int a) { int unused; return a; }\n");
    let a = direct_object(&h, "a.c", "a.o");
    let direct_w = run(&mut h.direct("gcc", ["-Wall", "-c", "w.c"]));
    h.set_env("MESHCC_DISABLE", "1");
    for _ in 0..2 {
        wrapped_object(&h, "a.c", "a.o", &a);
        let w = run(&mut h.wrapped("gcc", ["-Wall", "-c", "w.c"]));
        assert_same_output("MESHCC_DISABLE=1", &direct_w, &w);
    }
    assert!(
        daemons_for(&h.home).is_empty() && !h.socket().exists(),
        "MESHCC_DISABLE=1 started a daemon"
    );
    assert!(
        !h.home.join("cache").exists() || entry_files(&h.home.join("cache")).is_empty(),
        "MESHCC_DISABLE=1 stored something"
    );
}
