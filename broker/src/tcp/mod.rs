//! The TCP front end: the accept loop ([`serve`]), a socket with its buffers
//! and compression ([`connection`]), a client's state machine and delivery
//! loop ([`session`]), one file per command ([`commands`]) and the one socket
//! option set through libc ([`socket_option`]).

mod commands;
pub mod connection;
pub mod session;
mod socket_option;

/// The memory-tier topic on which every `BACKPRESSURE` level change is published.
pub use commands::EVENTS_TOPIC as BACKPRESSURE_EVENTS_TOPIC;

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::broker::Broker;

/// Accepts connections until shutdown. Each connection holds a permit of a
/// semaphore sized by `max_connections`; beyond it, accepting waits, so the
/// bound holds without refusing anyone outright.
pub async fn serve(broker: Arc<Broker>, listener: TcpListener) {
    let permits = Arc::new(Semaphore::new(broker.config.max_connections));
    loop {
        let permit = tokio::select! {
            _ = broker.shutdown.cancelled() => return,
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
        };
        let (stream, remote_addr) = tokio::select! {
            _ = broker.shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Usually EMFILE: back off briefly instead of spinning.
                    tracing::warn!(error = %e, "TCP accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let session = session::Session::new(broker.clone(), stream, remote_addr);
        let counted = broker.metrics.connection();
        broker.tracker.spawn(async move {
            session.run().await;
            drop(counted);
            drop(permit);
        });
    }
}
