//! Finding the real compiler: by path, or by name in `MESHCC_PATH`/`PATH`, skipping meshcc
//! itself so a `gcc -> meshcc` symlink never calls itself.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Why the real compiler was not found.
#[derive(Debug, thiserror::Error)]
pub enum LocateError {
    /// Nothing of that name (other than meshcc) on the search path.
    #[error(
        "cannot find compiler '{name}' in {var} (set MESHCC_PATH to where the real compiler lives)"
    )]
    NotFound {
        /// The name looked for.
        name: String,
        /// `PATH` or `MESHCC_PATH`.
        var: &'static str,
    },
    /// The named compiler is meshcc itself.
    #[error("'{0}' is meshcc itself: name the real compiler (e.g. `meshcc gcc`), or put the meshcc symlinks before it in PATH")]
    Recursive(String),
}

/// Whether `name` is meshcc's own program name (`meshcc`, or a path ending in it).
pub fn is_meshcc_name(name: &OsStr) -> bool {
    Path::new(name)
        .file_name()
        .is_some_and(|n| n.as_bytes().starts_with(b"meshcc"))
}

fn is_executable_file(p: &Path) -> bool {
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Finds the compiler called `name`.
///
/// A name with a `/` is taken as a path (relative to `cwd`). Otherwise each directory of
/// `search_path` (from `MESHCC_PATH` when set, else `PATH`) is tried in order, skipping any
/// executable that resolves to `self_exe`.
pub fn find_compiler(
    name: &OsStr,
    search_path: Option<&OsStr>,
    path_var: &'static str,
    cwd: &Path,
    self_exe: &Path,
) -> Result<PathBuf, LocateError> {
    let me = self_exe
        .canonicalize()
        .unwrap_or_else(|_| self_exe.to_path_buf());
    let is_me = |p: &Path| p.canonicalize().is_ok_and(|c| c == me);
    let display = name.to_string_lossy().into_owned();
    if name.as_bytes().contains(&b'/') {
        let path = cwd.join(name);
        if is_me(&path) {
            return Err(LocateError::Recursive(display));
        }
        return if is_executable_file(&path) {
            Ok(path)
        } else {
            Err(LocateError::NotFound {
                name: display,
                var: path_var,
            })
        };
    }
    let dirs: OsString = search_path.map(OsStr::to_os_string).unwrap_or_default();
    for dir in std::env::split_paths(&dirs) {
        let dir = if dir.as_os_str().is_empty() {
            cwd.to_path_buf()
        } else {
            cwd.join(dir)
        };
        let candidate = dir.join(name);
        if is_executable_file(&candidate) && !is_me(&candidate) {
            return Ok(candidate);
        }
    }
    Err(LocateError::NotFound {
        name: display,
        var: path_var,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn exe(path: &Path) {
        std::fs::write(path, b"#!/bin/sh\n").unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn skips_itself_and_finds_the_next_compiler() {
        let t = tempfile::tempdir().unwrap();
        let (wrap, real) = (t.path().join("wrap"), t.path().join("real"));
        std::fs::create_dir_all(&wrap).unwrap();
        std::fs::create_dir_all(&real).unwrap();
        let me = t.path().join("meshcc");
        exe(&me);
        symlink(&me, wrap.join("gcc")).unwrap();
        exe(&real.join("gcc"));
        let path = std::env::join_paths([&wrap, &real]).unwrap();
        let found = find_compiler(OsStr::new("gcc"), Some(&path), "PATH", t.path(), &me).unwrap();
        assert_eq!(found, real.join("gcc"));
    }

    #[test]
    fn only_itself_is_not_found() {
        let t = tempfile::tempdir().unwrap();
        let me = t.path().join("meshcc");
        exe(&me);
        symlink(&me, t.path().join("gcc")).unwrap();
        let path = t.path().as_os_str().to_os_string();
        let e = find_compiler(OsStr::new("gcc"), Some(&path), "PATH", t.path(), &me).unwrap_err();
        assert!(matches!(e, LocateError::NotFound { .. }), "{e}");
        let e = find_compiler(OsStr::new("./gcc"), None, "PATH", t.path(), &me).unwrap_err();
        assert!(matches!(e, LocateError::Recursive(_)), "{e}");
    }

    #[test]
    fn paths_and_non_executables() {
        let t = tempfile::tempdir().unwrap();
        let me = t.path().join("meshcc");
        exe(&me);
        exe(&t.path().join("cc"));
        std::fs::write(t.path().join("notexec"), b"").unwrap();
        let found = find_compiler(OsStr::new("./cc"), None, "PATH", t.path(), &me).unwrap();
        assert_eq!(found, t.path().join("./cc"));
        let path = t.path().as_os_str().to_os_string();
        assert!(find_compiler(OsStr::new("notexec"), Some(&path), "PATH", t.path(), &me).is_err());
        assert!(find_compiler(OsStr::new("nosuch"), Some(&path), "PATH", t.path(), &me).is_err());
    }

    #[test]
    fn meshcc_names() {
        assert!(is_meshcc_name(OsStr::new("meshcc")));
        assert!(is_meshcc_name(OsStr::new("/usr/bin/meshcc")));
        assert!(!is_meshcc_name(OsStr::new("gcc")));
    }
}
