//! `hail demo` and usage errors.

use crate::proc::run;

#[test]
fn demo_passes_every_step_and_exits_zero() {
    let (status, out, err) = run(&["demo"]);
    assert!(status.success(), "demo failed: {out}\n{err}");
    for step in [
        "discovery",
        "messages",
        "ask",
        "rpc call",
        "sealed multicast",
    ] {
        assert!(out.contains(step), "no {step:?} step in:\n{out}");
    }
    assert!(out.contains("all 6 steps passed with 3 devices"), "{out}");
    assert!(out.contains("switch: switch here, all well"), "{out}");
}

#[test]
fn demo_json_reports_each_step_and_the_summary() {
    let (status, out, err) = run(&["demo", "--devices", "4", "--json"]);
    assert!(status.success(), "demo failed: {out}\n{err}");
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(lines.len(), 7, "6 steps and a summary: {out}");
    assert!(lines[..6].iter().all(|l| l["ok"] == true), "{out}");
    assert_eq!(lines[6]["summary"], "ok");
    assert_eq!(lines[6]["devices"], 4);
}

#[test]
fn bad_arguments_are_usage_errors_with_exit_code_2() {
    for args in [
        &["frobnicate"][..],
        &["demo", "--devices", "1"],
        &["send", "lamp"],
        &["call", "lamp", "echo", "{not json"],
        &["ask", "lamp", "q", "--timeout", "soon"],
        // An interface that does not exist (never a real one: the command would run).
        &["--interface", "no-such-if0", "scout", "--once"],
    ] {
        let (status, out, err) = run(args);
        assert_eq!(status.code(), Some(2), "{args:?}: {out}\n{err}");
        assert!(err.contains("error:"), "{args:?}: {err}");
    }
}
