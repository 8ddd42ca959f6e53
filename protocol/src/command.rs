//! Client → server commands: typed values, a streaming decoder and an encoder.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::names::is_valid_name;
use crate::{ErrorCode, IdentifyRequest, Limits, MessageId, ProtocolError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `IDENTIFY\n[4B len][JSON]`
    Identify(IdentifyRequest),
    /// `AUTH\n[4B len][secret]`
    Auth(Bytes),
    /// `SUB <topic> <channel>\n` (names already validated)
    Sub { topic: String, channel: String },
    /// `PUB <topic>\n[4B len][body]`
    Pub { topic: String, body: Bytes },
    /// `MPUB <topic>\n[4B body len][4B count]([4B len][body])*`
    Mpub { topic: String, bodies: Vec<Bytes> },
    /// `DPUB <topic> <defer_ms>\n[4B len][body]`; `defer_ms` is not range-checked
    /// here beyond being a non-negative integer (the broker knows max-req-timeout).
    Dpub {
        topic: String,
        defer_ms: u64,
        body: Bytes,
    },
    /// `RDY <n>\n`, n defaults to 1 when missing. Not range-checked here beyond
    /// being a non-negative integer (the broker knows max-rdy-count).
    Rdy(u64),
    /// `FIN <id>\n`
    Fin(MessageId),
    /// `REQ <id> <timeout_ms>\n`; negative values are kept so the broker can clamp as nsqd does.
    Req { id: MessageId, timeout_ms: i64 },
    /// `TOUCH <id>\n`
    Touch(MessageId),
    /// `CLS\n`
    Cls,
    /// `NOP\n`
    Nop,
    /// `BACKPRESSURE <level>\n`, a triage extension NSQ clients never send:
    /// the consumer says how loaded it is, 0 (normal) to
    /// [`MAX_BACKPRESSURE_LEVEL`] (overloaded), and the broker holds back
    /// lower-priority tiers from it accordingly. The decoder accepts only
    /// valid levels; [`Command::encode`] writes whatever it is given.
    Backpressure(u8),
}

/// The highest level `BACKPRESSURE` accepts: 0 normal, 1 degraded, 2 overloaded.
pub const MAX_BACKPRESSURE_LEVEL: u8 = 2;

impl Command {
    /// Appends the wire form of this command to `out` (client side).
    ///
    /// Names and ids are written as given, unchecked: a client that encodes an
    /// invalid topic gets nsqd's error back, as it would from any client.
    ///
    /// # Panics
    /// If a body is larger than the protocol's signed 32-bit length can declare
    /// (2 GiB); no server would accept such a command anyway.
    pub fn encode(&self, out: &mut BytesMut) {
        match self {
            Command::Identify(req) => {
                let json = serde_json::to_vec(req)
                    .expect("IdentifyRequest holds only strings, bools and integers");
                out.put_slice(b"IDENTIFY\n");
                put_body(&json, out);
            }
            Command::Auth(secret) => {
                out.put_slice(b"AUTH\n");
                put_body(secret, out);
            }
            Command::Sub { topic, channel } => {
                put_line(out, &[b"SUB", topic.as_bytes(), channel.as_bytes()]);
            }
            Command::Pub { topic, body } => {
                put_line(out, &[b"PUB", topic.as_bytes()]);
                put_body(body, out);
            }
            Command::Mpub { topic, bodies } => {
                put_line(out, &[b"MPUB", topic.as_bytes()]);
                let body_len = 4 + bodies.iter().map(|b| 4 + b.len()).sum::<usize>();
                out.reserve(4 + body_len);
                put_len(body_len, out);
                put_len(bodies.len(), out);
                for body in bodies {
                    put_body(body, out);
                }
            }
            Command::Dpub {
                topic,
                defer_ms,
                body,
            } => {
                put_line(
                    out,
                    &[b"DPUB", topic.as_bytes(), decimal(*defer_ms).as_slice()],
                );
                put_body(body, out);
            }
            Command::Rdy(count) => put_line(out, &[b"RDY", decimal(*count).as_slice()]),
            Command::Fin(id) => put_line(out, &[b"FIN", id.as_bytes()]),
            Command::Req { id, timeout_ms } => {
                put_line(
                    out,
                    &[
                        b"REQ",
                        id.as_bytes(),
                        signed_decimal(*timeout_ms).as_slice(),
                    ],
                );
            }
            Command::Touch(id) => put_line(out, &[b"TOUCH", id.as_bytes()]),
            Command::Cls => out.put_slice(b"CLS\n"),
            Command::Nop => out.put_slice(b"NOP\n"),
            Command::Backpressure(level) => put_line(
                out,
                &[b"BACKPRESSURE", decimal(u64::from(*level)).as_slice()],
            ),
        }
    }

    /// The command's name as nsqd spells it in errors (`PUB`, `MPUB`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            Command::Identify(_) => "IDENTIFY",
            Command::Auth(_) => "AUTH",
            Command::Sub { .. } => "SUB",
            Command::Pub { .. } => "PUB",
            Command::Mpub { .. } => "MPUB",
            Command::Dpub { .. } => "DPUB",
            Command::Rdy(_) => "RDY",
            Command::Fin(_) => "FIN",
            Command::Req { .. } => "REQ",
            Command::Touch(_) => "TOUCH",
            Command::Cls => "CLS",
            Command::Nop => "NOP",
            Command::Backpressure(_) => "BACKPRESSURE",
        }
    }
}

/// Writes space-separated parameters and the closing `\n`.
fn put_line(out: &mut BytesMut, params: &[&[u8]]) {
    for (i, param) in params.iter().enumerate() {
        if i > 0 {
            out.put_u8(b' ');
        }
        out.put_slice(param);
    }
    out.put_u8(b'\n');
}

/// Writes a 4-byte length and the body.
fn put_body(body: &[u8], out: &mut BytesMut) {
    out.reserve(4 + body.len());
    put_len(body.len(), out);
    out.put_slice(body);
}

fn put_len(len: usize, out: &mut BytesMut) {
    // nsqd reads lengths as int32, so anything above i32::MAX would arrive negative.
    let len = i32::try_from(len).expect("command body larger than 2 GiB");
    out.put_i32(len);
}

/// The decimal digits of a number, without allocating. 20 bytes hold both
/// `u64::MAX` and `i64::MIN` with its sign.
struct Decimal {
    digits: [u8; 20],
    start: usize,
}

impl Decimal {
    fn as_slice(&self) -> &[u8] {
        &self.digits[self.start..]
    }
}

fn signed_decimal(n: i64) -> Decimal {
    let mut decimal = decimal(n.unsigned_abs());
    if n < 0 {
        decimal.start -= 1;
        decimal.digits[decimal.start] = b'-';
    }
    decimal
}

fn decimal(mut n: u64) -> Decimal {
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return Decimal { digits, start };
        }
    }
}

/// Decodes one command from the front of `buf`.
///
/// Returns `Ok(None)` when `buf` does not yet hold a whole command (nothing is
/// consumed), `Ok(Some(cmd))` after consuming exactly that command's bytes, and
/// `Err` for input nsqd would reject, with the error code and text nsqd sends.
/// Errors that can be known from the line alone (unknown command, bad name, bad
/// number) are returned as soon as the line is complete, without waiting for a
/// body; a declared body size is checked against `limits` as soon as its 4
/// bytes have arrived, before any body byte is buffered for it.
///
/// Bodies are slices of `buf`'s storage, not copies. Checks that need the
/// connection's state (is the client subscribed, RDY and DPUB ranges, auth) are
/// left to the broker, so for a command sent in the wrong state nsqd may name
/// a different error than this function does; both are fatal `E_INVALID`.
///
/// # Errors
/// Every error is fatal (nsqd closes the connection) and nothing is consumed;
/// the stream cannot be resynchronised after one.
/// - `E_INVALID`: unknown command, too few parameters, unparseable number,
///   message id not 16 bytes, or no `\n` within `limits.max_line_len` bytes.
/// - `E_BAD_TOPIC` / `E_BAD_CHANNEL`: a name nsqd would not accept.
/// - `E_BAD_MESSAGE`: a PUB/DPUB body, or one MPUB message, of size ≤ 0 or
///   above `max_msg_size`.
/// - `E_BAD_BODY`: an MPUB, IDENTIFY or AUTH body of size ≤ 0 or above
///   `max_body_size`; an MPUB count ≤ 0, too large for `max_body_size`, or
///   whose messages do not exactly fill the declared body; IDENTIFY JSON that
///   does not decode.
pub fn decode_command(
    buf: &mut BytesMut,
    limits: &Limits,
) -> Result<Option<Command>, ProtocolError> {
    if let Some(id) = plain_fin(buf, limits) {
        buf.advance(PLAIN_FIN_LEN);
        return Ok(Some(Command::Fin(id)));
    }
    decode_any_command(buf, limits)
}

/// [`decode_command`] for every command, through the general line parser.
fn decode_any_command(
    buf: &mut BytesMut,
    limits: &Limits,
) -> Result<Option<Command>, ProtocolError> {
    let Some(newline) = find_newline(buf, limits)? else {
        return Ok(None);
    };
    let line = &buf[..newline];
    // Like nsqd: one trailing `\r` is dropped, so `\r\n` line endings work.
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let body_at = newline + 1;
    let command = match parse_line(line)? {
        Line::Complete(command) => {
            buf.advance(body_at);
            command
        }
        Line::Identify => {
            let Some(end) = body_end(buf, body_at, body_size("IDENTIFY", buf, body_at, limits)?)
            else {
                return Ok(None);
            };
            let command = Command::Identify(IdentifyRequest::from_json(&buf[body_at + 4..end])?);
            buf.advance(end);
            command
        }
        Line::Auth => {
            let Some(end) = body_end(buf, body_at, body_size("AUTH", buf, body_at, limits)?) else {
                return Ok(None);
            };
            Command::Auth(take_body(buf, body_at + 4, end))
        }
        Line::Pub { topic } => {
            let Some(end) = body_end(buf, body_at, message_size("PUB", buf, body_at, limits)?)
            else {
                return Ok(None);
            };
            Command::Pub {
                topic,
                body: take_body(buf, body_at + 4, end),
            }
        }
        Line::Dpub { topic, defer_ms } => {
            let Some(end) = body_end(buf, body_at, message_size("DPUB", buf, body_at, limits)?)
            else {
                return Ok(None);
            };
            Command::Dpub {
                topic,
                defer_ms,
                body: take_body(buf, body_at + 4, end),
            }
        }
        Line::Mpub { topic } => {
            let Some(count) = mpub_header(buf, body_at, limits)? else {
                return Ok(None);
            };
            let Some(end) = body_end(buf, body_at, Some(count.body_size)) else {
                return Ok(None);
            };
            check_mpub_messages(&buf[body_at + 8..end], count, limits)?;
            let bodies = split_mpub_messages(take_body(buf, body_at + 8, end), count);
            Command::Mpub { topic, bodies }
        }
    };
    Ok(Some(command))
}

/// Where the line's `\n` is, or `None` if it has not arrived yet.
fn find_newline(buf: &[u8], limits: &Limits) -> Result<Option<usize>, ProtocolError> {
    let window = &buf[..buf.len().min(limits.max_line_len)];
    if let Some(newline) = window.iter().position(|&b| b == b'\n') {
        return Ok(Some(newline));
    }
    if !buf.is_empty() && buf.len() >= limits.max_line_len {
        // nsqd buffers a line without bound; we refuse rather than let a peer
        // grow our buffer by never sending `\n`.
        return Err(invalid(format!(
            "command line longer than {} bytes",
            limits.max_line_len
        )));
    }
    Ok(None)
}

/// How far a command's line can be from its start for [`pending_command_len`]
/// to find it (the longest name is 64 bytes).
const LINE_LOOKAHEAD: usize = 128;

/// The whole length of the incomplete command at the front of `buf`, once
/// its body's length prefix has arrived, so a reader can make room for all
/// of it at once rather than growing (and copying) its buffer chunk by chunk.
/// `None` while the line or the prefix is incomplete, for commands without
/// a body, and for sizes the decoder will refuse anyway.
pub fn pending_command_len(buf: &[u8]) -> Option<usize> {
    let window = &buf[..buf.len().min(LINE_LOOKAHEAD)];
    let newline = window.iter().position(|&b| b == b'\n')?;
    let name = window[..newline].split(|&b| b == b' ').next()?;
    if !matches!(name, b"PUB" | b"MPUB" | b"DPUB" | b"IDENTIFY" | b"AUTH") {
        return None;
    }
    let size = usize::try_from(read_len(buf, newline + 1)?).ok()?;
    Some(newline + 1 + 4 + size)
}

/// The length of `FIN <16-byte id>\n`.
pub const PLAIN_FIN_LEN: usize = 4 + 16 + 1;

/// The id of a `FIN <id>\n` at the front of `buf`, the command a consumer
/// sends once per message, read without splitting the line. Anything
/// else, or anything the general parser might read differently (a space,
/// `\r` or newline within the id), is left to it.
fn plain_fin(buf: &[u8], limits: &Limits) -> Option<MessageId> {
    let line = buf.get(..PLAIN_FIN_LEN)?;
    let id = <[u8; 16]>::try_from(&line[4..20]).ok()?;
    let plain = line.starts_with(b"FIN ")
        && line[20] == b'\n'
        && limits.max_line_len >= PLAIN_FIN_LEN
        && !id.iter().any(|b| matches!(b, b' ' | b'\r' | b'\n'));
    plain.then_some(MessageId(id))
}

/// What a command line says: a whole command, or one still waiting for its body.
enum Line {
    Complete(Command),
    Identify,
    Auth,
    Pub { topic: String },
    Mpub { topic: String },
    Dpub { topic: String, defer_ms: u64 },
}

/// Parses a line (without `\n`) in the order nsqd checks it, with its error texts.
fn parse_line(line: &[u8]) -> Result<Line, ProtocolError> {
    let params = Params::split(line);
    let cmd = params.get(0);
    Ok(match cmd {
        b"IDENTIFY" => Line::Identify,
        b"AUTH" => {
            if params.count != 1 {
                return Err(invalid("AUTH invalid number of parameters"));
            }
            Line::Auth
        }
        b"SUB" => {
            params.require(3, "SUB insufficient number of parameters")?;
            let topic = topic_name("SUB", params.get(1))?;
            let channel = params.get(2);
            if !is_valid_name(channel) {
                return Err(ProtocolError::new(
                    ErrorCode::BadChannel,
                    format!("SUB channel name {} is not valid", go_quote(channel)),
                ));
            }
            Line::Complete(Command::Sub {
                topic,
                channel: ascii_string(channel),
            })
        }
        b"PUB" => {
            params.require(2, "PUB insufficient number of parameters")?;
            Line::Pub {
                topic: topic_name("PUB", params.get(1))?,
            }
        }
        b"MPUB" => {
            params.require(2, "MPUB insufficient number of parameters")?;
            Line::Mpub {
                topic: topic_name("MPUB", params.get(1))?,
            }
        }
        b"DPUB" => {
            params.require(3, "DPUB insufficient number of parameters")?;
            let topic = topic_name("DPUB", params.get(1))?;
            let timeout = params.get(2);
            let defer_ms = parse_base10(timeout).ok_or_else(|| {
                invalid(format!("DPUB could not parse timeout {}", lossy(timeout)))
            })?;
            Line::Dpub { topic, defer_ms }
        }
        b"RDY" => {
            let mut count = 1;
            if params.count > 1 {
                let raw = params.get(1);
                count = parse_base10(raw)
                    .ok_or_else(|| invalid(format!("RDY could not parse count {}", lossy(raw))))?;
            }
            Line::Complete(Command::Rdy(count))
        }
        b"FIN" => {
            params.require(2, "FIN insufficient number of params")?;
            Line::Complete(Command::Fin(message_id(params.get(1))?))
        }
        b"REQ" => {
            params.require(3, "REQ insufficient number of params")?;
            let id = message_id(params.get(1))?;
            let raw = params.get(2);
            let timeout_ms = parse_req_timeout(raw)
                .ok_or_else(|| invalid(format!("REQ could not parse timeout {}", lossy(raw))))?;
            Line::Complete(Command::Req { id, timeout_ms })
        }
        b"TOUCH" => {
            params.require(2, "TOUCH insufficient number of params")?;
            Line::Complete(Command::Touch(message_id(params.get(1))?))
        }
        b"CLS" => Line::Complete(Command::Cls),
        b"NOP" => Line::Complete(Command::Nop),
        b"BACKPRESSURE" => Line::Complete(Command::Backpressure(backpressure_level(&params)?)),
        _ => return Err(invalid(format!("invalid command {}", lossy(cmd)))),
    })
}

/// The first few space-separated parameters of a line and how many there are
/// in all, split like Go's `bytes.Split(line, " ")` (so `"a  b"` has an empty
/// middle parameter) without allocating.
struct Params<'a> {
    first: [&'a [u8]; 3],
    count: usize,
}

impl<'a> Params<'a> {
    fn split(line: &'a [u8]) -> Self {
        let mut params = Params {
            first: [&[]; 3],
            count: 0,
        };
        for param in line.split(|&b| b == b' ') {
            if let Some(slot) = params.first.get_mut(params.count) {
                *slot = param;
            }
            params.count += 1;
        }
        params
    }

    fn get(&self, i: usize) -> &'a [u8] {
        self.first.get(i).copied().unwrap_or_default()
    }

    /// nsqd only checks for too few parameters; extra ones are ignored.
    fn require(&self, count: usize, text: &str) -> Result<(), ProtocolError> {
        if self.count < count {
            return Err(invalid(text));
        }
        Ok(())
    }
}

/// `BACKPRESSURE`'s one parameter. Unlike nsqd's own commands, extra
/// parameters are refused: the command is ours, so there is no client
/// behaviour to stay compatible with, and strictness keeps room to extend it.
fn backpressure_level(params: &Params<'_>) -> Result<u8, ProtocolError> {
    match params.count {
        1 => return Err(invalid("BACKPRESSURE missing level (0, 1 or 2)")),
        2 => {}
        _ => {
            return Err(invalid(
                "BACKPRESSURE takes exactly one parameter, the level (0, 1 or 2)",
            ))
        }
    }
    let raw = params.get(1);
    match raw {
        [digit @ b'0'..=b'2'] => Ok(digit - b'0'),
        _ => Err(invalid(format!(
            "BACKPRESSURE invalid level {} (want 0, 1 or 2)",
            go_quote(raw)
        ))),
    }
}

fn topic_name(cmd: &str, raw: &[u8]) -> Result<String, ProtocolError> {
    if !is_valid_name(raw) {
        return Err(ProtocolError::new(
            ErrorCode::BadTopic,
            format!("{cmd} topic name {} is not valid", go_quote(raw)),
        ));
    }
    Ok(ascii_string(raw))
}

/// A valid name is ASCII, hence UTF-8.
fn ascii_string(name: &[u8]) -> String {
    String::from_utf8_lossy(name).into_owned()
}

fn message_id(raw: &[u8]) -> Result<MessageId, ProtocolError> {
    // nsqd's text carries no command name (`getMessageID`).
    let id = <[u8; 16]>::try_from(raw).map_err(|_| invalid("invalid message ID"))?;
    Ok(MessageId(id))
}

/// nsqd's `ByteToBase10`: ASCII digits only, and an empty parameter is 0. Unlike
/// nsqd, a number that overflows a u64 is rejected rather than wrapped.
fn parse_base10(digits: &[u8]) -> Option<u64> {
    digits.iter().try_fold(0u64, |n, &d| {
        if !d.is_ascii_digit() {
            return None;
        }
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

/// REQ's timeout: digits only, as nsqd's ByteToBase10 (a `-` is refused).
/// A value past `i64::MAX` saturates; the broker clamps every timeout to
/// `max_req_timeout` anyway (nsqd wraps such a value negative and clamps it
/// to 0 instead, an accident of its integer conversion).
fn parse_req_timeout(raw: &[u8]) -> Option<i64> {
    // Empty is 0, as ByteToBase10 reads it.
    if !raw.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(parse_base10(raw).map_or(i64::MAX, |n| i64::try_from(n).unwrap_or(i64::MAX)))
}

/// The 4-byte big-endian signed length at `at`, once it has arrived.
fn read_len(buf: &[u8], at: usize) -> Option<i32> {
    let bytes = buf.get(at..at + 4)?;
    Some(i32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
}

/// An IDENTIFY or AUTH body size, checked in nsqd's order (too big, then ≤ 0).
fn body_size(
    cmd: &str,
    buf: &[u8],
    at: usize,
    limits: &Limits,
) -> Result<Option<usize>, ProtocolError> {
    let Some(size) = read_len(buf, at) else {
        return Ok(None);
    };
    if i64::from(size) > i64::from(limits.max_body_size) {
        return Err(bad_body(format!(
            "{cmd} body too big {size} > {}",
            limits.max_body_size
        )));
    }
    if size <= 0 {
        return Err(bad_body(format!("{cmd} invalid body size {size}")));
    }
    Ok(Some(size as usize))
}

/// A PUB or DPUB message size, checked in nsqd's order (≤ 0, then too big).
fn message_size(
    cmd: &str,
    buf: &[u8],
    at: usize,
    limits: &Limits,
) -> Result<Option<usize>, ProtocolError> {
    let Some(size) = read_len(buf, at) else {
        return Ok(None);
    };
    if size <= 0 {
        return Err(bad_message(format!(
            "{cmd} invalid message body size {size}"
        )));
    }
    if i64::from(size) > i64::from(limits.max_msg_size) {
        return Err(bad_message(format!(
            "{cmd} message too big {size} > {}",
            limits.max_msg_size
        )));
    }
    Ok(Some(size as usize))
}

/// Where a body of `size` bytes after the 4-byte size at `at` ends, once all of
/// it has arrived.
fn body_end(buf: &[u8], at: usize, size: Option<usize>) -> Option<usize> {
    let end = at + 4 + size?;
    (buf.len() >= end).then_some(end)
}

/// Consumes the command up to `end` and returns `start..end` of it without copying.
fn take_body(buf: &mut BytesMut, start: usize, end: usize) -> Bytes {
    let mut command = buf.split_to(end).freeze();
    command.advance(start);
    command
}

/// An MPUB body's size and message count, both checked.
#[derive(Clone, Copy)]
struct MpubHeader {
    body_size: usize,
    messages: usize,
}

/// Checks MPUB's body size as soon as it arrives and its message count as soon
/// as that arrives; `None` until both are there.
fn mpub_header(
    buf: &[u8],
    at: usize,
    limits: &Limits,
) -> Result<Option<MpubHeader>, ProtocolError> {
    let Some(size) = read_len(buf, at) else {
        return Ok(None);
    };
    check_mpub_body_size(i64::from(size), limits)?;
    let Some(count) = read_len(buf, at + 4) else {
        return Ok(None);
    };
    check_mpub_count(count, size as usize, limits).map(Some)
}

/// MPUB's body size: positive, within `max_body_size`, room for the count.
fn check_mpub_body_size(size: i64, limits: &Limits) -> Result<(), ProtocolError> {
    if size <= 0 {
        return Err(bad_body(format!("MPUB invalid body size {size}")));
    }
    if size > i64::from(limits.max_body_size) {
        return Err(bad_body(format!(
            "MPUB body too big {size} > {}",
            limits.max_body_size
        )));
    }
    if size < 4 {
        return Err(bad_body(format!(
            "MPUB body size {size} too small for a message count"
        )));
    }
    Ok(())
}

/// MPUB's message count, for a body of `body_size` bytes (already checked).
fn check_mpub_count(
    count: i32,
    body_size: usize,
    limits: &Limits,
) -> Result<MpubHeader, ProtocolError> {
    // 4 bytes of count, then at least 4 of size and 1 of body per message.
    let max_messages = (i64::from(limits.max_body_size) - 4) / 5;
    if count <= 0 || i64::from(count) > max_messages {
        return Err(bad_body(format!("MPUB invalid message count {count}")));
    }
    // nsqd would go on reading past the declared body; we know now it cannot
    // hold them. Only the 4-byte sizes count here: an empty message must
    // reach its own check and be named E_BAD_MESSAGE, as nsqd names it.
    if count as usize > (body_size - 4) / 4 {
        return Err(bad_body(format!(
            "MPUB message count {count} does not fit body size {body_size}"
        )));
    }
    Ok(MpubHeader {
        body_size,
        messages: count as usize,
    })
}

/// Splits an MPUB body (`[4B count]([4B size][data])*`, without the 4-byte
/// body size that precedes it over TCP) into message bodies, checked exactly as
/// [`decode_command`] checks MPUB. This is also the body of nsqd's HTTP
/// `/mpub?binary=true`. The bodies are slices of `body`, not copies.
///
/// # Errors
/// `E_BAD_BODY` for a body that is empty, above `max_body_size` or not filled
/// exactly by its messages, or a bad count; `E_BAD_MESSAGE` for a message of
/// size ≤ 0 or above `max_msg_size`.
pub fn decode_mpub_messages(mut body: Bytes, limits: &Limits) -> Result<Vec<Bytes>, ProtocolError> {
    check_mpub_body_size(i64::try_from(body.len()).unwrap_or(i64::MAX), limits)?;
    let header = check_mpub_count(body.get_i32(), body.len() + 4, limits)?;
    check_mpub_messages(&body, header, limits)?;
    Ok(split_mpub_messages(body, header))
}

/// The bodies of messages already checked by [`check_mpub_messages`].
fn split_mpub_messages(mut messages: Bytes, header: MpubHeader) -> Vec<Bytes> {
    let mut bodies = Vec::with_capacity(header.messages);
    while messages.has_remaining() {
        let size = messages.get_u32() as usize;
        bodies.push(messages.split_to(size));
    }
    bodies
}

/// Checks each `[4B size][body]` in `messages` (the body after its count) in
/// nsqd's order, and that together they fill it exactly.
fn check_mpub_messages(
    mut messages: &[u8],
    header: MpubHeader,
    limits: &Limits,
) -> Result<(), ProtocolError> {
    let overrun = |i| {
        bad_body(format!(
            "MPUB message({i}) runs past body size {}",
            header.body_size
        ))
    };
    for i in 0..header.messages {
        let Some((size, rest)) = messages.split_first_chunk::<4>() else {
            return Err(overrun(i));
        };
        let size = i32::from_be_bytes(*size);
        if size <= 0 {
            return Err(bad_message(format!(
                "MPUB invalid message({i}) body size {size}"
            )));
        }
        if i64::from(size) > i64::from(limits.max_msg_size) {
            return Err(bad_message(format!(
                "MPUB message too big {size} > {}",
                limits.max_msg_size
            )));
        }
        messages = rest.get(size as usize..).ok_or_else(|| overrun(i))?;
    }
    if !messages.is_empty() {
        return Err(bad_body(format!(
            "MPUB body size {} has {} bytes after its {} messages",
            header.body_size,
            messages.len(),
            header.messages
        )));
    }
    Ok(())
}

fn invalid(description: impl Into<String>) -> ProtocolError {
    ProtocolError::new(ErrorCode::Invalid, description)
}

fn bad_body(description: String) -> ProtocolError {
    ProtocolError::new(ErrorCode::BadBody, description)
}

fn bad_message(description: String) -> ProtocolError {
    ProtocolError::new(ErrorCode::BadMessage, description)
}

/// A parameter as Go's `%s` prints bytes, made valid UTF-8.
fn lossy(raw: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(raw)
}

/// Go's `%q` (`strconv.Quote`) of raw bytes, as nsqd quotes bad names: `\"` and
/// `\\`, C escapes for control characters, `\xNN` for other control bytes and
/// invalid UTF-8, `\uNNNN` for other non-printable characters. Go's notion of
/// printable comes from Unicode tables; outside ASCII this treats every
/// character except controls and whitespace as printable, which can differ
/// from Go for rare characters such as zero-width or unassigned ones.
fn go_quote(raw: &[u8]) -> String {
    use std::fmt::Write;

    let mut out = String::with_capacity(raw.len() + 2);
    out.push('"');
    for chunk in raw.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '"' | '\\' => {
                    out.push('\\');
                    out.push(c);
                }
                '\x07' => out.push_str("\\a"),
                '\x08' => out.push_str("\\b"),
                '\x0c' => out.push_str("\\f"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                '\x0b' => out.push_str("\\v"),
                ' '..='~' => out.push(c),
                _ if c.is_ascii() => {
                    let _ = write!(out, "\\x{:02x}", u32::from(c));
                }
                _ if !c.is_control() && !c.is_whitespace() => out.push(c),
                _ if u32::from(c) < 0x10000 => {
                    let _ = write!(out, "\\u{:04x}", u32::from(c));
                }
                _ => {
                    let _ = write!(out, "\\U{:08x}", u32::from(c));
                }
            }
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Decodes everything in `input` with `decode`, recording each result
    /// and what is left after it.
    fn decode_all(
        input: &[u8],
        limits: &Limits,
        decode: fn(&mut BytesMut, &Limits) -> Result<Option<Command>, ProtocolError>,
    ) -> Vec<(String, usize)> {
        let mut buf = BytesMut::from(input);
        let mut out = Vec::new();
        loop {
            let result = decode(&mut buf, limits);
            let stop = !matches!(result, Ok(Some(_)));
            out.push((format!("{result:?}"), buf.len()));
            if stop {
                return out;
            }
        }
    }

    #[test]
    fn pending_command_len_is_the_whole_command_once_its_size_is_known() {
        let mut mpub = b"MPUB t\n".to_vec();
        mpub.extend_from_slice(&14u32.to_be_bytes());
        mpub.extend_from_slice(&1u32.to_be_bytes());
        mpub.extend_from_slice(&6u32.to_be_bytes());
        mpub.extend_from_slice(b"abcdef");
        let whole = mpub.len();
        assert_eq!(whole, 7 + 4 + 14);
        for cut in 0..whole {
            let known = pending_command_len(&mpub[..cut]);
            assert_eq!(known, (cut >= 11).then_some(whole), "cut at {cut}");
        }
        let mut pubs = b"PUB t\n".to_vec();
        pubs.extend_from_slice(&3u32.to_be_bytes());
        assert_eq!(pending_command_len(&pubs), Some(6 + 4 + 3));
        assert_eq!(pending_command_len(b"FIN 0123456789abcdef"), None);
        assert_eq!(pending_command_len(b"NOP\n"), None);
        let mut negative = b"PUB t\n".to_vec();
        negative.extend_from_slice(&(-1i32).to_be_bytes());
        assert_eq!(pending_command_len(&negative), None);
    }

    proptest! {
        /// The FIN shortcut reads exactly what the general parser reads,
        /// whatever bytes surround and fill the id.
        #[test]
        fn plain_fin_shortcut_agrees_with_the_line_parser(
            lines in proptest::collection::vec(
                (
                    prop_oneof![Just(&b"FIN "[..]), Just(&b"FIN"[..]), Just(&b"FIN  "[..]), Just(&b"REQ "[..]), Just(&b"NOP"[..])],
                    prop_oneof![3 => Just(16usize), 1 => 0..20usize].prop_flat_map(|len| {
                        proptest::collection::vec(
                            prop_oneof![
                                20 => proptest::sample::select(&b"0123456789abcdef"[..]),
                                1 => proptest::sample::select(&b" \r\nZ"[..]),
                            ],
                            len,
                        )
                    }),
                    prop_oneof![Just(&b"\n"[..]), Just(&b"\r\n"[..]), Just(&b" x\n"[..]), Just(&b""[..])],
                ),
                1..6,
            ),
            max_line_len in prop_oneof![Just(1024usize), 18..24usize],
        ) {
            let input: Vec<u8> = lines
                .iter()
                .flat_map(|(head, id, tail)| [head.to_vec(), id.clone(), tail.to_vec()].concat())
                .collect();
            let limits = Limits { max_line_len, ..Limits::default() };
            prop_assert_eq!(
                decode_all(&input, &limits, decode_command),
                decode_all(&input, &limits, decode_any_command)
            );
        }
    }

    #[test]
    fn go_quote_matches_go_strconv_quote() {
        // Expected values from Go's fmt.Sprintf("%q", ...).
        assert_eq!(go_quote(b"x y"), r#""x y""#);
        assert_eq!(go_quote(b""), r#""""#);
        assert_eq!(go_quote(b"a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(go_quote(b"\x07\x08\x0c\n\r\t\x0b"), r#""\a\b\f\n\r\t\v""#);
        assert_eq!(go_quote(b"\x00\x1f\x7f"), r#""\x00\x1f\x7f""#);
        assert_eq!(go_quote("ä日本".as_bytes()), "\"ä日本\"");
        assert_eq!(go_quote(b"\xff\xfe"), r#""\xff\xfe""#);
        assert_eq!(go_quote("a\u{85}b\u{a0}".as_bytes()), r#""a\u0085b\u00a0""#);
        assert_eq!(go_quote(b"\xe6\x97"), r#""\xe6\x97""#);
    }

    #[test]
    fn base10_is_nsqd_byte_to_base10_without_wrapping() {
        assert_eq!(parse_base10(b""), Some(0));
        assert_eq!(parse_base10(b"0"), Some(0));
        assert_eq!(parse_base10(b"007"), Some(7));
        assert_eq!(parse_base10(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_base10(b"18446744073709551616"), None);
        for bad in [&b"-1"[..], b"+1", b"1.0", b"1e3", b" 1", b"0x10", b"\xff"] {
            assert_eq!(parse_base10(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn req_timeouts_are_digits_and_saturate() {
        assert_eq!(parse_req_timeout(b"5"), Some(5));
        assert_eq!(parse_req_timeout(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse_req_timeout(b"9223372036854775808"), Some(i64::MAX));
        assert_eq!(parse_req_timeout(b"18446744073709551616"), Some(i64::MAX));
        assert_eq!(parse_req_timeout(b""), Some(0));
        for bad in [&b"-1"[..], b"-", b"+1", b"1-", b"1.5"] {
            assert_eq!(parse_req_timeout(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn decimal_writes_every_digit() {
        for n in [0, 9, 10, 12345, u64::MAX] {
            assert_eq!(decimal(n).as_slice(), n.to_string().as_bytes());
        }
        for n in [0, -1, 1, -12345, i64::MIN, i64::MAX] {
            assert_eq!(signed_decimal(n).as_slice(), n.to_string().as_bytes());
        }
    }

    #[test]
    fn params_split_like_go_bytes_split() {
        let p = Params::split(b"");
        assert_eq!((p.count, p.get(0)), (1, &b""[..]));
        let p = Params::split(b"SUB  t c d");
        assert_eq!(p.count, 5);
        assert_eq!([p.get(0), p.get(1), p.get(2)], [&b"SUB"[..], b"", b"t"]);
        assert_eq!(p.get(3), b"");
    }
}
