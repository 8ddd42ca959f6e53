//! triage-protocol: NSQ's TCP protocol V2 as a pure codec.
//!
//! Bytes in, typed values out; no I/O, no async, no knowledge of topics beyond
//! the name rules that are part of the protocol itself.
//!
//! - [`error`]: every `E_*` code, and whether nsqd closes the connection on it.
//! - [`names`]: topic and channel name rules (`^[.a-zA-Z0-9_-]+(#ephemeral)?$`, 1..=64 bytes
//!   with the suffix).
//! - [`command`]: client → server commands; [`command::decode_command`] parses one
//!   from a buffer ("need more bytes" is `Ok(None)`, never an error) and
//!   [`Command::encode`] writes one (for clients, the worker and the bench tool).
//!   Besides nsqd's commands it knows one triage extension, `BACKPRESSURE <level>`.
//! - [`frame`]: server → client frames (response, error, message) both ways.
//! - [`message`]: the message layout `[ts i64][attempts u16][id 16B][body]`.
//! - [`identify`]: IDENTIFY's request and negotiated-response JSON.
//! - [`compress`]: snappy (framing format) and raw deflate stream transforms, as
//!   nsqd applies them after feature negotiation.
//!
//! Every size a peer declares is checked against [`Limits`] before anything is
//! allocated for it.

// Tests may unwrap; the workspace lint is for library code.
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod command;
pub mod compress;
pub mod error;
pub mod frame;
pub mod identify;
pub mod message;
pub mod names;

pub use command::{
    decode_command, pending_command_len, Command, MAX_BACKPRESSURE_LEVEL, PLAIN_FIN_LEN,
};
pub use error::{ErrorCode, ProtocolError};
pub use frame::{decode_frame, Frame, FrameType};
pub use identify::{IdentifyRequest, IdentifyResponse};
pub use message::{Message, MessageId, MESSAGE_HEADER_LEN};

/// The 4 bytes a V2 client sends first: two spaces, `V`, `2`.
pub const MAGIC_V2: [u8; 4] = *b"  V2";

/// Response payloads nsqd sends verbatim.
pub const OK: &[u8] = b"OK";
pub const CLOSE_WAIT: &[u8] = b"CLOSE_WAIT";
pub const HEARTBEAT: &[u8] = b"_heartbeat_";

/// Sizes the decoder enforces before it allocates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest single message body (nsqd `--max-msg-size`, default 1 MiB).
    pub max_msg_size: u32,
    /// Largest command body: MPUB's whole body, IDENTIFY and AUTH (nsqd `--max-body-size`, default 5 MiB).
    pub max_body_size: u32,
    /// Longest command line, `\n` included. nsqd reads lines with an unbounded
    /// bufio reader; we cap them so a client cannot grow our buffer without end.
    pub max_line_len: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_msg_size: 1024 * 1024,
            max_body_size: 5 * 1024 * 1024,
            max_line_len: 1024,
        }
    }
}
