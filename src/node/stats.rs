//! Statistics, ccache-style: hits, misses, calls that were not compiles or not cacheable (by
//! reason), local compiles and errors (by reason). Kept in the daemon, saved to a file so they
//! survive restarts, and readable from the file when no daemon runs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// A copy of all counters; also the stats file format and the `--json` output.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct StatsSnapshot {
    /// Compiles answered from the cache.
    pub cache_hits: u64,
    /// Cacheable compiles that were not in the cache.
    pub cache_misses: u64,
    /// Calls that were compiles but could not be cached (all reasons).
    pub uncacheable: u64,
    /// `uncacheable` by reason.
    pub uncacheable_reasons: BTreeMap<String, u64>,
    /// Calls that were not compiles (links, `-E`, `--version`, …), by reason.
    pub not_compile: BTreeMap<String, u64>,
    /// Compiles the daemon ran on this machine.
    pub local_compiles: u64,
    /// Compiles that failed (non-zero exit); never cached.
    pub compile_failed: u64,
    /// Compiles that ran on another node for this one.
    pub remote_compiles: u64,
    /// `remote_compiles` by worker (its short NodeId).
    pub remote_by_peer: BTreeMap<String, u64>,
    /// Jobs run again on another worker after one was lost (attempt > 1).
    pub retries: u64,
    /// Compiles that ran here for lack of a worker (the last resort), all reasons.
    pub local_fallbacks: u64,
    /// `local_fallbacks` by reason.
    pub local_fallback_reasons: BTreeMap<String, u64>,
    /// Cacheable compiles that were not distributable, by reason (they compile here by design).
    pub not_distributable: BTreeMap<String, u64>,
    /// Compiles this node's worker ran for peers.
    pub served_jobs: u64,
    /// Remote compiles that printed diagnostics and were compiled again here, so that the
    /// diagnostics are exactly the local compiler's (caret lines need the sources).
    pub diagnostics_reruns: u64,
    /// Errors by reason (cache read/write, corrupt entries, toolchain, daemon unreachable, …).
    pub errors: BTreeMap<String, u64>,
    /// Entries in the local cache (filled when reported).
    pub cache_entries: u64,
    /// Bytes in the local cache (filled when reported).
    pub cache_bytes: u64,
    /// The cache's size bound (filled when reported).
    pub cache_max_bytes: u64,
    /// Seconds since the Unix epoch when the counters were last zeroed.
    pub zeroed_at: u64,
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// One kind of event to count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event<'a> {
    /// A cache hit.
    Hit,
    /// A cache miss.
    Miss,
    /// A compile run on this machine.
    LocalCompile,
    /// A compile that exited non-zero.
    CompileFailed,
    /// An uncacheable compile, by reason.
    Uncacheable(&'a str),
    /// A call that was not a compile, by reason.
    NotCompile(&'a str),
    /// An error, by reason.
    Error(&'a str),
    /// A compile done by another node (its short id).
    RemoteCompile(&'a str),
    /// A job sent again after its worker was lost.
    Retry,
    /// A local compile for lack of a worker, by reason.
    LocalFallback(&'a str),
    /// A cacheable compile kept local by design, by reason.
    NotDistributable(&'a str),
    /// A compile run by this node's worker for a peer.
    ServedJob,
    /// A remote compile with diagnostics, compiled again here for exact diagnostics.
    DiagnosticsRerun,
}

/// Live counters shared by the daemon's tasks.
#[derive(Debug)]
pub struct Stats {
    counters: Mutex<StatsSnapshot>,
    dirty: AtomicBool,
    file: PathBuf,
}

impl Stats {
    /// Loads the counters saved in `file` (zero when missing or unreadable).
    pub fn load(file: PathBuf) -> Self {
        let counters = read_file(&file).unwrap_or_else(|| StatsSnapshot {
            zeroed_at: now_secs(),
            ..Default::default()
        });
        Self {
            counters: Mutex::new(counters),
            dirty: AtomicBool::new(false),
            file,
        }
    }

    /// Counts one event.
    pub fn count(&self, event: Event<'_>) {
        let Ok(mut c) = self.counters.lock() else {
            return;
        };
        let bump = |map: &mut BTreeMap<String, u64>, reason: &str| {
            *map.entry(reason.to_string()).or_default() += 1;
        };
        match event {
            Event::Hit => c.cache_hits += 1,
            Event::Miss => c.cache_misses += 1,
            Event::LocalCompile => c.local_compiles += 1,
            Event::CompileFailed => c.compile_failed += 1,
            Event::Uncacheable(r) => {
                c.uncacheable += 1;
                bump(&mut c.uncacheable_reasons, r);
            }
            Event::NotCompile(r) => bump(&mut c.not_compile, r),
            Event::Error(r) => bump(&mut c.errors, r),
            Event::RemoteCompile(peer) => {
                c.remote_compiles += 1;
                bump(&mut c.remote_by_peer, peer);
            }
            Event::Retry => c.retries += 1,
            Event::LocalFallback(r) => {
                c.local_fallbacks += 1;
                bump(&mut c.local_fallback_reasons, r);
            }
            Event::NotDistributable(r) => bump(&mut c.not_distributable, r),
            Event::ServedJob => c.served_jobs += 1,
            Event::DiagnosticsRerun => c.diagnostics_reruns += 1,
        }
        self.dirty.store(true, Ordering::Relaxed);
    }

    /// A copy of the counters.
    pub fn snapshot(&self) -> StatsSnapshot {
        self.counters.lock().map(|c| c.clone()).unwrap_or_default()
    }

    /// Zeroes every counter.
    pub fn zero(&self) {
        if let Ok(mut c) = self.counters.lock() {
            *c = StatsSnapshot {
                zeroed_at: now_secs(),
                ..Default::default()
            };
        }
        self.dirty.store(true, Ordering::Relaxed);
    }

    /// Saves the counters if they changed since the last save.
    pub fn flush(&self) -> std::io::Result<()> {
        if !self.dirty.swap(false, Ordering::Relaxed) {
            return Ok(());
        }
        let result = write_file(&self.file, &self.snapshot());
        if result.is_err() {
            self.dirty.store(true, Ordering::Relaxed);
        }
        result
    }
}

/// Reads a stats file; `None` when it is missing or not valid.
pub fn read_file(file: &Path) -> Option<StatsSnapshot> {
    let text = std::fs::read(file).ok()?;
    serde_json::from_slice(&text).ok()
}

/// Writes a stats file atomically.
pub fn write_file(file: &Path, stats: &StatsSnapshot) -> std::io::Result<()> {
    let tmp = file.with_extension(format!("tmp{}", std::process::id()));
    let json = serde_json::to_vec_pretty(stats).map_err(std::io::Error::other)?;
    std::fs::write(&tmp, json)?;
    std::fs::rename(&tmp, file)
}

impl StatsSnapshot {
    /// Hits as a share of cacheable calls, in percent.
    pub fn hit_rate(&self) -> f64 {
        let total = self.cache_hits + self.cache_misses;
        if total == 0 {
            0.0
        } else {
            100.0 * self.cache_hits as f64 / total as f64
        }
    }

    /// The human-readable report of `meshcc stats`.
    pub fn render(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let cacheable = self.cache_hits + self.cache_misses;
        let calls = cacheable + self.uncacheable + self.not_compile.values().sum::<u64>();
        let _ = writeln!(s, "Calls:                {calls}");
        let _ = writeln!(s, "Cacheable calls:      {cacheable}");
        let _ = writeln!(
            s,
            "  Hits:               {} ({:.1}%)",
            self.cache_hits,
            self.hit_rate()
        );
        let _ = writeln!(s, "  Misses:             {}", self.cache_misses);
        let _ = writeln!(s, "Uncacheable calls:    {}", self.uncacheable);
        for (reason, n) in &self.uncacheable_reasons {
            let _ = writeln!(s, "  {reason:<26}{n}");
        }
        let not_compile: u64 = self.not_compile.values().sum();
        let _ = writeln!(s, "Not a compile:        {not_compile}");
        for (reason, n) in &self.not_compile {
            let _ = writeln!(s, "  {reason:<26}{n}");
        }
        let _ = writeln!(s, "Local compiles:       {}", self.local_compiles);
        let _ = writeln!(s, "Remote compiles:      {}", self.remote_compiles);
        for (peer, n) in &self.remote_by_peer {
            let _ = writeln!(s, "  on {peer:<23}{n}");
        }
        let _ = writeln!(s, "Retries:              {}", self.retries);
        let _ = writeln!(s, "Local fallbacks:      {}", self.local_fallbacks);
        for (reason, n) in &self.local_fallback_reasons {
            let _ = writeln!(s, "  {reason:<26}{n}");
        }
        let not_distributable: u64 = self.not_distributable.values().sum();
        if not_distributable > 0 {
            let _ = writeln!(s, "Kept local by design: {not_distributable}");
            for (reason, n) in &self.not_distributable {
                let _ = writeln!(s, "  {reason:<26}{n}");
            }
        }
        if self.diagnostics_reruns > 0 {
            let _ = writeln!(s, "Rerun for diagnostics:{}", self.diagnostics_reruns);
        }
        let _ = writeln!(s, "Jobs run for peers:   {}", self.served_jobs);
        let _ = writeln!(s, "Failed compiles:      {}", self.compile_failed);
        let errors: u64 = self.errors.values().sum();
        let _ = writeln!(s, "Errors:               {errors}");
        for (reason, n) in &self.errors {
            let _ = writeln!(s, "  {reason:<26}{n}");
        }
        let _ = writeln!(
            s,
            "Local cache:          {} entries, {:.1} / {:.1} MiB",
            self.cache_entries,
            self.cache_bytes as f64 / 1048576.0,
            self.cache_max_bytes as f64 / 1048576.0
        );
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_persist_and_zero() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("stats.json");
        let stats = Stats::load(file.clone());
        stats.count(Event::Hit);
        stats.count(Event::Hit);
        stats.count(Event::Miss);
        stats.count(Event::Uncacheable("multiple_source_files"));
        stats.count(Event::NotCompile("called_for_link"));
        stats.count(Event::Error("cache_write"));
        stats.count(Event::RemoteCompile("abcd1234"));
        stats.count(Event::Retry);
        stats.count(Event::LocalFallback("no_worker"));
        stats.count(Event::NotDistributable("syntax_only"));
        stats.count(Event::ServedJob);
        stats.flush().unwrap();
        let again = Stats::load(file.clone()).snapshot();
        assert_eq!(again.cache_hits, 2);
        assert_eq!(again.cache_misses, 1);
        assert_eq!(again.uncacheable, 1);
        assert_eq!(again.uncacheable_reasons["multiple_source_files"], 1);
        assert_eq!(again.not_compile["called_for_link"], 1);
        assert_eq!(again.errors["cache_write"], 1);
        assert_eq!(again.remote_compiles, 1);
        assert_eq!(again.remote_by_peer["abcd1234"], 1);
        assert_eq!(again.retries, 1);
        assert_eq!(again.local_fallbacks, 1);
        assert_eq!(again.local_fallback_reasons["no_worker"], 1);
        assert_eq!(again.not_distributable["syntax_only"], 1);
        assert_eq!(again.served_jobs, 1);
        assert!(again.render().contains("Local fallbacks:      1"));
        assert!((again.hit_rate() - 66.666).abs() < 0.1);
        assert!(again.render().contains("Hits:               2"));
        stats.zero();
        stats.flush().unwrap();
        assert_eq!(Stats::load(file).snapshot().cache_hits, 0);
    }

    #[test]
    fn a_garbage_file_reads_as_zero() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("stats.json");
        std::fs::write(&file, b"\xff\x00garbage").unwrap();
        assert_eq!(Stats::load(file).snapshot().cache_hits, 0);
    }

    #[test]
    fn json_has_the_documented_keys() {
        let v = serde_json::to_value(StatsSnapshot::default()).unwrap();
        for key in [
            "cache_hits",
            "cache_misses",
            "uncacheable",
            "local_compiles",
            "remote_compiles",
            "retries",
            "local_fallbacks",
            "served_jobs",
        ] {
            assert!(v.get(key).is_some_and(|x| x.is_u64()), "{key}");
        }
    }
}
