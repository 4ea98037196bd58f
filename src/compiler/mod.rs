//! Everything about the real compiler: argument classification, response files, toolchain
//! identity, and coloured diagnostics.

pub mod args;
pub mod color;
pub mod rsp;
pub mod toolchain;

use std::path::Path;

/// A file system view relative to a compile's working directory, for [`args::ArgContext`].
pub fn path_kind_in(cwd: &Path) -> impl Fn(&Path) -> args::PathKind + '_ {
    move |p: &Path| match std::fs::metadata(cwd.join(p)) {
        Ok(m) if m.is_dir() => args::PathKind::Dir,
        Ok(_) => args::PathKind::File,
        Err(_) => args::PathKind::Missing,
    }
}
