//! The command line: `stats` (`--json`, `--zero`, `-s`) and `explain`.

mod common;

use common::*;

const NUMBERS: &[&str] = &[
    "cache_hits",
    "cache_misses",
    "uncacheable",
    "local_compiles",
    "compile_failed",
    "cache_entries",
    "cache_bytes",
    "cache_max_bytes",
];
const MAPS: &[&str] = &["uncacheable_reasons", "not_compile", "errors"];

fn check_keys(s: &serde_json::Value) {
    for k in NUMBERS {
        assert!(s[*k].is_u64(), "stats --json: {k} is not a number: {s}");
    }
    for k in MAPS {
        let m = s[*k]
            .as_object()
            .unwrap_or_else(|| panic!("stats --json: {k} is not an object: {s}"));
        for (reason, n) in m {
            assert!(
                n.is_u64(),
                "stats --json: {k}.{reason} is not a number: {s}"
            );
        }
    }
}

#[test]
fn stats_json_has_the_documented_keys() {
    let h = Home::new();
    // No daemon yet: the saved (or empty) statistics.
    let s = h.stats();
    check_keys(&s);
    assert_eq!(s["cache_hits"].as_u64(), Some(0));
    assert!(h.daemon_pid().is_none(), "`stats` must not start a daemon");

    write(&h.work, "a.c", "int a;\n");
    write(&h.work, "bad.c", "int a = ;\n");
    run(&mut h.wrapped("gcc", ["-c", "a.c"]));
    run(&mut h.wrapped("gcc", ["-c", "a.c"]));
    let failed = output(&mut h.wrapped("gcc", ["-c", "bad.c"]));
    assert!(!failed.status.success());
    run(&mut h.wrapped("gcc", ["-save-temps", "-c", "a.c"]));
    let s = h.stats();
    check_keys(&s);
    assert_eq!(s["cache_hits"].as_u64(), Some(1), "{s}");
    assert_eq!(s["cache_misses"].as_u64(), Some(2), "{s}");
    assert_eq!(s["local_compiles"].as_u64(), Some(2), "{s}");
    assert_eq!(s["compile_failed"].as_u64(), Some(1), "{s}");
    assert_eq!(s["cache_entries"].as_u64(), Some(1), "{s}");
    assert!(s["cache_bytes"].as_u64() > Some(0), "{s}");
    // The uncacheable call is counted by a datagram: it arrives shortly.
    wait_until("the -save-temps call to be counted", || {
        h.stat("uncacheable") == 1
    });
    assert_eq!(
        h.reason("uncacheable_reasons", "unsupported_compiler_option"),
        1
    );

    // Saved for when the daemon is gone.
    h.stop();
    let saved = h.stats();
    check_keys(&saved);
    assert_eq!(saved["cache_hits"].as_u64(), Some(1), "{saved}");
    assert_eq!(saved["cache_misses"].as_u64(), Some(2), "{saved}");
    // The cache as it is on disk, read without a daemon.
    assert_eq!(saved["cache_entries"].as_u64(), Some(1), "{saved}");
    assert_eq!(saved["cache_bytes"], s["cache_bytes"], "{saved}");
}

#[test]
fn stats_zero() {
    let h = Home::new();
    write(&h.work, "a.c", "int a;\n");
    run(&mut h.wrapped("gcc", ["-c", "a.c"]));
    run(&mut h.wrapped("gcc", ["-c", "a.c"]));
    assert_eq!(h.stat("cache_hits"), 1);
    run(&mut h.meshcc(["stats", "--zero"]));
    let s = h.stats();
    for k in [
        "cache_hits",
        "cache_misses",
        "uncacheable",
        "local_compiles",
    ] {
        assert_eq!(s[k].as_u64(), Some(0), "{k} not zeroed: {s}");
    }
    assert_eq!(
        s["cache_entries"].as_u64(),
        Some(1),
        "zeroing must not empty the cache"
    );
    // Still counting, and the cache still serves.
    run(&mut h.wrapped("gcc", ["-c", "a.c"]));
    assert_eq!(h.stat("cache_hits"), 1);

    // With the daemon stopped, `-z` zeroes the saved statistics.
    h.stop();
    assert_eq!(h.stat("cache_hits"), 1);
    run(&mut h.meshcc(["stats", "-z"]));
    assert_eq!(h.stat("cache_hits"), 0);
    run(&mut h.wrapped("gcc", ["-c", "a.c"]));
    assert_eq!(h.stat("cache_hits"), 1, "counting after a restart");
}

#[test]
fn short_stats_flag_prints_the_table() {
    let h = Home::new();
    write(&h.work, "a.c", "int a;\n");
    run(&mut h.wrapped("gcc", ["-c", "a.c"]));
    run(&mut h.wrapped("gcc", ["-c", "a.c"]));
    let short = run(&mut h.meshcc(["-s"]));
    let long = run(&mut h.meshcc(["stats"]));
    let text = String::from_utf8_lossy(&short.stdout);
    assert_eq!(short.stdout, long.stdout, "`-s` and `stats` differ");
    for line in [
        "Hits:",
        "Misses:",
        "Uncacheable calls:",
        "Errors:",
        "Local cache:",
    ] {
        assert!(text.contains(line), "`meshcc -s` lacks {line:?}:\n{text}");
    }
    assert!(
        text.lines()
            .any(|l| l.trim_start().starts_with("Hits:") && l.contains(" 1 ")),
        "one hit expected:\n{text}"
    );
    run(&mut h.meshcc(["--version"]));
}

fn explain(h: &Home, cmd: &[&str]) -> serde_json::Value {
    let out = run(h.meshcc(["explain", "--json", "--"]).args(cmd));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "explain printed invalid JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    for k in ["compile", "cacheable", "distributable"] {
        assert!(v[k].is_boolean(), "explain: {k} is not a boolean: {v}");
    }
    for k in ["reason", "reason_code"] {
        assert!(
            v[k].is_null() || v[k].is_string(),
            "explain: {k} is neither null nor a string: {v}"
        );
    }
    assert!(v["outputs"].is_array(), "explain: outputs is no array: {v}");
    v
}

fn verdict(v: &serde_json::Value) -> (bool, bool, bool, Option<&str>) {
    (
        v["compile"].as_bool().unwrap_or_default(),
        v["cacheable"].as_bool().unwrap_or_default(),
        v["distributable"].as_bool().unwrap_or_default(),
        v["reason_code"].as_str(),
    )
}

#[test]
fn explain_json() {
    let h = Home::new();
    write(&h.work, "a.c", "int a;\n");
    run(&mut h.direct("gcc", ["-c", "a.c", "-o", "b.o"]));

    let v = explain(&h, &["gcc", "-O2", "-c", "a.c"]);
    assert_eq!(verdict(&v), (true, true, true, None), "{v}");
    assert_eq!(v["outputs"], serde_json::json!(["a.o"]), "{v}");
    assert!(v["reason"].is_null(), "{v}");

    let v = explain(&h, &["gcc", "b.o", "-o", "prog"]);
    assert_eq!(
        verdict(&v),
        (false, false, false, Some("called_for_link")),
        "{v}"
    );
    assert!(v["reason"].as_str().is_some_and(|r| !r.is_empty()), "{v}");

    let v = explain(&h, &["gcc", "-E", "a.c"]);
    assert_eq!(
        verdict(&v),
        (false, false, false, Some("called_for_preprocessing")),
        "{v}"
    );

    let v = explain(&h, &["gcc", "-save-temps", "-c", "a.c"]);
    assert_eq!(
        verdict(&v),
        (true, false, false, Some("unsupported_compiler_option")),
        "{v}"
    );
    assert!(
        v["reason"]
            .as_str()
            .is_some_and(|r| r.contains("-save-temps")),
        "the reason should name the option: {v}"
    );

    let v = explain(
        &h,
        &["gcc", "-march=native", "-O2", "-c", "a.c", "-o", "n.o"],
    );
    assert_eq!(
        verdict(&v),
        (true, true, false, Some("local_only_option")),
        "{v}"
    );
    assert_eq!(v["outputs"], serde_json::json!(["n.o"]), "{v}");

    // What the daemon keeps local is explained the same way.
    for (cmd, want) in [
        (
            &["clang", "-g", "-c", "a.c"][..],
            Some("clang_debug_dwarf5"),
        ),
        (&["clang", "-gdwarf-4", "-c", "a.c"], None),
        (
            &["clang", "-frecord-command-line", "-c", "a.c"],
            Some("clang_records_command_line"),
        ),
        (&["gcc", "-O2", "-Iinc", "-DX=1", "-c", "a.c"], None),
    ] {
        let v = explain(&h, cmd);
        assert_eq!(
            verdict(&v),
            (true, true, want.is_none(), want),
            "{cmd:?}: {v}"
        );
    }

    // Explaining runs nothing and starts nothing.
    assert!(!h.work.join("a.o").exists() && !h.work.join("n.o").exists());
    assert!(h.daemon_pid().is_none(), "explain started a daemon");

    let text = run(h.meshcc(["explain", "--"]).args(["gcc", "-c", "a.c"]));
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("cacheable:") && text.contains("yes"),
        "explain without --json:\n{text}"
    );
}
