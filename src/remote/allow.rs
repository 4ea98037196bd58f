//! The remote allow-list: which options a worker accepts for a compile it runs for a peer.
//!
//! A worker compiles preprocessed text it was sent, in a private directory, with options from
//! a peer it authenticated but does not otherwise trust. Every option must be on this list;
//! anything that reads or writes files of the worker's own (plugins, specs, program prefixes,
//! dump and profile files, response files, include paths), runs another program, or names a
//! file at all is refused with its reason. The worker sets `-x`, the mode, the input and the
//! output itself, so those are refused too.
//!
//! The client calls the same [`check`] before it sends a job, so a job the workers would refuse
//! never leaves the machine (it compiles locally and is counted as not distributable).

/// Why an argument list is refused for a remote compile.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("option {arg} is not accepted for a remote compile: {reason}")]
pub struct Refusal {
    /// The refused argument (the option, or the value that follows it).
    pub arg: String,
    /// Why.
    pub reason: &'static str,
}

/// Options refused outright, by prefix, with the reason. Checked before the allowed patterns,
/// so a refused prefix wins over a broader allowed one (`-fplugin` over `-f…`).
const REFUSED: &[(&str, &str)] = &[
    ("-fplugin", "loads a compiler plugin from the worker's disk"),
    (
        "-iplugindir",
        "loads compiler plugins from the worker's disk",
    ),
    ("-specs", "reads a specs file that can run any program"),
    ("--specs", "reads a specs file that can run any program"),
    ("-B", "takes compiler programs from a directory"),
    ("--prefix", "takes compiler programs from a directory"),
    (
        "-wrapper",
        "runs the compiler's programs under another program",
    ),
    ("-fdump-", "writes dump files outside the returned output"),
    ("-fprofile-", "reads or writes profile files by path"),
    ("-fcoverage-", "reads or writes coverage files by path"),
    ("-fauto-profile", "reads a profile file"),
    ("-fbranch-probabilities", "reads profile files"),
    ("-ftest-coverage", "writes coverage notes beside the object"),
    ("-fstack-usage", "writes a side file that is not returned"),
    (
        "-fcallgraph-info",
        "writes a side file that is not returned",
    ),
    ("-fopt-info", "may write a report file"),
    ("-fsave-optimization-record", "writes a report file"),
    ("-foptimization-record-file", "writes a report file"),
    ("-ftime-trace", "writes a trace file"),
    ("-fmodule", "reads module files"),
    ("-fpch", "reads precompiled headers"),
    ("-fthinlto-index", "reads an index file"),
    ("-fsanitize-ignorelist", "reads a file"),
    ("-fsanitize-blacklist", "reads a file"),
    ("-fsanitize-coverage-allowlist", "reads a file"),
    ("-fsanitize-coverage-ignorelist", "reads a file"),
    ("-frandomize-layout-seed-file", "reads a file"),
    ("-fbuild-session-file", "reads a file"),
    (
        "-gsplit-dwarf",
        "writes a .dwo file named after the output path",
    ),
    (
        "-march=native",
        "means this machine's CPU; the client expands it",
    ),
    (
        "-mtune=native",
        "means this machine's CPU; the client expands it",
    ),
    (
        "-mcpu=native",
        "means this machine's CPU; the client expands it",
    ),
    ("-save-temps", "writes intermediate files"),
    ("--save-temps", "writes intermediate files"),
    (
        "-Wp,",
        "passes options to the preprocessor; the input is preprocessed already",
    ),
    (
        "-Xpreprocessor",
        "passes options to the preprocessor; the input is preprocessed already",
    ),
    ("-Xclang", "passes options the worker cannot check"),
    ("-Xassembler", "passes options the worker cannot check"),
    ("-v", "prints the worker's own paths and commands"),
    ("-###", "prints the worker's own paths and commands"),
    ("-x", "the worker sets the language itself"),
    ("-o", "the worker names the output itself"),
];

/// Options taking the next argument as a value that names no file.
const WITH_VALUE: &[&str] = &["--param", "-mllvm", "-target", "-arch"];

/// Exact options allowed.
const EXACT: &[&str] = &[
    "-w",
    "-ansi",
    "-pedantic",
    "-pedantic-errors",
    "-pipe",
    "-pthread",
    "-p",
    "-pg",
    "-static",
    "-shared",
    "-pie",
    "-no-pie",
    "-rdynamic",
    "-nostdlib",
    "-nostartfiles",
    "-nodefaultlibs",
];

/// Option prefixes allowed (after the refused ones are ruled out).
const PREFIXES: &[&str] = &[
    "-O",
    "-g",
    "-f",
    "-m",
    "-W",
    "-std=",
    "--std=",
    "--param=",
    "--target=",
    "-l",
    "-L",
    // Command-line macros, which text with rewritten includes (clang) still needs.
    "-D",
    "-U",
];

/// Assembler options (`-Wa,a,b`) that read and write nothing but the object.
const ASSEMBLER: &[&str] = &[
    "--noexecstack",
    "--64",
    "--32",
    "-mrelax-relocations=yes",
    "-mrelax-relocations=no",
    "-mx86-used-note=yes",
    "-mx86-used-note=no",
    "--compress-debug-sections",
    "--nocompress-debug-sections",
];

fn refuse(arg: &str, reason: &'static str) -> Refusal {
    Refusal {
        arg: arg.to_string(),
        reason,
    }
}

/// Checks one option (not a separate value).
fn check_one(arg: &str) -> Result<(), Refusal> {
    if !arg.starts_with('-') {
        return Err(refuse(
            arg,
            if arg.starts_with('@') {
                "response files are read from the worker's disk"
            } else {
                "names a file; only the job's own input is compiled"
            },
        ));
    }
    if let Some((_, reason)) = REFUSED.iter().find(|(p, _)| arg.starts_with(p)) {
        return Err(refuse(arg, reason));
    }
    if let Some(list) = arg.strip_prefix("-Wa,") {
        return match list.split(',').find(|a| {
            !ASSEMBLER
                .iter()
                .any(|ok| a == ok || a.starts_with("--gdwarf-"))
        }) {
            None => Ok(()),
            Some(_) => Err(refuse(
                arg,
                "passes assembler options not on the allow-list",
            )),
        };
    }
    if matches!(arg, "-c" | "-S" | "-E" | "-fsyntax-only") || arg.starts_with("-M") {
        return Err(refuse(
            arg,
            "the worker sets the mode and makes no dependency file",
        ));
    }
    if EXACT.contains(&arg) || PREFIXES.iter().any(|p| arg.starts_with(p)) {
        return Ok(());
    }
    Err(refuse(arg, "not on the remote allow-list"))
}

/// Checks a remote compile's options against the allow-list: `Ok` when every one is allowed,
/// else the first refused argument and why.
pub fn check(args: &[String]) -> Result<(), Refusal> {
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        if WITH_VALUE.contains(&arg.as_str()) {
            match it.next() {
                Some(v) if !v.contains('/') && !v.starts_with('@') => {}
                Some(v) => return Err(refuse(v, "a value that names a file")),
                None => return Err(refuse(arg, "misses its value")),
            }
            continue;
        }
        check_one(arg)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    fn refused(a: &[&str]) -> Refusal {
        check(&strings(a)).expect_err(&format!("{a:?} must be refused"))
    }

    #[test]
    fn common_build_options_are_allowed() {
        let ok: &[&[&str]] = &[
            &[],
            &[
                "-O2", "-g0", "-Wall", "-Wextra", "-std=c99", "-fPIC", "-pthread",
            ],
            &[
                "-O3",
                "-g",
                "-gdwarf-4",
                "-fno-omit-frame-pointer",
                "-march=x86-64-v2",
            ],
            &[
                "-fdiagnostics-color=always",
                "-Werror",
                "-Wno-unused",
                "-w",
                "-pedantic",
            ],
            &[
                "-ffile-prefix-map=/a=/b",
                "-fdebug-prefix-map=/x=y",
                "-frandom-seed=1",
            ],
            &[
                "--param",
                "max-inline-insns-single=100",
                "--param=l1-cache-size=32",
            ],
            &[
                "-Wa,--noexecstack",
                "-Wa,--gdwarf-5,--64",
                "-flto",
                "-fdirectives-only",
            ],
            &["-lm", "-Llib", "-static", "-shared", "-no-pie"],
            &["-DX=1", "-DY", "-UZ", "-fdebug-compilation-dir=/home/u/p"],
        ];
        for a in ok {
            assert_eq!(check(&strings(a)), Ok(()), "{a:?}");
        }
    }

    #[test]
    fn every_dangerous_option_is_refused_with_its_reason() {
        let cases: &[(&[&str], &str)] = &[
            (&["-fplugin=/tmp/x.so"], "plugin"),
            (&["-fplugin-arg-x-y=z"], "plugin"),
            (&["-iplugindir=/x"], "plugin"),
            (&["-specs=/tmp/s"], "specs"),
            (&["-specs", "/tmp/s"], "specs"),
            (&["--specs=/tmp/s"], "specs"),
            (&["-B/tmp/bin"], "compiler programs"),
            (&["-B", "/tmp/bin"], "compiler programs"),
            (&["--prefix=/tmp"], "compiler programs"),
            (&["-wrapper", "gdb,--args"], "another program"),
            (&["-fdump-tree-all"], "dump"),
            (&["-fdump-rtl-expand=/tmp/x"], "dump"),
            (&["-fprofile-generate=/tmp/p"], "profile"),
            (&["-fprofile-arcs"], "profile"),
            (&["-fprofile-use=/x"], "profile"),
            (&["-fcoverage-mapping"], "coverage"),
            (&["-ftest-coverage"], "coverage"),
            (&["-fauto-profile=/x"], "profile"),
            (&["-fbranch-probabilities"], "profile"),
            (&["-fstack-usage"], "side file"),
            (&["-fcallgraph-info"], "side file"),
            (&["-fopt-info-all=/tmp/r"], "report"),
            (&["-fsave-optimization-record"], "report"),
            (&["-ftime-trace"], "trace"),
            (&["-fmodules"], "module"),
            (&["-fpch-preprocess"], "precompiled"),
            (&["-fsanitize-ignorelist=/etc/passwd"], "reads a file"),
            (&["-gsplit-dwarf"], ".dwo"),
            (&["-march=native"], "CPU"),
            (&["-save-temps"], "intermediate"),
            (&["-Wp,-MD,/tmp/x"], "preprocess"),
            (&["-Xpreprocessor", "-I/x"], "preprocess"),
            (&["-Xclang", "-load"], "cannot check"),
            (&["-Xassembler", "-a=/tmp/x"], "cannot check"),
            (&["-Wa,-adhln=/tmp/list"], "assembler"),
            (&["-Wa,--noexecstack,-I/x"], "assembler"),
            (&["-v"], "paths"),
            (&["-###"], "paths"),
            (&["-x", "c"], "language"),
            (&["-o", "/etc/passwd"], "output"),
            (&["-c"], "mode"),
            (&["-S"], "mode"),
            (&["-E"], "mode"),
            (&["-MD"], "dependency"),
            (&["-MF", "x.d"], "dependency"),
            (&["/etc/passwd"], "names a file"),
            (&["../x.c"], "names a file"),
            (&["@args.rsp"], "response file"),
            (&["-I/usr/include"], "allow-list"),
            (&["-include", "x.h"], "allow-list"),
            (&["-D", "X"], "names a file"),
            (&["--sysroot=/x"], "allow-list"),
            (&["-isysroot", "/x"], "allow-list"),
            (&["--param", "/etc/passwd"], "file"),
            (&["-mllvm"], "value"),
            (&["-dumpbase", "x"], "allow-list"),
            (&["-aux-info", "x"], "allow-list"),
        ];
        for (args, why) in cases {
            let r = refused(args);
            assert!(
                r.reason.contains(why) || r.to_string().contains(why),
                "{args:?}: {r}"
            );
        }
    }

    #[test]
    fn a_refused_option_anywhere_refuses_the_list() {
        let r = refused(&["-O2", "-Wall", "-fplugin=x.so", "-g"]);
        assert_eq!(r.arg, "-fplugin=x.so");
        let r = refused(&["-O2", "--param", "x=1", "-Wa,-a"]);
        assert_eq!(r.arg, "-Wa,-a");
    }

    #[test]
    fn what_classification_keeps_for_remote_passes() {
        use crate::compiler::args::{classify, ArgContext, CompilerFamily, PathKind, Verdict};
        let path_kind = |p: &std::path::Path| {
            if p.as_os_str().is_empty() || p == std::path::Path::new(".") {
                PathKind::Dir
            } else if p == std::path::Path::new("a.c") {
                PathKind::File
            } else {
                PathKind::Missing
            }
        };
        let ctx = ArgContext {
            family: CompilerFamily::Gcc,
            path_kind: &path_kind,
            dependency_env_set: false,
        };
        let args = strings(&[
            "-O2",
            "-g",
            "-Wall",
            "-DX",
            "-Iinc",
            "-MMD",
            "-MF",
            "a.d",
            "-c",
            "a.c",
            "-o",
            "a.o",
            "-fPIC",
            "-std=gnu99",
        ]);
        let verdict = classify(&args, &ctx);
        let Verdict::Cacheable(job) = verdict else {
            panic!("cacheable: {verdict:?}")
        };
        assert_eq!(check(&job.remote_args), Ok(()));
    }

    proptest::proptest! {
        /// Whatever the arguments, the check never panics, and anything accepted starts with
        /// `-` or is the value of an option that takes one.
        #[test]
        fn random_arguments_never_panic(args in proptest::collection::vec("[-@/a-zA-Z0-9=,.]{0,12}", 0..8)) {
            if check(&args).is_ok() {
                let mut values = false;
                for a in &args {
                    proptest::prop_assert!(values || a.starts_with('-'), "{args:?}");
                    values = WITH_VALUE.contains(&a.as_str()) && !values;
                }
            }
        }
    }
}
