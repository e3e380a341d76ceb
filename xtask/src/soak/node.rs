//! The lines a node prints (one JSON object each) and its RSS.

use std::collections::BTreeMap;

use serde_json::Value;

/// One line of a node, parsed.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum NodeLine {
    Start {
        pid: u32,
    },
    Send {
        to: String,
        seq: u64,
        ok: bool,
        err: Option<String>,
        unknown: bool,
    },
    Recv {
        from: String,
        inc: u64,
        seq: u64,
    },
    Bad {
        from: String,
    },
    Phase(String),
    Stats(Box<Stats>),
}

/// A node's counters (cumulative over its incarnation).
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct Stats {
    pub(super) is_final: bool,
    pub(super) asks: u64,
    pub(super) ask_answered: u64,
    pub(super) ask_wrong: u64,
    pub(super) rpcs: u64,
    pub(super) rpc_ok: u64,
    pub(super) rpc_wrong: u64,
    pub(super) dropped_events: u64,
    pub(super) peers: u64,
    /// `ask:ERROR` and `rpc:ERROR` (and `msg:ERROR`) failure counts.
    pub(super) failures: BTreeMap<String, u64>,
}

impl Stats {
    pub(super) fn failed(&self, prefix: &str) -> u64 {
        self.failures
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(_, v)| v)
            .sum()
    }
}

pub(super) fn parse_line(line: &str) -> Option<NodeLine> {
    let v: Value = serde_json::from_str(line).ok()?;
    let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
    let n = |k: &str| v.get(k).and_then(Value::as_u64);
    match v.get("t")?.as_str()? {
        "start" => Some(NodeLine::Start {
            pid: u32::try_from(n("pid")?).ok()?,
        }),
        "send" => Some(NodeLine::Send {
            to: s("to")?,
            seq: n("seq")?,
            ok: v.get("ok")?.as_bool()?,
            err: s("err"),
            unknown: v.get("unknown").and_then(Value::as_bool).unwrap_or(false),
        }),
        "recv" => Some(NodeLine::Recv {
            from: s("from")?,
            inc: n("inc")?,
            seq: n("seq")?,
        }),
        "bad" => Some(NodeLine::Bad { from: s("from")? }),
        "phase" => Some(NodeLine::Phase(s("p")?)),
        "stats" => {
            let failures = v
                .get("failures")
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .filter_map(|(k, c)| Some((k.clone(), c.as_u64()?)))
                        .collect()
                })
                .unwrap_or_default();
            Some(NodeLine::Stats(Box::new(Stats {
                is_final: v.get("final").and_then(Value::as_bool).unwrap_or(false),
                asks: n("asks").unwrap_or(0),
                ask_answered: n("ask_answered").unwrap_or(0),
                ask_wrong: n("ask_wrong").unwrap_or(0),
                rpcs: n("rpcs").unwrap_or(0),
                rpc_ok: n("rpc_ok").unwrap_or(0),
                rpc_wrong: n("rpc_wrong").unwrap_or(0),
                dropped_events: n("dropped_events").unwrap_or(0),
                peers: n("peers").unwrap_or(0),
                failures,
            })))
        }
        _ => None,
    }
}

/// VmRSS of a process in KiB, from `/proc/<pid>/status`.
pub(super) fn parse_vmrss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

pub(super) fn rss_kib(pid: u32) -> Option<u64> {
    parse_vmrss(&std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_node_lines() {
        assert_eq!(
            parse_line(r#"{"t":"send","to":"node-1","seq":4,"ok":true}"#),
            Some(NodeLine::Send {
                to: "node-1".into(),
                seq: 4,
                ok: true,
                err: None,
                unknown: false
            })
        );
        assert_eq!(
            parse_line(r#"{"t":"recv","from":"node-2","inc":3,"seq":9}"#),
            Some(NodeLine::Recv {
                from: "node-2".into(),
                inc: 3,
                seq: 9
            })
        );
        let s = parse_line(
            r#"{"t":"stats","final":true,"asks":5,"ask_answered":3,"failures":{"ask:unreachable":2,"msg:x":1}}"#,
        );
        let Some(NodeLine::Stats(s)) = s else {
            panic!("stats: {s:?}")
        };
        assert!(s.is_final);
        assert_eq!((s.asks, s.ask_answered, s.failed("ask:")), (5, 3, 2));
        assert_eq!(parse_line("not json"), None);
        assert_eq!(parse_line(r#"{"t":"send","to":"x"}"#), None);
    }

    #[test]
    fn parses_vmrss() {
        let status = "Name:\tsoak_node\nVmPeak:\t  9000 kB\nVmRSS:\t    8120 kB\nThreads:\t3\n";
        assert_eq!(parse_vmrss(status), Some(8120));
        assert_eq!(parse_vmrss("Name: x\n"), None);
    }
}
