//! The real `triaged` binary as a child process, for tests that crash it
//! (`kill -9`), restart it on the same data directory, or measure it.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command as Process, Stdio};
use std::time::{Duration, Instant};

/// How long starting, stopping or one HTTP request may take.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// A `triaged` child process on ephemeral ports over a given data dir.
pub struct Triaged {
    pub child: Child,
    pub tcp: SocketAddr,
    pub http: SocketAddr,
}

impl Triaged {
    pub fn start(data: &Path) -> Triaged {
        Triaged::start_with(data, &[])
    }

    pub fn start_with(data: &Path, extra: &[&str]) -> Triaged {
        let mut command = Process::new(env!("CARGO_BIN_EXE_triaged"));
        command.args(["--tcp-address=127.0.0.1:0", "--http-address=127.0.0.1:0"]);
        command.args(extra);
        Triaged::spawn(command, data)
    }

    /// Starts under a file-size limit of `kib` KiB: writes past it fail with
    /// EFBIG, as on a full disk (SIGXFSZ ignored, as a real daemon would not
    /// be killed by a full disk either).
    pub fn start_with_file_limit(data: &Path, kib: u64) -> Triaged {
        let mut command = Process::new("bash");
        command.args([
            "-c",
            &format!("ulimit -S -f {kib}; trap '' XFSZ; exec \"$0\" \"$@\""),
            env!("CARGO_BIN_EXE_triaged"),
            "--tcp-address=127.0.0.1:0",
            "--http-address=127.0.0.1:0",
        ]);
        Triaged::spawn(command, data)
    }

    pub fn spawn(mut command: Process, data: &Path) -> Triaged {
        let mut child = command
            .arg(format!("--data-path={}", data.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        // Keep draining stderr so the broker never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let (mut tcp, mut http) = (None, None);
        let deadline = Instant::now() + DEADLINE;
        while tcp.is_none() || http.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx
                .recv_timeout(left)
                .expect("triaged printed its listening lines in time");
            let addr = |label: &str| {
                line.split_once(&format!("{label}: listening on "))
                    .and_then(|(_, rest)| rest.trim().parse::<SocketAddr>().ok())
            };
            tcp = tcp.or(addr("TCP"));
            http = http.or(addr("HTTP"));
        }
        Triaged {
            child,
            tcp: tcp.unwrap(),
            http: http.unwrap(),
        }
    }

    /// SIGKILL: no shutdown path runs.
    pub fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(mut self) {
        let pid = self.child.id().to_string();
        assert!(Process::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success());
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "triaged exited with {status}");
                return;
            }
            assert!(
                Instant::now() < deadline,
                "triaged did not stop after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A one-shot HTTP/1.0 request; returns the status and body.
    pub fn http(&self, method: &str, path: &str) -> (u16, String) {
        http_at(self.http, method, path)
    }

    pub fn stats(&self) -> serde_json::Value {
        let (status, body) = self.http("GET", "/stats?format=json");
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }
}

/// [`Triaged::http`] for a thread or task that does not own the `Triaged`.
pub fn http_at(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.0\r\nContent-Length: 0\r\n\r\n"
    )
    .unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).unwrap();
    let status = reply[9..12].parse().unwrap();
    let body = reply
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

impl Drop for Triaged {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Triaged {
    /// Resident memory of the process in bytes (`VmRSS`).
    pub fn rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap();
        kib * 1024
    }
}
