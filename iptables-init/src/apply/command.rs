//! Running the external tools (`iptables-restore`, `nft`, `ip`, …) behind a small trait, so the
//! apply logic can be tested with a scripted fake and run inside another network namespace.

use std::io::Write as _;
use std::process::{Command, Stdio};

use super::ApplyError;

/// What a finished command reported.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Output {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

/// Runs one program to completion.
pub trait Runner {
    /// Runs `program args…`, feeding `stdin` if given. A missing program is an error; a non-zero
    /// exit is not (it is reported in `Output::success`).
    fn run(&self, program: &str, args: &[&str], stdin: Option<&str>) -> Result<Output, ApplyError>;

    /// Whether `program` can be found.
    fn exists(&self, program: &str) -> bool;
}

/// Runs commands on this host, optionally inside the network namespace at `netns` (via
/// `nsenter --net=`).
#[derive(Clone, Debug, Default)]
pub struct SystemRunner {
    pub netns: Option<String>,
}

impl Runner for SystemRunner {
    fn run(&self, program: &str, args: &[&str], stdin: Option<&str>) -> Result<Output, ApplyError> {
        if !self.exists(program) {
            return Err(ApplyError::MissingBinary {
                program: program.to_owned(),
            });
        }
        let mut command = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net={ns}")).arg(program);
                c
            }
            None => Command::new(program),
        };
        command.args(args);
        let spawn_error = |source| ApplyError::Spawn {
            program: program.to_owned(),
            source,
        };
        let mut child = command
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(spawn_error)?;
        if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(text.as_bytes()).map_err(spawn_error)?;
        }
        let out = child.wait_with_output().map_err(spawn_error)?;
        Ok(Output {
            success: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }

    fn exists(&self, program: &str) -> bool {
        on_path(program) && (self.netns.is_none() || on_path("nsenter"))
    }
}

fn on_path(program: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).any(|dir| dir.join(program).is_file())
}

/// Runs a command that must succeed, returning its stdout.
pub fn run_ok(
    runner: &dyn Runner,
    program: &str,
    args: &[&str],
    stdin: Option<&str>,
) -> Result<String, ApplyError> {
    let out = runner.run(program, args, stdin)?;
    if out.success {
        Ok(out.stdout)
    } else {
        Err(ApplyError::Failed {
            command: std::iter::once(program)
                .chain(args.iter().copied())
                .collect::<Vec<_>>()
                .join(" "),
            stderr: one_line(&out.stderr),
        })
    }
}

/// A multi-line tool message folded into one line.
pub fn one_line(text: &str) -> String {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    if lines.is_empty() {
        "no error output".into()
    } else {
        lines.join("; ")
    }
}
