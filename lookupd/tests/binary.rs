//! The real `triage-lookupd` binary: nsqlookupd's flags (single dash too),
//! its `listening on` lines, a clean exit on SIGTERM, and one plain sentence
//! with a non-zero exit for bad flags.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// How long start-up and exit may each take.
const PROMPT: Duration = Duration::from_secs(10);

fn lookupd() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_triage-lookupd"));
    command.env("NO_COLOR", "1").stdin(Stdio::null());
    command
}

/// A running binary, killed on drop whatever the test did.
struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Running {
    fn start(args: &[&str]) -> Running {
        let mut child = lookupd()
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (send, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        Running { child, lines }
    }

    /// The address in the first `<proto>: listening on <addr>` line.
    fn listening(&self, proto: &str) -> SocketAddr {
        let marker = format!(" {proto}: listening on ");
        loop {
            let line = self
                .lines
                .recv_timeout(PROMPT)
                .unwrap_or_else(|_| panic!("no '{proto}: listening on' line within {PROMPT:?}"));
            if let Some((_, addr)) = line.split_once(&marker) {
                return addr.trim().parse().unwrap();
            }
        }
    }

    fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success());
        let deadline = std::time::Instant::now() + PROMPT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "still running {PROMPT:?} after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(PROMPT)).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).unwrap();
    reply
}

#[test]
fn serves_with_nsqlookupds_single_dash_flags_and_stops_on_sigterm() {
    let mut running = Running::start(&[
        "-tcp-address=127.0.0.1:0",
        "-http-address",
        "127.0.0.1:0",
        "--broadcast-address=lookupd.example",
        "--inactive-producer-timeout=1m",
        "--tombstone-lifetime=10s",
        "--log-prefix=[nsqlookupd] ",
    ]);
    let tcp = running.listening("TCP");
    let http = running.listening("HTTP");
    let ping = http_get(http, "/ping");
    assert!(
        ping.starts_with("HTTP/1.1 200") && ping.ends_with("\r\n\r\nOK"),
        "{ping}"
    );

    // The IDENTIFY reply carries the broadcast address given on the command line.
    let mut node = TcpStream::connect(tcp).unwrap();
    node.set_read_timeout(Some(PROMPT)).unwrap();
    let body = br#"{"broadcast_address":"n","tcp_port":1,"http_port":2,"version":"1.3.0"}"#;
    node.write_all(b"  V1IDENTIFY\n").unwrap();
    node.write_all(&(body.len() as u32).to_be_bytes()).unwrap();
    node.write_all(body).unwrap();
    let mut size = [0u8; 4];
    node.read_exact(&mut size).unwrap();
    let mut reply = vec![0; u32::from_be_bytes(size) as usize];
    node.read_exact(&mut reply).unwrap();
    let reply: serde_json::Value = serde_json::from_slice(&reply).unwrap();
    assert_eq!(reply["broadcast_address"], "lookupd.example");
    assert_eq!(reply["tcp_port"], tcp.port());

    assert!(running.terminate().success());
}

#[test]
fn bad_flags_exit_non_zero_with_one_sentence() {
    for (args, expected) in [
        (&["--tombstone-lifetime=soon"][..], "--tombstone-lifetime"),
        (&["--tcp-address=nowhere"][..], "nowhere"),
        (&["--no-such-flag"][..], "--no-such-flag"),
        (&["--max-connections=0"][..], "--max-connections"),
    ] {
        let output = lookupd().args(args).output().unwrap();
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(
            stderr.starts_with("triage-lookupd: ") && stderr.contains(expected),
            "{args:?}: {stderr}"
        );
    }
}

#[test]
fn an_address_in_use_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let output = lookupd()
        .args([
            &format!("--tcp-address={addr}"),
            "--http-address=127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains(&format!("cannot listen for TCP on {addr}")),
        "{stderr}"
    );
}

#[test]
fn version_prints_and_succeeds() {
    let output = lookupd().arg("--version").output().unwrap();
    assert!(output.status.success());
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(stdout.starts_with("triage-lookupd "), "{stdout}");
}
