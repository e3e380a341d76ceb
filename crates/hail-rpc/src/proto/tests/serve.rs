//! Unit tests of [`Serve`]: the handler limit, the queue and its bytes, cancels.

use super::*;
use crate::proto::{test_builder as builder, test_config as config};

fn call(r: u32) -> Job {
    Job::Call {
        retcode: RetCode(r),
        method: "m".into(),
        args: Bytes::new(),
    }
}

/// Finishes the call running under `r` now (its current run).
fn finish(s: &mut Serve<&str>, r: u32) -> (bool, Option<Job>) {
    let run = s.run_of(RetCode(r)).unwrap_or(0);
    s.finish_call(RetCode(r), run)
}

fn note() -> Job {
    Job::Notify {
        method: "n".into(),
        args: Bytes::new(),
    }
}

#[test]
fn handlers_are_limited_then_queued_then_busy() {
    let mut s = Serve::<&str>::new(&config());
    assert_eq!(s.admit(call(1)), Admit::Run(call(1)));
    assert_eq!(s.admit(note()), Admit::Run(note()));
    assert_eq!(s.admit(call(2)), Admit::Queued);
    assert_eq!(s.admit(call(2)), Admit::Duplicate(RetCode(2)));
    assert_eq!(s.admit(call(1)), Admit::Duplicate(RetCode(1)));
    assert_eq!(s.admit(note()), Admit::Queued);
    assert_eq!(s.admit(call(3)), Admit::Busy(RetCode(3)));
    assert_eq!(s.admit(note()), Admit::Dropped);
    assert_eq!((s.running(), s.queued()), (2, 2));
    // Slots pass to the queue in order.
    assert_eq!(finish(&mut s, 1), (true, Some(call(2))));
    assert_eq!(s.finish_notification(), Some(note()));
    assert_eq!(finish(&mut s, 2), (true, None));
    assert_eq!(s.finish_notification(), None);
    assert_eq!((s.running(), s.queued()), (0, 0));
}

#[test]
fn queued_arguments_are_bounded_in_bytes() {
    let mut s = Serve::<&str>::new(
        &builder()
            .max_queued_requests(100)
            .max_queued_bytes(8)
            .build(),
    );
    let big = |r: u32, n: usize| Job::Call {
        retcode: RetCode(r),
        method: "m".into(),
        args: Bytes::from(vec![0; n]),
    };
    assert!(
        matches!(s.admit(big(1, 100)), Admit::Run(_)),
        "running jobs are not queued"
    );
    assert!(matches!(s.admit(big(2, 100)), Admit::Run(_)));
    assert_eq!(s.admit(big(3, 5)), Admit::Queued);
    assert_eq!(s.admit(big(4, 4)), Admit::Busy(RetCode(4)));
    assert_eq!(s.admit(big(5, 3)), Admit::Queued);
    assert_eq!(s.queued_bytes(), 8);
    assert_eq!(s.cancel(RetCode(3)), (Cancelled::Dequeued, None));
    assert_eq!(s.queued_bytes(), 3);
    assert!(matches!(finish(&mut s, 1), (true, Some(_))));
    assert_eq!(s.queued_bytes(), 0);
    s.admit(big(6, 2));
    s.connection_lost();
    assert_eq!(s.queued_bytes(), 0);
}

#[test]
fn cancel_aborts_running_and_dequeues_waiting() {
    let mut s = Serve::<&str>::new(&config());
    s.admit(call(1));
    s.admit(call(2));
    let (one, two) = (s.run_of(RetCode(1)).unwrap(), s.run_of(RetCode(2)).unwrap());
    assert_ne!(one, two);
    assert_eq!(s.attach(RetCode(1), one, "h1"), None);
    s.admit(call(3));
    s.admit(call(4));
    assert_eq!(s.cancel(RetCode(4)), (Cancelled::Dequeued, None));
    assert_eq!(s.queued(), 1);
    assert_eq!(
        s.cancel(RetCode(1)),
        (Cancelled::Running(Some("h1")), Some(call(3)))
    );
    // The aborted handler's late finish sends nothing and frees nothing twice.
    assert_eq!(s.finish_call(RetCode(1), one), (false, None));
    assert_eq!(s.running(), 2);
    assert_eq!(s.cancel(RetCode(1)), (Cancelled::Unknown, None));
    // Cancelled before its handle was attached: the handle comes back to abort.
    assert_eq!(s.cancel(RetCode(2)), (Cancelled::Running(None), None));
    assert_eq!(s.attach(RetCode(2), two, "h2"), Some("h2"));
    let three = s.run_of(RetCode(3)).unwrap();
    s.attach(RetCode(3), three, "h3");
    assert_eq!(s.connection_lost(), ["h3"]);
    assert_eq!((s.running(), s.queued()), (0, 0));
}

/// A retcode reused after a cancel runs under a new run number: the cancelled run's late
/// attach and finish act for nothing, the new run's for itself.
#[test]
fn a_reused_retcode_runs_under_a_new_number() {
    let mut s = Serve::<&str>::new(&config());
    s.admit(call(1));
    let old = s.run_of(RetCode(1)).unwrap();
    assert_eq!(s.cancel(RetCode(1)), (Cancelled::Running(None), None));
    assert_eq!(s.admit(call(1)), Admit::Run(call(1)));
    let new = s.run_of(RetCode(1)).unwrap();
    assert_ne!(old, new);
    assert_eq!(s.attach(RetCode(1), old, "old"), Some("old"));
    assert_eq!(s.finish_call(RetCode(1), old), (false, None));
    assert_eq!(s.running(), 1, "the old run's finish freed no slot");
    assert_eq!(s.attach(RetCode(1), new, "new"), None);
    assert_eq!(s.finish_call(RetCode(1), new), (true, None));
    assert_eq!(s.running(), 0);
}
