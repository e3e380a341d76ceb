//! Running commands: the workspace root, cargo, step headers and timings, timeouts.

use std::ffi::OsStr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// The workspace root: the parent of this crate's manifest directory.
pub(crate) fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask/ lies inside the workspace root")
        .to_path_buf()
}

/// A `cargo` command run from the workspace root, through the `CARGO` variable that
/// `cargo run` (and so `cargo xtask`) sets, so the same toolchain runs every step.
pub(crate) fn cargo<I, S>(args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(args).current_dir(root());
    cmd
}

/// The command as a user would type it: variables it sets, then `cargo args...`.
pub(crate) fn describe(cmd: &Command) -> String {
    let mut parts: Vec<String> = cmd
        .get_envs()
        .filter_map(|(k, v)| Some(format!("{}={}", k.to_string_lossy(), v?.to_string_lossy())))
        .collect();
    let program = Path::new(cmd.get_program());
    // `CARGO` is a full path into the toolchain; `cargo` says the same and reads better.
    let name = program
        .file_name()
        .unwrap_or(program.as_os_str())
        .to_string_lossy();
    parts.push(name.into_owned());
    parts.extend(cmd.get_args().map(|a| a.to_string_lossy().into_owned()));
    parts.join(" ")
}

/// Runs `cmd` with inherited stdio; an unsuccessful exit is an error naming the command.
pub(crate) fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("cannot start `{}`", describe(cmd)))?;
    check(cmd, status)
}

/// Runs `cmd` and returns its stdout (stderr is inherited); fails on an unsuccessful exit.
pub(crate) fn stdout(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("cannot start `{}`", describe(cmd)))?;
    check(cmd, out.status)?;
    String::from_utf8(out.stdout).with_context(|| format!("`{}` printed non-UTF-8", describe(cmd)))
}

/// The executable cargo built for the target `name`, from the JSON messages of
/// `cargo build --message-format=json...`.
pub(crate) fn executable(messages: &str, name: &str) -> anyhow::Result<PathBuf> {
    messages
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["reason"] == "compiler-artifact" && v["target"]["name"] == name)
        .find_map(|v| v["executable"].as_str().map(PathBuf::from))
        .with_context(|| format!("cargo built no `{name}` executable"))
}

/// Runs `cmd` (stdin closed) and kills it, with every process it started, after `limit`.
pub(crate) fn run_with_timeout(cmd: &mut Command, limit: Duration) -> anyhow::Result<()> {
    // Its own process group, so a timeout ends the grandchildren too (`cargo run` and the
    // program it runs).
    let mut child = cmd
        .stdin(Stdio::null())
        .process_group(0)
        .spawn()
        .with_context(|| format!("cannot start `{}`", describe(cmd)))?;
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            return check(cmd, status);
        }
        if start.elapsed() >= limit {
            let group = format!("-{}", child.id());
            // `kill` of the whole group; `Child::kill` alone as a fallback.
            let killed = Command::new("kill")
                .args(["-KILL", "--", &group])
                .status()
                .is_ok_and(|s| s.success());
            if !killed {
                child.kill().ok();
            }
            child.wait().ok();
            bail!(
                "`{}` still running after {} s: killed",
                describe(cmd),
                limit.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn check(cmd: &Command, status: ExitStatus) -> anyhow::Result<()> {
    if status.success() {
        Ok(())
    } else {
        bail!("`{}` failed: {status}", describe(cmd))
    }
}

/// A sequence of named steps with a header before each, their times, and a summary.
#[derive(Debug)]
pub(crate) struct Steps {
    title: &'static str,
    start: Instant,
    done: Vec<(String, Duration)>,
}

impl Steps {
    pub(crate) fn new(title: &'static str) -> Self {
        Self {
            title,
            start: Instant::now(),
            done: Vec::new(),
        }
    }

    /// Runs one step; on failure prints the summary so far and returns the error, naming
    /// the step.
    pub(crate) fn run(
        &mut self,
        name: impl Into<String>,
        step: impl FnOnce() -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let name = name.into();
        println!(
            "\n==> [{} +{}] {name}",
            self.title,
            secs(self.start.elapsed())
        );
        let start = Instant::now();
        let result = step();
        let took = start.elapsed();
        match result {
            Ok(()) => {
                println!("<== ok: {name} ({})", secs(took));
                self.done.push((name, took));
                Ok(())
            }
            Err(e) => {
                self.summary();
                println!("FAILED: {name} ({})", secs(took));
                Err(e.context(format!("step failed: {name}")))
            }
        }
    }

    /// Prints every finished step with its time, and the total.
    pub(crate) fn summary(&self) {
        println!("\n{} summary:", self.title);
        for (name, took) in &self.done {
            println!("  ok  {:>7}  {name}", secs(*took));
        }
        println!("  total {}", secs(self.start.elapsed()));
    }
}

/// A duration as seconds with one decimal: `12.3s`.
pub(crate) fn secs(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}
