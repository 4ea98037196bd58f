//! Response files (`@file`) with GNU semantics (libiberty `expandargv`/`buildargv`).
//!
//! Each `@file` argument is replaced in place by the arguments the file holds, recursively.
//! A file that cannot be read is kept as the literal argument, as gcc does. Inside a file,
//! arguments are separated by whitespace; single and double quotes group (the quotes are
//! removed) and a backslash takes the next character literally, inside quotes too.

use thiserror::Error;

/// How deep `@file` references may nest before expansion gives up.
pub const MAX_DEPTH: usize = 16;

/// How many arguments an expansion may produce before it gives up.
pub const MAX_ARGS: usize = 1 << 20;

/// Why response files could not be expanded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RspError {
    /// Response files include each other deeper than [`MAX_DEPTH`] (probably in a cycle).
    #[error(
        "response file {file} nests @file references more than {limit} deep; \
         check it for a file that includes itself"
    )]
    TooDeep {
        /// The file whose expansion went too deep.
        file: String,
        /// The limit.
        limit: usize,
    },
    /// The expansion produced more than [`MAX_ARGS`] arguments.
    #[error(
        "response files expand to more than {limit} arguments; \
         check for files that include each other repeatedly"
    )]
    TooManyArguments {
        /// The limit.
        limit: usize,
    },
}

/// Expands every `@file` argument in `args` in place, recursively. `read` returns a file's
/// contents; a file it cannot read stays as the literal `@file` argument.
pub fn expand_response_files(
    args: &[String],
    read: &dyn Fn(&str) -> std::io::Result<String>,
) -> Result<Vec<String>, RspError> {
    let mut out = Vec::with_capacity(args.len());
    expand_into(args, read, 0, &mut out)?;
    Ok(out)
}

fn expand_into(
    args: &[String],
    read: &dyn Fn(&str) -> std::io::Result<String>,
    depth: usize,
    out: &mut Vec<String>,
) -> Result<(), RspError> {
    for arg in args {
        let contents = arg
            .strip_prefix('@')
            .and_then(|file| read(file).ok().map(|c| (file, c)));
        match contents {
            Some((file, contents)) => {
                if depth >= MAX_DEPTH {
                    return Err(RspError::TooDeep {
                        file: file.to_string(),
                        limit: MAX_DEPTH,
                    });
                }
                expand_into(&split(&contents), read, depth + 1, out)?;
            }
            None => {
                if out.len() >= MAX_ARGS {
                    return Err(RspError::TooManyArguments { limit: MAX_ARGS });
                }
                out.push(arg.clone());
            }
        }
    }
    Ok(())
}

/// Splits response file contents into arguments with GNU `buildargv` rules.
fn split(text: &str) -> Vec<String> {
    let mut args = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_ascii_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return args;
        }
        let mut arg = String::new();
        let mut quote: Option<char> = None;
        while let Some(c) = chars.next() {
            match (c, quote) {
                ('\\', _) => {
                    if let Some(next) = chars.next() {
                        arg.push(next);
                    }
                }
                (c, Some(q)) if c == q => quote = None,
                (c, Some(_)) => arg.push(c),
                ('\'' | '"', None) => quote = Some(c),
                (c, None) if c.is_ascii_whitespace() => break,
                (c, None) => arg.push(c),
            }
        }
        args.push(arg);
    }
}
