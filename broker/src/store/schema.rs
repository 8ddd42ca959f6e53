//! Typed column families: each schema is a column family name, a key codec
//! and a value codec, so no other code in the store builds or parses raw
//! bytes. Keys are big-endian and length-prefixed: big-endian so that
//! RocksDB's byte order is sequence order, length-prefixed so that one name
//! is never a prefix of another's keys (topic `a` and topic `ab` share no key
//! prefix). Decoding never panics: bad bytes come back as a [`DecodeError`],
//! which the store reports as `StoreError::Corrupt` with the column family
//! and key.

use bytes::Bytes;

use super::{DelayedMessage, StoredMessage};

/// The column families the store creates. `ALL` is the list handed to RocksDB
/// at open; adding one here is all it takes to create it on the next start.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Cf {
    /// Each topic's messages, written once whatever the number of channels.
    Log,
    /// Each channel's finished marks above its low watermark.
    Fin,
    /// Topic and channel records, channel watermarks, log floors.
    Meta,
    /// Deferred entries ordered by due time: the delayed tier.
    Delayed,
    /// Pending delayed entries per topic and channel, kept by merge operands.
    Counts,
}

impl Cf {
    pub(crate) const ALL: [Cf; 5] = [Cf::Log, Cf::Fin, Cf::Meta, Cf::Delayed, Cf::Counts];

    pub(crate) const fn name(self) -> &'static str {
        match self {
            Cf::Log => "log",
            Cf::Fin => "fin",
            Cf::Meta => "meta",
            Cf::Delayed => "delayed",
            Cf::Counts => "counts",
        }
    }
}

/// Why a key or value did not decode. Kept small: the store adds the column
/// family and the key when it turns this into `StoreError::Corrupt`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct DecodeError(pub(crate) String);

impl DecodeError {
    fn new(reason: impl Into<String>) -> Self {
        DecodeError(reason.into())
    }
}

pub(crate) trait KeyCodec: Sized {
    fn encode_key(&self) -> Vec<u8>;
    fn decode_key(bytes: &[u8]) -> Result<Self, DecodeError>;
}

pub(crate) trait ValueCodec: Sized {
    fn encode_value(&self) -> Vec<u8>;
    fn decode_value(bytes: &[u8]) -> Result<Self, DecodeError>;
}

/// One kind of record: where it lives and how it is encoded. Several schemas
/// may share a column family (the `meta` records) when their keys start with
/// distinct tags, so no key of one decodes as a key of another.
pub(crate) trait Schema {
    const CF: Cf;
    type Key: KeyCodec;
    type Value: ValueCodec;
}

/// The longest topic or channel name a key can hold: its length is one byte.
pub(crate) const MAX_NAME_LEN: usize = u8::MAX as usize;

fn push_name(out: &mut Vec<u8>, name: &str) {
    // Callers validate names (1..=255 bytes) before building a key; this
    // truncating cast is therefore exact, and a debug build checks it.
    debug_assert!(!name.is_empty() && name.len() <= MAX_NAME_LEN);
    out.push(name.len() as u8);
    out.extend_from_slice(name.as_bytes());
}

/// A cursor over bytes being decoded; every read checks the length first.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError::new(format!(
                "{what}: need {n} bytes, have {}",
                self.buf.len()
            )));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    fn u8(&mut self, what: &str) -> Result<u8, DecodeError> {
        Ok(self.array::<1>(what)?[0])
    }

    fn u16(&mut self, what: &str) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array(what)?))
    }

    fn i64(&mut self, what: &str) -> Result<i64, DecodeError> {
        Ok(i64::from_be_bytes(self.array(what)?))
    }

    /// A one-byte length, then that many bytes of UTF-8, at least one.
    fn name(&mut self, what: &str) -> Result<String, DecodeError> {
        let len = usize::from(self.u8(what)?);
        if len == 0 {
            return Err(DecodeError::new(format!("{what}: empty name")));
        }
        let bytes = self.take(len, what)?;
        String::from_utf8(bytes.to_vec())
            .map_err(|_| DecodeError::new(format!("{what}: name is not UTF-8")))
    }

    fn tag(&mut self, expected: u8) -> Result<(), DecodeError> {
        let tag = self.u8("tag")?;
        if tag != expected {
            return Err(DecodeError::new(format!(
                "tag {tag:#04x}, expected {expected:#04x}"
            )));
        }
        Ok(())
    }

    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }

    fn finish(self) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::new(format!(
                "{} trailing bytes",
                self.buf.len()
            )))
        }
    }
}

/// The smallest key greater than every key that starts with `prefix`: the
/// exclusive upper bound for a prefix scan or a prefix `DeleteRange`. `None`
/// only for an all-`0xFF` prefix, which no name produces (UTF-8 never contains
/// `0xFF`, and tags are ASCII).
pub(crate) fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

// ---- log: [topic len u8][topic][seq u64 BE] -> [ts i64 BE][attempts u16 BE][body]

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct LogKey {
    pub(crate) topic: String,
    pub(crate) seq: u64,
}

/// Every log key of `topic` starts with this.
pub(crate) fn log_prefix(topic: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + topic.len() + 8);
    push_name(&mut out, topic);
    out
}

/// The log key of `(topic, seq)`, built from a prefix made once per call site
/// so a batch of messages does not re-encode the topic for each one.
pub(crate) fn log_key_with_prefix(prefix: &[u8], seq: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(prefix.len() + 8);
    out.extend_from_slice(prefix);
    out.extend_from_slice(&seq.to_be_bytes());
    out
}

impl KeyCodec for LogKey {
    fn encode_key(&self) -> Vec<u8> {
        log_key_with_prefix(&log_prefix(&self.topic), self.seq)
    }

    fn decode_key(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let topic = r.name("topic")?;
        let seq = r.u64("seq")?;
        r.finish()?;
        Ok(LogKey { topic, seq })
    }
}

const MESSAGE_HEADER_LEN: usize = 8 + 2;

impl ValueCodec for StoredMessage {
    fn encode_value(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(MESSAGE_HEADER_LEN + self.body.len());
        out.extend_from_slice(&self.timestamp_ns.to_be_bytes());
        out.extend_from_slice(&self.attempts.to_be_bytes());
        out.extend_from_slice(&self.body);
        out
    }

    fn decode_value(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let timestamp_ns = r.i64("timestamp")?;
        let attempts = r.u16("attempts")?;
        let body = Bytes::copy_from_slice(r.rest());
        Ok(StoredMessage {
            timestamp_ns,
            attempts,
            body,
        })
    }
}

pub(crate) struct LogSchema;

impl Schema for LogSchema {
    const CF: Cf = Cf::Log;
    type Key = LogKey;
    type Value = StoredMessage;
}

// ---- fin: [topic len][topic][channel len][channel][seq u64 BE] -> empty

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct FinKey {
    pub(crate) topic: String,
    pub(crate) channel: String,
    pub(crate) seq: u64,
}

/// Every finished mark of every channel of `topic` starts with this.
pub(crate) fn fin_topic_prefix(topic: &str) -> Vec<u8> {
    log_prefix(topic)
}

/// Every finished mark of `topic/channel` starts with this.
pub(crate) fn fin_channel_prefix(topic: &str, channel: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + topic.len() + channel.len() + 8);
    push_name(&mut out, topic);
    push_name(&mut out, channel);
    out
}

impl KeyCodec for FinKey {
    fn encode_key(&self) -> Vec<u8> {
        let mut out = fin_channel_prefix(&self.topic, &self.channel);
        out.extend_from_slice(&self.seq.to_be_bytes());
        out
    }

    fn decode_key(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let topic = r.name("topic")?;
        let channel = r.name("channel")?;
        let seq = r.u64("seq")?;
        r.finish()?;
        Ok(FinKey {
            topic,
            channel,
            seq,
        })
    }
}

/// The value of a finished mark: the key says it all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FinMark;

impl ValueCodec for FinMark {
    fn encode_value(&self) -> Vec<u8> {
        Vec::new()
    }

    fn decode_value(bytes: &[u8]) -> Result<Self, DecodeError> {
        Reader::new(bytes).finish()?;
        Ok(FinMark)
    }
}

pub(crate) struct FinSchema;

impl Schema for FinSchema {
    const CF: Cf = Cf::Fin;
    type Key = FinKey;
    type Value = FinMark;
}

// ---- meta: one tag byte per record kind, then length-prefixed names.
//
//   'T' [topic]            -> TopicRecord   (tier, paused)
//   'C' [topic][channel]   -> ChannelRecord (paused)
//   'W' [topic][channel]   -> Seq           (the channel's low watermark)
//   'F' [topic]            -> Seq           (the topic's log floor: trimmed below it)
//   'G'                    -> Seq           (the last delayed-id generation handed out)
//   'R' [topic][channel]   -> Seq           (delayed ids below it were requeued by an
//                                            earlier channel of that name, since deleted)
//
// The watermark is its own record, not a field of the channel record, so the
// frequent advance (on the FIN path) and the rare pause (admin) never
// read-modify-write one value and race. Values start with a version byte so a
// later release can add fields; this one rejects versions it does not know.

const TAG_TOPIC: u8 = b'T';
const TAG_CHANNEL: u8 = b'C';
const TAG_WATERMARK: u8 = b'W';
const TAG_FLOOR: u8 = b'F';
const TAG_GENERATION: u8 = b'G';
const TAG_REQUEUE_FLOOR: u8 = b'R';
const META_VERSION: u8 = 1;
const FLAG_PAUSED: u8 = 0b1;

fn meta_prefix(tag: u8, topic: Option<&str>) -> Vec<u8> {
    let mut out = vec![tag];
    if let Some(topic) = topic {
        push_name(&mut out, topic);
    }
    out
}

/// Every topic record starts with this.
pub(crate) fn topic_records_prefix() -> Vec<u8> {
    meta_prefix(TAG_TOPIC, None)
}

/// Every channel record (of `topic`, or of all topics) starts with this.
pub(crate) fn channel_records_prefix(topic: Option<&str>) -> Vec<u8> {
    meta_prefix(TAG_CHANNEL, topic)
}

/// Every channel watermark (of `topic`, or of all topics) starts with this.
pub(crate) fn watermarks_prefix(topic: Option<&str>) -> Vec<u8> {
    meta_prefix(TAG_WATERMARK, topic)
}

/// Every requeue floor (of `topic`, or of all topics) starts with this.
pub(crate) fn requeue_floors_prefix(topic: Option<&str>) -> Vec<u8> {
    meta_prefix(TAG_REQUEUE_FLOOR, topic)
}

/// Every log floor starts with this.
pub(crate) fn floors_prefix() -> Vec<u8> {
    meta_prefix(TAG_FLOOR, None)
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TopicKey(pub(crate) String);

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ChannelKey {
    pub(crate) topic: String,
    pub(crate) channel: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct WatermarkKey {
    pub(crate) topic: String,
    pub(crate) channel: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct FloorKey(pub(crate) String);

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RequeueFloorKey {
    pub(crate) topic: String,
    pub(crate) channel: String,
}

fn encode_topic_key(tag: u8, topic: &str) -> Vec<u8> {
    meta_prefix(tag, Some(topic))
}

fn decode_topic_key(tag: u8, bytes: &[u8]) -> Result<String, DecodeError> {
    let mut r = Reader::new(bytes);
    r.tag(tag)?;
    let topic = r.name("topic")?;
    r.finish()?;
    Ok(topic)
}

fn encode_channel_key(tag: u8, topic: &str, channel: &str) -> Vec<u8> {
    let mut out = meta_prefix(tag, Some(topic));
    push_name(&mut out, channel);
    out
}

fn decode_channel_key(tag: u8, bytes: &[u8]) -> Result<(String, String), DecodeError> {
    let mut r = Reader::new(bytes);
    r.tag(tag)?;
    let topic = r.name("topic")?;
    let channel = r.name("channel")?;
    r.finish()?;
    Ok((topic, channel))
}

impl KeyCodec for TopicKey {
    fn encode_key(&self) -> Vec<u8> {
        encode_topic_key(TAG_TOPIC, &self.0)
    }

    fn decode_key(bytes: &[u8]) -> Result<Self, DecodeError> {
        decode_topic_key(TAG_TOPIC, bytes).map(TopicKey)
    }
}

impl KeyCodec for FloorKey {
    fn encode_key(&self) -> Vec<u8> {
        encode_topic_key(TAG_FLOOR, &self.0)
    }

    fn decode_key(bytes: &[u8]) -> Result<Self, DecodeError> {
        decode_topic_key(TAG_FLOOR, bytes).map(FloorKey)
    }
}

impl KeyCodec for ChannelKey {
    fn encode_key(&self) -> Vec<u8> {
        encode_channel_key(TAG_CHANNEL, &self.topic, &self.channel)
    }

    fn decode_key(bytes: &[u8]) -> Result<Self, DecodeError> {
        let (topic, channel) = decode_channel_key(TAG_CHANNEL, bytes)?;
        Ok(ChannelKey { topic, channel })
    }
}

impl KeyCodec for WatermarkKey {
    fn encode_key(&self) -> Vec<u8> {
        encode_channel_key(TAG_WATERMARK, &self.topic, &self.channel)
    }

    fn decode_key(bytes: &[u8]) -> Result<Self, DecodeError> {
        let (topic, channel) = decode_channel_key(TAG_WATERMARK, bytes)?;
        Ok(WatermarkKey { topic, channel })
    }
}

impl KeyCodec for RequeueFloorKey {
    fn encode_key(&self) -> Vec<u8> {
        encode_channel_key(TAG_REQUEUE_FLOOR, &self.topic, &self.channel)
    }

    fn decode_key(bytes: &[u8]) -> Result<Self, DecodeError> {
        let (topic, channel) = decode_channel_key(TAG_REQUEUE_FLOOR, bytes)?;
        Ok(RequeueFloorKey { topic, channel })
    }
}

/// The stored part of a topic's metadata (its name is the key). Version 1
/// records (tier and paused only) read as having default settings and
/// incarnation 0.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TopicRecord {
    pub(crate) tier: String,
    pub(crate) paused: bool,
    pub(crate) incarnation: u64,
    pub(crate) delay_ms: u64,
    pub(crate) batch_window_ms: u64,
    pub(crate) max_attempts: u16,
}

/// Topic records since the delayed tier: settings and incarnation follow the tier.
const TOPIC_RECORD_VERSION: u8 = 2;

/// The stored part of a channel's metadata (its names are the key).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ChannelRecord {
    pub(crate) paused: bool,
}

/// A sequence number on its own: a watermark or a floor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Seq(pub(crate) u64);

fn read_header(r: &mut Reader<'_>) -> Result<bool, DecodeError> {
    let version = r.u8("version")?;
    if version != META_VERSION {
        return Err(DecodeError::new(format!("unknown version {version}")));
    }
    read_flags(r)
}

fn read_flags(r: &mut Reader<'_>) -> Result<bool, DecodeError> {
    let flags = r.u8("flags")?;
    if flags & !FLAG_PAUSED != 0 {
        return Err(DecodeError::new(format!("unknown flags {flags:#010b}")));
    }
    Ok(flags & FLAG_PAUSED != 0)
}

fn flags(paused: bool) -> u8 {
    if paused {
        FLAG_PAUSED
    } else {
        0
    }
}

impl ValueCodec for TopicRecord {
    fn encode_value(&self) -> Vec<u8> {
        // The tier is a short word ("persistent"); the store validates its
        // length like a name's, so it fits the one-byte length.
        let mut out = vec![TOPIC_RECORD_VERSION, flags(self.paused)];
        push_name(&mut out, &self.tier);
        out.extend_from_slice(&self.incarnation.to_be_bytes());
        out.extend_from_slice(&self.delay_ms.to_be_bytes());
        out.extend_from_slice(&self.batch_window_ms.to_be_bytes());
        out.extend_from_slice(&self.max_attempts.to_be_bytes());
        out
    }

    fn decode_value(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let version = r.u8("version")?;
        if version != META_VERSION && version != TOPIC_RECORD_VERSION {
            return Err(DecodeError::new(format!("unknown version {version}")));
        }
        let paused = read_flags(&mut r)?;
        let tier = r.name("tier")?;
        let mut record = TopicRecord {
            tier,
            paused,
            incarnation: 0,
            delay_ms: 0,
            batch_window_ms: 0,
            max_attempts: 0,
        };
        if version == TOPIC_RECORD_VERSION {
            record.incarnation = r.u64("incarnation")?;
            record.delay_ms = r.u64("delay")?;
            record.batch_window_ms = r.u64("batch window")?;
            record.max_attempts = r.u16("max attempts")?;
        }
        r.finish()?;
        Ok(record)
    }
}

impl ValueCodec for ChannelRecord {
    fn encode_value(&self) -> Vec<u8> {
        vec![META_VERSION, flags(self.paused)]
    }

    fn decode_value(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let paused = read_header(&mut r)?;
        r.finish()?;
        Ok(ChannelRecord { paused })
    }
}

impl ValueCodec for Seq {
    fn encode_value(&self) -> Vec<u8> {
        self.0.to_be_bytes().to_vec()
    }

    fn decode_value(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let seq = r.u64("seq")?;
        r.finish()?;
        Ok(Seq(seq))
    }
}

pub(crate) struct TopicSchema;

impl Schema for TopicSchema {
    const CF: Cf = Cf::Meta;
    type Key = TopicKey;
    type Value = TopicRecord;
}

pub(crate) struct ChannelSchema;

impl Schema for ChannelSchema {
    const CF: Cf = Cf::Meta;
    type Key = ChannelKey;
    type Value = ChannelRecord;
}

pub(crate) struct WatermarkSchema;

impl Schema for WatermarkSchema {
    const CF: Cf = Cf::Meta;
    type Key = WatermarkKey;
    type Value = Seq;
}

pub(crate) struct RequeueFloorSchema;

impl Schema for RequeueFloorSchema {
    const CF: Cf = Cf::Meta;
    type Key = RequeueFloorKey;
    type Value = Seq;
}

/// The one generation record: see `Store::allocate_delayed_ids`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct GenerationKey;

impl KeyCodec for GenerationKey {
    fn encode_key(&self) -> Vec<u8> {
        vec![TAG_GENERATION]
    }

    fn decode_key(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        r.tag(TAG_GENERATION)?;
        r.finish()?;
        Ok(GenerationKey)
    }
}

pub(crate) struct FloorSchema;

impl Schema for FloorSchema {
    const CF: Cf = Cf::Meta;
    type Key = FloorKey;
    type Value = Seq;
}

// ---- delayed: [due_ms u64 BE][id u64 BE] -> DelayedMessage
//
// Key order is due order, so the scheduler reads the head of the family and
// stops at the first entry not yet due. `id` is unique for the store's life
// (see `Store::allocate_delayed_ids`), so two entries due in the same
// millisecond never share a key.

/// Where a pending delayed entry sits: its due time (Unix ms) and an id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DelayedKey {
    pub due_ms: u64,
    pub id: u64,
}

impl KeyCodec for DelayedKey {
    fn encode_key(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16);
        out.extend_from_slice(&self.due_ms.to_be_bytes());
        out.extend_from_slice(&self.id.to_be_bytes());
        out
    }

    fn decode_key(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let due_ms = r.u64("due_ms")?;
        let id = r.u64("id")?;
        r.finish()?;
        Ok(DelayedKey { due_ms, id })
    }
}

const DELAYED_VERSION: u8 = 1;
const FLAG_FOR_CHANNEL: u8 = 0b1;

/// `[version][flags][topic][channel if flagged][incarnation u64][message]`.
impl ValueCodec for DelayedMessage {
    fn encode_value(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            2 + 2
                + self.topic.len()
                + self.channel.as_ref().map_or(0, String::len)
                + 8
                + MESSAGE_HEADER_LEN
                + self.message.body.len(),
        );
        out.push(DELAYED_VERSION);
        out.push(if self.channel.is_some() {
            FLAG_FOR_CHANNEL
        } else {
            0
        });
        push_name(&mut out, &self.topic);
        if let Some(channel) = &self.channel {
            push_name(&mut out, channel);
        }
        out.extend_from_slice(&self.incarnation.to_be_bytes());
        out.extend_from_slice(&self.message.encode_value());
        out
    }

    fn decode_value(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let version = r.u8("version")?;
        if version != DELAYED_VERSION {
            return Err(DecodeError::new(format!("unknown version {version}")));
        }
        let flags = r.u8("flags")?;
        if flags & !FLAG_FOR_CHANNEL != 0 {
            return Err(DecodeError::new(format!("unknown flags {flags:#010b}")));
        }
        let topic = r.name("topic")?;
        let channel = if flags & FLAG_FOR_CHANNEL != 0 {
            Some(r.name("channel")?)
        } else {
            None
        };
        let incarnation = r.u64("incarnation")?;
        let message = StoredMessage::decode_value(r.rest())?;
        Ok(DelayedMessage {
            topic,
            channel,
            incarnation,
            message,
        })
    }
}

pub(crate) struct DelayedSchema;

impl Schema for DelayedSchema {
    const CF: Cf = Cf::Delayed;
    type Key = DelayedKey;
    type Value = DelayedMessage;
}

// ---- counts: [topic][channel, or a 0 byte for the topic itself] -> i64 BE
//
// How many delayed entries wait for each topic (published with a delay) and
// each channel (requeued with a delay). Changed only by merge operands (see
// `engine.rs`), so concurrent writers never read-modify-write a count.

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct CountKey {
    pub(crate) topic: String,
    pub(crate) channel: Option<String>,
}

/// Every count of `topic` (its own and its channels') starts with this.
pub(crate) fn counts_topic_prefix(topic: &str) -> Vec<u8> {
    log_prefix(topic)
}

impl KeyCodec for CountKey {
    fn encode_key(&self) -> Vec<u8> {
        let mut out = counts_topic_prefix(&self.topic);
        match &self.channel {
            Some(channel) => push_name(&mut out, channel),
            None => out.push(0),
        }
        out
    }

    fn decode_key(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let topic = r.name("topic")?;
        let channel = if r.buf == [0] {
            r.rest();
            None
        } else {
            Some(r.name("channel")?)
        };
        r.finish()?;
        Ok(CountKey { topic, channel })
    }
}

/// A signed count, or a merge operand adding to one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Count(pub(crate) i64);

impl ValueCodec for Count {
    fn encode_value(&self) -> Vec<u8> {
        self.0.to_be_bytes().to_vec()
    }

    fn decode_value(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let n = r.i64("count")?;
        r.finish()?;
        Ok(Count(n))
    }
}

pub(crate) struct CountSchema;

impl Schema for CountSchema {
    const CF: Cf = Cf::Counts;
    type Key = CountKey;
    type Value = Count;
}

/// The merge operator of the `counts` family: the sum of the existing value
/// and every operand. A value that does not decode counts as 0 (and is
/// logged), so one bad record cannot stop the database from reading.
pub(crate) fn add_counts(
    _key: &[u8],
    existing: Option<&[u8]>,
    operands: &rocksdb::MergeOperands,
) -> Option<Vec<u8>> {
    let decode = |bytes: &[u8]| match Count::decode_value(bytes) {
        Ok(Count(n)) => n,
        Err(e) => {
            tracing::warn!(error = %e.0, "store: bad count record taken as 0");
            0
        }
    };
    let mut total = existing.map_or(0, decode);
    for operand in operands {
        total = total.saturating_add(decode(operand));
    }
    Some(Count(total).encode_value())
}
