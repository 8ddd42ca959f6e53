//! The real `triaged` binary, driven as client test suites drive nsqd: flags
//! (double- and single-dash), the `TCP: listening on` / `HTTP: listening on`
//! lines on stderr, `--version`, SIGTERM, config errors, `--log-format=json`
//! and `TRIAGE_*` variables. Self-contained and synchronous: a child process
//! guard, a stderr reader thread and a tiny HTTP/1.1 client live here.

#![allow(clippy::unwrap_used)]

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Longest any single wait may take before it counts as a failure.
const DEADLINE: Duration = Duration::from_secs(15);
/// How soon after SIGTERM the broker must have exited.
const PROMPT_EXIT: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------

/// `triaged` with a clean environment: no `TRIAGE_*` variable of the test
/// runner's leaks into the child.
fn triaged() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_triaged"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("TRIAGE_") {
            command.env_remove(&name);
        }
    }
    command.env_remove("RUST_LOG");
    command.stdin(Stdio::null());
    command
}

/// Lines of a child's pipe, read by a thread so waits can have deadlines.
fn line_reader(pipe: impl Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

/// Removes ANSI colour sequences (`ESC [ ... letter`).
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The human-readable text of a log line, text or JSON.
fn log_message(line: &str) -> String {
    match serde_json::from_str::<Value>(line) {
        Ok(Value::Object(obj)) => obj
            .get("fields")
            .and_then(|f| f.get("message"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        _ => strip_ansi(line),
    }
}

/// The address in nsqd's `<proto>: listening on <addr>` line, if this is one.
fn listening_on(line: &str, proto: &str) -> Option<SocketAddr> {
    let message = log_message(line);
    let marker = format!("{proto}: listening on ");
    let at = message.find(&marker)?;
    // "HTTP: listening on" must not count as "TCP: listening on".
    if proto == "TCP" && message[..at].ends_with('H') {
        return None;
    }
    let addr = message[at + marker.len()..].split_whitespace().next()?;
    Some(addr.parse().unwrap_or_else(|e| panic!("{addr:?}: {e}")))
}

/// A running `triaged`, killed on drop whatever the test did.
struct Daemon {
    child: Child,
    stderr: Receiver<String>,
    /// Every stderr line read so far.
    lines: Vec<String>,
    tcp: SocketAddr,
    http: SocketAddr,
    _data: tempfile::TempDir,
}

impl Daemon {
    /// Starts on ephemeral ports with a temporary data dir, plus `extra`.
    fn start(extra: &[&str], env: &[(&str, &str)]) -> Daemon {
        let data = tempfile::tempdir().unwrap();
        let data_flag = format!("--data-path={}", data.path().display());
        let mut args = vec![
            "--tcp-address=127.0.0.1:0",
            "--http-address=127.0.0.1:0",
            data_flag.as_str(),
        ];
        args.extend_from_slice(extra);
        Daemon::spawn(&args, env, data)
    }

    /// Starts with exactly `args`, and waits for both listening lines.
    fn spawn<S: AsRef<OsStr>>(args: &[S], env: &[(&str, &str)], data: tempfile::TempDir) -> Daemon {
        let mut command = triaged();
        command
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = command.spawn().unwrap();
        let stderr = line_reader(child.stderr.take().unwrap());
        let mut daemon = Daemon {
            child,
            stderr,
            lines: Vec::new(),
            tcp: "0.0.0.0:0".parse().unwrap(),
            http: "0.0.0.0:0".parse().unwrap(),
            _data: data,
        };
        let line = daemon.wait_for_line("TCP: listening on", |l| listening_on(l, "TCP").is_some());
        daemon.tcp = listening_on(&line, "TCP").unwrap();
        let line =
            daemon.wait_for_line("HTTP: listening on", |l| listening_on(l, "HTTP").is_some());
        daemon.http = listening_on(&line, "HTTP").unwrap();
        assert_eq!(daemon.tcp.ip().to_string(), "127.0.0.1");
        assert_ne!(daemon.tcp.port(), 0);
        assert_ne!(daemon.http.port(), 0);
        daemon
    }

    /// The first stderr line (seen before or arriving now) that matches.
    fn wait_for_line(&mut self, what: &str, matches: impl Fn(&str) -> bool) -> String {
        if let Some(line) = self.lines.iter().find(|l| matches(l)) {
            return line.clone();
        }
        let deadline = Instant::now() + DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(line) => {
                    self.lines.push(line.clone());
                    if matches(&line) {
                        return line;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    panic!(
                        "no stderr line {what:?} within {DEADLINE:?}; got {:#?}",
                        self.lines
                    )
                }
                Err(RecvTimeoutError::Disconnected) => panic!(
                    "triaged closed stderr ({:?}) before {what:?}; got {:#?}",
                    self.child.try_wait(),
                    self.lines
                ),
            }
        }
    }

    /// Sends SIGTERM and waits (bounded) for the process to exit.
    fn terminate(&mut self) -> ExitStatus {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -TERM failed");
        let deadline = Instant::now() + PROMPT_EXIT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "triaged still running {PROMPT_EXIT:?} after SIGTERM; stderr {:#?}",
                self.lines
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// After exit: every stderr line, including those not yet read.
    fn all_lines(&mut self) -> Vec<String> {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(line) => self.lines.push(line),
                Err(RecvTimeoutError::Disconnected) => return self.lines.clone(),
                Err(RecvTimeoutError::Timeout) => panic!("stderr still open after exit"),
            }
        }
    }

    fn get(&self, path: &str) -> (u16, String) {
        http(self.http, "GET", path, b"")
    }

    fn post(&self, path: &str, body: &[u8]) -> (u16, String) {
        http(self.http, "POST", path, body)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 request with `Connection: close`; returns status and body.
fn http(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> (u16, String) {
    let mut stream = TcpStream::connect_timeout(&addr, DEADLINE).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    stream.set_write_timeout(Some(DEADLINE)).unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let raw = String::from_utf8(raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
    });
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_owned()
    };
    (status, body)
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n").unwrap();
        let size = usize::from_str_radix(size.trim(), 16).unwrap();
        if size == 0 {
            return out;
        }
        out.push_str(&rest[..size]);
        body = &rest[size + 2..];
    }
}

/// Runs `triaged` to completion (bounded) and returns status, stdout, stderr.
fn run_to_exit(mut command: Command) -> (ExitStatus, String, String) {
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = command.spawn().unwrap();
    let stdout = line_reader(child.stdout.take().unwrap());
    let stderr = line_reader(child.stderr.take().unwrap());
    let deadline = Instant::now() + DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            let err: Vec<String> = stderr.try_iter().collect();
            panic!("triaged did not exit within {DEADLINE:?}; stderr {err:#?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let collect = |rx: Receiver<String>| {
        let mut lines = Vec::new();
        while let Ok(line) = rx.recv_timeout(DEADLINE) {
            lines.push(line);
        }
        lines.join("\n")
    };
    (status, collect(stdout), collect(stderr))
}

/// A startup failure as an operator should see it: a non-zero exit code
/// (not a signal), and one plain line on stderr that names `key`, with no
/// panic, backtrace or usage dump.
#[track_caller]
fn assert_one_sentence_naming(status: ExitStatus, stdout: &str, stderr: &str, keys: &[&str]) {
    assert!(!status.success(), "exited successfully; stderr {stderr:?}");
    assert!(status.code().is_some(), "killed by a signal: {status:?}");
    assert!(stdout.trim().is_empty(), "stdout {stdout:?}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(
        lines.len(),
        1,
        "expected one line on stderr, got {stderr:?}"
    );
    let line = lines[0];
    assert!(
        keys.iter().any(|key| line.contains(key)),
        "{line:?} names none of {keys:?}"
    );
    for noise in [
        "panicked",
        "backtrace",
        "RUST_BACKTRACE",
        "Caused by",
        "Usage:",
    ] {
        assert!(!line.contains(noise), "{noise:?} in {line:?}");
    }
}

fn bad_config(args: &[&str], env: &[(&str, &str)]) -> (ExitStatus, String, String) {
    let mut command = triaged();
    command
        .args(["--tcp-address=127.0.0.1:0", "--http-address=127.0.0.1:0"])
        .args(args)
        .envs(env.iter().copied())
        // A backtrace, if anything would print one, must not appear.
        .env("RUST_BACKTRACE", "1");
    run_to_exit(command)
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[test]
fn starts_on_ephemeral_ports_and_answers_ping() {
    let daemon = Daemon::start(&[], &[]);
    assert_eq!(daemon.get("/ping"), (200, "OK".to_owned()));
    let (status, info) = daemon.get("/info");
    assert_eq!(status, 200, "{info}");
    let info: Value = serde_json::from_str(&info).unwrap();
    assert_eq!(info["version"], triage_broker::VERSION);
    assert_eq!(info["tcp_port"], daemon.tcp.port());
    assert_eq!(info["http_port"], daemon.http.port());

    // The TCP port speaks V2: a bad magic gets E_BAD_PROTOCOL.
    let mut stream = TcpStream::connect(daemon.tcp).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    stream.write_all(b"  V9").unwrap();
    let mut reply = Vec::new();
    let _ = stream.read_to_end(&mut reply);
    assert!(
        String::from_utf8_lossy(&reply).contains("E_BAD_PROTOCOL"),
        "{reply:?}"
    );
}

#[test]
fn single_dash_nsqd_flags_work() {
    let data = tempfile::tempdir().unwrap();
    let data_path = data.path().display().to_string();
    let args = [
        "-tcp-address",
        "127.0.0.1:0",
        "-http-address=127.0.0.1:0",
        "-data-path",
        data_path.as_str(),
        "-mem-queue-size",
        "1",
        // The bound is the memory tier's; persistent topics are bounded by disk.
        "-default-tier=memory",
        "-memory-overflow=reject",
        // nsqd flags accepted and ignored, as pynsq and nsqjs pass them.
        "--verbose",
        "-sync-every=2500",
    ];
    let mut daemon = Daemon::spawn(&args, &[], data);
    assert_eq!(daemon.get("/ping"), (200, "OK".to_owned()));
    // -mem-queue-size took effect: the second message to a channel-less topic is refused.
    assert_eq!(daemon.post("/pub?topic=t", b"1").0, 200);
    assert_eq!(daemon.post("/pub?topic=t", b"2").0, 503);
    // The ignored flags are named in a warning.
    daemon.wait_for_line("a warning naming --sync-every", |l| {
        l.contains("--sync-every") && l.contains("--verbose")
    });
}

#[test]
fn sigterm_exits_zero_promptly_and_closes_client_connections() {
    let mut daemon = Daemon::start(&[], &[]);
    let mut client = TcpStream::connect(daemon.tcp).unwrap();
    client.set_read_timeout(Some(DEADLINE)).unwrap();
    client.write_all(b"  V2SUB events consumer\n").unwrap();
    let mut ok = [0u8; 10];
    client.read_exact(&mut ok).unwrap();
    assert_eq!(&ok, b"\0\0\0\x06\0\0\0\0OK", "SUB answered OK");

    let started = Instant::now();
    let status = daemon.terminate();
    assert_eq!(
        status.code(),
        Some(0),
        "{status:?}; stderr {:#?}",
        daemon.lines
    );
    assert!(started.elapsed() < PROMPT_EXIT);

    // The subscribed client sees its connection end: EOF or a reset, not a timeout.
    let mut rest = Vec::new();
    match client.read_to_end(&mut rest) {
        Ok(_) => {}
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
            panic!("the client's connection is still open after triaged exited")
        }
        Err(_) => {} // reset: closed too
    }
    let lines = daemon.all_lines();
    assert!(
        lines
            .iter()
            .any(|l| log_message(l).contains("shutting down")),
        "{lines:#?}"
    );
    assert!(!lines.iter().any(|l| l.contains("panicked")), "{lines:#?}");
}

#[test]
fn version_prints_one_line_and_exits_zero() {
    for flag in ["--version", "-version", "-V"] {
        let mut command = triaged();
        command.arg(flag);
        let (status, stdout, stderr) = run_to_exit(command);
        assert_eq!(status.code(), Some(0), "{flag}: {stderr}");
        let line = stdout.trim();
        assert_eq!(line.lines().count(), 1, "{flag}: {stdout:?}");
        assert!(line.starts_with("triaged "), "{flag}: {line:?}");
        assert!(
            line.contains(&format!("v{}", triage_broker::VERSION)),
            "{flag}: {line:?}"
        );
    }
}

#[test]
fn a_flag_value_that_does_not_parse_is_one_sentence() {
    let (status, out, err) = bad_config(&["--mem-queue-size=abc"], &[]);
    assert_one_sentence_naming(status, &out, &err, &["mem-queue-size", "mem_queue_size"]);
    assert!(err.contains("abc"), "{err}");
}

#[test]
fn an_out_of_range_flag_is_one_sentence() {
    let (status, out, err) = bad_config(&["--max-rdy-count=70000"], &[]);
    assert_one_sentence_naming(status, &out, &err, &["max_rdy_count", "max-rdy-count"]);
    assert!(err.contains("70000"), "{err}");
}

#[test]
fn an_unknown_flag_is_one_sentence() {
    let (status, out, err) = bad_config(&["--no-such-flag=1"], &[]);
    assert_one_sentence_naming(status, &out, &err, &["no-such-flag"]);
}

#[test]
fn a_bad_environment_variable_is_one_sentence() {
    let (status, out, err) = bad_config(&[], &[("TRIAGE_MEM_QUEUE_SIZE", "lots")]);
    assert_one_sentence_naming(status, &out, &err, &["TRIAGE_MEM_QUEUE_SIZE"]);
}

#[test]
fn an_unknown_key_in_the_config_file_is_one_sentence() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("triaged.toml");
    std::fs::write(&file, "mem_queue_size = 10\nmsg_timout = \"30s\"\n").unwrap();
    let config = format!("--config={}", file.display());
    let (status, out, err) = bad_config(&[&config], &[]);
    assert_one_sentence_naming(status, &out, &err, &["msg_timout"]);
    assert!(err.contains("msg_timeout"), "suggests the real key: {err}");
}

#[test]
fn a_missing_config_file_is_one_sentence() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.toml");
    let config = format!("--config={}", missing.display());
    let (status, out, err) = bad_config(&[&config], &[]);
    assert_one_sentence_naming(status, &out, &err, &[&missing.display().to_string()]);
}

#[test]
fn a_config_file_that_is_not_toml_is_one_sentence() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("broken.toml");
    std::fs::write(&file, "mem_queue_size = \n").unwrap();
    let config = format!("--config={}", file.display());
    let (status, out, err) = bad_config(&[&config], &[]);
    assert_one_sentence_naming(status, &out, &err, &[&file.display().to_string()]);
}

#[test]
fn a_port_in_use_is_one_sentence() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let flag = format!("--tcp-address={addr}");
    let mut command = triaged();
    command
        .args([flag.as_str(), "--http-address=127.0.0.1:0"])
        .env("RUST_BACKTRACE", "1");
    let (status, out, err) = run_to_exit(command);
    assert_one_sentence_naming(status, &out, &err, &[&addr.to_string()]);
    drop(taken);
}

#[test]
fn log_format_json_makes_every_stderr_line_a_json_object() {
    let mut daemon = Daemon::start(&["--log-format=json"], &[]);
    assert_eq!(daemon.post("/pub?topic=logged", b"m").0, 200);
    let status = daemon.terminate();
    assert_eq!(status.code(), Some(0));
    let lines = daemon.all_lines();
    assert!(lines.len() >= 3, "{lines:#?}");
    for line in &lines {
        let value: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}"));
        assert!(value.is_object(), "{line}");
        assert!(value["level"].is_string(), "no level in {line}");
        assert!(
            value["fields"]["message"].is_string(),
            "no message in {line}"
        );
    }
}

#[test]
fn text_logs_are_plain_when_stderr_is_not_a_terminal() {
    let mut daemon = Daemon::start(&[], &[]);
    daemon.terminate();
    for line in daemon.all_lines() {
        assert!(!line.contains('\u{1b}'), "colour codes in a pipe: {line:?}");
    }
}

#[test]
fn triage_mem_queue_size_from_the_environment_applies() {
    let env = [
        ("TRIAGE_MEM_QUEUE_SIZE", "2"),
        ("TRIAGE_DEFAULT_TIER", "memory"),
        ("TRIAGE_MEMORY_OVERFLOW", "reject"),
    ];
    let daemon = Daemon::start(&[], &env);
    assert_eq!(daemon.post("/pub?topic=bounded", b"1").0, 200);
    assert_eq!(daemon.post("/pub?topic=bounded", b"2").0, 200);
    let (status, body) = daemon.post("/pub?topic=bounded", b"3");
    assert_eq!(status, 503, "{body}");
}

#[test]
fn flags_override_the_environment_which_overrides_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("triaged.toml");
    std::fs::write(
        &file,
        "default_tier = \"memory\"\nmemory_overflow = \"reject\"\nmem_queue_size = 1\nmax_msg_size = \"8 B\"\n",
    )
    .unwrap();
    let config = format!("--config={}", file.display());

    // File alone: mem_queue_size 1, and its max_msg_size applies too.
    let daemon = Daemon::start(&[&config], &[]);
    assert_eq!(daemon.post("/pub?topic=a", b"12345678").0, 200);
    assert_eq!(daemon.post("/pub?topic=a", b"1").0, 503);
    assert_eq!(daemon.post("/pub?topic=b", b"123456789").0, 413);
    drop(daemon);

    // The environment beats the file.
    let daemon = Daemon::start(&[&config], &[("TRIAGE_MEM_QUEUE_SIZE", "2")]);
    assert_eq!(daemon.post("/pub?topic=a", b"1").0, 200);
    assert_eq!(daemon.post("/pub?topic=a", b"2").0, 200);
    assert_eq!(daemon.post("/pub?topic=a", b"3").0, 503);
    drop(daemon);

    // A flag beats both.
    let daemon = Daemon::start(
        &[&config, "--mem-queue-size=3"],
        &[("TRIAGE_MEM_QUEUE_SIZE", "2")],
    );
    for body in [b"1", b"2", b"3"] {
        assert_eq!(daemon.post("/pub?topic=a", body).0, 200);
    }
    assert_eq!(daemon.post("/pub?topic=a", b"4").0, 503);
}
