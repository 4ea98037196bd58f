//! Calls meshcc does not cache (links, `-E`, `-M`, several sources) and compiles with extra
//! outputs (coverage, `-S`, split DWARF, response files) produce exactly what the direct
//! compiler produces: the same files, stdout, stderr and exit code.

mod common;

use std::process::Output;

use common::*;

const A_C: &str = "#include \"a.h\"\nint a(int x) { return x * A_FACTOR; }\n";
const A_H: &str = "#define A_FACTOR 3\nint a(int x);\n";
const B_C: &str = "#include <stdio.h>\n#include \"a.h\"\nint main(void) { printf(\"%d\\n\", a(14)); return 0; }\n";

fn project() -> Home {
    let h = Home::new();
    write(&h.work, "a.c", A_C);
    write(&h.work, "a.h", A_H);
    write(&h.work, "b.c", B_C);
    h
}

/// Whether meshcc should answer the call from its cache (a miss, then a hit).
#[derive(Clone, Copy, PartialEq, Debug)]
enum Expect {
    Cached,
    Passthrough,
}

/// Runs `compiler args` directly and moves `outputs` aside; then runs it through meshcc twice
/// (cold and hot) in the same directory, each time comparing stdout, stderr, exit code and every
/// output file with the direct run's. Returns the direct run's output.
fn same_as_direct(
    h: &Home,
    compiler: &str,
    args: &[&str],
    outputs: &[&str],
    expect: Expect,
) -> Output {
    let what = format!("{compiler} {}", args.join(" "));
    let direct = run(&mut h.direct(compiler, args));
    let aside = h
        .root()
        .join(format!("direct-{}", args.join("_").replace('/', "_")));
    std::fs::create_dir_all(&aside).expect("create the directory for direct outputs");
    for f in outputs {
        std::fs::rename(h.work.join(f), aside.join(f))
            .unwrap_or_else(|e| panic!("direct `{what}` did not write {f}: {e}"));
    }
    for round in ["cold", "hot"] {
        let before = (h.stat("cache_hits"), h.stat("cache_misses"));
        let mesh = output(&mut h.wrapped(compiler, args));
        assert_same_output(&format!("{round} `meshcc {what}`"), &direct, &mesh);
        for f in outputs {
            assert_same_file(&aside.join(f), &h.work.join(f));
            std::fs::remove_file(h.work.join(f)).expect("remove an output");
        }
        let after = (h.stat("cache_hits"), h.stat("cache_misses"));
        let delta = (after.0 - before.0, after.1 - before.1);
        let want = match (expect, round) {
            (Expect::Passthrough, _) => (0, 0),
            (Expect::Cached, "cold") => (0, 1),
            (Expect::Cached, _) => (1, 0),
        };
        assert_eq!(
            delta, want,
            "{round} `meshcc {what}` ({expect:?}): (hits, misses) changed by {delta:?}"
        );
    }
    direct
}

/// Starts the daemon with one cacheable compile, so that counters of direct calls arrive.
fn start_daemon(h: &Home) {
    run(&mut h.wrapped("gcc", ["-c", "a.c", "-o", "warmup.o"]));
    h.running_daemon();
}

/// Waits for the daemon to have counted `n` calls of `reason` in the map `map`.
fn wait_for_count(h: &Home, map: &str, reason: &str, n: u64) {
    wait_until(&format!("stats {map}.{reason} to reach {n}"), || {
        h.reason(map, reason) >= n
    });
    assert_eq!(h.reason(map, reason), n, "{map}.{reason} overcounted");
}

#[test]
fn links() {
    let h = project();
    start_daemon(&h);
    run(&mut h.direct("gcc", ["-c", "a.c", "b.c"]));
    same_as_direct(
        &h,
        "gcc",
        &["a.o", "b.o", "-o", "prog"],
        &["prog"],
        Expect::Passthrough,
    );
    wait_for_count(&h, "not_compile", "called_for_link", 2);
    // Compile and link in one call.
    same_as_direct(
        &h,
        "gcc",
        &["-O2", "a.c", "b.c", "-o", "prog2"],
        &["prog2"],
        Expect::Passthrough,
    );
    wait_for_count(&h, "not_compile", "called_for_link", 4);
    same_as_direct(
        &h,
        "clang",
        &["a.c", "b.c", "-o", "prog3"],
        &["prog3"],
        Expect::Passthrough,
    );
    run(&mut h.wrapped("clang", ["a.c", "b.c", "-o", "prog3"]));
    let out = run(&mut h.command(h.work.join("prog3")));
    assert_eq!(out.stdout, b"42\n");
}

#[test]
fn preprocess_only() {
    let h = project();
    start_daemon(&h);
    for compiler in ["gcc", "clang"] {
        let out = same_as_direct(&h, compiler, &["-E", "b.c"], &[], Expect::Passthrough);
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("int a(int x);"),
            "-E did not print the preprocessed source"
        );
        same_as_direct(
            &h,
            compiler,
            &["-E", "-P", "-DX=1", "a.c"],
            &[],
            Expect::Passthrough,
        );
    }
    wait_for_count(&h, "not_compile", "called_for_preprocessing", 8);
}

#[test]
fn dependencies_only() {
    let h = project();
    start_daemon(&h);
    for compiler in ["gcc", "clang"] {
        let out = same_as_direct(&h, compiler, &["-M", "b.c"], &[], Expect::Passthrough);
        assert!(String::from_utf8_lossy(&out.stdout).contains("a.h"));
        same_as_direct(&h, compiler, &["-MM", "b.c"], &[], Expect::Passthrough);
        same_as_direct(
            &h,
            compiler,
            &["-MM", "-MF", "deps.d", "a.c"],
            &["deps.d"],
            Expect::Passthrough,
        );
    }
    wait_for_count(&h, "not_compile", "dependencies_only", 12);
}

#[test]
fn several_sources_with_c() {
    let h = project();
    start_daemon(&h);
    same_as_direct(
        &h,
        "gcc",
        &["-O1", "-c", "a.c", "b.c"],
        &["a.o", "b.o"],
        Expect::Passthrough,
    );
    wait_for_count(&h, "uncacheable_reasons", "multiple_source_files", 2);
}

#[test]
fn coverage_and_profiling() {
    let h = project();
    // gcc stamps coverage data with the time unless given a random seed: with one, direct and
    // cached outputs are comparable byte for byte.
    same_as_direct(
        &h,
        "gcc",
        &["--coverage", "-frandom-seed=a.c", "-c", "a.c"],
        &["a.o", "a.gcno"],
        Expect::Cached,
    );
    same_as_direct(
        &h,
        "gcc",
        &[
            "-fprofile-generate",
            "-frandom-seed=b.c",
            "-O2",
            "-c",
            "b.c",
        ],
        &["b.o"],
        Expect::Cached,
    );
    same_as_direct(
        &h,
        "clang",
        &["--coverage", "-c", "b.c", "-o", "bc.o"],
        &["bc.o", "bc.gcno"],
        Expect::Cached,
    );
    // Without a seed, a hit restores exactly what the cold compile wrote: object and notes
    // from the same compile (their stamps must match each other).
    let args = ["--coverage", "-c", "b.c", "-o", "cov.o"];
    run(&mut h.wrapped("gcc", args));
    let cold = h.root().join("cov-cold");
    move_outputs(&h.work, &cold, &["cov.o", "cov.gcno"]);
    let hits = h.stat("cache_hits");
    run(&mut h.wrapped("gcc", args));
    assert_eq!(
        h.stat("cache_hits"),
        hits + 1,
        "the second coverage compile was no hit"
    );
    let hot = h.root().join("cov-hot");
    move_outputs(&h.work, &hot, &["cov.o", "cov.gcno"]);
    compare_trees(&cold, &hot);
}

#[test]
fn assembly_output() {
    let h = project();
    for compiler in ["gcc", "clang"] {
        same_as_direct(
            &h,
            compiler,
            &["-O2", "-S", "a.c"],
            &["a.s"],
            Expect::Cached,
        );
        same_as_direct(
            &h,
            compiler,
            &["-S", "b.c", "-o", "b-out.s"],
            &["b-out.s"],
            Expect::Cached,
        );
    }
}

#[test]
fn split_dwarf() {
    let h = project();
    same_as_direct(
        &h,
        "gcc",
        &["-g", "-gsplit-dwarf", "-O1", "-c", "a.c"],
        &["a.o", "a.dwo"],
        Expect::Cached,
    );
    same_as_direct(
        &h,
        "clang",
        &["-g", "-gsplit-dwarf", "-c", "b.c", "-o", "bsplit.o"],
        &["bsplit.o", "bsplit.dwo"],
        Expect::Cached,
    );
}

#[test]
fn response_files() {
    let h = project();
    write(
        &h.work,
        "args.rsp",
        "-O2 -DA_EXTRA=\"two words\"\n-c a.c -o rsp.o\n",
    );
    write(&h.work, "inner.rsp", "-Wall '-DQUOTED=1' @args.rsp\n");
    same_as_direct(&h, "gcc", &["@args.rsp"], &["rsp.o"], Expect::Cached);
    same_as_direct(&h, "gcc", &["-g", "@inner.rsp"], &["rsp.o"], Expect::Cached);
    same_as_direct(&h, "clang", &["@args.rsp"], &["rsp.o"], Expect::Cached);
    // A link through a response file is passed through unchanged.
    run(&mut h.direct("gcc", ["-c", "a.c", "b.c"]));
    write(&h.work, "link.rsp", "a.o b.o -o rsp-prog\n");
    same_as_direct(
        &h,
        "gcc",
        &["@link.rsp"],
        &["rsp-prog"],
        Expect::Passthrough,
    );
}

fn explain(h: &Home, cmd: &[&str]) -> serde_json::Value {
    let out = run(h.meshcc(["explain", "--json", "--"]).args(cmd));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "explain printed invalid JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

#[test]
fn explain_verdicts_for_passthrough_calls() {
    let h = project();
    // Link inputs must exist to count as inputs.
    run(&mut h.direct("gcc", ["-c", "a.c", "b.c"]));
    let cases: &[(&[&str], bool, bool, Option<&str>)] = &[
        (
            &["gcc", "a.o", "b.o", "-o", "prog"],
            false,
            false,
            Some("called_for_link"),
        ),
        (
            &["gcc", "a.c", "b.c", "-o", "prog"],
            false,
            false,
            Some("called_for_link"),
        ),
        (
            &["gcc", "-E", "a.c"],
            false,
            false,
            Some("called_for_preprocessing"),
        ),
        (
            &["gcc", "-M", "a.c"],
            false,
            false,
            Some("dependencies_only"),
        ),
        (
            &["gcc", "-MM", "a.c"],
            false,
            false,
            Some("dependencies_only"),
        ),
        (
            &["gcc", "-c", "a.c", "b.c"],
            true,
            false,
            Some("multiple_source_files"),
        ),
        (
            &["gcc", "--coverage", "-c", "a.c"],
            true,
            true,
            Some("local_only_option"),
        ),
        (&["gcc", "-S", "a.c"], true, true, None),
        (
            &["clang", "-gsplit-dwarf", "-g", "-c", "a.c"],
            true,
            true,
            Some("local_only_option"),
        ),
    ];
    for (cmd, compile, cacheable, reason) in cases {
        let v = explain(&h, cmd);
        assert_eq!(
            (
                v["compile"].as_bool(),
                v["cacheable"].as_bool(),
                v["reason_code"].as_str()
            ),
            (Some(*compile), Some(*cacheable), *reason),
            "explain {cmd:?}: {v}"
        );
    }
    let v = explain(&h, &["gcc", "--coverage", "-c", "a.c"]);
    assert_eq!(v["outputs"], serde_json::json!(["a.o", "a.gcno"]), "{v}");
    let v = explain(
        &h,
        &["gcc", "-g", "-gsplit-dwarf", "-c", "a.c", "-o", "x/y.o"],
    );
    assert_eq!(v["compile"], true, "{v}");
    let v = explain(&h, &["gcc", "-S", "a.c"]);
    assert_eq!(v["outputs"], serde_json::json!(["a.s"]), "{v}");
    let v = explain(&h, &["gcc", "-g", "-gsplit-dwarf", "-c", "a.c"]);
    assert_eq!(v["outputs"], serde_json::json!(["a.o", "a.dwo"]), "{v}");
}
