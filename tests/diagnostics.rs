//! Diagnostics through meshcc are the direct compiler's: the same stderr bytes and exit codes,
//! cold and hot (warnings are replayed on hits; failed compiles are never cached), with and
//! without colour, for gcc, clang, g++ and clang++.

mod common;

use common::*;

/// What kind of result a source gives, and so what the statistics must show.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    /// Compiles with warnings: a miss, then a hit that replays them.
    Warns,
    /// The compiler proper fails: a miss both times, never stored.
    CompileError,
    /// The preprocessor fails: not cacheable, run as is both times.
    PreprocessorError,
}

const C_SOURCES: &[(&str, &str, Kind)] = &[
    (
        "warn.c",
        "static int unused_fn(void) { return 1; }\n\
         int f(int a, int b) {\n  int unused;\n  unsigned u = 3;\n  if (a < u) return 1;\n  return 0;\n}\n",
        Kind::Warns,
    ),
    (
        "hashwarn.c",
        "#warning \"remember to water the plants\"\nint x = 1;\n",
        Kind::Warns,
    ),
    (
        "err.c",
        "int f(void) {\n  return undeclared_thing + 1;\n}\nint g(void) { return \"no\" * 2; }\n",
        Kind::CompileError,
    ),
    (
        "cpperr.c",
        "#include \"no_such_header.h\"\nint y;\n",
        Kind::PreprocessorError,
    ),
];

const CXX_SOURCES: &[(&str, &str, Kind)] = &[
    (
        "warn.cpp",
        "#include <vector>\nint f(int a, int b) {\n  int unused;\n  std::vector<int> v(3);\n  \
         for (int i = 0; i < v.size(); i++) a += v[i];\n  return a;\n}\n",
        Kind::Warns,
    ),
    (
        "hashwarn.cpp",
        "#warning \"templates ahead\"\ntemplate <class T> T id(T t) { return t; }\nint z = id(3);\n",
        Kind::Warns,
    ),
    (
        "err.cpp",
        "struct S { int x; };\nint f() {\n  S s;\n  return s.y + nosuch();\n}\n",
        Kind::CompileError,
    ),
    (
        "cpperr.cpp",
        "#include <no_such_header>\nint w;\n",
        Kind::PreprocessorError,
    ),
];

fn counters(h: &Home) -> (u64, u64, u64, u64) {
    let s = h.stats();
    let n = |k: &str| s[k].as_u64().unwrap_or_else(|| panic!("no {k} in {s}"));
    let pp = s["uncacheable_reasons"]["preprocessor_error"]
        .as_u64()
        .unwrap_or(0);
    (n("cache_hits"), n("cache_misses"), n("compile_failed"), pp)
}

/// Runs `compiler <flags> -c src -o obj` directly, then twice through meshcc, in the same
/// directory, and checks exit code, stdout, stderr and the object are the same every time.
fn check_one(h: &Home, compiler: &str, src: &str, kind: Kind, colour: Option<&str>) {
    let obj = format!("{src}.o");
    let mut args: Vec<String> = vec!["-Wall".into(), "-Wextra".into()];
    args.extend(colour.map(str::to_owned));
    args.extend(["-c".into(), src.into(), "-o".into(), obj.clone()]);
    let what = format!("{compiler} {}", args.join(" "));

    let direct = output(&mut h.direct(compiler, &args));
    let expected_code = match kind {
        Kind::Warns => 0,
        Kind::CompileError | Kind::PreprocessorError => 1,
    };
    assert_eq!(
        code(&direct.status),
        expected_code,
        "direct `{what}`: {}",
        String::from_utf8_lossy(&direct.stderr)
    );
    assert!(
        !direct.stderr.is_empty(),
        "direct `{what}` printed no diagnostics: the test source is wrong"
    );
    let has_colour = direct.stderr.contains(&0x1b);
    assert_eq!(
        has_colour,
        colour.is_some(),
        "direct `{what}`: colour expected only with -fdiagnostics-color=always"
    );
    let aside = h.root().join("direct-objects");
    std::fs::create_dir_all(&aside).expect("create the directory for direct objects");
    let obj_path = h.work.join(&obj);
    if kind == Kind::Warns {
        std::fs::rename(&obj_path, aside.join(&obj)).expect("move the direct object aside");
    } else {
        assert!(!obj_path.exists(), "direct `{what}` failed but wrote {obj}");
    }

    for round in ["cold", "hot"] {
        let before = counters(h);
        let mesh = output(&mut h.wrapped(compiler, &args));
        assert_same_output(&format!("{round} `meshcc {what}`"), &direct, &mesh);
        let after = counters(h);
        let delta = (
            after.0 - before.0,
            after.1 - before.1,
            after.2 - before.2,
            after.3 - before.3,
        );
        match kind {
            Kind::Warns => {
                assert_same_file(&aside.join(&obj), &obj_path);
                std::fs::remove_file(&obj_path).expect("remove the object");
                if round == "hot" {
                    assert_eq!(
                        delta,
                        (1, 0, 0, 0),
                        "hot `{what}`: expected one hit (hits, misses, failed, cpp errors)"
                    );
                } else if colour.is_none() {
                    // The coloured run may share the entry of the plain one.
                    assert_eq!(
                        delta,
                        (0, 1, 0, 0),
                        "cold `{what}`: expected one miss (hits, misses, failed, cpp errors)"
                    );
                }
            }
            Kind::CompileError => {
                assert!(!obj_path.exists(), "{round} `meshcc {what}` wrote {obj}");
                assert_eq!(
                    delta,
                    (0, 1, 1, 0),
                    "{round} `{what}`: a failed compile must be a miss every time, never a hit \
                     (hits, misses, failed, cpp errors)"
                );
            }
            Kind::PreprocessorError => {
                assert!(!obj_path.exists(), "{round} `meshcc {what}` wrote {obj}");
                assert_eq!(
                    (delta.0, delta.1, delta.3),
                    (0, 0, 1),
                    "{round} `{what}`: a preprocessor error is uncacheable every time \
                     (hits, misses, cpp errors)"
                );
            }
        }
    }
}

fn diagnostics(compiler: &str, sources: &[(&str, &str, Kind)]) {
    let h = Home::new();
    for (name, text, _) in sources {
        write(&h.work, name, text);
    }
    for colour in [None, Some("-fdiagnostics-color=always")] {
        for (name, _, kind) in sources {
            check_one(&h, compiler, name, *kind, colour);
        }
    }
}

#[test]
fn gcc_c() {
    diagnostics("gcc", C_SOURCES);
}

#[test]
fn clang_c() {
    diagnostics("clang", C_SOURCES);
}

#[test]
fn gxx_cxx() {
    diagnostics("g++", CXX_SOURCES);
}

#[test]
fn clangxx_cxx() {
    diagnostics("clang++", CXX_SOURCES);
}
