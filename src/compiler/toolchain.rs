//! Toolchain identity: a content hash of the compiler driver and the programs it runs.
//!
//! Two compilers with the same identity produce the same output for the same input, so the
//! identity goes into every cache key (and, later, decides which workers may run a job).
//! For gcc the driver, `cc1`, `cc1plus` and `as` are hashed (found with `-print-prog-name`); for
//! clang the driver (which compiles in-process) and `as`. `-dumpmachine` and `-dumpversion` are
//! added. Hashing a toolchain costs tens of milliseconds, so results are memoised by each file's
//! (device, inode, size, mtime) and re-checked with a `stat` per file on every use.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::compiler::args::CompilerFamily;

/// The identity of a toolchain (BLAKE3 over its programs' contents and target).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct ToolchainId(pub [u8; 32]);

/// Why a toolchain could not be identified.
#[derive(Debug, thiserror::Error)]
pub enum ToolchainError {
    /// The compiler (or one of its programs) cannot be read.
    #[error("cannot read compiler program {path}: {source}")]
    Read {
        /// The program.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The compiler could not be run to ask for its programs.
    #[error("cannot run compiler {path} to identify it: {source}")]
    Run {
        /// The compiler.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// What a file looked like when it was hashed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
}

fn stamp(path: &Path) -> std::io::Result<Stamp> {
    let m = std::fs::metadata(path)?;
    Ok(Stamp {
        dev: m.dev(),
        ino: m.ino(),
        size: m.size(),
        mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
    })
}

#[derive(Debug, Clone)]
struct Memo {
    files: Vec<(PathBuf, Stamp)>,
    id: ToolchainId,
}

/// Memoised toolchain identities, shared by all jobs of a daemon.
#[derive(Debug, Default)]
pub struct Toolchains {
    memo: Mutex<HashMap<PathBuf, Memo>>,
    native: Mutex<HashMap<(PathBuf, Vec<String>), String>>,
}

impl Toolchains {
    /// Creates an empty memo.
    pub fn new() -> Self {
        Self::default()
    }

    /// Returns the identity of the compiler at `compiler` (an absolute path). Blocking: call it
    /// from a blocking context.
    pub fn identify(
        &self,
        compiler: &Path,
        family: CompilerFamily,
    ) -> Result<ToolchainId, ToolchainError> {
        if let Some(memo) = self.lookup(compiler) {
            if memo
                .files
                .iter()
                .all(|(p, s)| stamp(p).is_ok_and(|now| now == *s))
            {
                return Ok(memo.id);
            }
        }
        let memo = compute(compiler, family)?;
        let id = memo.id;
        if let Ok(mut map) = self.memo.lock() {
            map.insert(compiler.to_path_buf(), memo);
        }
        Ok(id)
    }

    /// What `-march=native`-style options expand to on this machine: the compiler's own
    /// internal command line for them (`-### -E`), memoised. Two machines with different CPUs
    /// give different answers, so it belongs in the cache key (`wrapper.md` §3.1 item 8).
    /// Blocking.
    pub fn native_expansion(
        &self,
        compiler: &Path,
        native_args: &[String],
    ) -> Result<String, ToolchainError> {
        let memo_key = (compiler.to_path_buf(), native_args.to_vec());
        if let Some(found) = self
            .native
            .lock()
            .ok()
            .and_then(|m| m.get(&memo_key).cloned())
        {
            return Ok(found);
        }
        let mut args = vec!["-###", "-E", "-x", "c", "-"];
        args.extend(native_args.iter().map(String::as_str));
        let out = run_compiler(compiler, &args)?;
        // The driver prints the commands it would run on stderr; keep only the option words
        // that the native options expand to (not paths, which vary with the directory).
        let text = String::from_utf8_lossy(&out.stderr);
        let expansion: Vec<&str> = text
            .split_whitespace()
            .map(|w| w.trim_matches('"'))
            .filter(|w| w.starts_with("-m") || w.starts_with("-target") || w.starts_with("+"))
            .collect();
        let expansion = expansion.join(" ");
        if let Ok(mut m) = self.native.lock() {
            m.insert(memo_key, expansion.clone());
        }
        Ok(expansion)
    }

    fn lookup(&self, compiler: &Path) -> Option<Memo> {
        self.memo.lock().ok()?.get(compiler).cloned()
    }
}

/// Runs the compiler with `args` in the C locale and no input, capturing its output.
fn run_compiler(compiler: &Path, args: &[&str]) -> Result<std::process::Output, ToolchainError> {
    std::process::Command::new(compiler)
        .args(args)
        .env("LC_ALL", "C")
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|source| ToolchainError::Run {
            path: compiler.to_path_buf(),
            source,
        })
}

fn query(compiler: &Path, arg: &str) -> Result<String, ToolchainError> {
    let out = run_compiler(compiler, &[arg])?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn compute(compiler: &Path, family: CompilerFamily) -> Result<Memo, ToolchainError> {
    let mut programs = vec![compiler.to_path_buf()];
    let helpers: &[&str] = match family {
        CompilerFamily::Gcc => &["cc1", "cc1plus", "as"],
        CompilerFamily::Clang => &["as"],
    };
    for helper in helpers {
        let found = query(compiler, &format!("-print-prog-name={helper}"))?;
        let path = PathBuf::from(&found);
        // gcc answers with the bare name when it has no such program; `as` is then looked up
        // in PATH at compile time, which the environment part of the key covers.
        if path.is_absolute() && path.is_file() {
            programs.push(path);
        }
    }
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"meshcc toolchain v1\0");
    for q in ["-dumpmachine", "-dumpversion"] {
        let answer = query(compiler, q)?;
        hasher.update(&(answer.len() as u64).to_le_bytes());
        hasher.update(answer.as_bytes());
    }
    let mut files = Vec::with_capacity(programs.len());
    for path in programs {
        let read_err = |source| ToolchainError::Read {
            path: path.clone(),
            source,
        };
        let before = stamp(&path).map_err(read_err)?;
        let file = std::fs::File::open(&path).map_err(read_err)?;
        let mut file_hasher = blake3::Hasher::new();
        file_hasher
            .update_reader(file)
            .map_err(|source| ToolchainError::Read {
                path: path.clone(),
                source,
            })?;
        hasher.update(file_hasher.finalize().as_bytes());
        files.push((path, before));
    }
    Ok(Memo {
        files,
        id: ToolchainId(*hasher.finalize().as_bytes()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gcc() -> PathBuf {
        PathBuf::from("/usr/bin/gcc").canonicalize().unwrap()
    }

    #[test]
    fn gcc_identity_is_stable_and_memoised() {
        let t = Toolchains::new();
        let a = t.identify(&gcc(), CompilerFamily::Gcc).unwrap();
        let b = t.identify(&gcc(), CompilerFamily::Gcc).unwrap();
        assert_eq!(a, b);
        let memo = t.lookup(&gcc()).unwrap();
        // driver + cc1 + cc1plus (if g++ is installed) + as
        assert!(memo.files.len() >= 3, "{:?}", memo.files);
    }

    #[test]
    fn a_changed_program_changes_the_identity() {
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("gcc");
        std::fs::copy(gcc(), &fake).unwrap();
        let t = Toolchains::new();
        let a = t.identify(&fake, CompilerFamily::Gcc).unwrap();
        let mut bytes = std::fs::read(&fake).unwrap();
        bytes.push(0);
        std::fs::write(&fake, bytes).unwrap();
        let b = t.identify(&fake, CompilerFamily::Gcc).unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn native_options_expand_to_this_cpu() {
        let t = Toolchains::new();
        let native = ["-march=native".to_string()];
        let expansion = t.native_expansion(&gcc(), &native).unwrap();
        assert!(expansion.contains("-march="), "{expansion}");
        assert!(!expansion.contains("-march=native"), "{expansion}");
        assert_eq!(t.native_expansion(&gcc(), &native).unwrap(), expansion);
    }

    #[test]
    fn a_missing_compiler_is_an_error() {
        let t = Toolchains::new();
        let e = t
            .identify(Path::new("/nonexistent/gcc"), CompilerFamily::Gcc)
            .unwrap_err();
        assert!(e.to_string().contains("/nonexistent/gcc"), "{e}");
    }
}
