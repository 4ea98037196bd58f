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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Error, ErrorKind};

    fn files(name: &str) -> std::io::Result<String> {
        match name {
            "simple" => Ok("-c  foo.c\n\t-O2\r\n".into()),
            "quotes" => Ok(r#"'a b' "c d" e'f g'h "it's" 'say "hi"' '' """#.into()),
            "escapes" => Ok(r"a\ b c\\d \'e\' 'x\'y' tail\".into()),
            "nested" => Ok("-DA @simple -DB".into()),
            "missing-inside" => Ok("@nope x".into()),
            "self" => Ok("@self".into()),
            "empty" => Ok("  \n ".into()),
            "denied" => Err(Error::new(ErrorKind::PermissionDenied, "no")),
            _ => Err(Error::new(ErrorKind::NotFound, "no")),
        }
    }

    fn expand(args: &[&str]) -> Result<Vec<String>, RspError> {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        expand_response_files(&args, &files)
    }

    fn ok(args: &[&str]) -> Vec<String> {
        match expand(args) {
            Ok(v) => v,
            Err(e) => panic!("{args:?}: {e}"),
        }
    }

    #[test]
    fn expands_in_place_splitting_on_whitespace() {
        assert_eq!(
            ok(&["-x", "@simple", "-y"]),
            ["-x", "-c", "foo.c", "-O2", "-y"]
        );
        assert_eq!(ok(&["@empty"]), Vec::<String>::new());
        assert_eq!(ok(&["plain", "-@simple"]), ["plain", "-@simple"]);
    }

    #[test]
    fn quotes_group_and_are_removed() {
        assert_eq!(
            ok(&["@quotes"]),
            ["a b", "c d", "ef gh", "it's", "say \"hi\"", "", ""]
        );
    }

    #[test]
    fn backslash_escapes_the_next_character() {
        assert_eq!(ok(&["@escapes"]), ["a b", r"c\d", "'e'", "x'y", "tail"]);
    }

    #[test]
    fn nested_files_expand_recursively() {
        assert_eq!(ok(&["@nested"]), ["-DA", "-c", "foo.c", "-O2", "-DB"]);
    }

    #[test]
    fn unreadable_files_stay_literal() {
        assert_eq!(ok(&["@nope", "@denied", "@"]), ["@nope", "@denied", "@"]);
        assert_eq!(ok(&["@missing-inside"]), ["@nope", "x"]);
    }

    #[test]
    fn cycles_stop_at_the_depth_limit() {
        let err = expand(&["@self"]);
        assert_eq!(
            err,
            Err(RspError::TooDeep {
                file: "self".into(),
                limit: MAX_DEPTH
            })
        );
        if let Err(e) = err {
            let msg = e.to_string();
            assert!(
                msg.contains("self") && msg.contains("includes itself"),
                "{msg}"
            );
        }
    }

    #[test]
    fn huge_expansions_are_refused() {
        let many = |name: &str| -> std::io::Result<String> {
            Ok(match name {
                "a" => "@b ".repeat(2000),
                _ => "x ".repeat(1000),
            })
        };
        let err = expand_response_files(&["@a".to_string()], &many);
        assert_eq!(err, Err(RspError::TooManyArguments { limit: MAX_ARGS }));
        if let Err(e) = err {
            assert!(e.to_string().contains("more than"));
        }
    }
}
