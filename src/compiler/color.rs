//! Coloured diagnostics: meshcc always captures them in colour and strips the colour on replay
//! when the direct compiler would not have coloured them, so one cache entry serves terminals
//! and logs alike (the ccache approach, `shared/research/wrapper.md` §2.6).

use crate::compiler::args::ColorChoice;

/// The flag meshcc adds to a captured compile; gcc and clang both accept it.
pub const FORCE_COLOR_FLAG: &str = "-fdiagnostics-color=always";

/// Whether the direct compiler would colour its diagnostics for this caller.
///
/// `stderr_is_tty` is the wrapper's stderr; `term` and `gcc_colors` the values of `TERM` and
/// `GCC_COLORS` (an empty `GCC_COLORS` switches gcc's colours off).
pub fn wanted(
    choice: ColorChoice,
    stderr_is_tty: bool,
    term: Option<&str>,
    gcc_colors: Option<&str>,
) -> bool {
    match choice {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => {
            stderr_is_tty
                && term.is_some_and(|t| !t.is_empty() && t != "dumb")
                && gcc_colors != Some("")
        }
    }
}

/// Removes ANSI CSI sequences (`ESC [ … final byte`), which is all gcc and clang emit for colour.
pub fn strip(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        if text[i] == 0x1b && text.get(i + 1) == Some(&b'[') {
            let mut j = i + 2;
            // Parameter and intermediate bytes, then one final byte in 0x40..=0x7e.
            while j < text.len() && (0x20..=0x3f).contains(&text[j]) {
                j += 1;
            }
            if j < text.len() && (0x40..=0x7e).contains(&text[j]) {
                i = j + 1;
                continue;
            }
        }
        out.push(text[i]);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_gcc_colour_codes() {
        let coloured = b"\x1b[01m\x1b[Kx.c:\x1b[m\x1b[K In function \xe2\x80\x98\x1b[01m\x1b[Kmain\x1b[m\x1b[K\xe2\x80\x99:\n\x1b[01;35m\x1b[Kwarning: \x1b[m\x1b[Kunused";
        assert_eq!(
            strip(coloured),
            "x.c: In function \u{2018}main\u{2019}:\nwarning: unused".as_bytes()
        );
    }

    #[test]
    fn leaves_other_bytes_alone() {
        for text in [&b"plain"[..], b"\x1b", b"\x1b[", b"\x1b[01", b"a\x1bb", b""] {
            assert_eq!(strip(text), text);
        }
    }

    #[test]
    fn wanted_follows_flags_then_terminal() {
        use ColorChoice::*;
        assert!(wanted(Always, false, None, None));
        assert!(!wanted(Never, true, Some("xterm"), None));
        assert!(wanted(Auto, true, Some("xterm"), None));
        assert!(!wanted(Auto, false, Some("xterm"), None));
        assert!(!wanted(Auto, true, Some("dumb"), None));
        assert!(!wanted(Auto, true, None, None));
        assert!(!wanted(Auto, true, Some("xterm"), Some("")));
        assert!(wanted(Auto, true, Some("xterm"), Some("error=01;31")));
    }
}
