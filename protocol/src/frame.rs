//! Server → client frames: `[4B size][4B frame type][data]`, size counting the type field.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::{ErrorCode, Message, ProtocolError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
pub enum FrameType {
    Response = 0,
    Error = 1,
    Message = 2,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Response(Bytes),
    /// The raw error text, `"<CODE> <description>"`.
    Error(Bytes),
    Message(Message),
}

/// Appends a response frame (`OK`, `CLOSE_WAIT`, `_heartbeat_`, JSON).
pub fn encode_response(data: &[u8], out: &mut BytesMut) {
    put_header(FrameType::Response, data.len(), out);
    out.put_slice(data);
}

/// Appends an error frame carrying `"<CODE> <description>"`.
pub fn encode_error(err: &ProtocolError, out: &mut BytesMut) {
    let code = err.code.as_str().as_bytes();
    let description = err.description.as_bytes();
    put_header(FrameType::Error, code.len() + 1 + description.len(), out);
    out.put_slice(code);
    out.put_u8(b' ');
    out.put_slice(description);
}

/// Appends a message frame.
pub fn encode_message(msg: &Message, out: &mut BytesMut) {
    put_header(FrameType::Message, msg.encoded_len(), out);
    msg.encode(out);
}

/// Bytes before a frame's data: the size and the frame type.
pub const FRAME_HEADER_LEN: usize = 8;

/// Writes `[size][type]` for `data_len` bytes of data and reserves room for them.
///
/// # Panics
/// If the frame would not fit the protocol's 32-bit size field; every frame
/// we send is bounded far below that by the message and body size limits.
fn put_header(frame_type: FrameType, data_len: usize, out: &mut BytesMut) {
    let size = u32::try_from(data_len + 4).expect("frame larger than 4 GiB");
    out.reserve(FRAME_HEADER_LEN + data_len);
    out.put_u32(size);
    out.put_i32(frame_type as i32);
}

impl FrameType {
    /// The frame type for a wire value, if it is one of the three nsqd sends.
    pub fn from_wire(value: i32) -> Option<FrameType> {
        match value {
            0 => Some(FrameType::Response),
            1 => Some(FrameType::Error),
            2 => Some(FrameType::Message),
            _ => None,
        }
    }
}

impl Frame {
    /// Appends this frame's wire form to `out` (server side, and tests).
    pub fn encode(&self, out: &mut BytesMut) {
        match self {
            Frame::Response(data) => encode_response(data, out),
            Frame::Error(data) => {
                put_header(FrameType::Error, data.len(), out);
                out.put_slice(data);
            }
            Frame::Message(msg) => encode_message(msg, out),
        }
    }
}

/// Client side: decodes one frame from the front of `buf`; `Ok(None)` when more
/// bytes are needed. `max_frame_size` bounds the declared size before allocation.
///
/// `max_frame_size` applies to the size field itself (frame type plus data).
/// Nothing is consumed unless a whole frame is returned; data is a slice of
/// `buf`, not a copy.
///
/// # Errors
/// `E_BAD_PROTOCOL` for a size below 4 or above `max_frame_size` and for an
/// unknown frame type (each as soon as its bytes are there), `E_BAD_MESSAGE`
/// for a message frame too short for the message header. The stream cannot be
/// resynchronised after any of them.
pub fn decode_frame(
    buf: &mut BytesMut,
    max_frame_size: u32,
) -> Result<Option<Frame>, ProtocolError> {
    let Some(size) = buf.first_chunk::<4>().map(|b| u32::from_be_bytes(*b)) else {
        return Ok(None);
    };
    if size < 4 {
        return Err(ProtocolError::new(
            ErrorCode::BadProtocol,
            format!("invalid frame size {size}"),
        ));
    }
    if size > max_frame_size {
        return Err(ProtocolError::new(
            ErrorCode::BadProtocol,
            format!("frame too big {size} > {max_frame_size}"),
        ));
    }
    let Some(type_bytes) = buf.get(4..FRAME_HEADER_LEN) else {
        return Ok(None);
    };
    let raw_type = i32::from_be_bytes([type_bytes[0], type_bytes[1], type_bytes[2], type_bytes[3]]);
    let Some(frame_type) = FrameType::from_wire(raw_type) else {
        return Err(ProtocolError::new(
            ErrorCode::BadProtocol,
            format!("unknown frame type {raw_type}"),
        ));
    };
    let total = (size as usize).saturating_add(4);
    if buf.len() < total {
        return Ok(None);
    }
    let data_len = total - FRAME_HEADER_LEN;
    if frame_type == FrameType::Message {
        // Check before consuming so a bad frame leaves `buf` as it was.
        if data_len < crate::MESSAGE_HEADER_LEN {
            return Err(ProtocolError::new(
                ErrorCode::BadMessage,
                format!("invalid message buffer size ({data_len})"),
            ));
        }
    }
    let mut frame = buf.split_to(total).freeze();
    frame.advance(FRAME_HEADER_LEN);
    Ok(Some(match frame_type {
        FrameType::Response => Frame::Response(frame),
        FrameType::Error => Frame::Error(frame),
        FrameType::Message => Frame::Message(Message::decode(frame)?),
    }))
}

/// Splits an error frame's text into its code and description.
///
/// `None` when the text does not start with a known code. A code alone (no
/// space) gives an empty description.
pub fn parse_error_text(data: &[u8]) -> Option<(ErrorCode, String)> {
    let (code, description) = match data.iter().position(|&b| b == b' ') {
        Some(space) => (&data[..space], &data[space + 1..]),
        None => (data, &[][..]),
    };
    let code = ErrorCode::from_wire(std::str::from_utf8(code).ok()?)?;
    Some((code, String::from_utf8_lossy(description).into_owned()))
}
