//! Masquerade mode: a directory of symlinks named after compilers (`gcc -> meshcc`) first in
//! `PATH`. meshcc must find the next real compiler on `PATH`, behave as in prefix mode, and
//! never call itself.

mod common;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;

/// Makes `dir` with symlinks `names` -> meshcc; returns it.
fn symlink_dir(h: &Home, names: &[&str]) -> PathBuf {
    let dir = h.root().join("masq-bin");
    std::fs::create_dir_all(&dir).expect("create the symlink directory");
    for name in names {
        std::os::unix::fs::symlink(meshcc_bin(), dir.join(name))
            .unwrap_or_else(|e| panic!("cannot link {name} to meshcc: {e}"));
    }
    dir
}

fn path_with_first(dir: &Path) -> OsString {
    let rest = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs = vec![dir.to_path_buf()];
    dirs.extend(std::env::split_paths(&rest));
    std::env::join_paths(dirs).expect("a valid PATH")
}

#[test]
fn symlink_first_in_path_compiles_and_caches() {
    let h = Home::new();
    write(
        &h.work,
        "a.c",
        "#include <string.h>\nint n(const char *s) { return (int)strlen(s); }\n",
    );
    let bin = symlink_dir(&h, &["gcc", "cc", "clang"]);
    let path = path_with_first(&bin);
    for compiler in ["gcc", "cc", "clang"] {
        let obj = format!("{compiler}.o");
        let args = ["-O2", "-g", "-c", "a.c", "-o", obj.as_str()];
        let direct = run(&mut h.direct(compiler, args));
        let expected = h.root().join(format!("direct-{obj}"));
        std::fs::rename(h.work.join(&obj), &expected).expect("move the direct object aside");
        for (round, hits, misses) in [("cold", 0, 1), ("hot", 1, 0)] {
            let before = (h.stat("cache_hits"), h.stat("cache_misses"));
            // Found by name on PATH, as a build would: the symlink comes first.
            let mut cmd = h.command(compiler);
            cmd.env("PATH", &path).args(args);
            let mesh = output(&mut cmd);
            assert_same_output(&format!("{round} masquerading {compiler}"), &direct, &mesh);
            assert_same_file(&expected, &h.work.join(&obj));
            std::fs::remove_file(h.work.join(&obj)).expect("remove the object");
            let after = (h.stat("cache_hits"), h.stat("cache_misses"));
            assert_eq!(
                (after.0 - before.0, after.1 - before.1),
                (hits, misses),
                "{round} masquerading {compiler}: (hits, misses) delta"
            );
        }
    }
    // The daemon was started by a symlinked wrapper, and runs as `meshcc daemon`.
    assert_eq!(daemons_for(&h.home).len(), 1, "expected one daemon");
}

#[test]
fn only_the_symlink_on_path_is_a_clear_error() {
    let h = Home::new();
    write(&h.work, "a.c", "int x;\n");
    let bin = symlink_dir(&h, &["gcc"]);
    for program in [OsString::from("gcc"), bin.join("gcc").into_os_string()] {
        let mut cmd = h.command(&program);
        cmd.env("PATH", &bin).args(["-c", "a.c"]);
        // An endless exec loop would never finish: the deadline turns it into a failure.
        let out = output_within(&mut cmd, Duration::from_secs(60));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            code(&out.status),
            127,
            "{program:?} with only meshcc on PATH: expected exit 127; stderr:\n{stderr}"
        );
        assert!(
            stderr.contains("meshcc") && stderr.contains("'gcc'") && stderr.contains("PATH"),
            "the error should name meshcc, the compiler and PATH:\n{stderr}"
        );
        assert!(
            stderr.lines().count() <= 3,
            "one clear message expected, got:\n{stderr}"
        );
        assert!(!h.work.join("a.o").exists(), "an object appeared");
    }
    assert!(
        daemons_for(&h.home).is_empty(),
        "a failed lookup must not start a daemon"
    );
}

#[test]
fn prefix_mode_through_a_symlink_collapses() {
    // `meshcc meshcc gcc` and `<symlink dir>/gcc` named explicitly: both reach the real gcc.
    let h = Home::new();
    write(&h.work, "a.c", "int y = 2;\n");
    let direct = run(&mut h.direct("gcc", ["-c", "a.c", "-o", "d.o"]));
    run(&mut h.meshcc(["meshcc", "gcc", "-c", "a.c", "-o", "m.o"]));
    assert_same_file(&h.work.join("d.o"), &h.work.join("m.o"));
    let bin = symlink_dir(&h, &["gcc"]);
    let mut cmd = h.command(bin.join("gcc"));
    cmd.env("PATH", path_with_first(&bin))
        .args(["-c", "a.c", "-o", "s.o"]);
    let out = run(&mut cmd);
    assert_same_output("explicit symlink path", &direct, &out);
    assert_same_file(&h.work.join("d.o"), &h.work.join("s.o"));
}
