//! The envelope of deferred work: which non-core steps a degraded worker
//! skipped, and the body they were to run on, published as a small JSON
//! document to the subscription's deferral topic and replayed from it.
//!
//! ```json
//! {"topic":"tickets","channel":"work","steps":["notify","index"],"encoding":"utf8","body":"..."}
//! ```
//! The body is kept as text when it is UTF-8 (easy to read with any NSQ
//! tool) and as standard base64 otherwise.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// Skipped steps and their input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deferral {
    /// Where the original message came from.
    pub topic: String,
    pub channel: String,
    /// The step names to run, in pipeline order.
    pub steps: Vec<String>,
    pub body: Bytes,
}

#[derive(Debug, Serialize, Deserialize)]
struct Envelope {
    topic: String,
    channel: String,
    steps: Vec<String>,
    encoding: Encoding,
    body: String,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Encoding {
    Utf8,
    Base64,
}

/// Why a deferral message cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum DeferralError {
    #[error("not a deferral envelope: {0}")]
    Json(#[from] serde_json::Error),
    #[error("the envelope's body is not valid base64")]
    Base64,
}

impl Deferral {
    pub fn to_json(&self) -> Bytes {
        let (encoding, body) = match std::str::from_utf8(&self.body) {
            Ok(text) => (Encoding::Utf8, text.to_owned()),
            Err(_) => (Encoding::Base64, base64_encode(&self.body)),
        };
        let envelope = Envelope {
            topic: self.topic.clone(),
            channel: self.channel.clone(),
            steps: self.steps.clone(),
            encoding,
            body,
        };
        // Serializing strings and a unit enum cannot fail.
        Bytes::from(serde_json::to_vec(&envelope).unwrap_or_default())
    }

    /// # Errors
    /// [`DeferralError`] when `json` is not an envelope.
    pub fn from_json(json: &[u8]) -> Result<Deferral, DeferralError> {
        let envelope: Envelope = serde_json::from_slice(json)?;
        let body = match envelope.encoding {
            Encoding::Utf8 => Bytes::from(envelope.body),
            Encoding::Base64 => {
                Bytes::from(base64_decode(&envelope.body).ok_or(DeferralError::Base64)?)
            }
        };
        Ok(Deferral {
            topic: envelope.topic,
            channel: envelope.channel,
            steps: envelope.steps,
            body,
        })
    }
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding (RFC 4648 §4).
fn base64_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | (u32::from(b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The inverse of [`base64_encode`]; `None` for anything else.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let text = text.as_bytes();
    // Not `is_multiple_of`: the workspace's rust-version (1.85) predates it.
    let partial = text.len() % 4;
    if partial != 0 {
        return None;
    }
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    for (index, chunk) in text.chunks(4).enumerate() {
        let last = index == text.len() / 4 - 1;
        let padding = chunk.iter().rev().take_while(|&&c| c == b'=').count();
        if padding > 2 || (padding > 0 && !last) {
            return None;
        }
        let mut n = 0u32;
        for (i, &c) in chunk[..4 - padding].iter().enumerate() {
            let value = ALPHABET.iter().position(|&a| a == c)? as u32;
            n |= value << (18 - 6 * i);
        }
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..4 - padding]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        let vectors = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, encoded) in vectors {
            assert_eq!(base64_encode(plain.as_bytes()), encoded);
            assert_eq!(base64_decode(encoded).unwrap(), plain.as_bytes());
        }
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(base64_decode(&base64_encode(&all)).unwrap(), all);
        for bad in ["Zg=", "Z===", "Zg==Zm8=", "Zm9*", "===="] {
            assert_eq!(base64_decode(bad), None, "{bad}");
        }
    }

    #[test]
    fn envelopes_round_trip_text_and_binary_bodies() {
        for body in [&b"ticket 42: printer on fire"[..], &[0xff, 0x00, 0xfe][..]] {
            let deferral = Deferral {
                topic: "tickets".to_owned(),
                channel: "work".to_owned(),
                steps: vec!["notify".to_owned(), "index".to_owned()],
                body: Bytes::copy_from_slice(body),
            };
            let json = deferral.to_json();
            assert_eq!(Deferral::from_json(&json).unwrap(), deferral);
        }
        let text: serde_json::Value = serde_json::from_slice(
            &Deferral {
                topic: "t".to_owned(),
                channel: "c".to_owned(),
                steps: vec!["s".to_owned()],
                body: Bytes::from_static(b"hi"),
            }
            .to_json(),
        )
        .unwrap();
        assert_eq!(text["encoding"], "utf8");
        assert_eq!(text["body"], "hi");
    }

    #[test]
    fn bad_envelopes_are_errors() {
        assert!(Deferral::from_json(b"hello").is_err());
        let bad = br#"{"topic":"t","channel":"c","steps":[],"encoding":"base64","body":"@@@@"}"#;
        assert!(matches!(
            Deferral::from_json(bad),
            Err(DeferralError::Base64)
        ));
    }
}
