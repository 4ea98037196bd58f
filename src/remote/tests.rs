//! Worker, allocation and dispatch over real QUIC on loopback, with real gcc, and views built by
//! hand (membership fills them in a daemon).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use super::client::{Client, Outcome, RemoteJob};
use super::dispatch::{FallbackPolicy, FallbackReason, Policy, RetryLimit};
use super::worker::{CompilerExecutor, ExecFuture, ExecJob, Executor};
use super::RemoteSettings;
use crate::compiler::args::{CompileMode, CompilerFamily, Language};
use crate::compiler::toolchain::{ToolchainId, Toolchains};
use crate::mesh::cluster::ClusterSecret;
use crate::mesh::election::MemberState;
use crate::mesh::identity::{NodeId, NodeKey};
use crate::mesh::proto::InputForm;
use crate::mesh::transport::{Mesh, TransportConfig};
use crate::mesh::view::{Coordinator, Member, Snapshot, ViewHandles};
use crate::node::stats::Stats;

const GCC: &str = "/usr/bin/gcc";

/// A job that starts (and says so) but never finishes: a worker busy until it dies.
struct Stalled {
    started: Arc<Notify>,
}

impl Executor for Stalled {
    fn run(&self, _job: ExecJob) -> ExecFuture {
        let started = self.started.clone();
        Box::pin(async move {
            started.notify_one();
            std::future::pending().await
        })
    }
}

struct Node {
    mesh: Arc<Mesh>,
    handles: ViewHandles,
    client: Arc<Client>,
    stats: Arc<Stats>,
    _dir: tempfile::TempDir,
}

fn toolchain() -> ToolchainId {
    Toolchains::new()
        .identify(Path::new(GCC), CompilerFamily::Gcc)
        .unwrap()
}

fn node(
    secret: &ClusterSecret,
    slots: u32,
    policy: Policy,
    executor: Arc<dyn Executor>,
    with_gcc: bool,
) -> Node {
    let config = TransportConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        idle_timeout: Duration::from_millis(1500),
        keep_alive: Duration::from_millis(300),
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
    let settings = RemoteSettings {
        slots: Some(slots),
        policy,
        ..RemoteSettings::default()
    };
    let client = super::start(
        mesh.clone(),
        &handles,
        &settings,
        dir.path().join("jobs"),
        stats.clone(),
        executor,
    );
    if with_gcc {
        client
            .worker()
            .add_toolchain(toolchain(), PathBuf::from(GCC));
    }
    Node {
        mesh,
        handles,
        client,
        stats,
        _dir: dir,
    }
}

fn real() -> Arc<dyn Executor> {
    Arc::new(CompilerExecutor)
}

/// A [`Stalled`] executor and the signal it gives when a job starts.
fn stalled() -> (Arc<Notify>, Arc<dyn Executor>) {
    let started = Arc::new(Notify::new());
    let exec = Arc::new(Stalled {
        started: started.clone(),
    });
    (started, exec)
}

/// Gives every node a view of all the others as alive, with their current adverts.
fn connect_views(nodes: &[&Node], coordinator: Option<&Node>) {
    for n in nodes {
        let members = nodes
            .iter()
            .filter(|o| o.mesh.id() != n.mesh.id())
            .map(|o| Member {
                id: o.mesh.id(),
                addrs: vec![o.mesh.local_addr().unwrap()],
                state: MemberState::Alive,
                advert: Some(o.handles.advert.borrow().clone()),
                fence: 0,
            })
            .collect();
        n.handles.view.send_replace(Snapshot {
            members,
            coordinator: coordinator.map(|c| Coordinator {
                id: c.mesh.id(),
                epoch: 1,
            }),
        });
    }
}

const SOURCE: &str = "#include <stdio.h>\n#define TWICE(x) ((x) * 2)\nint twice(int v) { return TWICE(v); }\nint main(void) { printf(\"%d\\n\", twice(21)); return 0; }\n";

/// Preprocesses `SOURCE` and compiles it locally: the job and the reference object.
fn job_and_reference(dir: &Path, args: &[&str]) -> (RemoteJob, Vec<u8>) {
    std::fs::write(dir.join("t.c"), SOURCE).unwrap();
    let run = |extra: &[&str]| {
        let out = std::process::Command::new(GCC)
            .args(args)
            .args(extra)
            .current_dir(dir)
            .env("PWD", dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    let pre = run(&["-E", "t.c"]);
    run(&["-c", "t.c", "-o", "ref.o"]);
    let job = RemoteJob {
        job: 0x1234,
        toolchain: toolchain(),
        language: Language::C,
        mode: CompileMode::Object,
        form: InputForm::Preprocessed,
        args: args.iter().map(|s| s.to_string()).collect(),
        env: vec![("LC_ALL".into(), "C".into())],
        input: zstd::bulk::compress(&pre, 1).unwrap(),
    };
    (job, std::fs::read(dir.join("ref.o")).unwrap())
}

fn remote(o: Outcome) -> (NodeId, u32, Vec<u8>) {
    match o {
        Outcome::Remote {
            worker,
            attempt,
            result,
            output,
        } => {
            assert_eq!(
                result.exit_code,
                0,
                "{}",
                String::from_utf8_lossy(&result.stderr)
            );
            (worker, attempt, output)
        }
        Outcome::LocalSlot(_) => panic!("went to a local slot"),
        Outcome::Fallback { reason, .. } => panic!("fell back: {reason:?}"),
        Outcome::Failed(reason) => panic!("failed: {reason:?}"),
    }
}

async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..600 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("never happened: {what}");
}

#[tokio::test]
async fn a_job_compiles_on_a_worker_byte_identical_to_a_local_compile() {
    let k = ClusterSecret::generate().unwrap();
    let client = node(&k, 0, Policy::default(), real(), true);
    let worker = node(&k, 2, Policy::default(), real(), true);
    connect_views(&[&client, &worker], None);
    let src = tempfile::tempdir().unwrap();
    let (job, reference) = job_and_reference(src.path(), &["-O2", "-g0", "-Wall"]);
    let (w, attempt, object) = remote(client.client.dispatch(&job).await);
    assert_eq!(w, worker.mesh.id());
    assert_eq!(attempt, 1);
    assert!(
        object == reference,
        "remote object differs from the local one"
    );
    assert_eq!(worker.stats.snapshot().served_jobs, 1);
    // The worker's job directory is gone.
    let jobs = worker._dir.path().join("jobs");
    assert_eq!(std::fs::read_dir(&jobs).map(|d| d.count()).unwrap_or(0), 0);
}

#[tokio::test]
async fn an_idle_local_slot_comes_first() {
    let k = ClusterSecret::generate().unwrap();
    let client = node(&k, 1, Policy::default(), real(), true);
    let worker = node(&k, 2, Policy::default(), real(), true);
    connect_views(&[&client, &worker], None);
    let src = tempfile::tempdir().unwrap();
    let (job, _) = job_and_reference(src.path(), &["-O2"]);
    let slot = match client.client.dispatch(&job).await {
        Outcome::LocalSlot(slot) => slot,
        _ => panic!("expected the idle local slot"),
    };
    assert_eq!(client.handles.advert.borrow().slots_busy, 1);
    // With the slot taken, the next job goes remote.
    let (w, _, _) = remote(client.client.dispatch(&job).await);
    assert_eq!(w, worker.mesh.id());
    drop(slot);
    assert_eq!(client.handles.advert.borrow().slots_busy, 0);
}

#[tokio::test]
async fn the_worker_refuses_what_is_not_on_the_allow_list_and_nothing_runs() {
    let k = ClusterSecret::generate().unwrap();
    let client = node(&k, 0, Policy::default(), real(), true);
    let worker = node(&k, 2, Policy::default(), real(), true);
    connect_views(&[&client, &worker], None);
    let src = tempfile::tempdir().unwrap();
    let (mut job, _) = job_and_reference(src.path(), &["-O2"]);
    for bad in [
        "-fplugin=/tmp/x.so",
        "-specs=/tmp/s",
        "-B/tmp",
        "-fdump-tree-all",
        "-fprofile-generate",
        "/etc/passwd",
    ] {
        job.args = vec!["-O2".into(), bad.into()];
        match client.client.dispatch(&job).await {
            Outcome::Fallback { reason, .. } => {
                assert_eq!(reason, FallbackReason::Refused, "{bad}")
            }
            _ => panic!("{bad} was not refused"),
        }
    }
    // Rewritten includes are written where the client names them, or under the file name of
    // a path that leads elsewhere: never outside the job, never without a name.
    job.args = vec!["-O2".into()];
    for bad in ["", "..", "/", "a/..", "/tmp/a=b.c", "a\0.c"] {
        job.form = InputForm::RewrittenIncludes { path: bad.into() };
        match client.client.dispatch(&job).await {
            Outcome::Fallback { reason, .. } => {
                assert_eq!(reason, FallbackReason::Refused, "{bad}")
            }
            _ => panic!("{bad} was not refused"),
        }
    }
    assert_eq!(worker.stats.snapshot().served_jobs, 0);
}

#[tokio::test]
async fn a_worker_without_the_toolchain_is_skipped_and_busy_means_the_next_candidate() {
    let k = ClusterSecret::generate().unwrap();
    let client = node(&k, 0, Policy::default(), real(), true);
    let lacking = node(&k, 4, Policy::default(), real(), false);
    let busy = node(&k, 1, Policy::default(), real(), true);
    let free = node(&k, 1, Policy::default(), real(), true);
    connect_views(&[&client, &lacking, &busy, &free], None);
    // Stale gossip: the client believes every worker has gcc and is idle.
    client.handles.view.send_modify(|v| {
        for m in &mut v.members {
            if let Some(a) = &mut m.advert {
                a.toolchains = vec![toolchain()];
                a.slots_total = a.slots_total.max(1);
                a.slots_busy = 0;
            }
        }
    });
    let _held = busy.client.worker().try_slot().unwrap();
    let src = tempfile::tempdir().unwrap();
    let (job, reference) = job_and_reference(src.path(), &["-O1"]);
    for _ in 0..4 {
        let (w, _, object) = remote(client.client.dispatch(&job).await);
        assert_eq!(
            w,
            free.mesh.id(),
            "only the free worker with gcc can run it"
        );
        assert!(object == reference);
    }
    assert_eq!(lacking.stats.snapshot().served_jobs, 0);
    assert_eq!(busy.stats.snapshot().served_jobs, 0);
    assert_eq!(client.stats.snapshot().local_fallbacks, 0);
}

#[tokio::test]
async fn a_worker_lost_mid_job_means_attempt_two_elsewhere() {
    let k = ClusterSecret::generate().unwrap();
    let (started, exec) = stalled();
    let client = node(&k, 0, Policy::default(), real(), true);
    let doomed = node(&k, 2, Policy::default(), exec, true);
    connect_views(&[&client, &doomed], None);
    let src = tempfile::tempdir().unwrap();
    let (job, reference) = job_and_reference(src.path(), &["-O2", "-g0"]);
    let c = client.client.clone();
    let running = tokio::spawn(async move { c.dispatch(&job).await });
    started.notified().await;
    // A second worker appears in the view; the first dies with the job.
    let rescue = node(&k, 2, Policy::default(), real(), true);
    connect_views(&[&client, &doomed, &rescue], None);
    doomed.mesh.close().await;
    let (w, attempt, object) = remote(running.await.unwrap());
    assert_eq!(w, rescue.mesh.id());
    assert_eq!(attempt, 2);
    assert!(object == reference);
    assert_eq!(client.stats.snapshot().retries, 1);
    assert_eq!(client.stats.snapshot().local_fallbacks, 0);
}

#[tokio::test]
async fn workers_killed_before_the_build_cost_no_local_fallback() {
    let k = ClusterSecret::generate().unwrap();
    let client = node(&k, 0, Policy::default(), real(), true);
    let dead1 = node(&k, 4, Policy::default(), real(), true);
    let dead2 = node(&k, 4, Policy::default(), real(), true);
    let alive = node(&k, 1, Policy::default(), real(), true);
    connect_views(&[&client, &dead1, &dead2, &alive], None);
    // One connection to a dead worker is pooled (its death not yet noticed), one is not.
    client
        .mesh
        .connect(dead1.mesh.id(), dead1.mesh.local_addr().unwrap())
        .await
        .unwrap();
    dead1.mesh.close().await;
    dead2.mesh.close().await;
    let src = tempfile::tempdir().unwrap();
    let (job, reference) = job_and_reference(src.path(), &["-O2"]);
    let jobs: Vec<_> = (0..4)
        .map(|_| {
            let c = client.client.clone();
            let job = job.clone();
            tokio::spawn(async move { c.dispatch(&job).await })
        })
        .collect();
    for j in jobs {
        let (w, _, object) = remote(j.await.unwrap());
        assert_eq!(w, alive.mesh.id());
        assert!(object == reference);
    }
    assert_eq!(client.stats.snapshot().local_fallbacks, 0);
}

#[tokio::test]
async fn a_dead_clients_slot_is_freed() {
    let k = ClusterSecret::generate().unwrap();
    let (started, exec) = stalled();
    let client = node(&k, 0, Policy::default(), real(), true);
    let worker = node(&k, 1, Policy::default(), exec, true);
    connect_views(&[&client, &worker], None);
    let src = tempfile::tempdir().unwrap();
    let (job, _) = job_and_reference(src.path(), &["-O2"]);
    let c = client.client.clone();
    let running = tokio::spawn(async move { c.dispatch(&job).await });
    started.notified().await;
    assert_eq!(worker.handles.advert.borrow().slots_busy, 1);
    running.abort();
    client.mesh.close().await;
    eventually("the slot is free again", || {
        worker.handles.advert.borrow().slots_busy == 0
    })
    .await;
    assert!(worker.client.worker().try_slot().is_some());
}

#[tokio::test]
async fn a_job_given_up_by_its_client_frees_its_slot() {
    let k = ClusterSecret::generate().unwrap();
    let (started, exec) = stalled();
    let client = node(&k, 0, Policy::default(), real(), true);
    let worker = node(&k, 1, Policy::default(), exec, true);
    connect_views(&[&client, &worker], None);
    let src = tempfile::tempdir().unwrap();
    let (job, _) = job_and_reference(src.path(), &["-O2"]);
    let c = client.client.clone();
    let running = tokio::spawn(async move { c.dispatch(&job).await });
    started.notified().await;
    // The wrapper went away: the job's stream is dropped, the connection stays.
    running.abort();
    eventually("the slot is free again", || {
        worker.handles.advert.borrow().slots_busy == 0
    })
    .await;
}

#[tokio::test]
async fn the_coordinator_ranks_workers_and_counts_grants() {
    let k = ClusterSecret::generate().unwrap();
    let client = node(&k, 0, Policy::default(), real(), true);
    let coord = node(&k, 0, Policy::default(), real(), true);
    let w1 = node(&k, 2, Policy::default(), real(), true);
    let w2 = node(&k, 2, Policy::default(), real(), true);
    connect_views(&[&client, &coord, &w1, &w2], Some(&coord));
    let src = tempfile::tempdir().unwrap();
    let (job, reference) = job_and_reference(src.path(), &["-O2"]);
    let mut on = std::collections::HashSet::new();
    for _ in 0..6 {
        let (w, _, object) = remote(client.client.dispatch(&job).await);
        assert!(object == reference);
        on.insert(w);
    }
    assert!(on.iter().all(|w| *w == w1.mesh.id() || *w == w2.mesh.id()));
    // Grants are released when jobs end: all slots free again on the coordinator's books.
    // (With the coordinator gone, the client allocates from its own view.)
    coord.mesh.close().await;
    let (w, _, _) = remote(client.client.dispatch(&job).await);
    assert!(w == w1.mesh.id() || w == w2.mesh.id());
}

#[tokio::test]
async fn a_grant_from_a_stale_coordinator_is_refused_and_the_view_used_instead() {
    let k = ClusterSecret::generate().unwrap();
    let client = node(&k, 0, Policy::default(), real(), true);
    let coord = node(&k, 0, Policy::default(), real(), true);
    let worker = node(&k, 2, Policy::default(), real(), true);
    connect_views(&[&client, &coord, &worker], Some(&coord));
    // The worker already follows a newer coordinator (epoch 5 > 1).
    worker.handles.view.send_modify(|v| {
        v.coordinator = Some(Coordinator {
            id: worker.mesh.id(),
            epoch: 5,
        })
    });
    let src = tempfile::tempdir().unwrap();
    let (job, reference) = job_and_reference(src.path(), &["-O2"]);
    let (w, attempt, object) = remote(client.client.dispatch(&job).await);
    assert_eq!((w, attempt), (worker.mesh.id(), 1));
    assert!(object == reference);
    assert_eq!(client.stats.snapshot().local_fallbacks, 0);
}

#[tokio::test]
async fn no_worker_follows_the_fallback_policy() {
    let k = ClusterSecret::generate().unwrap();
    let src = tempfile::tempdir().unwrap();
    let (job, _) = job_and_reference(src.path(), &["-O2"]);
    for (fallback, want_fail) in [
        (FallbackPolicy::Allow, false),
        (FallbackPolicy::Warn, false),
        (FallbackPolicy::Fail, true),
    ] {
        let policy = Policy {
            retry_limit: RetryLimit(Some(1)),
            fallback,
        };
        let lonely = node(&k, 0, policy, real(), true);
        match lonely.client.dispatch(&job).await {
            Outcome::Fallback { reason, warn } => {
                assert!(!want_fail);
                assert_eq!(reason, FallbackReason::NoWorker);
                assert_eq!(warn, fallback == FallbackPolicy::Warn);
            }
            Outcome::Failed(reason) => {
                assert!(want_fail);
                assert_eq!(reason, FallbackReason::NoWorker);
            }
            _ => panic!("nothing to run on"),
        }
    }
}

/// What docs/architecture.md reports for clang with DWARF 5 (why such jobs stay local): the
/// `-frewrite-includes` text compiled on a worker under the input's own name gives the same
/// code and line rows, but a file table without the sources' MD5 sums, so the object differs.
/// With `-gdwarf-4` the same route is byte-identical.
#[tokio::test]
async fn clang_dwarf5_from_rewritten_includes_loses_only_the_file_checksums() {
    const CLANG: &str = "/usr/bin/clang";
    let clang = Toolchains::new()
        .identify(Path::new(CLANG), CompilerFamily::Clang)
        .unwrap();
    let k = ClusterSecret::generate().unwrap();
    let client = node(&k, 0, Policy::default(), real(), false);
    let worker = node(&k, 2, Policy::default(), real(), false);
    worker
        .client
        .worker()
        .add_toolchain(clang, PathBuf::from(CLANG));
    connect_views(&[&client, &worker], None);
    let src = tempfile::tempdir().unwrap();
    let dir = src.path();
    std::fs::create_dir(dir.join("src")).unwrap();
    std::fs::write(dir.join("src/t.c"), SOURCE).unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(CLANG)
            .args(args)
            .current_dir(dir)
            .env("PWD", dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    let tool = |tool: &str, args: &[&str], obj: &Path| {
        let out = std::process::Command::new(tool)
            .args(args)
            .arg(obj)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let rows = |dump: &str| -> Vec<String> {
        dump.lines()
            .filter(|l| l.starts_with("0x"))
            .map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                [&f[..3], &f[4..]].concat().join(" ")
            })
            .collect()
    };
    let text = run(&["-O2", "-E", "-frewrite-includes", "src/t.c"]);
    for (version, identical) in [("-g", false), ("-gdwarf-4", true)] {
        run(&["-O2", version, "-c", "src/t.c", "-o", "ref.o"]);
        let reference = std::fs::read(dir.join("ref.o")).unwrap();
        let job = RemoteJob {
            job: 0x5,
            toolchain: clang,
            language: Language::C,
            mode: CompileMode::Object,
            form: InputForm::RewrittenIncludes {
                path: "src/t.c".into(),
            },
            args: vec![
                "-O2".into(),
                version.into(),
                format!("-fdebug-compilation-dir={}", dir.display()),
            ],
            env: vec![],
            input: zstd::bulk::compress(&text, 1).unwrap(),
        };
        let (_, _, object) = remote(client.client.dispatch(&job).await);
        std::fs::write(dir.join("remote.o"), &object).unwrap();
        let (local_o, remote_o) = (dir.join("ref.o"), dir.join("remote.o"));
        assert_eq!(object == reference, identical, "{version}");
        let disasm = ["-d", "--no-show-raw-insn"];
        assert_eq!(
            tool("objdump", &disasm, &local_o)
                .lines()
                .skip(2)
                .collect::<Vec<_>>(),
            tool("objdump", &disasm, &remote_o)
                .lines()
                .skip(2)
                .collect::<Vec<_>>(),
            "{version}: code"
        );
        let (local_lines, remote_lines) = (
            tool("llvm-dwarfdump", &["--debug-line"], &local_o),
            tool("llvm-dwarfdump", &["--debug-line"], &remote_o),
        );
        assert_eq!(
            rows(&local_lines),
            rows(&remote_lines),
            "{version}: line rows"
        );
        if !identical {
            assert!(local_lines.contains("md5_checksum"), "{local_lines}");
            assert!(!remote_lines.contains("md5_checksum"), "{remote_lines}");
        }
    }
}
