//! Cache key derivation (`shared/research/wrapper.md` §3.7, preprocessor mode).

use std::fmt;

/// A cache key: a BLAKE3 digest over everything that decides a compile's result.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key(pub [u8; 32]);

impl Key {
    /// Lower-case hex, as used for entry file names.
    pub fn to_hex(&self) -> String {
        blake3::Hash::from_bytes(self.0).to_hex().to_string()
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({})", &self.to_hex()[..16])
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// Bumped whenever the key recipe or the entry format changes meaning.
const KEY_FORMAT: &[u8] = b"meshcc key v1";

/// Environment variables that change what the compiler produces (`wrapper.md` §3.7).
/// `PATH` is deliberately absent: the toolchain identity names the programs that run.
pub const KEYED_ENV: &[&str] = &[
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "LC_MESSAGES",
    "GCC_COLORS",
    "COMPILER_PATH",
    "GCC_EXEC_PREFIX",
    "GCC_COMPARE_DEBUG",
    "SOURCE_DATE_EPOCH",
    "CCC_OVERRIDE_OPTIONS",
    "SDKROOT",
    "MACOSX_DEPLOYMENT_TARGET",
];

/// Picks the set variables of [`KEYED_ENV`] from an environment, in a fixed order.
pub fn keyed_env<'e>(get: impl Fn(&str) -> Option<&'e str>) -> Vec<(&'static str, &'e str)> {
    KEYED_ENV
        .iter()
        .filter_map(|var| get(var).map(|value| (*var, value)))
        .collect()
}

/// Everything a cache key is derived from. Pure data: the caller gathers it.
#[derive(Debug, Clone, Copy)]
pub struct KeyInputs<'a> {
    /// Content identity of the toolchain (`compiler::toolchain`).
    pub toolchain: &'a [u8; 32],
    /// The compiler's invoked name (`gcc` and `g++` share a binary but differ).
    pub compiler_name: &'a str,
    /// The key arguments from classification.
    pub key_args: &'a [String],
    /// The apparent working directory, when the result depends on it.
    pub cwd: Option<&'a str>,
    /// The keyed environment variables that are set ([`keyed_env`]).
    pub env: &'a [(&'static str, &'a str)],
    /// The preprocessed text (or the input itself when it needs no preprocessing).
    pub source: &'a [u8],
    /// What the preprocessor printed on stderr.
    pub preprocessor_stderr: &'a [u8],
}

/// Derives the key. Every field is length-prefixed, so no two different inputs can produce
/// the same byte stream.
pub fn derive(inputs: &KeyInputs<'_>) -> Key {
    let mut h = blake3::Hasher::new();
    let mut field = |tag: &str, bytes: &[u8]| {
        h.update(tag.as_bytes());
        h.update(&(bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    };
    field("format", KEY_FORMAT);
    field("toolchain", inputs.toolchain);
    field("name", inputs.compiler_name.as_bytes());
    field("args", &(inputs.key_args.len() as u64).to_le_bytes());
    for arg in inputs.key_args {
        field("arg", arg.as_bytes());
    }
    if let Some(cwd) = inputs.cwd {
        field("cwd", cwd.as_bytes());
    }
    for (var, value) in inputs.env {
        field(var, value.as_bytes());
    }
    field("source", inputs.source);
    field("cpp-stderr", inputs.preprocessor_stderr);
    Key(*h.finalize().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Owned inputs, so each test can change one field.
    #[derive(Clone)]
    struct Fixture {
        toolchain: [u8; 32],
        name: &'static str,
        args: Vec<String>,
        cwd: Option<&'static str>,
        env: Vec<(&'static str, &'static str)>,
        source: &'static [u8],
        cpp_stderr: &'static [u8],
    }

    impl Fixture {
        fn new() -> Self {
            Self {
                toolchain: [7; 32],
                name: "gcc",
                args: vec!["-c".into(), "-O2".into()],
                cwd: None,
                env: vec![("LANG", "C.UTF-8")],
                source: b"int x;",
                cpp_stderr: b"",
            }
        }

        fn key(&self) -> Key {
            derive(&KeyInputs {
                toolchain: &self.toolchain,
                compiler_name: self.name,
                key_args: &self.args,
                cwd: self.cwd,
                env: &self.env,
                source: self.source,
                preprocessor_stderr: self.cpp_stderr,
            })
        }

        fn with(&self, f: impl FnOnce(&mut Self)) -> Key {
            let mut other = self.clone();
            f(&mut other);
            other.key()
        }
    }

    #[test]
    fn same_inputs_same_key() {
        assert_eq!(Fixture::new().key(), Fixture::new().key());
    }

    #[test]
    fn every_input_changes_the_key() {
        let f = Fixture::new();
        let base = f.key();
        let variants = [
            f.with(|i| i.toolchain = [8; 32]),
            f.with(|i| i.name = "g++"),
            f.with(|i| i.args[1] = "-O3".into()),
            f.with(|i| i.args = vec!["-c-O2".into()]),
            f.with(|i| i.cwd = Some("/src")),
            f.with(|i| i.env.clear()),
            f.with(|i| i.env = vec![("LANG", "C")]),
            f.with(|i| i.env = vec![("LC_ALL", "C.UTF-8")]),
            f.with(|i| i.source = b"int y;"),
            f.with(|i| i.cpp_stderr = b"warning"),
        ];
        for (n, k) in variants.iter().enumerate() {
            assert_ne!(*k, base, "variant {n}");
        }
    }

    #[test]
    fn only_keyed_variables_are_picked() {
        let env = |v: &str| match v {
            "LANG" => Some("C.UTF-8"),
            "PATH" => Some("/elsewhere"),
            "SOURCE_DATE_EPOCH" => Some("1"),
            _ => None,
        };
        assert_eq!(
            keyed_env(env),
            vec![("LANG", "C.UTF-8"), ("SOURCE_DATE_EPOCH", "1")]
        );
    }
}
