//! Seeds: which runs a scenario test makes, and how a failing one is replayed.
//!
//! - `MESHCC_SIM_SEED=N`: run only seed N (replay a failure);
//! - `MESHCC_SIM_SEEDS=K`: run seeds 1..=K (a longer sweep by hand);
//! - neither: the test's fixed default set, seeds 1..=default (what CI runs).
//!
//! `MESHCC_LOG=debug` (or any tracing filter) prints every node's log of the run, each
//! line with the virtual time since the run began.

use std::future::Future;

/// The seeds to run, from the environment or `1..=default`.
pub fn seeds(default: u64) -> Vec<u64> {
    let var = |name: &str| -> Option<u64> {
        let v = std::env::var(name).ok()?;
        match v.trim().parse() {
            Ok(n) => Some(n),
            Err(_) => panic!("{name}={v:?}: expected a whole number"),
        }
    };
    if let Some(seed) = var("MESHCC_SIM_SEED") {
        return vec![seed];
    }
    let count = var("MESHCC_SIM_SEEDS").unwrap_or(default);
    (1..=count).collect()
}

/// Prints the seed of a scenario that panics, with the command that replays it.
struct SeedReport<'a> {
    scenario: &'a str,
    seed: u64,
}

/// What a failing scenario prints: its seed and the command that replays it.
pub fn replay_hint(scenario: &str, seed: u64) -> String {
    format!(
        "netsim scenario `{scenario}` failed with seed {seed}; replay it with:\n  MESHCC_SIM_SEED={seed} cargo test -p meshcc-netsim {scenario}"
    )
}

impl Drop for SeedReport<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", replay_hint(self.scenario, self.seed));
        }
    }
}

/// When the current run began (virtual time), for [`VirtualTime`].
static RUN_START: std::sync::Mutex<Option<tokio::time::Instant>> = std::sync::Mutex::new(None);

/// Log timestamps in the virtual time since the run began.
struct VirtualTime;

impl tracing_subscriber::fmt::time::FormatTime for VirtualTime {
    fn format_time(&self, w: &mut tracing_subscriber::fmt::format::Writer<'_>) -> std::fmt::Result {
        let start = *RUN_START.lock().unwrap_or_else(|p| p.into_inner());
        match start {
            Some(t) => write!(w, "{:>10.3}s", t.elapsed().as_secs_f64()),
            None => write!(w, "{:>11}", "-"),
        }
    }
}

/// Turns on logging once per process when `MESHCC_LOG` is set.
fn init_logging() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if let Ok(filter) = std::env::var("MESHCC_LOG") {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
                .with_timer(VirtualTime)
                .with_test_writer()
                .try_init();
        }
    });
}

/// Runs `scenario(seed)` on a fresh single-threaded tokio runtime with paused time, and
/// returns its result. A panic inside reports the seed before it propagates.
pub fn run_one<T, Fut: Future<Output = T>>(
    scenario: &str,
    seed: u64,
    f: impl FnOnce(u64) -> Fut,
) -> T {
    init_logging();
    let _report = SeedReport { scenario, seed };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap_or_else(|e| panic!("cannot build the simulation runtime: {e}"));
    rt.block_on(async {
        *RUN_START.lock().unwrap_or_else(|p| p.into_inner()) = Some(tokio::time::Instant::now());
        f(seed).await
    })
}

/// Runs `scenario` once for every seed of [`seeds`]`(default)`; returns each seed's result.
pub fn run<T, Fut: Future<Output = T>>(
    scenario: &str,
    default: u64,
    f: impl Fn(u64) -> Fut,
) -> Vec<(u64, T)> {
    seeds(default)
        .into_iter()
        .map(|seed| (seed, run_one(scenario, seed, &f)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_names_its_seed_and_the_replay_command() {
        let hint = replay_hint("partition_and_heal", 42);
        assert!(hint.contains("seed 42"), "{hint}");
        assert!(
            hint.contains("MESHCC_SIM_SEED=42 cargo test -p meshcc-netsim partition_and_heal"),
            "{hint}"
        );
        // The runner really runs the scenario, on paused time.
        let r = run_one("x", 9, |seed| async move {
            let t = tokio::time::Instant::now();
            tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
            (seed, t.elapsed().as_secs())
        });
        assert_eq!(r, (9, 3600));
        let panicked =
            std::panic::catch_unwind(|| run_one("boom", 5, |_| async { panic!("boom") }));
        assert!(panicked.is_err());
    }
}
