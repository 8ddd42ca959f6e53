//! Binds the TCP and HTTP front ends, runs them, and shuts them down.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use triage_config::BrokerConfig;

use crate::broker::Broker;
use crate::store::{Store, StoreError, StoreOptions};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen for TCP on {addr}")]
    BindTcp { addr: SocketAddr, source: io::Error },
    #[error("cannot listen for HTTP on {addr}")]
    BindHttp { addr: SocketAddr, source: io::Error },
    #[error(transparent)]
    Config(#[from] triage_config::ConfigError),
    #[error("cannot open the store in {path}")]
    OpenStore { path: String, source: StoreError },
    #[error("cannot recover from the store in {path}")]
    Recover { path: String, source: StoreError },
}

/// A running broker. Dropping it does not stop it; call [`Server::shutdown`].
#[derive(Debug)]
pub struct Server {
    pub broker: Arc<Broker>,
    pub tcp_addr: SocketAddr,
    pub http_addr: SocketAddr,
    /// Set when `https_address` is.
    pub https_addr: Option<SocketAddr>,
}

impl Server {
    /// Binds both listeners (port 0 picks a free one; see the fields for the
    /// real addresses) and starts serving.
    ///
    /// # Errors
    /// When either address cannot be bound, or the config is invalid.
    pub async fn start(mut config: BrokerConfig) -> Result<Server, StartError> {
        let tcp_listener = TcpListener::bind(config.tcp_address)
            .await
            .map_err(|source| StartError::BindTcp {
                addr: config.tcp_address,
                source,
            })?;
        let http_listener = TcpListener::bind(config.http_address)
            .await
            .map_err(|source| StartError::BindHttp {
                addr: config.http_address,
                source,
            })?;
        let tcp_addr = tcp_listener
            .local_addr()
            .map_err(|source| StartError::BindTcp {
                addr: config.tcp_address,
                source,
            })?;
        let http_addr = http_listener
            .local_addr()
            .map_err(|source| StartError::BindHttp {
                addr: config.http_address,
                source,
            })?;

        let https = match config.https_address {
            Some(addr) => {
                let bind_error = |source| StartError::BindHttp { addr, source };
                let listener = TcpListener::bind(addr).await.map_err(bind_error)?;
                let local = listener.local_addr().map_err(bind_error)?;
                Some((listener, local))
            }
            None => None,
        };
        let https_addr = https.as_ref().map(|(_, addr)| *addr);

        // From here on the config says where we really listen (port 0 is
        // resolved), as nsqd's RealTCPAddr: /info reports it.
        config.tcp_address = tcp_addr;
        config.http_address = http_addr;
        config.https_address = https_addr;

        // Before the data dir is touched: a bad certificate is a config error.
        let tls = crate::tls::server_config(&config).map_err(|e| e.into_config_error())?;
        let path = config.data_path.display().to_string();
        let options = StoreOptions {
            sync: config.sync_policy,
            ..StoreOptions::default()
        };
        let data_path = config.data_path.clone();
        // Opening replays RocksDB's WAL and recovery reads the backlog: blocking work.
        let store = tokio::task::spawn_blocking(move || Store::open(&data_path, options))
            .await
            .map_err(|e| StartError::OpenStore {
                path: path.clone(),
                source: StoreError::Io(e.to_string()),
            })?
            .map_err(|source| StartError::OpenStore {
                path: path.clone(),
                source,
            })?;
        let broker = Broker::with_tls(config, Arc::new(store), CancellationToken::new(), tls)?;
        let recovering = broker.clone();
        let restored = tokio::task::spawn_blocking(move || recovering.recover())
            .await
            .map_err(|e| StartError::Recover {
                path: path.clone(),
                source: StoreError::Io(e.to_string()),
            })?
            .map_err(|source| StartError::Recover {
                path: path.clone(),
                source,
            })?;
        broker
            .forget_saved(&restored)
            .await
            .map_err(|source| StartError::Recover { path, source })?;
        // These two lines are nsqd's, word for word: client test harnesses (gnsq) parse them.
        tracing::info!("TCP: listening on {tcp_addr}");
        tracing::info!("HTTP: listening on {http_addr}");
        broker
            .tracker
            .spawn(crate::tcp::serve(broker.clone(), tcp_listener));
        broker
            .tracker
            .spawn(crate::http::serve(broker.clone(), http_listener));
        if let Some((listener, addr)) = https {
            tracing::info!("HTTPS: listening on {addr}");
            broker
                .tracker
                .spawn(crate::http::https::serve(broker.clone(), listener, addr));
        }
        broker.tracker.spawn(broker.clone().run_checkpoints());
        broker
            .tracker
            .spawn(crate::delayed::run_scheduler(broker.clone()));
        crate::lookup::spawn(&broker);
        Ok(Server {
            broker,
            tcp_addr,
            http_addr,
            https_addr,
        })
    }

    /// Stops accepting, closes every connection, waits for every task, then
    /// records what consumers finished and closes the store (syncing it), so
    /// a restart redelivers only what was not finished.
    pub async fn shutdown(self) {
        self.broker.shutdown.cancel();
        self.broker.tracker.close();
        self.broker.tracker.wait().await;
        self.broker.checkpoint().await;
        if self.broker.config.save_memory_on_shutdown {
            self.broker.save_memory().await;
        }
        if let Err(e) = self.broker.store.close().await {
            tracing::error!(error = %e, "closing the store failed");
        }
        tracing::info!("broker stopped");
    }
}
