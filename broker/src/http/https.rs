//! HTTPS for the HTTP API: the same router behind TLS, on `https_address`.
//!
//! Handshakes run in their own tasks, each bounded by `handshake_timeout`,
//! so a client that connects and never speaks delays nobody else; finished
//! ones reach axum through a bounded queue.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::broker::Broker;

/// Handshaken connections waiting for axum to take them.
const READY_QUEUE: usize = 64;

/// An [`axum::serve::Listener`] over connections already upgraded to TLS.
#[derive(Debug)]
struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local_addr: SocketAddr,
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(ready) => ready,
            // The accept task ended (shutdown): serve nothing more.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local_addr)
    }
}

/// Accepts TCP connections and hands each to a handshake task.
async fn accept_loop(
    broker: Arc<Broker>,
    listener: TcpListener,
    acceptor: TlsAcceptor,
    ready: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    let timeout = broker.config.handshake_timeout;
    loop {
        let (tcp, addr) = tokio::select! {
            _ = broker.shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "HTTPS accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let (acceptor, ready) = (acceptor.clone(), ready.clone());
        broker.tracker.spawn(async move {
            match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => {
                    let _ = ready.send((tls, addr)).await;
                }
                Ok(Err(e)) => tracing::debug!(%addr, error = %e, "HTTPS handshake failed"),
                Err(_) => tracing::debug!(%addr, "HTTPS handshake timed out"),
            }
        });
    }
}

/// Serves the HTTP API over TLS until the broker shuts down.
pub async fn serve(broker: Arc<Broker>, listener: TcpListener, local_addr: SocketAddr) {
    let Some(server) = broker.tls.clone() else {
        return;
    };
    let (ready_tx, ready) = mpsc::channel(READY_QUEUE);
    broker.tracker.spawn(accept_loop(
        broker.clone(),
        listener,
        TlsAcceptor::from(server),
        ready_tx,
    ));
    let shutdown = broker.shutdown.clone();
    let app = super::router(broker);
    let listener = TlsListener { ready, local_addr };
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
    {
        tracing::error!(error = %e, "HTTPS server failed");
    }
}
