//! Binds the TCP and HTTP front ends, runs them, and shuts them down.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use triage_config::BrokerConfig;

use crate::broker::Broker;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen for TCP on {addr}")]
    BindTcp { addr: SocketAddr, source: io::Error },
    #[error("cannot listen for HTTP on {addr}")]
    BindHttp { addr: SocketAddr, source: io::Error },
    #[error(transparent)]
    Config(#[from] triage_config::ConfigError),
}

/// A running broker. Dropping it does not stop it; call [`Server::shutdown`].
#[derive(Debug)]
pub struct Server {
    pub broker: Arc<Broker>,
    pub tcp_addr: SocketAddr,
    pub http_addr: SocketAddr,
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

        // From here on the config says where we really listen (port 0 is
        // resolved), as nsqd's RealTCPAddr: /info reports it.
        config.tcp_address = tcp_addr;
        config.http_address = http_addr;
        let broker = Broker::new(config, CancellationToken::new())?;
        // These two lines are nsqd's, word for word: client test harnesses (gnsq) parse them.
        tracing::info!("TCP: listening on {tcp_addr}");
        tracing::info!("HTTP: listening on {http_addr}");
        broker
            .tracker
            .spawn(crate::tcp::serve(broker.clone(), tcp_listener));
        broker
            .tracker
            .spawn(crate::http::serve(broker.clone(), http_listener));
        Ok(Server {
            broker,
            tcp_addr,
            http_addr,
        })
    }

    /// Stops accepting, closes every connection and waits for every task.
    pub async fn shutdown(self) {
        self.broker.shutdown.cancel();
        self.broker.tracker.close();
        self.broker.tracker.wait().await;
        tracing::info!("broker stopped");
    }
}
