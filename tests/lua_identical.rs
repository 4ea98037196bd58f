//! Lua 5.4 built with make through meshcc, cold and hot, byte-identical to the direct compiler's
//! objects and dependency files, for gcc and clang and several flag sets.
//!
//! Every build runs in the same directory (debug info and dependency files embed it): direct
//! first, outputs moved aside; then meshcc cold (all misses), compared; outputs deleted; then
//! meshcc hot (all hits), compared.

mod common;

use common::*;

const OUTPUTS: &[&str] = &[".o", ".d"];

fn lua_identical(compiler: &str, flags: &str, with_deps: bool) {
    let h = Home::new();
    let dir = h.work.join("lua");
    let sources = copy_lua(&dir);
    let n = sources.len() as u64;
    write_makefile(&dir, flags);

    make(&h, &dir, 8, compiler);
    let direct = h.root().join("direct");
    let moved = move_outputs(&dir, &direct, OUTPUTS) as u64;
    let expected_files = if with_deps { 2 * n } else { n };
    assert_eq!(
        moved,
        expected_files,
        "the direct build of {} sources with `{flags}` made {moved} outputs",
        sources.len()
    );

    // Cold: every file a miss, every output the direct compiler's.
    let cc = meshcc_cc(compiler);
    let out = make(&h, &dir, 8, &cc);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("meshcc:"),
        "meshcc complained during the cold build:\n{stderr}\n--- daemon log ---\n{}",
        h.log()
    );
    let cold = h.root().join("cold");
    move_outputs(&dir, &cold, OUTPUTS);
    compare_trees(&direct, &cold);
    let after_cold = h.stats();
    assert_eq!(
        (
            after_cold["cache_misses"].as_u64(),
            after_cold["cache_hits"].as_u64()
        ),
        (Some(n), Some(0)),
        "cold build of {n} files: expected {n} misses and no hits; stats: {after_cold}"
    );

    // Hot: every file a hit, outputs still the direct compiler's.
    let out = make(&h, &dir, 8, &cc);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("meshcc:"),
        "meshcc complained during the hot build:\n{stderr}"
    );
    let hot = h.root().join("hot");
    move_outputs(&dir, &hot, OUTPUTS);
    compare_trees(&direct, &hot);
    let after_hot = h.stats();
    assert_eq!(
        (
            after_hot["cache_misses"].as_u64(),
            after_hot["cache_hits"].as_u64()
        ),
        (Some(n), Some(n)),
        "hot build of {n} files: expected {n} hits and no new misses; stats: {after_hot}"
    );
    assert_eq!(
        after_hot["errors"].as_object().map(|m| m.len()),
        Some(0),
        "errors counted: {after_hot}"
    );
}

#[test]
fn gcc_o2() {
    lua_identical("gcc", "-O2", false);
}

#[test]
fn gcc_debug_o1() {
    lua_identical("gcc", "-g -O1", false);
}

#[test]
fn gcc_md_mf() {
    lua_identical("gcc", "-O2 -MD -MF $(@:.o=.d)", true);
}

#[test]
fn gcc_mmd() {
    lua_identical("gcc", "-MMD", true);
}

#[test]
fn clang_o2() {
    lua_identical("clang", "-O2", false);
}

#[test]
fn clang_debug_o1() {
    lua_identical("clang", "-g -O1", false);
}

#[test]
fn clang_md_mf() {
    lua_identical("clang", "-O2 -MD -MF $(@:.o=.d)", true);
}

#[test]
fn clang_mmd() {
    lua_identical("clang", "-MMD", true);
}
