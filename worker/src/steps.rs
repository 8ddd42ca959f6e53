//! The steps a pipeline runs on a message body: `http` (POST it to a URL;
//! a 2xx status is success) and `exec` (pipe it to a command's stdin; exit
//! status 0 is success), each within its timeout.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::CONTENT_TYPE;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::io::AsyncWriteExt;

use crate::config::{StepAction, StepConfig};

/// One HTTP client (and connection pool) shared by every `http` step.
pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

pub fn http_client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// Why a step failed.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error("timed out after {0:?}")]
    TimedOut(Duration),
    #[error("HTTP status {0}")]
    Status(u16),
    #[error("HTTP request failed: {0}")]
    Http(String),
    #[error("cannot start {program:?}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("command exited with {0}")]
    Exit(std::process::ExitStatus),
    #[error("waiting for the command failed: {0}")]
    Wait(std::io::Error),
}

#[derive(Debug)]
enum Action {
    Http { uri: hyper::Uri, client: HttpClient },
    Exec { command: Vec<String> },
}

/// A step ready to run.
#[derive(Debug)]
pub struct Step {
    pub name: Arc<str>,
    pub core: bool,
    timeout: Duration,
    action: Action,
}

impl Step {
    /// `config` was validated by [`crate::config`], so its URL parses.
    pub fn new(config: &StepConfig, client: &HttpClient) -> Step {
        let action = match &config.action {
            StepAction::Http { url } => Action::Http {
                uri: url.parse().unwrap_or_default(),
                client: client.clone(),
            },
            StepAction::Exec { command } => Action::Exec {
                command: command.clone(),
            },
        };
        Step {
            name: config.name.as_str().into(),
            core: config.core,
            timeout: config.timeout,
            action,
        }
    }

    /// Runs the step on `body`.
    ///
    /// # Errors
    /// [`StepError`] when it fails, times out or cannot start.
    pub async fn run(&self, body: Bytes) -> Result<(), StepError> {
        let work = async {
            match &self.action {
                Action::Http { uri, client } => post(client, uri, body).await,
                Action::Exec { command } => exec(command, body).await,
            }
        };
        tokio::time::timeout(self.timeout, work)
            .await
            .map_err(|_| StepError::TimedOut(self.timeout))?
    }
}

async fn post(client: &HttpClient, uri: &hyper::Uri, body: Bytes) -> Result<(), StepError> {
    let request = hyper::Request::post(uri.clone())
        .header(CONTENT_TYPE, "application/octet-stream")
        .body(Full::new(body))
        .map_err(|e| StepError::Http(e.to_string()))?;
    let response = client
        .request(request)
        .await
        .map_err(|e| StepError::Http(e.to_string()))?;
    let status = response.status();
    // Read the reply to its end so the connection can go back to the pool.
    let _ = response.into_body().collect().await;
    if status.is_success() {
        Ok(())
    } else {
        Err(StepError::Status(status.as_u16()))
    }
}

async fn exec(command: &[String], body: Bytes) -> Result<(), StepError> {
    let Some((program, args)) = command.split_first() else {
        return Err(StepError::Spawn {
            program: String::new(),
            source: std::io::ErrorKind::InvalidInput.into(),
        });
    };
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        // A step that times out is dropped, and must not outlive that.
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| StepError::Spawn {
            program: program.clone(),
            source,
        })?;
    let stdin = child.stdin.take();
    let feed = async move {
        if let Some(mut stdin) = stdin {
            // A command that exits without reading its input is its own business:
            // its exit status decides, not the broken pipe.
            let _ = stdin.write_all(&body).await;
        }
    };
    let (_, status) = tokio::join!(feed, child.wait());
    let status = status.map_err(StepError::Wait)?;
    if status.success() {
        Ok(())
    } else {
        Err(StepError::Exit(status))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exec_step(script: &str, timeout: Duration) -> Step {
        let config = StepConfig {
            name: "s".to_owned(),
            core: true,
            timeout,
            action: StepAction::Exec {
                command: vec!["sh".to_owned(), "-c".to_owned(), script.to_owned()],
            },
        };
        Step::new(&config, &http_client())
    }

    #[tokio::test]
    async fn exec_pipes_the_body_and_reads_the_exit_status() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let step = exec_step(&format!("cat > {}", out.display()), Duration::from_secs(10));
        step.run(Bytes::from_static(b"ticket 7")).await.unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), b"ticket 7");

        let failing = exec_step("exit 3", Duration::from_secs(10));
        let error = failing.run(Bytes::new()).await.unwrap_err();
        assert!(
            matches!(error, StepError::Exit(s) if s.code() == Some(3)),
            "{error}"
        );
    }

    #[tokio::test]
    async fn exec_times_out_and_a_missing_program_is_an_error() {
        let slow = exec_step("sleep 30", Duration::from_millis(50));
        assert!(matches!(
            slow.run(Bytes::new()).await,
            Err(StepError::TimedOut(_))
        ));
        let config = StepConfig {
            name: "missing".to_owned(),
            core: true,
            timeout: Duration::from_secs(5),
            action: StepAction::Exec {
                command: vec!["/nonexistent/triage-step".to_owned()],
            },
        };
        let error = Step::new(&config, &http_client())
            .run(Bytes::new())
            .await
            .unwrap_err();
        assert!(matches!(error, StepError::Spawn { .. }), "{error}");
    }

    fn http_step(url: String, timeout: Duration) -> Step {
        let config = StepConfig {
            name: "h".to_owned(),
            core: true,
            timeout,
            action: StepAction::Http { url },
        };
        Step::new(&config, &http_client())
    }

    #[tokio::test]
    async fn http_posts_the_body_and_wants_a_2xx() {
        use axum::http::StatusCode;
        use axum::routing::post;

        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let app = axum::Router::new()
            .route(
                "/ok",
                post(move |body: Bytes| {
                    let _ = tx.send(body);
                    async { StatusCode::NO_CONTENT }
                }),
            )
            .route("/fail", post(|| async { StatusCode::SERVICE_UNAVAILABLE }))
            .route(
                "/slow",
                post(|| async {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    StatusCode::OK
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let server = tokio::spawn(async move { axum::serve(listener, app).await });
        let url = |path: &str| format!("http://{address}{path}");

        let ok = http_step(url("/ok"), Duration::from_secs(10));
        ok.run(Bytes::from_static(b"ticket 9")).await.unwrap();
        assert_eq!(rx.recv().await.unwrap(), Bytes::from_static(b"ticket 9"));

        let fail = http_step(url("/fail"), Duration::from_secs(10));
        let error = fail.run(Bytes::new()).await.unwrap_err();
        assert!(matches!(error, StepError::Status(503)), "{error}");

        let slow = http_step(url("/slow"), Duration::from_millis(50));
        let error = slow.run(Bytes::new()).await.unwrap_err();
        assert!(matches!(error, StepError::TimedOut(_)), "{error}");

        server.abort();
        // A port whose listener was just dropped refuses connections.
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let closed_address = closed.local_addr().unwrap();
        drop(closed);
        let refused = http_step(format!("http://{closed_address}/"), Duration::from_secs(10));
        let error = refused.run(Bytes::new()).await.unwrap_err();
        assert!(matches!(error, StepError::Http(_)), "{error}");
    }
}
