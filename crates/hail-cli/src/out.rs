//! Output: human lines or JSON lines, strings from the network made harmless for a terminal,
//! and a spinner on stderr while waiting.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{Value, json};

/// True for the characters a terminal would act on or hide instead of showing: control
/// characters (C0 with ESC and CR, DEL, C1 with CSI and OSC), bidirectional controls
/// (which reorder what follows) and zero-width or invisible formatting characters (which
/// make two different names look the same).
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{00ad}'                      // soft hyphen
            | '\u{034f}'                    // combining grapheme joiner
            | '\u{061c}'                    // Arabic letter mark
            | '\u{115f}' | '\u{1160}'       // Hangul fillers
            | '\u{180e}'                    // Mongolian vowel separator
            | '\u{200b}'..='\u{200f}'       // zero-width space, (non-)joiner, LRM, RLM
            | '\u{2028}' | '\u{2029}'       // line and paragraph separators
            | '\u{202a}'..='\u{202e}'       // bidi embeddings and overrides
            | '\u{2060}'..='\u{206f}'       // word joiner, invisible operators, bidi isolates
            | '\u{3164}'                    // Hangul filler
            | '\u{fe00}'..='\u{fe0f}'       // variation selectors
            | '\u{feff}'                    // zero-width no-break space (BOM)
            | '\u{ffa0}'                    // halfwidth Hangul filler
            | '\u{fff9}'..='\u{fffb}'       // interlinear annotation controls
            | '\u{1d173}'..='\u{1d17a}'     // musical formatting controls
            | '\u{e0000}'..='\u{e007f}'     // tag characters
            | '\u{e0100}'..='\u{e01ef}' // variation selectors supplement
        )
}

/// `s` with every character a terminal would act on or hide shown as a visible escape:
/// `\t`, `\n`, `\r`, and `\u{..}` for the rest (ESC is `\u{1b}`, a right-to-left override
/// `\u{202e}`). Every string that came from the network goes through this before it is
/// printed in human mode, so a peer cannot move the cursor, rewrite a line, set the
/// window title or disguise a name. JSON output needs no such step: serde_json escapes
/// control characters, and JSON readers are programs.
pub(crate) fn escape(s: &str) -> Cow<'_, str> {
    if !s.chars().any(needs_escape) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c if needs_escape(c) => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// A payload for a human: its text, escaped ([`escape`]), when it is UTF-8, else `0x` and
/// hex digits.
pub(crate) fn text(payload: &[u8]) -> String {
    match std::str::from_utf8(payload) {
        Ok(s) => escape(s).into_owned(),
        Err(_) => hex(payload),
    }
}

/// `0x` and the bytes in hex.
fn hex(payload: &[u8]) -> String {
    let mut s = String::with_capacity(2 + payload.len() * 2);
    s.push_str("0x");
    for b in payload {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// A payload as a JSON object field: `{"text": ..}` when UTF-8, else `{"hex": ..}`.
pub(crate) fn payload_json(payload: &[u8]) -> Value {
    match std::str::from_utf8(payload) {
        Ok(s) => json!({ "text": s }),
        Err(_) => json!({ "hex": hex(payload).trim_start_matches("0x") }),
    }
}

/// Writes one line to stdout; a closed stdout ends the process with exit code 0 (the
/// reader has all it wanted), any other write error with exit code 1.
pub(crate) fn say(args: std::fmt::Arguments<'_>) {
    write_line(&args);
}

/// [`say`] of a line already made (written as it shows, piece by piece).
pub(crate) fn write_line(line: &dyn std::fmt::Display) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = writeln!(stdout, "{line}").and_then(|()| stdout.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("hail: error: cannot write to stdout: {e}");
        std::process::exit(1);
    }
}

/// Prints one JSON object as a line.
pub(crate) fn json_line(v: &Value) {
    say!("{v}");
}

/// What the command is waiting for, shown on stderr as a spinner with the elapsed time
/// while it lasts, and only when stderr is a terminal: piped or redirected, nothing is
/// written. Cleared when dropped.
#[derive(Debug)]
pub(crate) struct Waiting(Option<ProgressBar>);

/// Starts a [`Waiting`] spinner saying `msg`.
pub(crate) fn waiting(msg: impl Into<Cow<'static, str>>) -> Waiting {
    if !std::io::stderr().is_terminal() {
        return Waiting(None);
    }
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
            .expect("a valid indicatif template"),
    );
    bar.set_message(msg);
    bar.enable_steady_tick(Duration::from_millis(100));
    Waiting(Some(bar))
}

impl Waiting {
    /// Runs `f` (which prints) with the spinner hidden, so its line is not torn.
    pub(crate) fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        match &self.0 {
            Some(bar) => bar.suspend(f),
            None => f(),
        }
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        if let Some(bar) = self.0.take() {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_print_as_text_or_hex() {
        assert_eq!(text(b"hi"), "hi");
        assert_eq!(text(&[0xff, 0x01]), "0xff01");
        assert_eq!(payload_json(b"hi"), json!({"text": "hi"}));
        assert_eq!(payload_json(&[0xff, 0x01]), json!({"hex": "ff01"}));
    }

    #[test]
    fn terminal_sequences_are_shown_not_obeyed() {
        // CSI (cursor up, erase line), a carriage return that would rewrite the line, and
        // an OSC that would set the window title.
        let hostile = "lamp\u{1b}[1A\u{1b}[2K\rjoined admin\u{1b}]0;pwned\u{7}";
        let shown = escape(hostile);
        assert_eq!(
            shown,
            "lamp\\u{1b}[1A\\u{1b}[2K\\rjoined admin\\u{1b}]0;pwned\\u{7}"
        );
        assert!(!shown.chars().any(char::is_control), "{shown}");
        // C1 controls (the one-byte CSI and OSC) and DEL too.
        assert_eq!(escape("a\u{9b}b\u{9d}c\u{7f}"), "a\\u{9b}b\\u{9d}c\\u{7f}");
        assert_eq!(escape("tab\there\nnext"), "tab\\there\\nnext");
    }

    #[test]
    fn invisible_and_reordering_characters_are_shown() {
        // Four "A"s that look alike: a zero-width space, a word joiner, a right-to-left
        // override and a BOM make them different names.
        assert_eq!(escape("A\u{200b}"), "A\\u{200b}");
        assert_eq!(escape("A\u{2060}"), "A\\u{2060}");
        assert_eq!(escape("\u{202e}A"), "\\u{202e}A");
        assert_eq!(escape("\u{feff}A"), "\\u{feff}A");
        assert_eq!(escape("x\u{2066}y\u{2069}"), "x\\u{2066}y\\u{2069}");
        assert_eq!(escape("tag\u{e0041}"), "tag\\u{e0041}");
    }

    #[test]
    fn ordinary_text_is_left_alone() {
        for s in [
            "lamp",
            "salle 3 · étage 2",
            "温度計",
            "a\\u{1b} stays as typed",
            "🙂",
        ] {
            assert!(matches!(escape(s), Cow::Borrowed(_)), "{s}");
        }
    }
}
