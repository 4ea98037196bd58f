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

/// Everything a cache key is derived from. Pure data: the caller gathers it.
#[derive(Clone, Copy)]
pub struct KeyInputs<'a> {
    /// Content identity of the toolchain (`compiler::toolchain`).
    pub toolchain: &'a [u8; 32],
    /// The compiler's invoked name (`gcc` and `g++` share a binary but differ).
    pub compiler_name: &'a str,
    /// The key arguments from classification.
    pub key_args: &'a [String],
    /// The apparent working directory, when the result depends on it.
    pub cwd: Option<&'a str>,
    /// Look-up of environment variables.
    pub env: &'a dyn Fn(&str) -> Option<&'a str>,
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
    for var in KEYED_ENV {
        if let Some(value) = (inputs.env)(var) {
            field(var, value.as_bytes());
        }
    }
    field("source", inputs.source);
    field("cpp-stderr", inputs.preprocessor_stderr);
    Key(*h.finalize().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base_env(var: &str) -> Option<&'static str> {
        (var == "LANG").then_some("C.UTF-8")
    }

    fn key_with(f: impl FnOnce(&mut KeyInputs<'_>)) -> Key {
        let args = vec!["-c".to_string(), "-O2".to_string()];
        let mut inputs = KeyInputs {
            toolchain: &[7; 32],
            compiler_name: "gcc",
            key_args: &args,
            cwd: None,
            env: &base_env,
            source: b"int x;",
            preprocessor_stderr: b"",
        };
        f(&mut inputs);
        derive(&inputs)
    }

    #[test]
    fn same_inputs_same_key() {
        assert_eq!(key_with(|_| {}), key_with(|_| {}));
    }

    #[test]
    fn every_input_changes_the_key() {
        let base = key_with(|_| {});
        let other_args = vec!["-c".to_string(), "-O3".to_string()];
        let split_args = vec!["-c-O2".to_string()];
        let no_env = |_: &str| None;
        let other_lang = |v: &str| (v == "LANG").then_some("C");
        let variants = [
            key_with(|i| i.toolchain = &[8; 32]),
            key_with(|i| i.compiler_name = "g++"),
            key_with(|i| i.key_args = &other_args),
            key_with(|i| i.key_args = &split_args),
            key_with(|i| i.cwd = Some("/src")),
            key_with(|i| i.env = &no_env),
            key_with(|i| i.env = &other_lang),
            key_with(|i| i.source = b"int y;"),
            key_with(|i| i.preprocessor_stderr = b"warning"),
        ];
        for (n, k) in variants.iter().enumerate() {
            assert_ne!(*k, base, "variant {n}");
        }
    }

    #[test]
    fn unkeyed_environment_is_ignored() {
        let with_path = |v: &str| match v {
            "LANG" => Some("C.UTF-8"),
            "PATH" => Some("/elsewhere"),
            _ => None,
        };
        assert_eq!(key_with(|i| i.env = &with_path), key_with(|_| {}));
    }
}
