//! Whether a clang compile with debug information can run on a worker and still give the
//! object a local compile gives (pure).
//!
//! Measured with clang 14 (`docs/architecture.md`, "Fidelity"): compiling the fully
//! preprocessed text elsewhere changes the line table's columns (macros are expanded before
//! clang sees the code) and records the worker's directory. The `-frewrite-includes` text
//! (includes expanded, macros not) compiled as the source language, from a file at the input's
//! own relative path (an absolute or `..` path: under its file name, recorded as the client's
//! through `-fdebug-prefix-map`), with `-fdebug-compilation-dir=<client cwd>` and the command
//! line's macros, gives byte-identical objects with DWARF 4 and below. With DWARF 5 (clang 14's
//! default) it cannot: the line table's file entries carry MD5 sums of the source files, and
//! clang computes none for text that came through line markers, so the remote file table lacks
//! them (and gains an entry). Those compiles stay local.
//!
//! Without debug information either text gives identical objects, but the rewritten one is
//! sent whenever it can be: from fully preprocessed text clang warns about code inside macro
//! expansions, and a remote compile that prints anything is compiled again locally.

use std::path::{Component, Path};

use crate::compiler::args::CompileJob;

/// How a clang compile goes to a worker: its `-frewrite-includes` text, written on the worker
/// under `path` and compiled with the remote options plus `extra_args`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewrite {
    /// The input as the client named it: the names clang records (compile unit, `STT_FILE`,
    /// `__BASE_FILE__`) come from it. A plain relative path is written there; another (absolute,
    /// or with `..`) is written under its file name and recorded as this.
    pub path: String,
    /// The command line's macros, and the client's directory as the compilation directory
    /// unless the user chose one.
    pub extra_args: Vec<String>,
}

impl Rewrite {
    /// Whether the rewritten `text` compiles on the worker as it would here, else why not: it
    /// must not use `__TIMESTAMP__` (the worker's copy's time), nor `__BASE_FILE__` when the
    /// worker names the file otherwise.
    pub fn check_text(&self, text: &[u8]) -> Result<(), &'static str> {
        let uses = |name: &[u8]| text.windows(name.len()).any(|w| w == name);
        if uses(b"__TIMESTAMP__") {
            return Err("clang_file_timestamp");
        }
        if !is_plain_relative(&self.path) && uses(b"__BASE_FILE__") {
            return Err("clang_base_file");
        }
        Ok(())
    }
}

/// The DWARF version clang (14 and later, on Linux) emits for `args`: the last `-gdwarf-N`,
/// else `-fdebug-default-version=N`, else 5. `-gdwarf` asks for the default.
pub fn dwarf_version(args: &[String]) -> u8 {
    let mut explicit = None;
    let mut default = 5;
    for a in args {
        if let Some(n) = a.strip_prefix("-gdwarf-").and_then(|n| n.parse().ok()) {
            explicit = Some(n);
        } else if a == "-gdwarf" {
            explicit = None;
        } else if let Some(n) = a
            .strip_prefix("-fdebug-default-version=")
            .and_then(|n| n.parse().ok())
        {
            default = n;
        }
    }
    explicit.unwrap_or(default)
}

/// Whether `path` names a file below the directory it is relative to: not absolute, no `..`,
/// not empty, no NUL.
pub fn is_plain_relative(path: &str) -> bool {
    !path.is_empty()
        && !path.contains('\0')
        && Path::new(path)
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
        && Path::new(path)
            .components()
            .any(|c| matches!(c, Component::Normal(_)))
}

/// How a clang compile (`job`, run in `cwd`) goes to a worker as `-frewrite-includes` text, or
/// why it cannot (a stats key). With debug information that text is the only faithful form;
/// without, it still gives the worker's diagnostics the local ones (the fully preprocessed text
/// makes clang warn about code inside macro expansions), but the full text would also do.
pub fn rewrite(job: &CompileJob, cwd: &str) -> Result<Rewrite, &'static str> {
    let debug = job.key_includes_cwd;
    if !job.language.needs_preprocessing() {
        return Err("clang_debug_preprocessed_input");
    }
    if debug && dwarf_version(&job.remote_args) >= 5 {
        return Err("clang_debug_dwarf5");
    }
    if !is_plain_relative(&job.input) {
        let file_name = Path::new(&job.input).file_name().and_then(|n| n.to_str());
        if !file_name.is_some_and(|n| is_plain_relative(n) && !n.contains('=')) {
            return Err("clang_input_path");
        }
        // The worker records the client's name through a prefix map of its own, which the
        // user's maps would not apply to.
        let user_maps = job
            .remote_args
            .iter()
            .any(|a| a.starts_with("-fdebug-prefix-map=") || a.starts_with("-ffile-prefix-map="));
        if debug && user_maps {
            return Err("clang_debug_prefix_map_and_input_path");
        }
    }
    let Some(macros) = &job.macro_args else {
        return Err("clang_debug_preprocessor_options");
    };
    let mut extra_args = macros.clone();
    let chosen = job.remote_args.iter().any(|a| {
        a.starts_with("-fdebug-compilation-dir=") || a.starts_with("-ffile-compilation-dir=")
    });
    if debug && !chosen {
        extra_args.push(format!("-fdebug-compilation-dir={cwd}"));
    }
    Ok(Rewrite {
        path: job.input.clone(),
        extra_args,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compiler::args::{classify, ArgContext, CompilerFamily, PathKind, Verdict};

    fn job(args: &[&str]) -> CompileJob {
        let path_kind = |p: &Path| {
            if p.as_os_str().is_empty() || p == Path::new(".") || p.extension().is_none() {
                PathKind::Dir
            } else {
                PathKind::File
            }
        };
        let ctx = ArgContext {
            family: CompilerFamily::Clang,
            path_kind: &path_kind,
            dependency_env_set: false,
        };
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        match classify(&args, &ctx) {
            Verdict::Cacheable(job) => job,
            other => panic!("{args:?}: {other:?}"),
        }
    }

    fn strings(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_dwarf_version_is_the_last_asked_for() {
        for (args, v) in [
            (&[][..], 5),
            (&["-g"][..], 5),
            (&["-gdwarf-4"], 4),
            (&["-g", "-gdwarf-2"], 2),
            (&["-gdwarf-4", "-gdwarf-5"], 5),
            (&["-gdwarf-4", "-gdwarf"], 5),
            (&["-fdebug-default-version=4", "-g"], 4),
            (&["-fdebug-default-version=4", "-gdwarf-5"], 5),
            (&["-gdwarf-4", "-gdwarf64"], 4),
        ] {
            assert_eq!(dwarf_version(&strings(args)), v, "{args:?}");
        }
    }

    #[test]
    fn dwarf4_goes_remote_under_its_own_name_with_macros_and_the_directory() {
        let j = job(&["-O2", "-gdwarf-4", "-DX=1", "-Iinc", "-UY", "-c", "src/a.c"]);
        assert_eq!(
            rewrite(&j, "/home/u/p"),
            Ok(Rewrite {
                path: "src/a.c".into(),
                extra_args: strings(&["-DX=1", "-UY", "-fdebug-compilation-dir=/home/u/p"]),
            })
        );
        // Without debug information: no directory.
        let j = job(&["-O2", "-g0", "-DX", "-c", "a.c"]);
        assert_eq!(
            rewrite(&j, "/p").map(|r| r.extra_args),
            Ok(strings(&["-DX"]))
        );
        // Paths elsewhere go too (the worker records them through a prefix map).
        let j = job(&["-gdwarf-4", "-c", "/home/u/p/src/a.c"]);
        assert_eq!(
            rewrite(&j, "/b").map(|r| r.path),
            Ok("/home/u/p/src/a.c".into())
        );
        // The user's own compilation directory is kept.
        let j = job(&["-gdwarf-4", "-fdebug-compilation-dir=.", "-c", "./a.c"]);
        assert_eq!(
            rewrite(&j, "/x"),
            Ok(Rewrite {
                path: "./a.c".into(),
                extra_args: vec![],
            })
        );
    }

    #[test]
    fn what_cannot_be_faithful_stays_local_with_its_reason() {
        for (args, why) in [
            (&["-g", "-c", "a.c"][..], "clang_debug_dwarf5"),
            (&["-gdwarf-5", "-c", "a.c"], "clang_debug_dwarf5"),
            (
                &["-gdwarf-4", "-fdebug-prefix-map=/a=/b", "-c", "/abs/a.c"],
                "clang_debug_prefix_map_and_input_path",
            ),
            (
                &["-gdwarf-4", "-ffile-prefix-map=/a=/b", "-c", "../a.c"],
                "clang_debug_prefix_map_and_input_path",
            ),
            (&["-gdwarf-4", "-c", "/abs/a=b.c"], "clang_input_path"),
            (
                &["-gdwarf-4", "-imacros", "m.h", "-c", "a.c"],
                "clang_debug_preprocessor_options",
            ),
            (
                &["-gdwarf-4", "-c", "a.i"],
                "clang_debug_preprocessed_input",
            ),
        ] {
            assert_eq!(rewrite(&job(args), "/p"), Err(why), "{args:?}");
        }
    }

    #[test]
    fn plain_relative_paths() {
        for ok in ["a.c", "./a.c", "src/a.c", "a/./b/c.cc"] {
            assert!(is_plain_relative(ok), "{ok}");
        }
        for bad in ["", ".", "/a.c", "../a.c", "a/../b.c", "a\0.c", "./"] {
            assert!(!is_plain_relative(bad), "{bad:?}");
        }
    }

    #[test]
    fn text_the_worker_would_expand_otherwise_is_seen() {
        let r = |path: &str| Rewrite {
            path: path.into(),
            extra_args: vec![],
        };
        let stamp = b"const char *t = __TIMESTAMP__;";
        let base = b"const char *b = __BASE_FILE__;";
        let date = b"const char *t = __DATE__ __TIME__;";
        assert_eq!(r("a.c").check_text(stamp), Err("clang_file_timestamp"));
        assert_eq!(r("a.c").check_text(base), Ok(()));
        assert_eq!(r("/p/a.c").check_text(base), Err("clang_base_file"));
        assert_eq!(r("../a.c").check_text(date), Ok(()));
    }
}
