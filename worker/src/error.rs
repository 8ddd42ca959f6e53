//! The worker library's errors.

use triage_protocol::{ErrorCode, ProtocolError};

/// Why a subscription could not be set up or a connection ended.
#[derive(Debug, thiserror::Error)]
pub enum ConsumerError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot connect to {address}: {source}")]
    Connect {
        address: String,
        source: std::io::Error,
    },
    #[error("I/O error on the broker connection: {0}")]
    Io(#[from] std::io::Error),
    /// The broker sent bytes that are not a valid frame.
    #[error("broker sent an invalid frame: {0}")]
    Protocol(#[from] ProtocolError),
    /// The broker answered with an error frame (`E_*`).
    #[error("broker refused {command}: {text}")]
    Refused {
        command: &'static str,
        /// `None` when the text does not start with a known code.
        code: Option<ErrorCode>,
        text: String,
    },
    #[error("unexpected reply to {command}: {reply}")]
    Unexpected {
        command: &'static str,
        reply: String,
    },
    #[error("broker closed the connection")]
    Closed,
    #[error("timed out waiting for {0}")]
    TimedOut(&'static str),
    #[error("the consumer is shutting down")]
    ShuttingDown,
}

/// A configuration value that cannot work; `key` names it. Defined with the
/// worker's config file, which most of them come from.
pub use triage_config::worker::ConfigError;

/// What a handler returns on failure; the message is requeued with backoff.
pub type HandlerError = Box<dyn std::error::Error + Send + Sync>;
