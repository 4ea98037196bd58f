//! The local store: entry files under one directory, bounded in size by least-recently-used
//! eviction (`shared/research/wrapper.md` §6.3, the sccache model).
//!
//! Layout: `dir/<first 2 hex digits of the key>/<other 62 hex digits>.entry`; files being written
//! live in `dir/tmp/` and are renamed into place, so a killed process never leaves a partial file
//! under an entry name. One process owns a store directory at a time (the daemon holds a lock), so
//! the in-memory index, built from a scan at [`LocalStore::open`], is authoritative; files that
//! vanish or appear behind its back are noticed when their key is looked up.
//!
//! Recency: the index orders entries by a counter, initialised from file mtimes at open and
//! bumped on every put and hit; hits also set the file's mtime so the order survives a restart.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, DirBuilder, File, Metadata, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use tracing::{debug, warn};

use super::entry::{self, Entry, EntryError};
use super::key::Key;

/// File name suffix of entry files.
const ENTRY_SUFFIX: &str = ".entry";
/// Subdirectory holding files being written.
const TMP_DIR: &str = "tmp";
/// Temporary files older than this are removed at open: their writer is gone.
const STALE_TEMP_AGE: Duration = Duration::from_secs(5 * 60);

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file system operation failed.
    #[error(
        "cache store I/O error on {}: {source} (check that the directory is writable and the disk is not full)",
        path.display()
    )]
    Io {
        /// The file or directory the operation was on.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// An entry file was damaged; it has been removed, so the next lookup is a miss.
    #[error("corrupt cache entry {} (removed): {reason}", path.display())]
    Corrupt {
        /// The entry file.
        path: PathBuf,
        /// What was wrong with it.
        reason: String,
    },
    /// The entry could not be encoded (for example, it exceeds the format's size limit).
    #[error("cannot encode cache entry: {0}")]
    Encode(#[source] EntryError),
}

/// Builds a [`StoreError::Io`].
fn io_error(path: &Path, source: io::Error) -> StoreError {
    StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// How full the store is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// Number of entries.
    pub entries: u64,
    /// Total size of the entry files in bytes.
    pub bytes: u64,
    /// The configured size bound in bytes.
    pub max_bytes: u64,
}

/// How full the store in `dir` is, read without opening it (nothing is created or removed):
/// for reports while no daemon holds the store. A missing directory is an empty store.
pub fn usage_of(dir: &Path, max_bytes: u64) -> Result<Usage, StoreError> {
    let found = match scan(dir) {
        Ok(found) => found,
        Err(StoreError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            Vec::new()
        }
        Err(e) => return Err(e),
    };
    Ok(Usage {
        entries: found.len() as u64,
        bytes: found.iter().map(|&(_, size, _)| size).sum(),
        max_bytes,
    })
}

/// Size and recency of one indexed entry.
#[derive(Debug, Clone, Copy)]
struct Slot {
    size: u64,
    seq: u64,
}

/// The in-memory index: sizes and least-recently-used order. Pure bookkeeping, no I/O.
#[derive(Debug, Default)]
struct Index {
    slots: HashMap<Key, Slot>,
    /// Recency counter → key; the first element is the least recently used.
    lru: BTreeMap<u64, Key>,
    next_seq: u64,
    bytes: u64,
}

impl Index {
    /// Builds an index from scanned `(key, size, mtime)` records; older mtimes are less recent.
    fn from_scan(mut found: Vec<(Key, u64, SystemTime)>) -> Self {
        found.sort_by_key(|&(key, _, mtime)| (mtime, key));
        let mut index = Self::default();
        for (key, size, _) in found {
            index.insert(key, size);
        }
        index
    }

    /// Inserts or replaces an entry as the most recently used.
    fn insert(&mut self, key: Key, size: u64) {
        self.remove(&key);
        let seq = self.next_seq;
        self.next_seq += 1;
        self.slots.insert(key, Slot { size, seq });
        self.lru.insert(seq, key);
        self.bytes = self.bytes.saturating_add(size);
    }

    /// Marks an entry as the most recently used; false if it is not indexed.
    fn touch(&mut self, key: &Key) -> bool {
        let Some(slot) = self.slots.get_mut(key) else {
            return false;
        };
        self.lru.remove(&slot.seq);
        slot.seq = self.next_seq;
        self.next_seq += 1;
        self.lru.insert(slot.seq, *key);
        true
    }

    /// Removes an entry, returning whether it was indexed.
    fn remove(&mut self, key: &Key) -> bool {
        let Some(slot) = self.slots.remove(key) else {
            return false;
        };
        self.lru.remove(&slot.seq);
        self.bytes = self.bytes.saturating_sub(slot.size);
        true
    }

    /// The least recently used entry.
    fn oldest(&self) -> Option<Key> {
        self.lru.values().next().copied()
    }
}

/// A size-bounded directory of cache entries, safe to use from several threads.
#[derive(Debug)]
pub struct LocalStore {
    dir: PathBuf,
    tmp: PathBuf,
    max_bytes: u64,
    index: Mutex<Index>,
    temp_counter: AtomicU64,
}

impl LocalStore {
    /// Opens (creating, mode 0700) the store in `dir`, indexes the entries already there and
    /// removes temporary files older than five minutes. Fails if `dir` cannot be created or
    /// written.
    pub fn open(dir: PathBuf, max_bytes: u64) -> Result<Self, StoreError> {
        create_dir(&dir, true)?;
        let tmp = dir.join(TMP_DIR);
        create_dir(&tmp, false)?;
        remove_stale_temps(&tmp, SystemTime::now())?;
        let index = Index::from_scan(scan(&dir)?);
        let store = Self {
            dir,
            tmp,
            max_bytes,
            index: Mutex::new(index),
            temp_counter: AtomicU64::new(0),
        };
        // Probe writability now rather than on the first put.
        let probe = store.write_temp(&[])?;
        fs::remove_file(&probe).map_err(|e| io_error(&probe, e))?;
        Ok(store)
    }

    /// The store directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Current size and bound.
    pub fn usage(&self) -> Usage {
        let index = self.lock();
        Usage {
            entries: index.slots.len() as u64,
            bytes: index.bytes,
            max_bytes: self.max_bytes,
        }
    }

    /// Looks an entry up. A hit becomes the most recently used entry. A corrupt entry file is
    /// removed and reported as [`StoreError::Corrupt`]; the next lookup is then a miss.
    pub fn get(&self, key: &Key) -> Result<Option<Entry>, StoreError> {
        let path = self.entry_path(key);
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.forget_if_vanished(key, &path);
                return Ok(None);
            }
            Err(e) => return Err(io_error(&path, e)),
        };
        let meta = file.metadata().map_err(|e| io_error(&path, e))?;
        if !meta.is_file() {
            warn!(path = %path.display(), "cache entry is not a regular file; treating as a miss");
            return Ok(None);
        }
        match entry::decode_from(&file) {
            Ok(entry) => {
                if let Err(e) = file.set_modified(SystemTime::now()) {
                    warn!(path = %path.display(), error = %e, "cannot refresh cache entry mtime");
                }
                let mut index = self.lock();
                if !index.touch(key) && is_same_file(&path, &meta) {
                    // Appeared behind our back: adopt it.
                    index.insert(*key, meta.len());
                }
                Ok(Some(entry))
            }
            Err(EntryError::Io(e)) => Err(io_error(&path, e)),
            Err(e) => {
                let reason = match e {
                    EntryError::Corrupt(reason) => reason,
                    other => other.to_string(),
                };
                let mut index = self.lock();
                // Unless a concurrent put has already replaced the damaged file.
                if is_same_file(&path, &meta) {
                    if let Err(e) = fs::remove_file(&path) {
                        warn!(path = %path.display(), error = %e, "cannot remove corrupt cache entry");
                    }
                    index.remove(key);
                }
                Err(StoreError::Corrupt { path, reason })
            }
        }
    }

    /// Stores an entry atomically (temporary file, then rename), then evicts least recently used
    /// entries until the store fits its bound. An entry larger than the bound on its own is not
    /// stored.
    pub fn put(&self, key: &Key, entry: &Entry) -> Result<(), StoreError> {
        let bytes = entry::encode(entry).map_err(StoreError::Encode)?;
        let size = bytes.len() as u64;
        if size > self.max_bytes {
            debug!(%key, size, max = self.max_bytes, "cache entry larger than the store; not stored");
            return Ok(());
        }
        let temp = self.write_temp(&bytes)?;
        drop(bytes);
        let path = self.entry_path(key);
        let placed = match path.parent() {
            Some(shard) => create_dir(shard, false),
            None => Ok(()),
        };
        let mut index = self.lock();
        let placed = placed.and_then(|()| fs::rename(&temp, &path).map_err(|e| io_error(&path, e)));
        if let Err(e) = placed {
            drop(index);
            if let Err(e) = fs::remove_file(&temp) {
                warn!(path = %temp.display(), error = %e, "cannot remove temporary file");
            }
            return Err(e);
        }
        index.insert(*key, size);
        self.evict(&mut index);
        Ok(())
    }

    /// Removes every entry.
    pub fn clear(&self) -> Result<(), StoreError> {
        let mut index = self.lock();
        let mut result = Ok(());
        for (key, _, _) in scan(&self.dir)? {
            let path = self.entry_path(&key);
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    if result.is_ok() {
                        result = Err(io_error(&path, e));
                    }
                }
            }
        }
        // Whatever could not be removed stays indexed.
        *index = Index::from_scan(scan(&self.dir)?);
        result
    }

    /// The file of an entry.
    fn entry_path(&self, key: &Key) -> PathBuf {
        let hex = key.to_hex();
        let (shard, rest) = hex.split_at(2);
        self.dir.join(shard).join(format!("{rest}{ENTRY_SUFFIX}"))
    }

    /// Locks the index. It is consistent after any panic (updates are panic-free), so a
    /// poisoned lock is taken over rather than propagated.
    fn lock(&self) -> MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Evicts least recently used entries until the store fits its bound.
    fn evict(&self, index: &mut Index) {
        while index.bytes > self.max_bytes {
            let Some(key) = index.oldest() else { break };
            let path = self.entry_path(&key);
            match fs::remove_file(&path) {
                Ok(()) => debug!(%key, "evicted cache entry"),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    warn!(path = %path.display(), error = %e, "cannot evict cache entry; forgetting it")
                }
            }
            index.remove(&key);
        }
    }

    /// Drops an entry from the index if its file is really gone.
    fn forget_if_vanished(&self, key: &Key, path: &Path) {
        let mut index = self.lock();
        if index.slots.contains_key(key)
            && matches!(fs::symlink_metadata(path), Err(e) if e.kind() == io::ErrorKind::NotFound)
        {
            index.remove(key);
        }
    }

    /// Writes `bytes` to a new, uniquely named file in the temporary directory.
    fn write_temp(&self, bytes: &[u8]) -> Result<PathBuf, StoreError> {
        let mut attempts = 0;
        loop {
            attempts += 1;
            let path = self.tmp.join(self.temp_name());
            let mut file = match OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
            {
                Ok(file) => file,
                Err(e) if attempts < 3 && e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) if attempts < 3 && e.kind() == io::ErrorKind::NotFound => {
                    create_dir(&self.tmp, false)?;
                    continue;
                }
                Err(e) => return Err(io_error(&path, e)),
            };
            if let Err(e) = file.write_all(bytes) {
                drop(file);
                if let Err(e) = fs::remove_file(&path) {
                    warn!(path = %path.display(), error = %e, "cannot remove temporary file");
                }
                return Err(io_error(&path, e));
            }
            return Ok(path);
        }
    }

    /// A temporary file name: pid, a per-store counter and a time-derived random part, so that
    /// a stale file left by an earlier process with the same pid cannot collide.
    fn temp_name(&self) -> String {
        let pid = std::process::id();
        let n = self.temp_counter.fetch_add(1, Ordering::Relaxed);
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let mut hasher = blake3::Hasher::new();
        hasher.update(&nanos.to_le_bytes());
        hasher.update(&pid.to_le_bytes());
        hasher.update(&n.to_le_bytes());
        let hash = hasher.finalize();
        let random = &hash.to_hex()[..16];
        format!("{pid}-{n}-{random}.tmp")
    }
}

/// Creates a directory with mode 0700 (and its parents if `recursive`); an existing one is fine.
fn create_dir(path: &Path, recursive: bool) -> Result<(), StoreError> {
    match DirBuilder::new()
        .recursive(recursive)
        .mode(0o700)
        .create(path)
    {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && path.is_dir() => Ok(()),
        Err(e) => Err(io_error(path, e)),
    }
}

/// Whether `path` still names the file described by `meta`.
fn is_same_file(path: &Path, meta: &Metadata) -> bool {
    fs::symlink_metadata(path).is_ok_and(|m| m.dev() == meta.dev() && m.ino() == meta.ino())
}

/// Removes files in `tmp` last modified more than [`STALE_TEMP_AGE`] before `now`.
fn remove_stale_temps(tmp: &Path, now: SystemTime) -> Result<(), StoreError> {
    let dir = fs::read_dir(tmp).map_err(|e| io_error(tmp, e))?;
    for item in dir.flatten() {
        let path = item.path();
        let Ok(meta) = item.metadata() else { continue };
        let stale = meta
            .modified()
            .ok()
            .and_then(|mtime| now.duration_since(mtime).ok())
            .is_some_and(|age| age > STALE_TEMP_AGE);
        if meta.is_file() && stale {
            match fs::remove_file(&path) {
                Ok(()) => debug!(path = %path.display(), "removed stale temporary file"),
                Err(e) => {
                    warn!(path = %path.display(), error = %e, "cannot remove stale temporary file")
                }
            }
        }
    }
    Ok(())
}

/// Parses lower-case hex digits into bytes; `None` unless every digit is valid and the output
/// is filled exactly.
fn parse_hex(hex: &[u8], out: &mut [u8]) -> Option<()> {
    if hex.len() != out.len() * 2 {
        return None;
    }
    fn digit(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        }
    }
    for (byte, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
        *byte = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(())
}

/// The key of an entry file from its shard directory and file names, if they are ours.
fn parse_entry_name(shard: &str, file: &str) -> Option<Key> {
    let rest = file.strip_suffix(ENTRY_SUFFIX)?;
    let mut key = [0u8; 32];
    parse_hex(shard.as_bytes(), &mut key[..1])?;
    parse_hex(rest.as_bytes(), &mut key[1..])?;
    Some(Key(key))
}

/// Lists the entry files under `dir` as `(key, size, mtime)`. Only an unreadable `dir` is an
/// error; unreadable shards and foreign files are skipped.
fn scan(dir: &Path) -> Result<Vec<(Key, u64, SystemTime)>, StoreError> {
    let mut found = Vec::new();
    for shard in fs::read_dir(dir).map_err(|e| io_error(dir, e))?.flatten() {
        let shard_name = shard.file_name();
        let Some(shard_name) = shard_name.to_str().filter(|s| s.len() == 2) else {
            continue;
        };
        if !shard.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let files = match fs::read_dir(shard.path()) {
            Ok(files) => files,
            Err(e) => {
                warn!(path = %shard.path().display(), error = %e, "cannot read cache shard; skipping");
                continue;
            }
        };
        for file in files.flatten() {
            let name = file.file_name();
            let Some(key) = name.to_str().and_then(|n| parse_entry_name(shard_name, n)) else {
                continue;
            };
            let Ok(meta) = file.metadata() else { continue };
            if meta.is_file() {
                let mtime = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
                found.push((key, meta.len(), mtime));
            }
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compiler::args::OutputKind;
    use std::sync::Arc;

    /// Deterministic incompressible bytes.
    fn noise(seed: u64, len: usize) -> Vec<u8> {
        let mut out = vec![0u8; len];
        blake3::Hasher::new()
            .update(&seed.to_le_bytes())
            .finalize_xof()
            .fill(&mut out);
        out
    }

    fn entry(seed: u64, len: usize) -> Entry {
        Entry {
            stdout: Vec::new(),
            stderr: format!("warning {seed}\n").into_bytes(),
            outputs: vec![(OutputKind::Primary, noise(seed, len))],
        }
    }

    fn key(n: u8) -> Key {
        let mut k = [n; 32];
        k[31] = n.wrapping_mul(37);
        Key(k)
    }

    fn encoded_len(e: &Entry) -> u64 {
        entry::encode(e).unwrap().len() as u64
    }

    /// (entry files, their total size) actually on disk.
    fn on_disk(dir: &Path) -> (u64, u64) {
        let found = scan(dir).unwrap();
        (found.len() as u64, found.iter().map(|f| f.1).sum())
    }

    fn set_mtime(path: &Path, secs: u64) {
        File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
            .unwrap();
    }

    fn mtime(path: &Path) -> SystemTime {
        fs::metadata(path).unwrap().modified().unwrap()
    }

    #[test]
    fn index_orders_by_recency() {
        let t = |s| SystemTime::UNIX_EPOCH + Duration::from_secs(s);
        let mut index = Index::from_scan(vec![
            (key(1), 10, t(30)),
            (key(2), 20, t(10)),
            (key(3), 30, t(20)),
        ]);
        assert_eq!(index.bytes, 60);
        assert_eq!(index.oldest(), Some(key(2)));
        assert!(index.touch(&key(2)));
        assert_eq!(index.oldest(), Some(key(3)));
        index.insert(key(3), 5);
        assert_eq!((index.bytes, index.oldest()), (35, Some(key(1))));
        assert!(index.remove(&key(1)));
        assert!(!index.remove(&key(1)));
        assert!(!index.touch(&key(1)));
        assert_eq!((index.bytes, index.oldest()), (25, Some(key(2))));
    }

    #[test]
    fn entry_names_round_trip() {
        let k = key(0xab);
        let hex = k.to_hex();
        assert_eq!(
            parse_entry_name(&hex[..2], &format!("{}.entry", &hex[2..])),
            Some(k)
        );
        assert_eq!(parse_entry_name(&hex[..2], &hex[2..]), None);
        assert_eq!(
            parse_entry_name("AB", &format!("{}.entry", &hex[2..])),
            None
        );
        assert_eq!(parse_entry_name(&hex[..2], "abc.entry"), None);
    }

    #[test]
    fn put_get_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path().join("cache"), 1 << 30).unwrap();
        let e = entry(1, 5000);
        assert_eq!(store.get(&key(1)).unwrap(), None);
        store.put(&key(1), &e).unwrap();
        assert_eq!(store.get(&key(1)).unwrap(), Some(e.clone()));
        assert_eq!(store.get(&key(2)).unwrap(), None);
        let usage = store.usage();
        assert_eq!(
            (usage.entries, usage.bytes, usage.max_bytes),
            (1, encoded_len(&e), 1 << 30)
        );
        // Replacing an entry does not double-count it.
        store.put(&key(1), &e).unwrap();
        assert_eq!(store.usage(), usage);
        assert_eq!(on_disk(store.dir()), (usage.entries, usage.bytes));
        assert_eq!(usage_of(store.dir(), 1 << 30).unwrap(), usage);
        let none = usage_of(&dir.path().join("missing"), 7).unwrap();
        assert_eq!((none.entries, none.bytes, none.max_bytes), (0, 0, 7));
        let mode = fs::metadata(store.dir()).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o700);
    }

    #[test]
    fn reopen_sees_existing_entries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache");
        let store = LocalStore::open(path.clone(), 1 << 30).unwrap();
        for n in 1..=3 {
            store
                .put(&key(n), &entry(n.into(), 1000 * usize::from(n)))
                .unwrap();
        }
        let usage = store.usage();
        drop(store);
        // Foreign files are ignored.
        fs::write(path.join("README"), b"hello").unwrap();
        fs::create_dir(path.join("zz")).unwrap();
        fs::write(path.join("zz").join("x.entry"), b"hello").unwrap();
        let store = LocalStore::open(path, 1 << 30).unwrap();
        assert_eq!(store.usage(), usage);
        assert_eq!(usage.entries, 3);
        for n in 1..=3 {
            assert_eq!(
                store.get(&key(n)).unwrap(),
                Some(entry(n.into(), 1000 * usize::from(n)))
            );
        }
    }

    #[test]
    fn eviction_removes_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let size = encoded_len(&entry(1, 4000));
        let max = 3 * size + size / 2;
        let store = LocalStore::open(dir.path().to_path_buf(), max).unwrap();
        for n in 1..=4 {
            store.put(&key(n), &entry(n.into(), 4000)).unwrap();
            assert!(store.usage().bytes <= max);
        }
        assert_eq!(store.get(&key(1)).unwrap(), None);
        for n in 2..=4 {
            assert!(store.get(&key(n)).unwrap().is_some());
        }
        let usage = store.usage();
        assert_eq!((usage.entries, usage.bytes), (3, 3 * size));
        assert_eq!(on_disk(store.dir()), (3, 3 * size));
    }

    #[test]
    fn hits_refresh_lru_order_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let size = encoded_len(&entry(1, 4000));
        let max = 3 * size + size / 2;
        let store = LocalStore::open(dir.path().to_path_buf(), max).unwrap();
        for n in 1..=3 {
            store.put(&key(n), &entry(n.into(), 4000)).unwrap();
        }
        // Recency on disk, unlike put order: 2 oldest, then 3, then 1.
        set_mtime(&store.entry_path(&key(1)), 3000);
        set_mtime(&store.entry_path(&key(2)), 1000);
        set_mtime(&store.entry_path(&key(3)), 2000);
        drop(store);
        let store = LocalStore::open(dir.path().to_path_buf(), max).unwrap();
        assert!(store.get(&key(2)).unwrap().is_some());
        assert!(
            mtime(&store.entry_path(&key(2))) > SystemTime::UNIX_EPOCH + Duration::from_secs(3000)
        );
        store.put(&key(4), &entry(4, 4000)).unwrap();
        assert_eq!(store.get(&key(3)).unwrap(), None);
        for n in [1, 2, 4] {
            assert!(store.get(&key(n)).unwrap().is_some(), "{n}");
        }
    }

    #[test]
    fn entry_larger_than_store_is_not_kept() {
        let dir = tempfile::tempdir().unwrap();
        let small = entry(1, 100);
        let max = 2 * encoded_len(&small);
        let store = LocalStore::open(dir.path().to_path_buf(), max).unwrap();
        store.put(&key(1), &small).unwrap();
        store.put(&key(2), &entry(2, 10_000)).unwrap();
        assert_eq!(store.get(&key(2)).unwrap(), None);
        assert_eq!(store.get(&key(1)).unwrap(), Some(small));
        assert_eq!(store.usage().entries, 1);
        assert_eq!(on_disk(store.dir()).0, 1);
    }

    #[test]
    fn corrupt_entry_is_removed_and_reported() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path().to_path_buf(), 1 << 30).unwrap();
        store.put(&key(1), &entry(1, 1000)).unwrap();
        let path = store.entry_path(&key(1));
        let mut bytes = fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x40;
        fs::write(&path, &bytes).unwrap();
        match store.get(&key(1)) {
            Err(StoreError::Corrupt { path: p, reason }) => {
                assert_eq!(p, path);
                assert!(!reason.is_empty());
            }
            other => panic!("{other:?}"),
        }
        assert!(!path.exists());
        assert_eq!(store.get(&key(1)).unwrap(), None);
        assert_eq!(store.usage().entries, 0);
        assert_eq!(store.usage().bytes, 0);
    }

    #[test]
    fn vanished_and_appeared_files() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path().to_path_buf(), 1 << 30).unwrap();
        let e = entry(1, 1000);
        store.put(&key(1), &e).unwrap();
        let path = store.entry_path(&key(1));
        let bytes = fs::read(&path).unwrap();
        fs::remove_file(&path).unwrap();
        assert_eq!(store.get(&key(1)).unwrap(), None);
        assert_eq!(store.usage().entries, 0);
        fs::write(&path, &bytes).unwrap();
        assert_eq!(store.get(&key(1)).unwrap(), Some(e));
        assert_eq!(
            (store.usage().entries, store.usage().bytes),
            on_disk(store.dir())
        );
        assert_eq!(store.usage().entries, 1);
    }

    #[test]
    fn stale_temp_files_are_removed_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let tmp = dir.path().join(TMP_DIR);
        fs::create_dir(&tmp).unwrap();
        fs::write(tmp.join("old.tmp"), b"partial").unwrap();
        set_mtime(&tmp.join("old.tmp"), 1000);
        fs::write(tmp.join("fresh.tmp"), b"in progress").unwrap();
        let store = LocalStore::open(dir.path().to_path_buf(), 1 << 30).unwrap();
        assert!(!tmp.join("old.tmp").exists());
        assert!(tmp.join("fresh.tmp").exists());
        assert_eq!(store.usage().entries, 0);
    }

    #[test]
    fn unwritable_dir_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("blocker");
        fs::write(&blocker, b"not a directory").unwrap();
        match LocalStore::open(blocker.join("cache"), 1 << 30) {
            Err(e @ StoreError::Io { .. }) => assert!(e.to_string().contains("blocker"), "{e}"),
            other => panic!("{other:?}"),
        }
        // A shard path blocked after open: put fails cleanly, get is not a hit.
        let store = LocalStore::open(dir.path().join("cache"), 1 << 30).unwrap();
        let shard = store.entry_path(&key(1)).parent().unwrap().to_path_buf();
        fs::write(&shard, b"not a directory").unwrap();
        assert!(matches!(
            store.put(&key(1), &entry(1, 100)),
            Err(StoreError::Io { .. })
        ));
        assert!(!matches!(store.get(&key(1)), Ok(Some(_))));
        assert_eq!(store.usage().entries, 0);
        assert_eq!(fs::read_dir(&store.tmp).unwrap().count(), 0);
    }

    #[test]
    fn clear_removes_everything() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path().to_path_buf(), 1 << 30).unwrap();
        for n in 1..=5 {
            store.put(&key(n), &entry(n.into(), 500)).unwrap();
        }
        store.clear().unwrap();
        assert_eq!(store.usage().entries, 0);
        assert_eq!(store.usage().bytes, 0);
        assert_eq!(on_disk(store.dir()), (0, 0));
        assert_eq!(store.get(&key(1)).unwrap(), None);
        store.put(&key(1), &entry(1, 500)).unwrap();
        assert_eq!(store.usage().entries, 1);
    }

    #[test]
    fn concurrent_puts_and_gets_stay_consistent() {
        const KEYS: u64 = 24;
        let expected = |n: u64| entry(n, 1000 + 97 * n as usize);
        let dir = tempfile::tempdir().unwrap();
        let max = (0..10).map(|n| encoded_len(&expected(n))).sum();
        let store = Arc::new(LocalStore::open(dir.path().to_path_buf(), max).unwrap());
        let threads: Vec<_> = (0..8u64)
            .map(|t| {
                let store = Arc::clone(&store);
                std::thread::spawn(move || {
                    for i in 0..150u64 {
                        let n = (i * 7 + t * 13) % KEYS;
                        let k = key(n as u8);
                        if (i + t) % 2 == 0 {
                            store.put(&k, &expected(n)).unwrap();
                        } else if let Some(got) = store.get(&k).unwrap() {
                            assert_eq!(got, expected(n));
                        }
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        let usage = store.usage();
        assert!(usage.bytes <= max);
        assert!(usage.entries > 0);
        assert_eq!((usage.entries, usage.bytes), on_disk(store.dir()));
        assert_eq!(fs::read_dir(&store.tmp).unwrap().count(), 0);
    }
}
