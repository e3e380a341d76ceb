//! A child `hail` process, killed on drop, and reading its output with timeouts.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// The longest any single wait in these tests may take: 20 s (generous: it only stops
/// hangs).
pub(crate) const WAIT: Duration = Duration::from_secs(20);

/// The `hail` command with its environment cleared of `HAIL_PASSPHRASE` and `RUST_LOG`.
pub(crate) fn hail() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hail"));
    cmd.env_remove("HAIL_PASSPHRASE").env_remove("RUST_LOG");
    cmd
}

/// A unique group on loopback for one test: a port from the process id and a counter.
pub(crate) fn group() -> String {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let port = 20_000 + (std::process::id() as u16 % 2_000) * 16 + n % 16;
    format!("239.255.72.95:{port}")
}

/// A running process, killed (and reaped) on drop; its stdout lines arrive on a channel.
pub(crate) struct Proc {
    child: Child,
    lines: mpsc::Receiver<String>,
    stderr: mpsc::Receiver<String>,
}

impl Proc {
    pub(crate) fn spawn(cmd: &mut Command) -> Self {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start hail");
        let (tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().expect("stdout");
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let (etx, stderr) = mpsc::channel();
        let mut err = child.stderr.take().expect("stderr");
        thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            let _ = etx.send(s);
        });
        Self {
            child,
            lines,
            stderr,
        }
    }

    /// The next stdout line that contains `needle`, at most [`WAIT`]; panics otherwise.
    pub(crate) fn expect_line(&self, needle: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(e) => panic!("no line with {needle:?} in {WAIT:?}: {e}"),
            }
        }
    }

    /// Waits until stdout had a line containing each of `needles`, in any order, at most
    /// [`WAIT`]; panics otherwise.
    pub(crate) fn expect_lines(&self, needles: &[&str]) {
        let deadline = Instant::now() + WAIT;
        let mut missing: Vec<&str> = needles.to_vec();
        while !missing.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => missing.retain(|n| !line.contains(n)),
                Err(e) => panic!("no lines with {missing:?} in {WAIT:?}: {e}"),
            }
        }
    }

    /// Waits for the exit, at most [`WAIT`]; returns the status, stdout and stderr.
    pub(crate) fn wait(mut self) -> (ExitStatus, String, String) {
        let deadline = Instant::now() + WAIT;
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                break s;
            }
            assert!(Instant::now() < deadline, "hail did not exit in {WAIT:?}");
            thread::sleep(Duration::from_millis(10));
        };
        let out: Vec<String> = self.lines.try_iter().collect();
        let err = self.stderr.recv_timeout(WAIT).unwrap_or_default();
        (status, out.join("\n"), err)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `hail args...` to completion, at most [`WAIT`].
pub(crate) fn run(args: &[&str]) -> (ExitStatus, String, String) {
    Proc::spawn(hail().args(args)).wait()
}
