//! `meshcc demo`: builds a small bundled C project through meshcc twice, on a throwaway node
//! with nothing configured, and shows what the second build took from the cache.
//!
//! Everything happens under a fresh temporary directory (its own `MESHCC_HOME`), which is
//! removed afterwards; the node opens no network port.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

use anyhow::{bail, Context};

use crate::config::Config;
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

/// Removes the demo directory (and stops its daemon) however the demo ends.
struct Scratch {
    dir: PathBuf,
    config: Config,
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = client::request(&self.config.paths, &Request::Stop, false);
        // Wait for the daemon to let go of its files before removing them.
        let lock = self.config.paths.daemon_lock();
        for _ in 0..100 {
            let Ok(f) = std::fs::OpenOptions::new().write(true).open(&lock) else {
                break;
            };
            if nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock).is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
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
    let home = dir.join("home");
    let project = dir.join("project");
    std::fs::create_dir_all(&project)
        .with_context(|| format!("cannot create {}", project.display()))?;
    let home_str = home.to_string_lossy().into_owned();
    let config = Config::load_from(
        &|k| match k {
            "MESHCC_HOME" => Some(home_str.clone()),
            _ => None,
        },
        nix::unistd::getuid().as_raw(),
    )?;
    let scratch = Scratch {
        dir: dir.clone(),
        config,
    };
    for (name, text) in PROJECT {
        std::fs::write(project.join(name), text)?;
    }
    let exe = std::env::current_exe()?;
    let sources = PROJECT.iter().filter(|(n, _)| n.ends_with(".c")).count();
    println!("meshcc demo: building a C project of {sources} sources through `meshcc {cc}`");
    println!(
        "  (throwaway node in {}, no configuration, no network)\n",
        dir.display()
    );

    let cold = build(&exe, cc, &project, &home)?;
    let after_cold = stats(&scratch.config)?;
    println!(
        "  build 1 (cold cache): {cold:6.3} s   {} compiled, {} from the cache",
        after_cold.cache_misses, after_cold.cache_hits
    );
    let hot = build(&exe, cc, &project, &home)?;
    let after_hot = stats(&scratch.config)?;
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
    println!("\n{}", after_hot.render());
    drop(scratch);
    Ok(if out.status.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
