//! Binds the TCP and HTTP listeners, runs them, and shuts them down.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::db::RegistrationDb;
use crate::options::Options;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen for TCP on {addr}")]
    BindTcp { addr: SocketAddr, source: io::Error },
    #[error("cannot listen for HTTP on {addr}")]
    BindHttp { addr: SocketAddr, source: io::Error },
}

/// What the TCP and HTTP sides share.
#[derive(Debug)]
pub struct Shared {
    pub db: RegistrationDb,
    /// With the listeners' real addresses (port 0 resolved).
    pub options: Options,
    pub hostname: String,
    /// Cancelled at shutdown; every task selects on it.
    pub shutdown: CancellationToken,
    /// Every spawned task, so shutdown can wait for all of them.
    pub tracker: TaskTracker,
}

/// A running lookupd. Dropping it does not stop it; call [`Lookupd::shutdown`].
#[derive(Debug)]
pub struct Lookupd {
    pub shared: Arc<Shared>,
    pub tcp_addr: SocketAddr,
    pub http_addr: SocketAddr,
}

impl Lookupd {
    /// Binds both listeners (port 0 picks a free one; see the fields for the
    /// real addresses) and starts serving.
    ///
    /// # Errors
    /// When either address cannot be bound.
    pub async fn start(mut options: Options) -> Result<Lookupd, StartError> {
        let bind_tcp = |source| StartError::BindTcp {
            addr: options.tcp_address,
            source,
        };
        let tcp_listener = TcpListener::bind(options.tcp_address)
            .await
            .map_err(bind_tcp)?;
        let tcp_addr = tcp_listener.local_addr().map_err(bind_tcp)?;
        let bind_http = |source| StartError::BindHttp {
            addr: options.http_address,
            source,
        };
        let http_listener = TcpListener::bind(options.http_address)
            .await
            .map_err(bind_http)?;
        let http_addr = http_listener.local_addr().map_err(bind_http)?;
        options.tcp_address = tcp_addr;
        options.http_address = http_addr;

        let shared = Arc::new(Shared {
            db: RegistrationDb::default(),
            options,
            hostname: triage_config::broker::hostname(),
            shutdown: CancellationToken::new(),
            tracker: TaskTracker::new(),
        });
        // nsqlookupd's own lines; client test harnesses (gnsq) parse them.
        tracing::info!("TCP: listening on {tcp_addr}");
        tracing::info!("HTTP: listening on {http_addr}");
        shared
            .tracker
            .spawn(crate::tcp::serve(shared.clone(), tcp_listener));
        shared
            .tracker
            .spawn(crate::http::serve(shared.clone(), http_listener));
        Ok(Lookupd {
            shared,
            tcp_addr,
            http_addr,
        })
    }

    /// Stops accepting, closes every connection and waits for every task.
    pub async fn shutdown(self) {
        self.shared.shutdown.cancel();
        self.shared.tracker.close();
        self.shared.tracker.wait().await;
        tracing::info!("lookupd stopped");
    }
}
