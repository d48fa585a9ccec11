//! The external authorizer function: a command that gets the Lambda request event as JSON on
//! stdin and prints the response JSON on stdout, then exits 0.
//!
//! Bounds, so that no command can hang a connection or exhaust memory:
//! - stdout is read as it comes, at most [`MAX_STDOUT_BYTES`]; more is a
//!   [`CommandError::OutputTooLarge`] and the command is killed. Stderr is read too, but only
//!   its first bytes are kept (for the error's first line).
//! - The command runs in its own process group. When it exits, whatever it left running in the
//!   group is killed: a background process still holding stdout open would otherwise keep a
//!   valid answer waiting for end-of-file. On timeout, the whole group is killed, grandchildren
//!   included. (A process that leaves the group, with `setsid`, escapes both.)

use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use super::{validate_response, Denial, Response};
use crate::config::Authorizer;

/// The most a command may print on stdout. A valid response is a few KiB (at most 10 policy
/// documents of 2048 characters).
pub const MAX_STDOUT_BYTES: usize = 1024 * 1024;
/// How much of stderr is kept to find its first line; the rest is read and dropped.
const MAX_STDERR_BYTES: usize = 16 * 1024;
/// How much of a failing command's first stderr line goes into the error.
const MAX_STDERR_CHARS: usize = 300;

/// Why the command gave no answer.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum CommandError {
    #[error("function.command argv is empty")]
    EmptyArgv,
    #[error("cannot serialize the event: {detail}")]
    Event { detail: String },
    #[error("cannot start '{program}': {detail}")]
    Start { program: String, detail: String },
    #[error("waiting for '{program}' failed: {detail}")]
    Wait { program: String, detail: String },
    #[error("reading the output of '{program}' failed: {detail}")]
    Read { program: String, detail: String },
    #[error("'{program}' printed more than {limit} bytes on stdout, where a response is a few KiB: it was stopped")]
    OutputTooLarge { program: String, limit: usize },
    #[error("'{program}' {status}{}", stderr_suffix(.stderr_line.as_deref()))]
    Exit {
        program: String,
        status: ExitStatus,
        /// The first non-empty line of its stderr, cut to 300 characters.
        stderr_line: Option<String>,
    },
}

fn stderr_suffix(line: Option<&str>) -> String {
    match line {
        Some(line) => format!(": {line}"),
        None => " (nothing on stderr)".to_string(),
    }
}

/// Run `argv` with `event` on stdin (then closed); it must print the response JSON on stdout and
/// exit 0 within `timeout`, else it is killed with its process group.
pub(super) async fn run(
    a: &Authorizer,
    argv: &[String],
    event: &Value,
    timeout: Duration,
) -> Result<Response, Denial> {
    let failed = |reason: CommandError| Denial::FunctionFailed {
        authorizer: a.name.clone(),
        reason,
    };
    let Some((program, args)) = argv.split_first() else {
        return Err(failed(CommandError::EmptyArgv));
    };
    let input = serde_json::to_vec(event).map_err(|e| {
        failed(CommandError::Event {
            detail: e.to_string(),
        })
    })?;
    let mut command = tokio::process::Command::new(program);
    command
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    #[cfg(unix)]
    command.process_group(0);
    let mut child = command.spawn().map_err(|e| {
        failed(CommandError::Start {
            program: program.clone(),
            detail: e.to_string(),
        })
    })?;
    // Declared after `child`, so dropped before it: on every way out (answer, error, timeout)
    // the group is killed while the command is not yet reaped.
    let group = ProcessGroup::of(&child);
    let (stdin, stdout, stderr) = (child.stdin.take(), child.stdout.take(), child.stderr.take());

    let write = async move {
        if let Some(mut stdin) = stdin {
            // A command that ignores its input may close stdin early: not an error.
            let _ = stdin.write_all(&input).await;
            let _ = stdin.shutdown().await;
        } // dropped here: the command sees end of input
        Ok(())
    };
    let exited = async {
        let status = child.wait().await;
        // Done: what it left running goes too, closing the pipes it may hold.
        group.kill();
        status.map_err(|e| CommandError::Wait {
            program: program.clone(),
            detail: e.to_string(),
        })
    };
    let collect = async {
        let ((), status, out, err) = tokio::try_join!(
            write,
            exited,
            read_stdout(stdout, program),
            read_stderr(stderr, program)
        )?;
        Ok::<_, CommandError>((status, out, err))
    };
    let (status, stdout, stderr) = match tokio::time::timeout(timeout, collect).await {
        Err(_) => {
            return Err(Denial::Timeout {
                authorizer: a.name.clone(),
                ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
            })
        }
        Ok(Err(reason)) => return Err(failed(reason)),
        Ok(Ok(collected)) => collected,
    };
    if !status.success() {
        let stderr = String::from_utf8_lossy(&stderr);
        let line = stderr.lines().map(str::trim).find(|l| !l.is_empty());
        let stderr_line = line.map(|l| {
            if l.chars().count() > MAX_STDERR_CHARS {
                let cut: String = l.chars().take(MAX_STDERR_CHARS).collect();
                format!("{cut}...")
            } else {
                l.to_string()
            }
        });
        return Err(failed(CommandError::Exit {
            program: program.clone(),
            status,
            stderr_line,
        }));
    }
    validate_response(&stdout).map_err(|reason| Denial::InvalidResponse {
        authorizer: a.name.clone(),
        reason,
    })
}

/// All of stdout, or [`CommandError::OutputTooLarge`] as soon as it passes the limit.
async fn read_stdout(
    stdout: Option<impl AsyncRead + Unpin>,
    program: &str,
) -> Result<Vec<u8>, CommandError> {
    let mut out = Vec::new();
    let Some(stdout) = stdout else {
        return Ok(out);
    };
    let limit = u64::try_from(MAX_STDOUT_BYTES).unwrap_or(u64::MAX);
    // One byte more than allowed tells "exactly the limit" from "more".
    stdout
        .take(limit.saturating_add(1))
        .read_to_end(&mut out)
        .await
        .map_err(|e| CommandError::Read {
            program: program.to_string(),
            detail: e.to_string(),
        })?;
    if out.len() > MAX_STDOUT_BYTES {
        return Err(CommandError::OutputTooLarge {
            program: program.to_string(),
            limit: MAX_STDOUT_BYTES,
        });
    }
    Ok(out)
}

/// The first [`MAX_STDERR_BYTES`] of stderr; the rest is read to its end and dropped, so that a
/// chatty command never blocks on a full pipe.
async fn read_stderr(
    stderr: Option<impl AsyncRead + Unpin>,
    program: &str,
) -> Result<Vec<u8>, CommandError> {
    let mut kept = Vec::new();
    let Some(mut stderr) = stderr else {
        return Ok(kept);
    };
    let read_failed = |e: std::io::Error| CommandError::Read {
        program: program.to_string(),
        detail: e.to_string(),
    };
    let limit = u64::try_from(MAX_STDERR_BYTES).unwrap_or(u64::MAX);
    (&mut stderr)
        .take(limit)
        .read_to_end(&mut kept)
        .await
        .map_err(read_failed)?;
    tokio::io::copy(&mut stderr, &mut tokio::io::sink())
        .await
        .map_err(read_failed)?;
    Ok(kept)
}

/// The command's process group (its id is the command's pid), killed once.
struct ProcessGroup {
    id: Option<u32>,
    killed: AtomicBool,
}

impl ProcessGroup {
    fn of(child: &tokio::process::Child) -> ProcessGroup {
        ProcessGroup {
            id: child.id(),
            killed: AtomicBool::new(false),
        }
    }

    /// SIGKILL to every process in the group; nothing if already done.
    fn kill(&self) {
        if self.killed.swap(true, Ordering::SeqCst) {
            return;
        }
        #[cfg(unix)]
        {
            use rustix::process::{kill_process_group, Pid, Signal};
            // Never 0 or 1: kill(0) is our own group and kill(-1) is every process.
            let pid = self
                .id
                .and_then(|id| i32::try_from(id).ok())
                .filter(|&id| id > 1)
                .and_then(Pid::from_raw);
            if let Some(pid) = pid {
                // ESRCH: everyone in it has gone already.
                if let Err(e) = kill_process_group(pid, Signal::KILL) {
                    if e != rustix::io::Errno::SRCH {
                        log::warn!(
                            "cannot kill the authorizer command's process group {pid:?}: {e}"
                        );
                    }
                }
            }
        }
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::{Path, PathBuf};

    use serde_json::json;

    use super::*;
    use crate::config::Function;
    use crate::custom_auth::test_support::{authorizer, input_for, response_json};
    use crate::custom_auth::{invoke, lambda_event, EventInput, ResponseError};

    const EXAMPLE_AUTHORIZER: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../scripts/example_authorizer.py"
    );
    const T: Duration = Duration::from_secs(5);

    fn command(script: &str) -> Authorizer {
        authorizer(Function::Command {
            argv: vec!["sh".into(), "-c".into(), script.into()],
        })
    }

    fn valid_response_text() -> String {
        String::from_utf8(response_json(json!({}))).expect("utf8")
    }

    /// A file name in the temporary folder, unique to this call.
    fn temp_file(what: &str) -> PathBuf {
        std::env::temp_dir().join(format!("custom-auth-{what}-{}", uuid::Uuid::new_v4()))
    }

    /// The pid a script wrote to `file`.
    fn read_pid(file: &Path) -> String {
        let pid = std::fs::read_to_string(file)
            .unwrap_or_else(|e| panic!("the script wrote no pid to {}: {e}", file.display()));
        let _ = std::fs::remove_file(file);
        pid.trim().to_string()
    }

    /// Waits (a bounded number of times) for `pid` to be gone or a zombie waiting to be reaped.
    async fn assert_gone(pid: &str, what: &str) {
        for _ in 0..100 {
            let gone = match std::fs::read_to_string(format!("/proc/{pid}/status")) {
                Err(_) => true,
                Ok(s) => s
                    .lines()
                    .any(|l| l.starts_with("State:") && l.contains('Z')),
            };
            if gone {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("{what} (pid {pid}) is still running");
    }

    #[tokio::test]
    async fn invoke_command_valid_response() {
        let a = command(&format!("cat >/dev/null; echo '{}'", valid_response_text()));
        let ev = lambda_event(&input_for("u", Some(b"p"), None));
        let r = invoke(&a, &BTreeMap::new(), &ev, T)
            .await
            .expect("command answers");
        assert!(r.is_authenticated);
        assert_eq!(r.principal_id, "device42");
    }

    #[tokio::test]
    async fn invoke_command_receives_the_event_on_stdin() {
        // Echo the event's client id back as the principal id.
        let a = command(
            "read -r line; id=$(printf '%s' \"$line\" | sed 's/.*\"clientId\":\"\\([a-z0-9-]*\\)\".*/\\1/' | tr -d -); \
             printf '{\"isAuthenticated\":true,\"principalId\":\"%s\",\"policyDocuments\":[],\"disconnectAfterInSeconds\":300,\"refreshAfterInSeconds\":300}' \"$id\"",
        );
        let ev = lambda_event(&input_for("u", None, None));
        let r = invoke(&a, &BTreeMap::new(), &ev, T)
            .await
            .expect("command answers");
        assert_eq!(r.principal_id, "client1");
    }

    #[tokio::test]
    async fn invoke_command_timeout_kills_its_process_group() {
        let pids = temp_file("timeout");
        // The command and a grandchild, both waiting far longer than the timeout.
        let a = command(&format!(
            "sleep 60 & echo \"$$ $!\" > '{}'; wait",
            pids.display()
        ));
        let ev = lambda_event(&input_for("u", None, None));
        let err = invoke(&a, &BTreeMap::new(), &ev, Duration::from_millis(1000))
            .await
            .expect_err("timeout");
        assert_eq!(
            err,
            Denial::Timeout {
                authorizer: "test-authorizer".into(),
                ms: 1000
            }
        );
        assert_eq!(
            err.to_string(),
            "authorizer 'test-authorizer' function did not answer within 1000 ms"
        );
        let both = read_pid(&pids);
        let (command_pid, grandchild_pid) = both.split_once(' ').expect("two pids");
        assert_gone(command_pid, "the command").await;
        assert_gone(grandchild_pid, "the command's background child").await;
    }

    #[tokio::test]
    async fn a_background_child_holding_stdout_does_not_delay_a_valid_answer() {
        let pid_file = temp_file("grandchild");
        // The grandchild inherits stdout and keeps it open for a minute after the answer.
        let a = command(&format!(
            "cat >/dev/null; sleep 60 & echo $! > '{}'; echo '{}'",
            pid_file.display(),
            valid_response_text()
        ));
        let ev = lambda_event(&input_for("u", None, None));
        // Waiting for the grandchild would end in Denial::Timeout.
        let r = invoke(&a, &BTreeMap::new(), &ev, T)
            .await
            .expect("the answer counts once the command has exited");
        assert!(r.is_authenticated);
        assert_eq!(r.principal_id, "device42");
        assert_gone(&read_pid(&pid_file), "the background child").await;
    }

    /// Peak resident memory of this test process, in KiB.
    fn peak_rss_kib() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM in /proc/self/status")
    }

    #[tokio::test]
    async fn a_command_printing_200_mib_is_stopped_at_1_mib() {
        let a = command("head -c 209715200 /dev/zero");
        let ev = lambda_event(&input_for("u", None, None));
        // Start the peak-memory count afresh (Linux: "5" resets VmHWM to the current RSS).
        std::fs::write("/proc/self/clear_refs", "5").expect("reset the peak RSS");
        let before = peak_rss_kib();
        let err = invoke(&a, &BTreeMap::new(), &ev, T)
            .await
            .expect_err("too much output");
        let grown_kib = peak_rss_kib().saturating_sub(before);
        assert_eq!(
            err,
            Denial::FunctionFailed {
                authorizer: "test-authorizer".into(),
                reason: CommandError::OutputTooLarge {
                    program: "sh".into(),
                    limit: MAX_STDOUT_BYTES
                }
            }
        );
        assert_eq!(
            err.to_string(),
            "authorizer 'test-authorizer' function failed: 'sh' printed more than 1048576 bytes on stdout, where a response is a few KiB: it was stopped"
        );
        // Buffering the output would have grown the peak by 200 MiB.
        assert!(
            grown_kib < 64 * 1024,
            "peak RSS grew by {grown_kib} KiB while reading the output"
        );
    }

    #[tokio::test]
    async fn exactly_1_mib_of_output_is_read_whole() {
        // 1 MiB of spaces, then nothing: not too large, and not JSON either.
        let a = command("head -c 1048576 /dev/zero | tr '\\0' ' '");
        let ev = lambda_event(&input_for("u", None, None));
        let err = invoke(&a, &BTreeMap::new(), &ev, T)
            .await
            .expect_err("blank output");
        assert!(
            matches!(
                &err,
                Denial::InvalidResponse {
                    reason: ResponseError::NotJson { .. },
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn invoke_command_failure_and_garbage() {
        let ev = lambda_event(&input_for("u", None, None));
        let failing = command("echo 'starting' >&2; echo 'boom: no config' >&2; exit 1");
        // Only the first line of stderr is kept.
        let err = invoke(&failing, &BTreeMap::new(), &ev, T)
            .await
            .expect_err("exit 1");
        assert!(
            matches!(&err, Denial::FunctionFailed { reason: CommandError::Exit { program, status, stderr_line }, .. }
                if program == "sh" && status.code() == Some(1) && stderr_line.as_deref() == Some("starting")),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "authorizer 'test-authorizer' function failed: 'sh' exit status: 1: starting"
        );
        let silent = command("exit 3");
        let err = invoke(&silent, &BTreeMap::new(), &ev, T)
            .await
            .expect_err("exit 3");
        assert_eq!(
            err.to_string(),
            "authorizer 'test-authorizer' function failed: 'sh' exit status: 3 (nothing on stderr)"
        );
        let long = command("printf 'x%.0s' $(seq 1 400) >&2; exit 2");
        let err = invoke(&long, &BTreeMap::new(), &ev, T)
            .await
            .expect_err("exit 2");
        assert_eq!(
            err.to_string(),
            format!(
                "authorizer 'test-authorizer' function failed: 'sh' exit status: 2: {}...",
                "x".repeat(300)
            )
        );
        let garbage = command("echo 'Traceback? no, just garbage'");
        let err = invoke(&garbage, &BTreeMap::new(), &ev, T)
            .await
            .expect_err("garbage");
        assert!(
            matches!(
                &err,
                Denial::InvalidResponse {
                    reason: ResponseError::NotJson { .. },
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().starts_with(
            "authorizer 'test-authorizer' function returned an invalid response: not JSON"
        ));
        let partial = command("echo '{\"isAuthenticated\":true}'");
        assert_eq!(
            invoke(&partial, &BTreeMap::new(), &ev, T).await,
            Err(Denial::InvalidResponse {
                authorizer: "test-authorizer".into(),
                reason: ResponseError::Missing {
                    field: "principalId"
                }
            })
        );
    }

    #[tokio::test]
    async fn invoke_command_that_cannot_start() {
        let ev = lambda_event(&input_for("u", None, None));
        let empty = authorizer(Function::Command { argv: vec![] });
        let err = invoke(&empty, &BTreeMap::new(), &ev, T)
            .await
            .expect_err("empty argv");
        assert_eq!(
            err,
            Denial::FunctionFailed {
                authorizer: "test-authorizer".into(),
                reason: CommandError::EmptyArgv
            }
        );
        assert_eq!(
            err.to_string(),
            "authorizer 'test-authorizer' function failed: function.command argv is empty"
        );
        let missing = authorizer(Function::Command {
            argv: vec!["/nonexistent/authorizer".into()],
        });
        let err = invoke(&missing, &BTreeMap::new(), &ev, T)
            .await
            .expect_err("missing");
        assert!(
            matches!(&err, Denial::FunctionFailed { reason: CommandError::Start { program, .. }, .. } if program == "/nonexistent/authorizer"),
            "{err:?}"
        );
        assert!(
            err.to_string().starts_with(
                "authorizer 'test-authorizer' function failed: cannot start '/nonexistent/authorizer': "
            ),
            "{err}"
        );
    }

    // ---- scripts/example_authorizer.py ----

    /// These tests run the example authorizer with python3; without it they fail, saying so.
    fn require_python3() {
        let found = std::process::Command::new("python3")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(
            found,
            "python3 is needed to run scripts/example_authorizer.py: install python3 (it must be on PATH)"
        );
    }

    fn example_authorizer() -> Authorizer {
        let argv = [
            "env",
            "-u",
            "EXAMPLE_AUTH_USERNAME",
            "-u",
            "EXAMPLE_AUTH_PASSWORD",
            "AWS_REGION=eu-west-1",
            "EXAMPLE_AUTH_ACCOUNT_ID=111122223333",
            "python3",
            EXAMPLE_AUTHORIZER,
        ];
        authorizer(Function::Command {
            argv: argv.iter().map(|s| s.to_string()).collect(),
        })
    }

    #[tokio::test]
    async fn example_authorizer_allows_password_and_signed_token() {
        require_python3();
        let a = example_authorizer();
        let username = "demo-user?x-amz-customauthorizer-name=test-authorizer";
        let ev = lambda_event(&input_for(username, Some(b"demo-password"), None));
        let r = invoke(&a, &BTreeMap::new(), &ev, T)
            .await
            .expect("script answers");
        assert!(r.is_authenticated);
        assert!(r.principal_id.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert!(!r.policy_documents.is_empty());
        let policy: Value = serde_json::from_str(&r.policy_documents[0]).expect("policy JSON");
        let statements = policy["Statement"].as_array().expect("statements");
        assert!(statements.iter().any(|s| s["Action"] == "iot:Connect"
            && s["Resource"] == "arn:aws:iot:eu-west-1:111122223333:client/${iot:ClientId}"
            && s["Effect"] == "Allow"));
        assert!(
            r.policy_documents[0].contains("iot:Publish")
                && r.policy_documents[0].contains("iot:Subscribe")
        );

        let ev = lambda_event(&input_for("anyone", None, Some("allow")));
        let r = invoke(&a, &BTreeMap::new(), &ev, T)
            .await
            .expect("script answers");
        assert!(r.is_authenticated, "verified token 'allow'");
    }

    #[tokio::test]
    async fn example_authorizer_denies() {
        require_python3();
        let a = example_authorizer();
        for (username, password, token, verified) in [
            ("demo-user", Some(&b"wrong"[..]), None, false),
            ("other-user", Some(&b"demo-password"[..]), None, false),
            ("anyone", None, Some("allow"), false), // token not verified
            ("anyone", None, Some("deny"), true),
        ] {
            let ev = lambda_event(&EventInput {
                signature_verified: verified,
                ..input_for(username, password, token)
            });
            let r = invoke(&a, &BTreeMap::new(), &ev, T)
                .await
                .expect("a deny is a valid response");
            assert!(!r.is_authenticated, "{username} {token:?}");
        }
    }
}
