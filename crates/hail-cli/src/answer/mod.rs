//! `hail listen --answer-cmd`: questions answered by a shell command, within budgets a peer
//! cannot exceed.
//!
//! Every question would otherwise start a shell, and any peer may ask as often as it likes,
//! so the commands are bounded per device:
//!
//! - at most `jobs` commands run at once (`--answer-jobs`, default [`DEFAULT_JOBS`]);
//! - at most `queue` further questions wait for a slot (`--answer-queue`, default
//!   [`DEFAULT_QUEUE`]); beyond that a question is answered at once with a `busy` error. A
//!   waiting question gives up (`busy`) after `deadline × (1 + ⌈queue / jobs⌉)`, as long
//!   as a full queue takes with every command running to its deadline (lighter askers may
//!   overtake it meanwhile, see below);
//! - slots and queue places go to the askers that asked least lately ([`fair`]), and with
//!   `jobs` of at least 2 one slot is kept for a *light* asker (no other question in
//!   hand, none refused lately, fewer questions lately than every asker running a
//!   command): peers asking back
//!   to back, however many, cannot keep a device that asks now and then waiting for any
//!   command but its own. The cost: askers that are not light get at most `jobs - 1`
//!   commands at once; with `jobs == 1` no slot is kept and a light asker may wait for
//!   the one running command;
//! - a command runs for at most the deadline (`--answer-timeout`, default
//!   [`DEFAULT_TIMEOUT`]); then it is killed with its whole process group (it runs in a
//!   group of its own), so what it started dies with it. Whatever it left running in its
//!   group when it ends is killed too;
//! - its standard output (the answer) and standard error are read up to [`OUTPUT_LIMIT`]
//!   each; the rest is read and discarded, and the listener says how much.

mod fair;

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use self::fair::{Admit, Fair, Slot};

/// Default number of answer commands running at once, per device: 4.
pub(crate) const DEFAULT_JOBS: usize = 4;
/// Default number of questions waiting for a free slot, per device: 16.
pub(crate) const DEFAULT_QUEUE: usize = 16;
/// Default deadline of one answer command: 10 s (as `--answer-timeout` spells it).
pub(crate) const DEFAULT_TIMEOUT: &str = "10s";
/// Bytes kept of a command's standard output (the answer) and, separately, of its
/// standard error: 64 KiB; the rest is discarded.
pub(crate) const OUTPUT_LIMIT: usize = 64 * 1024;

/// How one question went, for the listener to print.
#[derive(Debug)]
pub(crate) enum Note {
    /// Refused at once: every slot and every queue place was taken.
    Busy,
    /// The command ran past the deadline and was killed with its process group.
    Killed(Duration),
    /// The command printed more than [`OUTPUT_LIMIT`]; this many bytes were discarded
    /// (standard output, standard error).
    Truncated(u64, u64),
}

/// The answer command with its budgets; shared by every question of a device.
#[derive(Debug)]
pub(crate) struct AnswerCmd {
    cmd: String,
    slots: Arc<Fair>,
    jobs: usize,
    queue: usize,
    timeout: Duration,
}

impl AnswerCmd {
    /// `cmd` run by `sh -c`, `jobs` at once, `queue` waiting, each for at most `timeout`.
    pub(crate) fn new(cmd: String, jobs: usize, queue: usize, timeout: Duration) -> Self {
        Self {
            cmd,
            slots: Fair::new(jobs, queue),
            jobs,
            queue,
            timeout,
        }
    }

    /// Answers `question` from `from`: the command's standard output without its last
    /// newline, or an error (non-zero exit, busy, killed at the deadline). `note` hears
    /// about refusals, kills and discarded output.
    pub(crate) async fn answer(
        &self,
        from: &str,
        question: &[u8],
        note: impl Fn(Note),
    ) -> Result<Bytes, String> {
        let slot = match self.slots.admit(from) {
            Admit::Now(slot) => slot,
            Admit::Busy => {
                note(Note::Busy);
                return Err(self.busy());
            }
            Admit::Wait(place) => {
                let patience = self.queue_wait();
                match tokio::time::timeout(patience, place).await {
                    Ok(Ok(slot)) => slot,
                    Ok(Err(_)) => {
                        note(Note::Busy);
                        return Err(self.busy());
                    }
                    Err(_) => {
                        note(Note::Busy);
                        return Err(format!(
                            "busy: no free slot for the answer command within {patience:?}"
                        ));
                    }
                }
            }
        };
        let out = run(&self.cmd, from, question, self.timeout, slot).await;
        match out {
            Run::Done {
                status,
                stdout,
                stderr,
            } => {
                if stdout.discarded > 0 || stderr.discarded > 0 {
                    note(Note::Truncated(stdout.discarded, stderr.discarded));
                }
                if status.success() {
                    let mut out = stdout.kept;
                    if out.last() == Some(&b'\n') {
                        out.pop();
                    }
                    Ok(Bytes::from(out))
                } else {
                    let err = String::from_utf8_lossy(&stderr.kept);
                    Err(format!(
                        "answer command failed ({status}): {}",
                        err.lines().next().unwrap_or("")
                    ))
                }
            }
            Run::Killed => {
                note(Note::Killed(self.timeout));
                Err(format!(
                    "answer command took longer than {:?}; killed with its process group",
                    self.timeout
                ))
            }
            Run::Failed(e) => Err(e),
        }
    }

    /// How long a queued question waits for a slot: as long as a full queue could take,
    /// each command running to its deadline (a plain deadline: lighter askers may overtake).
    fn queue_wait(&self) -> Duration {
        let rounds = u32::try_from(1 + self.queue.div_ceil(self.jobs)).unwrap_or(u32::MAX);
        self.timeout.saturating_mul(rounds)
    }

    fn busy(&self) -> String {
        format!(
            "busy: {} answer commands running and {} questions waiting; ask again later",
            self.jobs, self.queue
        )
    }
}

/// What a run of the command gave.
enum Run {
    /// It ended (its output pipes closed and it exited) before the deadline.
    Done {
        status: std::process::ExitStatus,
        stdout: Bounded,
        stderr: Bounded,
    },
    /// The deadline passed; its process group was killed.
    Killed,
    /// It could not be started or waited for.
    Failed(String),
}

/// Output read with a bound: what was kept, and how many bytes were read past it.
#[derive(Debug, Default)]
struct Bounded {
    kept: Vec<u8>,
    discarded: u64,
}

/// Reads `r` to its end, keeping the first [`OUTPUT_LIMIT`] bytes. Reading goes on past
/// the limit (a command blocked on a full pipe would never end); those bytes are counted.
async fn read_bounded(mut r: impl AsyncRead + Unpin) -> Bounded {
    let mut out = Bounded::default();
    let mut buf = [0u8; 8 * 1024];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => return out,
            Ok(n) => {
                let keep = n.min(OUTPUT_LIMIT - out.kept.len());
                out.kept.extend_from_slice(&buf[..keep]);
                out.discarded += (n - keep) as u64;
            }
        }
    }
}

/// A running command and its slot. Dropped, it kills the command's process group:
/// whatever way a run ends (done, past the deadline, or the question given up), nothing
/// it started outlives it. The slot is given back once the command's process is reaped:
/// a question given up mid-command (its future dropped) hands both to a task that waits
/// for the process, so the next command never starts beside a dying one.
struct Running {
    child: Option<tokio::process::Child>,
    group: Pid,
    slot: Option<Slot>,
}

impl Drop for Running {
    fn drop(&mut self) {
        // ESRCH (the group is already empty) is the usual case after a clean exit.
        let _ = killpg(self.group, Signal::SIGKILL);
        let (Some(mut child), Some(slot)) = (self.child.take(), self.slot.take()) else {
            return;
        };
        if matches!(child.try_wait(), Ok(Some(_)) | Err(_)) {
            return; // reaped (or beyond reach): the slot goes now
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        // Killed above, it ends at once: the bound only guards against a process stuck in
        // the kernel.
        runtime.spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(1), child.wait()).await;
            drop(slot);
        });
    }
}

async fn run(cmd: &str, from: &str, question: &[u8], timeout: Duration, slot: Slot) -> Run {
    let child = match tokio::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .env("HAIL_FROM", from)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // A group of its own (pgid = its pid), so it can be killed with all it started.
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
    {
        Ok(child) => child,
        Err(e) => return Run::Failed(format!("cannot run the answer command: {e}")),
    };
    let Some(pid) = child.id() else {
        return Run::Failed("the answer command ended before it could be watched".into());
    };
    let pid = i32::try_from(pid).expect("a process id fits in an i32");
    let mut running = Running {
        child: Some(child),
        group: Pid::from_raw(pid),
        slot: Some(slot),
    };
    let child = running.child.as_mut().expect("set just above");
    let stdin = child.stdin.take();
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let feed = async move {
        if let Some(mut stdin) = stdin {
            // A command that does not read its input closes the pipe early: not an error.
            let _ = stdin.write_all(question).await;
        }
    };
    let out = async move {
        match stdout {
            Some(s) => read_bounded(s).await,
            None => Bounded::default(),
        }
    };
    let err = async move {
        match stderr {
            Some(s) => read_bounded(s).await,
            None => Bounded::default(),
        }
    };
    let all = async { tokio::join!(feed, out, err, child.wait()) };
    match tokio::time::timeout(timeout, all).await {
        Ok(((), stdout, stderr, Ok(status))) => Run::Done {
            status,
            stdout,
            stderr,
        },
        Ok((_, _, _, Err(e))) => Run::Failed(format!("answer command: {e}")),
        Err(_) => {
            // Killed before its slot is given back, and waited for (SIGKILL cannot be
            // ignored; the bound only guards against a process stuck in the kernel), so
            // the next command never overlaps a dying one.
            let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
            let _ = tokio::time::timeout(Duration::from_secs(1), child.wait()).await;
            Run::Killed
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEN_S: Duration = Duration::from_secs(10);

    #[test]
    fn the_default_deadline_is_ten_seconds() {
        assert_eq!(crate::parse_duration(DEFAULT_TIMEOUT), Ok(TEN_S));
    }

    fn cmd(c: &str, jobs: usize, queue: usize, timeout: Duration) -> AnswerCmd {
        AnswerCmd::new(c.into(), jobs, queue, timeout)
    }

    #[tokio::test]
    async fn the_answer_is_the_output_without_its_last_newline() {
        let a = cmd(
            "printf '%s from %s\\n' \"$(cat)\" \"$HAIL_FROM\"",
            1,
            0,
            TEN_S,
        );
        let r = a.answer("panel", b"state?", |_| {}).await;
        assert_eq!(r.as_deref(), Ok(&b"state? from panel"[..]));
    }

    #[tokio::test]
    async fn output_past_the_limit_is_discarded_and_said() {
        let a = cmd("head -c 100000 /dev/zero", 1, 0, TEN_S);
        let notes = std::sync::Mutex::new(Vec::new());
        let r = a
            .answer("x", b"", |n| notes.lock().unwrap().push(format!("{n:?}")))
            .await;
        assert_eq!(r.map(|b| b.len()), Ok(OUTPUT_LIMIT));
        let discarded = 100_000 - OUTPUT_LIMIT as u64;
        assert_eq!(
            *notes.lock().unwrap(),
            vec![format!("Truncated({discarded}, 0)")]
        );
    }

    #[test]
    fn a_queued_question_waits_as_long_as_the_queue_ahead_could_take() {
        assert_eq!(cmd("x", 4, 16, TEN_S).queue_wait(), 5 * TEN_S);
        assert_eq!(cmd("x", 2, 3, TEN_S).queue_wait(), 3 * TEN_S);
        assert_eq!(cmd("x", 1, 0, TEN_S).queue_wait(), TEN_S);
    }

    #[tokio::test]
    async fn a_full_device_answers_busy_at_once() {
        // No slot and no queue: the second question is refused while the first runs.
        let a = Arc::new(cmd("sleep 5", 1, 0, Duration::from_secs(2)));
        let first = tokio::spawn({
            let a = Arc::clone(&a);
            async move { a.answer("x", b"", |_| {}).await }
        });
        while a.slots.running() == 0 {
            tokio::task::yield_now().await;
        }
        let r = a.answer("y", b"", |_| {}).await;
        assert!(r.as_ref().is_err_and(|e| e.starts_with("busy")), "{r:?}");
        first.abort();
    }

    #[tokio::test]
    async fn a_question_given_up_frees_its_slot_only_once_its_command_is_gone() {
        // A question given up mid-command (its link closed, its call cancelled) gave its
        // slot back at once, while its command was still being killed and reaped: the
        // next one could start beside it (five commands of four, once, under misbehave's
        // `answer`). The slot is free only once the process is gone.
        let pid_file = std::env::temp_dir().join(format!("hail-answer-{}", std::process::id()));
        let _ = std::fs::remove_file(&pid_file);
        let script = format!("echo $$ > {}; exec sleep 5", pid_file.display());
        let a = Arc::new(cmd(&script, 1, 0, TEN_S));
        let first = tokio::spawn({
            let a = Arc::clone(&a);
            async move { a.answer("x", b"", |_| {}).await }
        });
        // Bounded: the command writes its id within a moment of starting.
        let mut pid = None;
        for _ in 0..1_000 {
            pid = std::fs::read_to_string(&pid_file)
                .ok()
                .and_then(|s| s.trim().parse::<u32>().ok());
            if pid.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let _ = std::fs::remove_file(&pid_file);
        let proc = std::path::PathBuf::from(format!("/proc/{}", pid.expect("the command started")));
        first.abort();
        assert!(first.await.is_err_and(|e| e.is_cancelled()));
        // Bounded: the kill and the reaping take a moment.
        for _ in 0..1_000 {
            if a.slots.running() == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(a.slots.running(), 0, "the slot is given back");
        assert!(
            !proc.exists(),
            "the slot was given back before its process was reaped"
        );
    }
}
