//! Output: human lines or JSON lines, and a progress note on stderr while waiting.

use std::io::IsTerminal;

use serde_json::{Value, json};

/// A payload as text when it is UTF-8, else as `0x` and hex digits.
pub(crate) fn text(payload: &[u8]) -> String {
    match std::str::from_utf8(payload) {
        Ok(s) => s.to_owned(),
        Err(_) => {
            let mut s = String::with_capacity(2 + payload.len() * 2);
            s.push_str("0x");
            for b in payload {
                s.push_str(&format!("{b:02x}"));
            }
            s
        }
    }
}

/// A payload as a JSON object field: `{"text": ..}` when UTF-8, else `{"hex": ..}`.
pub(crate) fn payload_json(payload: &[u8]) -> Value {
    match std::str::from_utf8(payload) {
        Ok(s) => json!({ "text": s }),
        Err(_) => json!({ "hex": text(payload).trim_start_matches("0x") }),
    }
}

/// Writes one line to stdout; a closed stdout ends the process with exit code 0 (the
/// reader has all it wanted), any other write error with exit code 1.
pub(crate) fn say(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout
        .write_fmt(args)
        .and_then(|()| stdout.write_all(b"\n"))
    {
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

/// Prints `msg` on stderr when stderr is a terminal: what the command is waiting for.
pub(crate) fn progress(msg: &str) {
    if std::io::stderr().is_terminal() {
        eprintln!("{msg}…");
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
}
