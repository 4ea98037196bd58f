//! A node's pipeline with the mesh (two in-process nodes on loopback, real gcc, the view given
//! by hand): what goes remote and what never does, the fallback policy, and fidelity.
//!
//! Remote compiles are what the local compiler would have written: the Lua sources compiled
//! through a node's pipeline on a worker (two in-process nodes on loopback, real gcc, the view
//! given by hand), compared with direct gcc: `-g0` objects and dependency files byte for byte;
//! `-g` code and line tables identical, the only difference the producer string; diagnostics
//! exactly the local compiler's (a remote compile that prints any is compiled again here).

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use common::*;
use meshcc::cache::store::LocalStore;
use meshcc::compiler::args::CompilerFamily;
use meshcc::compiler::toolchain::Toolchains;
use meshcc::mesh::cluster::ClusterSecret;
use meshcc::mesh::election::MemberState;
use meshcc::mesh::identity::NodeKey;
use meshcc::mesh::transport::{Mesh, TransportConfig};
use meshcc::mesh::view::{Member, Snapshot, ViewHandles};
use meshcc::node::ipc::{CompileRequest, Reply};
use meshcc::node::pipeline::Pipeline;
use meshcc::node::stats::Stats;
use meshcc::remote::RemoteSettings;

const GCC: &str = "/usr/bin/gcc";
const CLANG: &str = "/usr/bin/clang";
const CLANGXX: &str = "/usr/bin/clang++";

struct Node {
    mesh: Arc<Mesh>,
    handles: ViewHandles,
    client: Arc<meshcc::remote::client::Client>,
    stats: Arc<Stats>,
    dir: tempfile::TempDir,
}

fn node(secret: &ClusterSecret, slots: u32) -> Node {
    node_with(
        secret,
        RemoteSettings {
            slots: Some(slots),
            ..RemoteSettings::default()
        },
    )
}

fn node_with(secret: &ClusterSecret, settings: RemoteSettings) -> Node {
    let config = TransportConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        ..TransportConfig::default()
    };
    let mesh = Mesh::bind(
        config,
        Arc::new(NodeKey::generate().unwrap()),
        secret.clone(),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let stats = Arc::new(Stats::load(dir.path().join("stats.json")));
    let handles = ViewHandles::new();
    let client = meshcc::remote::start(
        mesh.clone(),
        &handles,
        &settings,
        dir.path().join("jobs"),
        stats.clone(),
        meshcc::remote::real_executor(),
    );
    let toolchains = Toolchains::new();
    for (cc, family) in [
        (GCC, CompilerFamily::Gcc),
        (CLANG, CompilerFamily::Clang),
        (CLANGXX, CompilerFamily::Clang),
    ] {
        let id = toolchains.identify(Path::new(cc), family).unwrap();
        client.worker().add_toolchain(id, PathBuf::from(cc));
    }
    Node {
        mesh,
        handles,
        client,
        stats,
        dir,
    }
}

/// A client node with no slots of its own whose view holds one worker, and its pipeline.
fn pair() -> (Node, Node, Pipeline) {
    pair_with(RemoteSettings::default())
}

fn pair_with(settings: RemoteSettings) -> (Node, Node, Pipeline) {
    let k = ClusterSecret::generate().unwrap();
    let client = node_with(
        &k,
        RemoteSettings {
            slots: Some(0),
            ..settings
        },
    );
    let worker = node(&k, 2);
    client.handles.view.send_replace(Snapshot {
        members: vec![Member {
            id: worker.mesh.id(),
            addrs: vec![worker.mesh.local_addr().unwrap()],
            state: MemberState::Alive,
            advert: Some(worker.handles.advert.borrow().clone()),
            fence: 0,
        }],
        coordinator: None,
    });
    let store = LocalStore::open(client.dir.path().join("cache"), 1 << 30).unwrap();
    let pipeline = Pipeline::new(Some(Arc::new(store)), client.stats.clone());
    pipeline.set_remote(client.client.clone());
    (client, worker, pipeline)
}

fn request(dir: &Path, args: &[String]) -> CompileRequest {
    request_with(GCC, dir, args)
}

/// A request to compile with `cc` (an absolute path) in `dir`.
fn request_with(cc: &str, dir: &Path, args: &[String]) -> CompileRequest {
    CompileRequest {
        compiler: cc.into(),
        compiler_name: Path::new(cc)
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned(),
        args: args.to_vec(),
        cwd: dir.display().to_string(),
        env: vec![
            ("LC_ALL".into(), "C".into()),
            ("PATH".into(), std::env::var("PATH").unwrap_or_default()),
        ],
        stderr_is_tty: false,
        umask: 0o022,
    }
}

fn direct(dir: &Path, args: &[String]) -> std::process::Output {
    direct_with(GCC, dir, args)
}

/// Runs `cc` with `args` in `dir` directly; it must succeed.
fn direct_with(cc: &str, dir: &Path, args: &[String]) -> std::process::Output {
    let out = Command::new(cc)
        .args(args)
        .current_dir(dir)
        .env("PWD", dir)
        .env("LC_ALL", "C")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn compile(
    pipeline: &Pipeline,
    rt: &tokio::runtime::Runtime,
    dir: &Path,
    args: &[String],
) -> (i32, Vec<u8>) {
    compile_with(GCC, pipeline, rt, dir, args)
}

/// Compiles through the pipeline with `cc`: the exit code and stderr.
fn compile_with(
    cc: &str,
    pipeline: &Pipeline,
    rt: &tokio::runtime::Runtime,
    dir: &Path,
    args: &[String],
) -> (i32, Vec<u8>) {
    match rt.block_on(pipeline.compile(request_with(cc, dir, args))) {
        Reply::Compiled {
            exit_code, stderr, ..
        } => (exit_code, stderr),
        other => panic!("{other:?}"),
    }
}

fn args_for(flags: &[&str], source: &str) -> Vec<String> {
    let mut a: Vec<String> = flags.iter().map(|s| s.to_string()).collect();
    a.extend(["-c".into(), source.into(), "-o".into(), object_of(source)]);
    a
}

fn object_of(source: &str) -> String {
    Path::new(source)
        .with_extension("o")
        .to_string_lossy()
        .into_owned()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn lua_without_debug_info_is_byte_identical_with_dependency_files() {
    let rt = runtime();
    let (client, worker, pipeline) = {
        let _g = rt.enter();
        pair()
    };
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("lua");
    let sources = copy_lua(&dir);
    let flags = ["-O2", "-g0", "-Wall", "-MMD", "-DLUA_COMPAT_5_3"];
    for s in &sources {
        direct(&dir, &args_for(&flags, s));
    }
    let reference = root.path().join("direct");
    move_outputs(&dir, &reference, &[".o", ".d"]);
    for s in &sources {
        let (code, stderr) = compile(&pipeline, &rt, &dir, &args_for(&flags, s));
        assert_eq!(code, 0, "{s}: {}", String::from_utf8_lossy(&stderr));
    }
    let remote = root.path().join("remote");
    move_outputs(&dir, &remote, &[".o", ".d"]);
    compare_trees(&reference, &remote);
    let s = client.stats.snapshot();
    assert_eq!(s.remote_compiles, sources.len() as u64, "{s:?}");
    assert_eq!(s.local_fallbacks, 0);
    assert_eq!(s.local_compiles, 0);
    assert_eq!(worker.stats.snapshot().served_jobs, sources.len() as u64);
    // The remote results went into the cache: the same compiles are now hits.
    for s in &sources {
        compile(&pipeline, &rt, &dir, &args_for(&flags, s));
    }
    let hot = root.path().join("hot");
    move_outputs(&dir, &hot, &[".o", ".d"]);
    compare_trees(&reference, &hot);
    assert_eq!(client.stats.snapshot().cache_hits, sources.len() as u64);
}

fn section(obj: &Path, what: &[&str]) -> Vec<u8> {
    let out = Command::new(what[0])
        .args(&what[1..])
        .arg(obj)
        .output()
        .unwrap();
    assert!(out.status.success());
    out.stdout
}

#[test]
fn lua_with_debug_info_has_identical_code_and_line_tables() {
    let rt = runtime();
    let (_client, _worker, pipeline) = {
        let _g = rt.enter();
        pair()
    };
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("lua");
    let sources = copy_lua(&dir);
    let flags = ["-O2", "-g"];
    let mut identical = 0;
    for s in &sources {
        let args = args_for(&flags, s);
        let obj = dir.join(s.replace(".c", ".o"));
        direct(&dir, &args);
        let local = std::fs::read(&obj).unwrap();
        let local_text = section(&obj, &["objdump", "-d", "--no-show-raw-insn"]);
        let local_lines = section(&obj, &["readelf", "--debug-dump=decodedline"]);
        let local_producer = section(&obj, &["readelf", "--debug-dump=info"]);
        std::fs::remove_file(&obj).unwrap();
        let (code, stderr) = compile(&pipeline, &rt, &dir, &args);
        assert_eq!(code, 0, "{}", String::from_utf8_lossy(&stderr));
        let remote = std::fs::read(&obj).unwrap();
        if remote == local {
            identical += 1;
        }
        assert!(
            section(&obj, &["objdump", "-d", "--no-show-raw-insn"]) == local_text,
            "{s}: code differs"
        );
        assert!(
            section(&obj, &["readelf", "--debug-dump=decodedline"]) == local_lines,
            "{s}: line tables differ"
        );
        let producer = |info: &[u8]| {
            String::from_utf8_lossy(info)
                .lines()
                .find(|l| l.contains("DW_AT_producer"))
                .map(|l| l.split("): ").last().unwrap_or("").to_string())
                .unwrap_or_default()
        };
        let remote_info = section(&obj, &["readelf", "--debug-dump=info"]);
        assert_eq!(
            producer(&remote_info).replace(" -fdirectives-only", ""),
            producer(&local_producer),
            "{s}: the producer differs beyond -fdirectives-only"
        );
        let comp_dir = |info: &[u8]| {
            String::from_utf8_lossy(info)
                .lines()
                .find(|l| l.contains("DW_AT_comp_dir"))
                .map(str::to_string)
        };
        assert_eq!(
            comp_dir(&remote_info),
            comp_dir(&local_producer),
            "{s}: comp_dir"
        );
        std::fs::remove_file(&obj).unwrap();
    }
    // Documented in docs/architecture.md: with -g, only DW_AT_producer differs.
    assert_eq!(identical, 0, "producer strings were expected to differ");
}

#[test]
fn warnings_carry_the_same_messages_and_locations() {
    let rt = runtime();
    let (client, _worker, pipeline) = {
        let _g = rt.enter();
        pair()
    };
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("w.h"),
        "#define PICK(a, b) ((a) > (b) ? (a) : (b))\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("w.c"),
        "#include \"w.h\"\n#warning from the preprocessor\nint f(unsigned u, int i) { return PICK(u, i) + PICK(1, 2); }\nint g(void) { int unused; return 0; }\n",
    )
    .unwrap();
    let args: Vec<String> = ["-O2", "-Wall", "-Wextra", "-c", "w.c", "-o", "w.o"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let want = direct(dir.path(), &args).stderr;
    std::fs::remove_file(dir.path().join("w.o")).unwrap();
    let (code, got) = compile(&pipeline, &rt, dir.path(), &args);
    assert_eq!(code, 0);
    let s = client.stats.snapshot();
    assert_eq!((s.remote_compiles, s.diagnostics_reruns), (1, 1), "{s:?}");
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(&want),
        "diagnostics differ"
    );
}

#[test]
fn options_that_need_this_machine_never_run_remotely() {
    let rt = runtime();
    let (client, worker, pipeline) = {
        let _g = rt.enter();
        pair()
    };
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.c"), "int a(int x) { return x + 1; }\n").unwrap();
    let local_only: &[&[&str]] = &[
        &["-march=native"],
        &["-fprofile-arcs"],
        &["-ftest-coverage"],
        &["-gsplit-dwarf", "-g"],
        &["-fstack-usage"],
        &["-fsyntax-only"],
        &["-fplugin=/nonexistent.so"],
        &["-specs=/nonexistent"],
        &["-B/nonexistent"],
        &["-wrapper", "/bin/true"],
        &["-fdump-tree-all"],
        &["-save-temps"],
    ];
    for extra in local_only {
        let mut args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        args.extend(["-O2", "-c", "a.c", "-o", "a.o"].map(String::from));
        if extra.contains(&"-fsyntax-only") {
            args.truncate(args.len() - 2);
        }
        // Whatever gcc makes of it, it happens here.
        rt.block_on(pipeline.compile(request(dir.path(), &args)));
    }
    let s = client.stats.snapshot();
    assert_eq!(s.remote_compiles, 0, "{s:?}");
    assert_eq!(s.local_fallbacks, 0, "{s:?}");
    assert_eq!(worker.stats.snapshot().served_jobs, 0);
    assert!(
        s.not_distributable.values().sum::<u64>() >= 5,
        "cacheable but local-only compiles are counted by reason: {s:?}"
    );
}

#[test]
fn with_no_worker_the_fallback_policy_decides_and_counts() {
    use meshcc::remote::dispatch::{FallbackPolicy, Policy, RetryLimit};
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.c"), "int a(int x) { return x + 1; }\n").unwrap();
    let args: Vec<String> = ["-O2", "-c", "a.c", "-o", "a.o"].map(String::from).to_vec();
    for (fallback, want_code, want_note) in [
        (FallbackPolicy::Allow, 0, None),
        (
            FallbackPolicy::Warn,
            0,
            Some("meshcc: warning: compiled locally"),
        ),
        (FallbackPolicy::Fail, 1, Some("MESHCC_FALLBACK=fail")),
    ] {
        let rt = runtime();
        let (client, _worker, pipeline) = {
            let _g = rt.enter();
            pair_with(RemoteSettings {
                policy: Policy {
                    retry_limit: RetryLimit(Some(3)),
                    fallback,
                },
                ..RemoteSettings::default()
            })
        };
        // The view is empty: no worker at all.
        client.handles.view.send_replace(Snapshot::default());
        let _ = std::fs::remove_file(dir.path().join("a.o"));
        let (code, stderr) = compile(&pipeline, &rt, dir.path(), &args);
        let stderr = String::from_utf8_lossy(&stderr);
        assert_eq!(code, want_code, "{fallback:?}: {stderr}");
        match want_note {
            Some(n) => assert!(stderr.contains(n), "{fallback:?}: {stderr}"),
            None => assert!(stderr.is_empty(), "{fallback:?}: {stderr}"),
        }
        assert_eq!(dir.path().join("a.o").exists(), want_code == 0);
        let s = client.stats.snapshot();
        assert_eq!(s.local_fallbacks, 1, "{s:?}");
        assert_eq!(s.local_fallback_reasons.get("no_worker"), Some(&1));
        if want_code == 0 {
            // The local result is cached; the notice was not.
            let (code, stderr) = compile(&pipeline, &rt, dir.path(), &args);
            assert_eq!((code, stderr.is_empty()), (0, true));
        }
    }
}

/// A small C++ project compiled from its root: sources in `src/`, a header found through
/// `-Iinc`, templates, macros on code lines and inline functions from the header. Returns the
/// sources as the compile names them.
fn cxx_project(dir: &Path) -> Vec<String> {
    std::fs::create_dir_all(dir.join("src")).unwrap();
    std::fs::create_dir_all(dir.join("inc")).unwrap();
    std::fs::write(
        dir.join("inc/util.h"),
        "#pragma once\n#include <vector>\n#include <string>\n#define SQ(x) ((x) * (x))\n\
         template <typename T> T sum_sq(const std::vector<T> &v) { T s{}; for (auto x : v) s += SQ(x); return s; }\n\
         inline std::string tag(int n) { return \"n=\" + std::to_string(SCALE * n); }\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("src/shapes.cc"),
        "#include \"util.h\"\nstruct Shape { virtual ~Shape() = default; virtual double area() const = 0; };\n\
         struct Sq : Shape { double s; explicit Sq(double s) : s(s) {} double area() const override { return SQ(s); } };\n\
         double total(const std::vector<double> &v) { return sum_sq(v) + Sq(2).area(); }\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("src/main.cc"),
        "#include <cstdio>\n#include \"util.h\"\ndouble total(const std::vector<double> &v);\n\
         int main(int argc, char **) { std::vector<int> v{argc, SQ(argc)};\n  std::printf(\"%d %s %f\\n\", sum_sq(v), tag(argc).c_str(), total({1.0, 2.0})); return 0; }\n",
    )
    .unwrap();
    vec!["src/shapes.cc".into(), "src/main.cc".into()]
}

/// clang and clang++ jobs through the pipeline with `flags`: the Lua sources with clang and the
/// C++ project with clang++, each compiled directly and then through a worker-only pipeline.
/// Returns the objects that differ from the direct compile's (after checking that the code and
/// the decoded line rows never do), and the client's statistics.
fn clang_round(flags: &[&str]) -> (Vec<String>, meshcc::node::stats::StatsSnapshot, u64) {
    let rt = runtime();
    let (client, worker, pipeline) = {
        let _g = rt.enter();
        pair()
    };
    let root = tempfile::tempdir().unwrap();
    let lua = root.path().join("lua");
    let cxx = root.path().join("cxx");
    let mut jobs: Vec<(&str, PathBuf, String, Vec<String>)> = Vec::new();
    for s in copy_lua(&lua) {
        let args = args_for(
            &[flags, &["-Wall", "-MMD", "-DLUA_COMPAT_5_3"]].concat(),
            &s,
        );
        jobs.push((CLANG, lua.clone(), s, args));
    }
    let cxx_flags = [flags, &["-Wall", "-MMD", "-DSCALE=3"]].concat();
    let with = |extra: &str, source: &str| args_for(&[&cxx_flags[..], &[extra]].concat(), source);
    std::fs::create_dir_all(cxx.join("build")).unwrap();
    let inc = format!("-I{}", cxx.join("inc").display());
    for s in cxx_project(&cxx) {
        // From the project's root; with absolute paths (as CMake names sources); and from a
        // build directory beside the sources (an out-of-tree build).
        let absolute = cxx.join(&s).display().to_string();
        let above = format!("../{s}");
        jobs.push((CLANGXX, cxx.clone(), s.clone(), with("-Iinc", &s)));
        jobs.push((
            CLANGXX,
            cxx.clone(),
            absolute.clone(),
            with(&inc, &absolute),
        ));
        jobs.push((
            CLANGXX,
            cxx.join("build"),
            above.clone(),
            with("-I../inc", &above),
        ));
    }
    let mut differ = Vec::new();
    for (cc, dir, source, args) in &jobs {
        let obj = dir.join(object_of(source));
        let dep = obj.with_extension("d");
        let out = direct_with(cc, dir, args);
        assert!(
            out.stderr.is_empty(),
            "{source}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let local = std::fs::read(&obj).unwrap();
        let local_dep = std::fs::read(&dep).unwrap();
        let local_text = section(&obj, &["objdump", "-d", "--no-show-raw-insn"]);
        let local_rows = line_rows(&obj);
        std::fs::remove_file(&obj).unwrap();
        std::fs::remove_file(&dep).unwrap();
        let (code, stderr) = compile_with(cc, &pipeline, &rt, dir, args);
        assert_eq!(code, 0, "{source}: {}", String::from_utf8_lossy(&stderr));
        assert!(
            stderr.is_empty(),
            "{source}: {}",
            String::from_utf8_lossy(&stderr)
        );
        assert_eq!(
            std::fs::read(&dep).unwrap(),
            local_dep,
            "{source}: dependency file"
        );
        assert!(
            section(&obj, &["objdump", "-d", "--no-show-raw-insn"]) == local_text,
            "{source}: code differs"
        );
        assert_eq!(line_rows(&obj), local_rows, "{source}: line rows differ");
        if std::fs::read(&obj).unwrap() != local {
            differ.push(source.clone());
        }
    }
    let served = worker.stats.snapshot().served_jobs;
    (differ, client.stats.snapshot(), served)
}

/// The decoded line table's rows (address, line, column, flags), without file indices.
fn line_rows(obj: &Path) -> Vec<String> {
    let dump = section(obj, &["llvm-dwarfdump", "--debug-line"]);
    String::from_utf8_lossy(&dump)
        .lines()
        .filter(|l| l.starts_with("0x"))
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // Address Line Column File ISA Discriminator Flags…
            [&f[..3], &f[4..]].concat().join(" ")
        })
        .collect()
}

#[test]
fn clang_without_debug_info_is_byte_identical() {
    let (differ, s, served) = clang_round(&["-O2", "-g0"]);
    assert!(differ.is_empty(), "objects differ: {differ:?}");
    assert_eq!(s.remote_compiles, served, "{s:?}");
    assert!(served > 30, "every job ran remotely: {s:?}");
    assert_eq!((s.local_compiles, s.local_fallbacks), (0, 0), "{s:?}");
}

#[test]
fn clang_dwarf4_debug_info_is_byte_identical() {
    // Includes rewritten, macros expanded on the worker, the input under its own name.
    let (differ, s, served) = clang_round(&["-O2", "-gdwarf-4"]);
    assert!(differ.is_empty(), "objects differ: {differ:?}");
    assert_eq!(s.remote_compiles, served, "{s:?}");
    assert!(served > 30, "every job ran remotely: {s:?}");
    assert_eq!((s.local_compiles, s.local_fallbacks), (0, 0), "{s:?}");
}

#[test]
fn clang_dwarf5_debug_info_stays_local_with_its_reason() {
    // clang 14's default: the remote file table would lack the sources' MD5 sums
    // (docs/architecture.md, "Fidelity").
    let (differ, s, served) = clang_round(&["-O2", "-g"]);
    assert!(differ.is_empty(), "objects differ: {differ:?}");
    assert_eq!((s.remote_compiles, served), (0, 0), "{s:?}");
    assert!(s.local_compiles > 30, "{s:?}");
    assert_eq!(
        s.not_distributable.get("clang_debug_dwarf5"),
        Some(&s.local_compiles),
        "{s:?}"
    );
}
