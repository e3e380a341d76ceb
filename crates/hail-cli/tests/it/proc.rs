//! A child process (`hail`, or the Python Comms peer), killed on drop, and reading its
//! output with timeouts.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::Mutex;
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
    let port = 20_000 + (std::process::id() as u16 % 1_000) * 32 + n % 32;
    format!("239.255.72.95:{port}")
}

/// `hail --interface 127.0.0.1 --group G <args>`.
pub(crate) fn on(group: &str, args: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = ["--interface", "127.0.0.1", "--group", group]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    v.extend(args.iter().map(|s| (*s).to_owned()));
    v
}

/// A running process, killed (and reaped) on drop; its stdout lines arrive on a channel.
pub(crate) struct Proc {
    child: Child,
    stdin: Mutex<Option<ChildStdin>>,
    lines: mpsc::Receiver<String>,
    stderr: mpsc::Receiver<String>,
}

impl Proc {
    /// Starts `cmd` with stdin closed.
    pub(crate) fn spawn(cmd: &mut Command) -> Self {
        Self::start(cmd.stdin(Stdio::null()))
    }

    /// Starts `cmd` with stdin a pipe, written by [`send_line`](Self::send_line).
    pub(crate) fn spawn_with_stdin(cmd: &mut Command) -> Self {
        Self::start(cmd.stdin(Stdio::piped()))
    }

    fn start(cmd: &mut Command) -> Self {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the process");
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
            stdin: Mutex::new(child.stdin.take()),
            child,
            lines,
            stderr,
        }
    }

    /// The process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Writes `line` and a newline to stdin.
    pub(crate) fn send_line(&self, line: &str) {
        let mut stdin = self.stdin.lock().unwrap();
        let stdin = stdin.as_mut().expect("stdin is a pipe and open");
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .and_then(|()| stdin.flush())
            .expect("write to stdin");
    }

    /// Closes stdin (the end of input).
    pub(crate) fn close_stdin(&self) {
        self.stdin.lock().unwrap().take();
    }

    /// Sends `signal` (a name `kill` knows: `HUP`, `TERM`, ...) to the process.
    pub(crate) fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} failed");
    }

    /// The next stdout line that contains `needle`, at most [`WAIT`]; panics otherwise.
    pub(crate) fn expect_line(&self, needle: &str) -> String {
        let deadline = Instant::now() + WAIT;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(line) => seen.push(line),
                Err(e) => panic!("no line with {needle:?} in {WAIT:?} ({e}); saw {seen:#?}"),
            }
        }
    }

    /// Waits until stdout had a line containing each of `needles`, in any order, at most
    /// [`WAIT`]; returns every line read meanwhile. Panics otherwise.
    pub(crate) fn expect_lines(&self, needles: &[&str]) -> Vec<String> {
        let deadline = Instant::now() + WAIT;
        let mut missing: Vec<&str> = needles.to_vec();
        let mut seen = Vec::new();
        while !missing.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    missing.retain(|n| !line.contains(n));
                    seen.push(line);
                }
                Err(e) => panic!("no lines with {missing:?} in {WAIT:?} ({e}); saw {seen:#?}"),
            }
        }
        seen
    }

    /// Waits for the exit, at most [`WAIT`]; returns the status, all of stdout not read
    /// yet and stderr.
    pub(crate) fn wait(mut self) -> (ExitStatus, String, String) {
        self.close_stdin();
        let deadline = Instant::now() + WAIT;
        // Up to the end of stdout, then of stderr: the reader threads see their ends when
        // the process (and whatever it started with them) has closed them, which it does
        // only by exiting.
        let mut out = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => out.push(line),
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    panic!("the process did not close stdout (exit) in {WAIT:?}")
                }
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let err = self
            .stderr
            .recv_timeout(left)
            .unwrap_or_else(|e| panic!("the process did not close stderr (exit) in {WAIT:?}: {e}"));
        // Both pipes are closed: the process has exited or is exiting, so this is at
        // once, unless it closed them and lives on (a bug the test then reports rather
        // than hangs on: std's `Child` has no wait with a timeout, so it is polled).
        let mut status = None;
        eventually("the process closed its output but did not exit", || {
            status = self.child.try_wait().expect("wait for the process");
            status.is_some()
        });
        let status = status.expect("checked by `eventually`");
        (status, out.join("\n"), err)
    }
}

/// Waits until `done()` holds, checking every 5 ms, for at most [`WAIT`]; panics with
/// `what` otherwise. Only for what has no event to wait on: the state of real processes
/// as `/proc` shows it (which threads wait in a write, which children run). Nothing is
/// asserted about how long it takes.
pub(crate) fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {WAIT:?}");
        // Real time: real processes, seen through `/proc`, which has no notification;
        // a sampling tick, not a timing assumption.
        thread::sleep(Duration::from_millis(5));
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

/// Runs `hail --interface 127.0.0.1 --group G args...` to completion.
pub(crate) fn run_on(group: &str, args: &[&str]) -> (ExitStatus, String, String) {
    let args = on(group, args);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run(&args)
}

/// `hail listen --name NAME` on `group`, once it said it listens.
pub(crate) fn listen(group: &str, name: &str, extra: &[&str]) -> Proc {
    let mut args = on(group, &["listen", "--name", name]);
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    let p = Proc::spawn(hail().args(&args));
    p.expect_line(&format!("listening as {name}"));
    p
}

/// `hail mcast recv --count 1 --timeout T` on `group`, sealed with `passphrase`, once it
/// is receiving.
pub(crate) fn mcast_receiver(group: &str, passphrase: &str, timeout: &str) -> Proc {
    let rx = Proc::spawn(hail().args(on(
        group,
        &[
            "--passphrase",
            passphrase,
            "mcast",
            "recv",
            "--count",
            "1",
            "--timeout",
            timeout,
        ],
    )));
    rx.expect_line("receiving on");
    rx
}

/// Asserts that `s` holds no byte a terminal would act on (every control character but
/// the newlines between lines) and none of the invisible characters `hail` escapes.
pub(crate) fn assert_inert(what: &str, s: &str) {
    let bad: Vec<char> = s
        .chars()
        .filter(|&c| {
            (c.is_control() && c != '\n')
                || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}'
                    | '\u{2060}'..='\u{2069}' | '\u{feff}')
        })
        .collect();
    assert!(bad.is_empty(), "{what} holds raw {bad:?}:\n{s:?}");
}
