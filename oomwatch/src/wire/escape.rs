//! One rule for every line a person reads (tail, status, alerts, the exec
//! hook's environment, journald's MESSAGE): characters that a terminal
//! would interpret are shown escaped, never passed through. Process and
//! cgroup names are chosen by users; a victim named `\e[2J\e[31mX\nFAKE`
//! must not clear the operator's screen or forge a line.
//!
//! As `systemctl` and `ls -b` do: C0 and C1 control characters, DEL, and the
//! Unicode controls that reorder or hide text (bidi overrides, zero-width
//! joiners) become `\n`, `\t`, `\r` or `\xNN` / `\u{NNNN}`. Backslashes
//! stay as they are, so systemd's own `\x2d` escapes in unit names read as
//! systemd prints them. JSON output and metric labels keep the raw text
//! (their formats escape it already).

use std::borrow::Cow;

/// `s` with every character a terminal would act on written as an escape.
pub fn printable(s: &str) -> Cow<'_, str> {
    if !s.chars().any(needs_escape) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x100 && needs_escape(c) => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if needs_escape(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(c,
            // Bidirectional overrides and isolates: reorder what follows.
            '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200e}' | '\u{200f}' | '\u{061c}'
            // Zero-width and invisible separators: hide or join text.
            | '\u{200b}'..='\u{200d}' | '\u{2028}' | '\u{2029}' | '\u{2060}' | '\u{feff}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_controls_are_shown_not_interpreted() {
        assert_eq!(printable("\u{1b}[2J\u{1b}[31mX\nFAKE"), "\\x1b[2J\\x1b[31mX\\nFAKE");
        assert_eq!(printable("a\tb\rc\u{7f}\u{9b}"), "a\\tb\\rc\\x7f\\x9b");
        assert_eq!(printable("\u{1b}]0;owned\u{7}"), "\\x1b]0;owned\\x07", "OSC window title");
        assert_eq!(printable("evil\u{202e}gnp.exe"), "evil\\u{202e}gnp.exe");
        assert_eq!(printable("zero\u{200b}width"), "zero\\u{200b}width");
    }

    #[test]
    fn ordinary_names_are_borrowed_unchanged() {
        for s in ["/system.slice/systemd-fsck@dev-disk-by\\x2duuid.service", "python3", "/kubepods/pod1f2e/ü-日本", "\\xff"] {
            assert!(matches!(printable(s), Cow::Borrowed(_)), "{s}");
        }
    }

    #[test]
    fn the_result_has_no_control_character_left() {
        let all: String = (0u32..0x3000).filter_map(char::from_u32).collect();
        assert!(!printable(&all).chars().any(needs_escape));
    }
}
