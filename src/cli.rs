//! The `meshcc` command line: subcommands for the daemon, statistics and explanations.
//! (Compiler calls never get here: `main` sends them to the wrapper first.)

use std::ffi::OsString;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::cache::store;
use crate::compiler::args::Verdict;
use crate::compiler::rsp;
use crate::config::Config;
use crate::node::ipc::{Reply, Request};
use crate::node::stats::{self, StatsSnapshot};
use crate::wrapper::{self, client, locate};

/// meshcc: a compiler wrapper with an exact cache, growing into a compile mesh.
///
/// Use it as `CC="meshcc gcc"`, or as a symlink named after the compiler (`gcc -> meshcc`).
#[derive(Debug, Parser)]
#[command(name = "meshcc", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the node daemon in the foreground (wrappers start it on their own when needed).
    Daemon,
    /// Stop the running daemon.
    Stop,
    /// Show the statistics (also `meshcc -s`).
    Stats {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Zero the counters.
        #[arg(long, short = 'z')]
        zero: bool,
    },
    /// Start a throwaway 3-node mesh on loopback, build a small bundled project through it
    /// twice, and show where each job ran and what came from the cache.
    Demo {
        /// The compiler to use.
        #[arg(long, default_value = "gcc")]
        cc: String,
    },
    /// Tell what meshcc would do with a compiler call, without running anything.
    Explain {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// The compiler and its arguments, after `--`.
        #[arg(last = true, required = true)]
        command: Vec<OsString>,
    },
    /// Print this node's id (made on first use).
    Id,
    /// Create a cluster: make its secret on this node and print a join token.
    Init {
        /// This node's reachable HOST:PORT, put in the token as the seed other nodes dial.
        #[arg(long)]
        advertise: Option<String>,
        /// Replace an existing cluster secret.
        #[arg(long)]
        force: bool,
    },
    /// Join a cluster with a token printed by `meshcc init` (then restart: `meshcc stop`).
    Join {
        /// The join token.
        token: String,
        /// Replace an existing cluster secret.
        #[arg(long)]
        force: bool,
    },
    /// Check that a mesh node answers: NODEID@HOST:PORT.
    Ping {
        /// The node, as NODEID@HOST:PORT.
        peer: String,
        /// How many pings.
        #[arg(long, short = 'c', default_value_t = 1)]
        count: u32,
    },
    /// Show this node and its mesh peers.
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// The subcommand names, so `main` can tell them from compiler names.
pub const SUBCOMMANDS: &[&str] = &[
    "daemon", "demo", "stop", "stats", "explain", "help", "id", "init", "join", "ping", "status",
];

fn init_logging(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// Runs a subcommand.
pub fn run(cli: Cli) -> ExitCode {
    let config = match Config::load() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("meshcc: error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Daemon => daemon(config),
        Command::Stop => stop(&config),
        Command::Stats { json, zero } => stats_cmd(&config, json, zero),
        Command::Explain { json, command } => explain(&config, json, &command),
        Command::Demo { cc } => crate::demo::run(&cc),
        Command::Id => crate::mesh::commands::id(&config),
        Command::Init { advertise, force } => {
            crate::mesh::commands::init(&config, advertise, force)
        }
        Command::Join { token, force } => crate::mesh::commands::join(&config, &token, force),
        Command::Ping { peer, count } => crate::mesh::commands::ping(&config, &peer, count),
        Command::Status { json } => crate::mesh::commands::status(&config, json),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("meshcc: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn daemon(config: Config) -> anyhow::Result<ExitCode> {
    init_logging(&config.log_filter);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(crate::node::server::run(config))?;
    Ok(ExitCode::SUCCESS)
}

fn stop(config: &Config) -> anyhow::Result<ExitCode> {
    match client::request(&config.paths, &Request::Stop, false) {
        Ok(_) => {
            // The daemon releases its lock when it has drained; wait for that.
            let lock = config.paths.daemon_lock();
            for _ in 0..600 {
                let Ok(f) = std::fs::OpenOptions::new().write(true).open(&lock) else {
                    break;
                };
                if nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock).is_ok() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            println!("meshcc daemon stopped");
            Ok(ExitCode::SUCCESS)
        }
        Err(client::ClientError::NotRunning) => {
            println!("no meshcc daemon is running");
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => Err(e.into()),
    }
}

fn stats_cmd(config: &Config, json: bool, zero: bool) -> anyhow::Result<ExitCode> {
    let file = config.paths.data_dir.join("stats.json");
    if zero {
        match client::request(&config.paths, &Request::ZeroStats, false) {
            Ok(_) => {}
            Err(client::ClientError::NotRunning) => {
                if file.exists() {
                    stats::write_file(&file, &StatsSnapshot::default())?;
                }
            }
            Err(e) => return Err(e.into()),
        }
        println!("statistics zeroed");
        return Ok(ExitCode::SUCCESS);
    }
    let snapshot = match client::request(&config.paths, &Request::Stats, false) {
        Ok(Reply::Stats(s)) => *s,
        Ok(Reply::Error(e)) => anyhow::bail!("the daemon refused: {e}"),
        Ok(other) => anyhow::bail!("unexpected reply from the daemon: {other:?}"),
        Err(client::ClientError::NotRunning) => {
            // No daemon: the saved counters, and the cache as it is on disk.
            let mut s = stats::read_file(&file).unwrap_or_default();
            s.cache_max_bytes = config.cache_max_bytes;
            match store::usage_of(&config.paths.cache_dir, config.cache_max_bytes) {
                Ok(usage) => {
                    s.cache_entries = usage.entries;
                    s.cache_bytes = usage.bytes;
                }
                Err(e) => eprintln!("meshcc: cannot read the cache: {e}"),
            }
            s
        }
        Err(e) => return Err(e.into()),
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&snapshot)?);
    } else {
        print!("{}", snapshot.render());
    }
    Ok(ExitCode::SUCCESS)
}

/// The answer of `meshcc explain`.
#[derive(Debug, serde::Serialize)]
struct Explanation {
    compile: bool,
    cacheable: bool,
    distributable: bool,
    /// The first reason something is "no", as a stable key.
    reason_code: Option<&'static str>,
    /// The same, in words.
    reason: Option<String>,
    outputs: Vec<String>,
    compiler: Option<String>,
}

fn explain(config: &Config, json: bool, command: &[OsString]) -> anyhow::Result<ExitCode> {
    let Some((name, rest)) = command.split_first() else {
        anyhow::bail!("usage: meshcc explain [--json] -- <compiler> <args…>");
    };
    let cwd = wrapper::apparent_cwd()?;
    let (search, var) = match &config.compiler_path {
        Some(p) => (Some(OsString::from(p)), "MESHCC_PATH"),
        None => (std::env::var_os("PATH"), "PATH"),
    };
    let self_exe = std::env::current_exe()?;
    let compiler = locate::find_compiler(name, search.as_deref(), var, &cwd, &self_exe).ok();
    let raw: Vec<String> = rest
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let read = |n: &str| std::fs::read_to_string(cwd.join(n));
    let args = rsp::expand_response_files(&raw, &read)?;
    let mut e = Explanation {
        compile: false,
        cacheable: false,
        distributable: false,
        reason_code: None,
        reason: None,
        outputs: Vec::new(),
        compiler: compiler.as_ref().map(|c| c.display().to_string()),
    };
    let found = compiler.clone().unwrap_or_else(|| name.into());
    match wrapper::classify_here(&args, &cwd, &found, name) {
        Verdict::NotCompile(why) => {
            e.reason_code = Some(why.reason());
            e.reason = Some(why.to_string());
        }
        Verdict::Uncacheable(why) => {
            e.compile = true;
            e.reason_code = Some(why.reason());
            e.reason = Some(why.to_string());
        }
        Verdict::Cacheable(job) => {
            e.compile = true;
            e.cacheable = true;
            e.outputs = job.outputs.iter().map(|o| o.path.clone()).collect();
            let family = wrapper::family_of(&found, name);
            let remote_args = crate::remote::remote_args(&job);
            let cwd_str = cwd.to_string_lossy();
            match (
                &job.distributable,
                crate::remote::distribution(&job, family, &cwd_str, &remote_args),
            ) {
                (_, Ok(_)) => e.distributable = true,
                (Err(why), _) => {
                    e.reason_code = Some(why.reason());
                    e.reason = Some(why.to_string());
                }
                (Ok(()), Err(why)) => {
                    e.reason_code = Some(why);
                    e.reason = Some(format!(
                        "kept local: {} (see `not_distributable` in docs/operations.md)",
                        why.replace('_', " ")
                    ));
                }
            }
        }
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&e)?);
    } else {
        let yn = |b: bool| if b { "yes" } else { "no" };
        println!(
            "compiler:       {}",
            e.compiler.as_deref().unwrap_or("(not found)")
        );
        println!("compile:        {}", yn(e.compile));
        println!("cacheable:      {}", yn(e.cacheable));
        println!("distributable:  {}", yn(e.distributable));
        if let Some(r) = &e.reason {
            println!("reason:         {r}");
        }
        if !e.outputs.is_empty() {
            println!("outputs:        {}", e.outputs.join(" "));
        }
    }
    Ok(ExitCode::SUCCESS)
}
