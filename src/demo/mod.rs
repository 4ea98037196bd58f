//! `meshcc demo`: starts a throwaway mesh of three nodes on loopback, builds a small bundled C
//! project through the first one twice, and shows where each job ran and what the second build
//! took from the cache.
//!
//! Everything happens under a fresh temporary directory (one `MESHCC_HOME` per node, one
//! cluster secret, each node the others' seed, `MESHCC_LISTEN=127.0.0.1:<free port>`,
//! `MESHCC_DISCOVERY=off`): nothing is sent beyond loopback, and the daemons and the directory
//! are removed afterwards.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

use anyhow::{bail, Context};

use crate::config::Config;
use crate::mesh::cluster::{self, ClusterSecret, PeerAddr};
use crate::node::ipc::{Reply, Request};
use crate::node::stats::StatsSnapshot;
use crate::wrapper::client;

/// The example project: a small expression calculator.
const PROJECT: &[(&str, &str)] = &[
    ("calc.h", include_str!("project/calc.h")),
    ("node.h", include_str!("project/node.h")),
    ("lexer.c", include_str!("project/lexer.c")),
    ("parser.c", include_str!("project/parser.c")),
    ("node.c", include_str!("project/node.c")),
    ("eval.c", include_str!("project/eval.c")),
    ("format.c", include_str!("project/format.c")),
    ("main.c", include_str!("project/main.c")),
];

/// The throwaway mesh: its nodes' configurations; stops every daemon and removes the demo
/// directory however the demo ends.
struct Scratch {
    dir: PathBuf,
    nodes: Vec<Config>,
}

impl Drop for Scratch {
    fn drop(&mut self) {
        for config in &self.nodes {
            let _ = client::request(&config.paths, &Request::Stop, false);
        }
        // Wait for each daemon to let go of its files before removing them.
        for config in &self.nodes {
            let lock = config.paths.daemon_lock();
            for _ in 0..100 {
                let Ok(f) = std::fs::OpenOptions::new().write(true).open(&lock) else {
                    break;
                };
                if nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock).is_ok() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn stats(config: &Config) -> anyhow::Result<StatsSnapshot> {
    match client::request(&config.paths, &Request::Stats, false)? {
        Reply::Stats(s) => Ok(*s),
        other => bail!("unexpected reply from the daemon: {other:?}"),
    }
}

/// How many nodes the demo mesh has.
const NODES: usize = 3;

/// A free UDP port on loopback (bound and released; the daemon binds it right after).
fn free_port() -> anyhow::Result<u16> {
    let s = std::net::UdpSocket::bind("127.0.0.1:0")?;
    Ok(s.local_addr()?.port())
}

/// Makes the nodes' homes: one cluster secret, each node the others' seed, loopback ports; then
/// starts their daemons (mDNS off: nothing leaves the machine).
fn start_mesh(exe: &Path, dir: &Path, scratch: &mut Scratch) -> anyhow::Result<Vec<String>> {
    let secret = ClusterSecret::generate()?;
    let uid = nix::unistd::getuid().as_raw();
    let mut nodes = Vec::new();
    for i in 1..=NODES {
        let home = dir.join(format!("node{i}"));
        let home_str = home.to_string_lossy().into_owned();
        let config = Config::load_from(&|k| (k == "MESHCC_HOME").then(|| home_str.clone()), uid)?;
        let id = crate::mesh::load_node_key(&config)?.id();
        secret.store(&config.paths.data_dir.join(cluster::SECRET_FILE), false)?;
        nodes.push((home, config, id, free_port()?));
    }
    for (_, config, id, _) in &nodes {
        for (_, _, other, port) in &nodes {
            if other != id {
                let seed: PeerAddr = format!("{other}@127.0.0.1:{port}").parse()?;
                cluster::add_seed(&config.paths.data_dir.join(cluster::SEEDS_FILE), &seed)?;
            }
        }
    }
    let mut ids = Vec::new();
    for (home, config, id, port) in nodes {
        let log = std::fs::File::create(config.paths.daemon_log())?;
        Command::new(exe)
            .arg("daemon")
            .env_remove("MESHCC_CONFIG")
            .env("MESHCC_HOME", &home)
            .env("MESHCC_LISTEN", format!("127.0.0.1:{port}"))
            .env("MESHCC_DISCOVERY", "off")
            .env("MESHCC_SLOTS", "2")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .context("cannot start a daemon")?;
        scratch.nodes.push(config);
        ids.push(id.short());
    }
    Ok(ids)
}

/// Waits until the first node sees every other node as a worker (or gives up after 20 s and builds anyway:
/// missing peers only mean more local compiles, which the statistics show).
fn wait_for_mesh(config: &Config) {
    let deadline = Instant::now() + std::time::Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(Reply::MeshStatus(Some(status))) =
            client::request(&config.paths, &Request::MeshStatus, false)
        {
            // Alive, with slots: its toolchains are known and gossiped.
            let up = status
                .members
                .iter()
                .filter(|m| m.state == "alive" && m.slots_total.unwrap_or(0) > 0)
                .count();
            if up + 1 >= NODES {
                return;
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Compiles every source through meshcc in parallel, then links; returns the seconds taken.
fn build(exe: &Path, cc: &str, project: &Path, home: &Path) -> anyhow::Result<f64> {
    let started = Instant::now();
    let mut children = Vec::new();
    let mut objects = Vec::new();
    for (name, _) in PROJECT.iter().filter(|(n, _)| n.ends_with(".c")) {
        let object = name.replace(".c", ".o");
        let _ = std::fs::remove_file(project.join(&object));
        let child = Command::new(exe)
            .args([cc, "-O2", "-g0", "-Wall", "-c", name, "-o", &object])
            .current_dir(project)
            .env("MESHCC_HOME", home)
            .spawn()
            .with_context(|| format!("cannot run {}", exe.display()))?;
        children.push((name, child));
        objects.push(object);
    }
    for (name, mut child) in children {
        if !child.wait()?.success() {
            bail!("compiling {name} failed");
        }
    }
    let link = Command::new(exe)
        .arg(cc)
        .args(&objects)
        .args(["-o", "calc"])
        .current_dir(project)
        .env("MESHCC_HOME", home)
        .status()?;
    if !link.success() {
        bail!("linking failed");
    }
    Ok(started.elapsed().as_secs_f64())
}

/// Runs the demo with the compiler `cc` (e.g. `gcc` or `clang`).
pub fn run(cc: &str) -> anyhow::Result<ExitCode> {
    let dir = std::env::temp_dir().join(format!("meshcc-demo-{}", std::process::id()));
    let project = dir.join("project");
    std::fs::create_dir_all(&project)
        .with_context(|| format!("cannot create {}", project.display()))?;
    let mut scratch = Scratch {
        dir: dir.clone(),
        nodes: Vec::new(),
    };
    for (name, text) in PROJECT {
        std::fs::write(project.join(name), text)?;
    }
    let exe = std::env::current_exe()?;
    let sources = PROJECT.iter().filter(|(n, _)| n.ends_with(".c")).count();
    println!(
        "meshcc demo: a throwaway mesh of {NODES} nodes on loopback (mDNS off, nothing leaves this machine)"
    );
    let ids = start_mesh(&exe, &dir, &mut scratch)?;
    for (i, id) in ids.iter().enumerate() {
        println!("  node{} = {id}", i + 1);
    }
    let first = scratch.nodes[0].clone();
    wait_for_mesh(&first);
    let home = dir.join("node1");
    println!("\nbuilding a C project of {sources} sources on node1 through `meshcc {cc}`\n");

    let cold = build(&exe, cc, &project, &home)?;
    let after_cold = stats(&first)?;
    println!(
        "  build 1 (cold cache): {cold:6.3} s   {} compiled, {} from the cache",
        after_cold.cache_misses, after_cold.cache_hits
    );
    println!("    on node1 (here):  {}", after_cold.local_compiles);
    for (i, id) in ids.iter().enumerate().skip(1) {
        println!(
            "    on node{}:         {}",
            i + 1,
            after_cold.remote_by_peer.get(id).copied().unwrap_or(0)
        );
    }
    if after_cold.local_fallbacks > 0 {
        println!(
            "    local fallbacks:  {} {:?}",
            after_cold.local_fallbacks, after_cold.local_fallback_reasons
        );
    }
    let hot = build(&exe, cc, &project, &home)?;
    let after_hot = stats(&first)?;
    println!(
        "  build 2 (hot cache):  {hot:6.3} s   {} compiled, {} from the cache",
        after_hot.cache_misses - after_cold.cache_misses,
        after_hot.cache_hits - after_cold.cache_hits
    );
    let out = Command::new(project.join("calc")).output()?;
    println!(
        "\n  ./calc → {}",
        String::from_utf8_lossy(&out.stdout).trim_end()
    );
    println!("\nnode1's statistics:\n{}", after_hot.render());
    drop(scratch);
    Ok(if out.status.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
