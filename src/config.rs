//! Configuration: where every file lives, and the settings from `config.toml` and `MESHCC_*`.
//!
//! Every setting has a working default, so meshcc runs with no configuration at all. Paths derive
//! from the XDG base directories, or all at once from `MESHCC_HOME` (several nodes on one
//! machine, tests). Precedence: `MESHCC_*` variables over the config file over defaults.

use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Default upper bound of the local cache.
pub const DEFAULT_CACHE_SIZE: u64 = 5 * 1024 * 1024 * 1024;

/// Errors in reading the configuration; each says which setting or file to fix.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file exists but cannot be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The config file is not valid TOML for meshcc.
    #[error("config file {path} is invalid: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// A size setting could not be parsed.
    #[error("invalid size {value:?} for {setting}: use a number of bytes with an optional K, M, G or T suffix (e.g. 5G)")]
    Size {
        /// Which setting.
        setting: &'static str,
        /// Its value.
        value: String,
    },
    /// A `[mesh]` setting or `MESHCC_LISTEN` is invalid.
    #[error("invalid mesh setting: {0}")]
    Mesh(String),
    /// A distributed-compilation setting (`MESHCC_SLOTS`, `MESHCC_RETRY_LIMIT`, …) is invalid.
    #[error("invalid setting: {0}")]
    Remote(String),
    /// A private directory cannot be made safe.
    #[error("directory {path} is unsafe or unusable: {reason}")]
    Dir {
        /// The directory.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// The directories meshcc uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    /// Holds `config.toml`.
    pub config_dir: PathBuf,
    /// Node key, cluster secret, daemon log.
    pub data_dir: PathBuf,
    /// The local cache (entries and statistics).
    pub cache_dir: PathBuf,
    /// The daemon's socket and lock files; private to the user (0700).
    pub runtime_dir: PathBuf,
}

impl Paths {
    /// Derives the paths from an environment lookup (`MESHCC_HOME`, `XDG_*`, `HOME`) and the uid.
    pub fn from_env(get: &dyn Fn(&str) -> Option<String>, uid: u32) -> Self {
        let nonempty = |k: &str| get(k).filter(|v| !v.is_empty()).map(PathBuf::from);
        if let Some(home) = nonempty("MESHCC_HOME") {
            return Self {
                config_dir: home.join("config"),
                data_dir: home.join("data"),
                cache_dir: home.join("cache"),
                runtime_dir: home.join("run"),
            };
        }
        let home = nonempty("HOME").unwrap_or_else(|| PathBuf::from("/"));
        let xdg = |var: &str, fallback: &str| nonempty(var).unwrap_or_else(|| home.join(fallback));
        Self {
            config_dir: xdg("XDG_CONFIG_HOME", ".config").join("meshcc"),
            data_dir: xdg("XDG_DATA_HOME", ".local/share").join("meshcc"),
            cache_dir: xdg("XDG_CACHE_HOME", ".cache").join("meshcc"),
            runtime_dir: nonempty("XDG_RUNTIME_DIR")
                .map(|d| d.join("meshcc"))
                .unwrap_or_else(|| std::env::temp_dir().join(format!("meshcc-{uid}"))),
        }
    }

    /// The daemon's stream socket (compile requests, commands).
    pub fn socket(&self) -> PathBuf {
        self.runtime_dir.join("daemon.sock")
    }

    /// The daemon's datagram socket for fire-and-forget counters from wrappers.
    pub fn stats_socket(&self) -> PathBuf {
        self.runtime_dir.join("stats.sock")
    }

    /// Held (flock) by the running daemon for its whole life: at most one daemon per home.
    pub fn daemon_lock(&self) -> PathBuf {
        self.runtime_dir.join("daemon.lock")
    }

    /// Serialises daemon auto-starts between concurrent wrappers.
    pub fn start_lock(&self) -> PathBuf {
        self.runtime_dir.join("start.lock")
    }

    /// Where an auto-started daemon writes its log.
    pub fn daemon_log(&self) -> PathBuf {
        self.data_dir.join("daemon.log")
    }
}

/// Creates `dir` (and parents) if needed and makes sure it is a directory owned by `uid` with
/// mode 0700, so no other user can reach the sockets or files inside.
pub fn ensure_private_dir(dir: &Path, uid: u32) -> Result<(), ConfigError> {
    let err = |reason: String| ConfigError::Dir {
        path: dir.to_path_buf(),
        reason,
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| err(format!("cannot create it: {e}")))?;
    let meta = std::fs::symlink_metadata(dir).map_err(|e| err(e.to_string()))?;
    if !meta.is_dir() {
        return Err(err("it is not a directory".into()));
    }
    if meta.uid() != uid {
        return Err(err(format!(
            "it belongs to uid {}, not to you (uid {uid}); remove it or set MESHCC_HOME",
            meta.uid()
        )));
    }
    if meta.mode() & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| err(format!("cannot make it private (chmod 0700): {e}")))?;
    }
    Ok(())
}

/// The `config.toml` file, all fields optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    #[serde(default)]
    cache: FileCache,
    #[serde(default)]
    log: FileLog,
    #[serde(default)]
    compiler: FileCompiler,
    #[serde(default)]
    mesh: crate::mesh::FileMesh,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileCache {
    dir: Option<PathBuf>,
    max_size: Option<toml::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileLog {
    level: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileCompiler {
    path: Option<String>,
}

/// The effective configuration of this process.
#[derive(Debug, Clone)]
pub struct Config {
    /// Directory layout.
    pub paths: Paths,
    /// Upper bound of the local cache in bytes.
    pub cache_max_bytes: u64,
    /// Log filter for the daemon (`tracing` env-filter syntax), e.g. `info` or `meshcc=debug`.
    pub log_filter: String,
    /// Where to look for real compilers instead of `PATH` (`MESHCC_PATH`), colon-separated.
    pub compiler_path: Option<String>,
    /// `MESHCC_DISABLE`: run every compiler call unchanged, as if meshcc were not there.
    pub disabled: bool,
    /// Mesh settings (`[mesh]`, `MESHCC_LISTEN`); used only when a cluster secret exists.
    pub mesh: crate::mesh::MeshSettings,
    /// Worker and dispatch settings (`MESHCC_SLOTS`, `MESHCC_RETRY_LIMIT`, `MESHCC_FALLBACK`,
    /// `MESHCC_JOB_TIMEOUT`); used only with a mesh.
    pub remote: crate::remote::RemoteSettings,
}

impl Config {
    /// Loads the configuration from the process environment and the config file.
    pub fn load() -> Result<Self, ConfigError> {
        Self::load_from(&|k| std::env::var(k).ok(), nix::unistd::getuid().as_raw())
    }

    /// Loads the configuration with an explicit environment lookup (for tests).
    pub fn load_from(get: &dyn Fn(&str) -> Option<String>, uid: u32) -> Result<Self, ConfigError> {
        let mut paths = Paths::from_env(get, uid);
        let file_path = get("MESHCC_CONFIG")
            .map(PathBuf::from)
            .unwrap_or_else(|| paths.config_dir.join("config.toml"));
        let file = read_file_config(&file_path)?;

        if let Some(dir) = get("MESHCC_CACHE_DIR")
            .map(PathBuf::from)
            .or(file.cache.dir)
        {
            paths.cache_dir = dir;
        }
        let cache_max_bytes = match get("MESHCC_CACHE_SIZE") {
            Some(v) => parse_size("MESHCC_CACHE_SIZE", &v)?,
            None => match file.cache.max_size {
                Some(toml::Value::Integer(n)) if n >= 0 => n as u64,
                Some(toml::Value::String(s)) => parse_size("cache.max_size", &s)?,
                Some(other) => {
                    return Err(ConfigError::Size {
                        setting: "cache.max_size",
                        value: other.to_string(),
                    })
                }
                None => DEFAULT_CACHE_SIZE,
            },
        };
        Ok(Self {
            paths,
            cache_max_bytes,
            log_filter: get("MESHCC_LOG")
                .or(file.log.level)
                .unwrap_or_else(|| "info".into()),
            compiler_path: get("MESHCC_PATH").or(file.compiler.path),
            disabled: get("MESHCC_DISABLE").is_some_and(|v| !v.is_empty() && v != "0"),
            mesh: crate::mesh::MeshSettings::resolve(get, file.mesh).map_err(ConfigError::Mesh)?,
            remote: crate::remote::RemoteSettings::resolve(get).map_err(ConfigError::Remote)?,
        })
    }
}

fn read_file_config(path: &Path) -> Result<FileConfig, ConfigError> {
    match std::fs::read_to_string(path) {
        Ok(text) => toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(FileConfig::default()),
        Err(source) => Err(ConfigError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Parses `5G`, `500M`, `64KiB`, `1024` (bytes; binary multiples).
pub fn parse_size(setting: &'static str, value: &str) -> Result<u64, ConfigError> {
    let bad = || ConfigError::Size {
        setting,
        value: value.to_string(),
    };
    let v = value.trim();
    let digits_end = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (num, unit) = v.split_at(digits_end);
    let n: u64 = num.parse().map_err(|_| bad())?;
    let shift = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        "T" | "TB" | "TIB" => 40,
        _ => return Err(bad()),
    };
    n.checked_mul(1u64 << shift).ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn xdg_paths_and_fallbacks() {
        let p = Paths::from_env(&env(&[("HOME", "/h")]), 1000);
        assert_eq!(p.config_dir, PathBuf::from("/h/.config/meshcc"));
        assert_eq!(p.data_dir, PathBuf::from("/h/.local/share/meshcc"));
        assert_eq!(p.cache_dir, PathBuf::from("/h/.cache/meshcc"));
        assert_eq!(p.runtime_dir, std::env::temp_dir().join("meshcc-1000"));
        let p = Paths::from_env(
            &env(&[
                ("HOME", "/h"),
                ("XDG_CACHE_HOME", "/c"),
                ("XDG_RUNTIME_DIR", "/run/user/7"),
            ]),
            7,
        );
        assert_eq!(p.cache_dir, PathBuf::from("/c/meshcc"));
        assert_eq!(p.socket(), PathBuf::from("/run/user/7/meshcc/daemon.sock"));
    }

    #[test]
    fn meshcc_home_moves_everything() {
        let p = Paths::from_env(&env(&[("HOME", "/h"), ("MESHCC_HOME", "/n1")]), 0);
        for d in [&p.config_dir, &p.data_dir, &p.cache_dir, &p.runtime_dir] {
            assert!(d.starts_with("/n1"), "{d:?}");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("x", "1024").ok(), Some(1024));
        assert_eq!(parse_size("x", "5G").ok(), Some(5 << 30));
        assert_eq!(parse_size("x", "500 MiB").ok(), Some(500 << 20));
        assert_eq!(parse_size("x", "64k").ok(), Some(64 << 10));
        assert!(parse_size("x", "").is_err());
        assert!(parse_size("x", "5X").is_err());
        assert!(parse_size("x", "-5G").is_err());
        assert!(parse_size("x", "99999999999T").is_err());
    }

    #[test]
    fn defaults_file_and_env_precedence() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().to_str().unwrap().to_string();
        let c = Config::load_from(&env(&[("MESHCC_HOME", &home)]), 0).unwrap();
        assert_eq!(c.cache_max_bytes, DEFAULT_CACHE_SIZE);
        assert_eq!(c.log_filter, "info");
        assert!(!c.disabled);

        std::fs::create_dir_all(dir.path().join("config")).unwrap();
        std::fs::write(
            dir.path().join("config/config.toml"),
            "[cache]\nmax_size = \"1G\"\ndir = \"/tmp/x\"\n[log]\nlevel = \"debug\"\n",
        )
        .unwrap();
        let c = Config::load_from(&env(&[("MESHCC_HOME", &home)]), 0).unwrap();
        assert_eq!(c.cache_max_bytes, 1 << 30);
        assert_eq!(c.paths.cache_dir, PathBuf::from("/tmp/x"));
        assert_eq!(c.log_filter, "debug");

        let c = Config::load_from(
            &env(&[
                ("MESHCC_HOME", &home),
                ("MESHCC_CACHE_SIZE", "2M"),
                ("MESHCC_LOG", "warn"),
                ("MESHCC_DISABLE", "1"),
            ]),
            0,
        )
        .unwrap();
        assert_eq!(c.cache_max_bytes, 2 << 20);
        assert_eq!(c.log_filter, "warn");
        assert!(c.disabled);

        std::fs::write(
            dir.path().join("config/config.toml"),
            "[cache]\nbogus = 1\n",
        )
        .unwrap();
        let e = Config::load_from(&env(&[("MESHCC_HOME", &home)]), 0).unwrap_err();
        assert!(e.to_string().contains("config.toml"), "{e}");
    }

    #[test]
    fn private_dir_is_made_0700() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("a/b");
        ensure_private_dir(&d, nix::unistd::getuid().as_raw()).unwrap();
        let mode = std::fs::metadata(&d).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o700);
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
        ensure_private_dir(&d, nix::unistd::getuid().as_raw()).unwrap();
        assert_eq!(std::fs::metadata(&d).unwrap().mode() & 0o777, 0o700);
        let e = ensure_private_dir(&d, 12345).unwrap_err();
        assert!(e.to_string().contains("uid"), "{e}");
    }
}
