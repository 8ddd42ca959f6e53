//! The message layout shared by the wire and (later) the store:
//! `[8-byte i64 timestamp ns][2-byte u16 attempts][16-byte id][body]`, big-endian.

use bytes::{Buf, BufMut, Bytes};

use crate::{ErrorCode, ProtocolError};

/// 8 + 2 + 16.
pub const MESSAGE_HEADER_LEN: usize = 26;

/// 16 opaque bytes on the wire. triage uses 16 lowercase hex digits of a u64
/// (like nsqd's GUIDs), so an id never contains a space or newline and can be
/// sent back in `FIN <id>\n`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId(pub [u8; 16]);

impl MessageId {
    /// The hex form of `n`.
    pub fn from_u64(n: u64) -> MessageId {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut id = [0u8; 16];
        for (i, digit) in id.iter_mut().enumerate() {
            // Most significant nibble first, so ids sort like the numbers they encode.
            let nibble = (n >> (60 - 4 * i)) & 0xf;
            *digit = HEX[nibble as usize];
        }
        MessageId(id)
    }

    /// The u64 back, if the 16 bytes are lowercase or uppercase hex.
    pub fn to_u64(&self) -> Option<u64> {
        self.0.iter().try_fold(0u64, |n, &b| {
            let nibble = char::from(b).to_digit(16)?;
            Some(n << 4 | u64::from(nibble))
        })
    }

    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Nanoseconds since the Unix epoch, set at publish.
    pub timestamp_ns: i64,
    /// Delivery attempts so far; incremented just before each delivery.
    pub attempts: u16,
    pub id: MessageId,
    pub body: Bytes,
}

impl Message {
    /// Appends header and body (no frame header) to `out`.
    pub fn encode(&self, out: &mut bytes::BytesMut) {
        out.reserve(MESSAGE_HEADER_LEN + self.body.len());
        out.put_i64(self.timestamp_ns);
        out.put_u16(self.attempts);
        out.put_slice(&self.id.0);
        out.put_slice(&self.body);
    }

    /// Parses header and body; `data` is a whole message frame payload. The body
    /// is a slice of `data`, not a copy.
    ///
    /// # Errors
    /// `E_BAD_MESSAGE` when `data` is shorter than the 26-byte header.
    pub fn decode(mut data: Bytes) -> Result<Message, ProtocolError> {
        if data.len() < MESSAGE_HEADER_LEN {
            return Err(ProtocolError::new(
                ErrorCode::BadMessage,
                format!("invalid message buffer size ({})", data.len()),
            ));
        }
        let timestamp_ns = data.get_i64();
        let attempts = data.get_u16();
        let mut id = [0u8; 16];
        data.copy_to_slice(&mut id);
        Ok(Message {
            timestamp_ns,
            attempts,
            id: MessageId(id),
            body: data,
        })
    }

    /// Length of the encoded form (header and body).
    pub fn encoded_len(&self) -> usize {
        MESSAGE_HEADER_LEN + self.body.len()
    }
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;

    use super::*;

    #[test]
    fn id_is_sixteen_lowercase_hex_digits() {
        assert_eq!(MessageId::from_u64(0).as_bytes(), b"0000000000000000");
        assert_eq!(
            MessageId::from_u64(0x0123_4567_89ab_cdef).as_bytes(),
            b"0123456789abcdef"
        );
        assert_eq!(
            MessageId::from_u64(u64::MAX).as_bytes(),
            b"ffffffffffffffff"
        );
    }

    #[test]
    fn id_round_trips_and_accepts_either_case() {
        for n in [0, 1, 0xdead_beef, u64::MAX, 1 << 63, 0x0123_4567_89ab_cdef] {
            assert_eq!(MessageId::from_u64(n).to_u64(), Some(n));
        }
        assert_eq!(
            MessageId(*b"0123456789ABCDEF").to_u64(),
            Some(0x0123_4567_89ab_cdef)
        );
        assert_eq!(
            MessageId(*b"0123456789AbCdEf").to_u64(),
            Some(0x0123_4567_89ab_cdef)
        );
    }

    #[test]
    fn id_rejects_non_hex() {
        for raw in [
            b"012345678 abcdef",
            b"0123456789abcdeg",
            b"\n123456789abcdef",
            b"+123456789abcdef",
        ] {
            assert_eq!(MessageId(*raw).to_u64(), None, "{raw:?}");
        }
    }

    #[test]
    fn ids_order_like_their_numbers() {
        assert!(MessageId::from_u64(9) < MessageId::from_u64(10));
        assert!(MessageId::from_u64(0xff) < MessageId::from_u64(0x100));
    }

    #[test]
    fn layout_is_ts_attempts_id_body_big_endian() {
        let msg = Message {
            timestamp_ns: 0x0102_0304_0506_0708,
            attempts: 0x090a,
            id: MessageId(*b"abcdefghijklmnop"),
            body: Bytes::from_static(b"hello"),
        };
        let mut out = BytesMut::new();
        msg.encode(&mut out);
        let mut expected = vec![1, 2, 3, 4, 5, 6, 7, 8, 9, 10];
        expected.extend_from_slice(b"abcdefghijklmnophello");
        assert_eq!(&out[..], &expected[..]);
        assert_eq!(out.len(), msg.encoded_len());
        assert_eq!(Message::decode(out.freeze()).unwrap(), msg);
    }

    #[test]
    fn negative_timestamp_and_empty_body_round_trip() {
        let msg = Message {
            timestamp_ns: -5,
            attempts: u16::MAX,
            id: MessageId::from_u64(7),
            body: Bytes::new(),
        };
        let mut out = BytesMut::new();
        msg.encode(&mut out);
        assert_eq!(out.len(), MESSAGE_HEADER_LEN);
        assert_eq!(Message::decode(out.freeze()).unwrap(), msg);
    }

    #[test]
    fn decode_body_is_a_slice_of_the_input() {
        let msg = Message {
            timestamp_ns: 1,
            attempts: 1,
            id: MessageId::from_u64(1),
            body: Bytes::from_static(b"xyz"),
        };
        let mut out = BytesMut::new();
        msg.encode(&mut out);
        let data = out.freeze();
        let decoded = Message::decode(data.clone()).unwrap();
        assert_eq!(decoded.body.as_ptr(), data[MESSAGE_HEADER_LEN..].as_ptr());
    }

    #[test]
    fn short_payload_is_bad_message() {
        for len in 0..MESSAGE_HEADER_LEN {
            let err = Message::decode(Bytes::from(vec![0u8; len])).unwrap_err();
            assert_eq!(err.code, ErrorCode::BadMessage);
            assert_eq!(
                err.description,
                format!("invalid message buffer size ({len})")
            );
        }
    }
}
