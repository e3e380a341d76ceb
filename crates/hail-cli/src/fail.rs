//! How the command fails: one line on stderr, in words or as a JSON object, with a kind a
//! script can match on.
//!
//! Human mode: `hail: error: <what happened>: <why>` (each cause once). With `--json`:
//! `{"error": "<the same text>", "kind": "<kind>"}`. The kinds are [`Kind`]'s.

use std::fmt;

use serde_json::json;

use crate::out::escape;

/// What sort of failure ended the command; its `--json` name is in each variant's doc.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `usage`: the command line is wrong (exit code 2).
    Usage,
    /// `not_found`: a device named on the command line was not found in time.
    NotFound,
    /// `no_answer`: some of the devices asked gave no answer (each is on stdout).
    NoAnswer,
    /// `remote`: the other side answered with an error (a failed call).
    Remote,
    /// `timeout`: what was waited for did not come in time.
    Timeout,
    /// `network`: a socket could not be opened, or sending failed.
    Network,
    /// `failed`: anything else.
    Failed,
}

impl Kind {
    /// The name in `--json` errors.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Usage => "usage",
            Self::NotFound => "not_found",
            Self::NoAnswer => "no_answer",
            Self::Remote => "remote",
            Self::Timeout => "timeout",
            Self::Network => "network",
            Self::Failed => "failed",
        }
    }
}

/// An error with its [`Kind`]; the outermost one in an error's chain decides the kind.
#[derive(Debug)]
pub(crate) struct Fail {
    kind: Kind,
    msg: String,
}

impl fmt::Display for Fail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.msg)
    }
}

impl std::error::Error for Fail {}

/// An error of `kind` saying `msg`.
pub(crate) fn fail(kind: Kind, msg: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Fail {
        kind,
        msg: msg.into(),
    })
}

/// Tags an error (or the error of a `Result`) with a kind, keeping its message and chain.
pub(crate) trait KindExt<T> {
    /// The same result, its error tagged with `kind`.
    fn kind(self, kind: Kind) -> anyhow::Result<T>;
}

impl<T, E> KindExt<T> for Result<T, E>
where
    E: Into<anyhow::Error>,
{
    fn kind(self, kind: Kind) -> anyhow::Result<T> {
        self.map_err(|e| {
            let e: anyhow::Error = e.into();
            let msg = line(&e);
            anyhow::Error::new(Fail { kind, msg })
        })
    }
}

/// The kind of `e`: the first [`Fail`] in its chain, else [`Kind::Failed`].
pub(crate) fn kind_of(e: &anyhow::Error) -> Kind {
    e.chain()
        .find_map(|c| c.downcast_ref::<Fail>().map(|f| f.kind))
        .unwrap_or(Kind::Failed)
}

/// The error's chain on one line, `outer: cause: cause`, without a cause whose text an
/// outer message already includes (library errors often repeat their source in their own
/// message: "invalid local device name: device name is empty" is followed by "device name
/// is empty").
pub(crate) fn line(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in e.chain() {
        let s = cause.to_string();
        if s.is_empty() || parts.iter().any(|p| p.contains(&s)) {
            continue;
        }
        parts.push(s);
    }
    parts.join(": ")
}

/// Prints `e` as the one error line on stderr: escaped words, or a JSON object.
pub(crate) fn report(e: &anyhow::Error, json: bool) {
    report_line(&line(e), kind_of(e), json);
}

/// Prints one error line of `kind` on stderr.
pub(crate) fn report_line(msg: &str, kind: Kind, json: bool) {
    if json {
        eprintln!("{}", json!({ "error": msg, "kind": kind.name() }));
    } else {
        eprintln!("hail: error: {}", escape(msg));
    }
}

#[cfg(test)]
mod tests {
    use anyhow::Context;

    use super::*;

    #[derive(Debug)]
    struct Inner;
    impl fmt::Display for Inner {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("device name is empty")
        }
    }
    impl std::error::Error for Inner {}

    #[derive(Debug)]
    struct Outer(Inner);
    impl fmt::Display for Outer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "invalid local device name: {}", self.0)
        }
    }
    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn a_cause_repeated_by_its_outer_message_is_printed_once() {
        let e = Err::<(), _>(Outer(Inner))
            .context("cannot start device ``")
            .unwrap_err();
        assert_eq!(
            line(&e),
            "cannot start device ``: invalid local device name: device name is empty"
        );
    }

    #[test]
    fn causes_that_add_something_are_kept_in_order() {
        let e = Err::<(), _>(Inner)
            .context("cannot start")
            .context("listen")
            .unwrap_err();
        assert_eq!(line(&e), "listen: cannot start: device name is empty");
    }

    #[test]
    fn the_outermost_kind_wins_and_untagged_errors_are_failed() {
        let e = Err::<(), _>(fail(Kind::Network, "bind"))
            .context("outer")
            .unwrap_err();
        assert_eq!(kind_of(&e), Kind::Network);
        let e = Err::<(), _>(Inner).kind(Kind::NotFound).unwrap_err();
        assert_eq!(kind_of(&e), Kind::NotFound);
        assert_eq!(e.to_string(), "device name is empty");
        assert_eq!(kind_of(&anyhow::anyhow!("x")), Kind::Failed);
    }
}
