//! Store tests: codecs (round trips, order, random bytes never panic), the
//! store's operations on a temporary directory, group commit by counting
//! syncs, failures answered with errors, and durability across a real
//! `kill -9` of a child process (this test binary re-executed in a child
//! mode selected by an environment variable).

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command as Process, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use proptest::prelude::*;

use super::schema::*;
use super::*;

// ---- codecs -------------------------------------------------------------

fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z0-9._#-]{1,64}",
        // Multi-byte UTF-8, still within the one-byte length (<= 4 * 60).
        "\\PC{1,60}",
    ]
}

fn message() -> impl Strategy<Value = StoredMessage> {
    (
        any::<i64>(),
        any::<u16>(),
        proptest::collection::vec(any::<u8>(), 0..300),
    )
        .prop_map(|(timestamp_ns, attempts, body)| StoredMessage {
            timestamp_ns,
            attempts,
            body: Bytes::from(body),
        })
}

fn round_trip_key<K: KeyCodec + PartialEq + std::fmt::Debug>(key: &K) {
    let bytes = key.encode_key();
    assert_eq!(&K::decode_key(&bytes).unwrap(), key);
    // Every strict prefix of a key is refused: keys carry no optional tail.
    for cut in 0..bytes.len() {
        assert!(K::decode_key(&bytes[..cut]).is_err(), "cut at {cut}");
    }
}

fn round_trip_value<V: ValueCodec + PartialEq + std::fmt::Debug>(value: &V) {
    let bytes = value.encode_value();
    assert_eq!(&V::decode_value(&bytes).unwrap(), value);
}

proptest! {
    #[test]
    fn log_codec_round_trips(topic in name(), seq: u64, msg in message()) {
        round_trip_key(&LogKey { topic: topic.clone(), seq });
        prop_assert_eq!(
            log_key_with_prefix(&log_prefix(&topic), seq),
            LogKey { topic, seq }.encode_key()
        );
        round_trip_value(&msg);
        // A message cut inside its header is refused; the body may be any length.
        let bytes = msg.encode_value();
        for cut in 0..10 {
            prop_assert!(StoredMessage::decode_value(&bytes[..cut]).is_err());
        }
    }

    #[test]
    fn fin_codec_round_trips(topic in name(), channel in name(), seq: u64) {
        round_trip_key(&FinKey { topic, channel, seq });
        round_trip_value(&FinMark);
        prop_assert!(FinMark::decode_value(b"x").is_err());
    }

    #[test]
    fn meta_codecs_round_trip(
        topic in name(),
        channel in name(),
        tier in name(),
        paused: bool,
        seq: u64,
    ) {
        round_trip_key(&TopicKey(topic.clone()));
        round_trip_key(&FloorKey(topic.clone()));
        round_trip_key(&ChannelKey { topic: topic.clone(), channel: channel.clone() });
        round_trip_key(&WatermarkKey { topic: topic.clone(), channel: channel.clone() });
        round_trip_value(&TopicRecord {
            tier,
            paused,
            incarnation: seq,
            delay_ms: seq / 3,
            batch_window_ms: seq / 5,
            max_attempts: (seq % 65_536) as u16,
        });
        round_trip_value(&ChannelRecord { paused });
        round_trip_value(&Seq(seq));
        // The tag keeps record kinds apart in the shared column family.
        let topic_key = TopicKey(topic.clone()).encode_key();
        prop_assert!(FloorKey::decode_key(&topic_key).is_err());
        let channel_key = ChannelKey { topic, channel }.encode_key();
        prop_assert!(WatermarkKey::decode_key(&channel_key).is_err());
    }

    #[test]
    fn delayed_codecs_round_trip(
        due_ms: u64,
        id: u64,
        topic in name(),
        channel in proptest::option::of(name()),
        incarnation: u64,
        message in message(),
    ) {
        round_trip_key(&DelayedKey { due_ms, id });
        round_trip_value(&DelayedMessage { topic: topic.clone(), channel: channel.clone(), incarnation, message });
        round_trip_key(&CountKey { topic, channel });
        round_trip_value(&Count(id as i64));
    }

    /// Big-endian keys: byte order is (due, seq) order, and seq order within
    /// a topic's log and a channel's marks.
    #[test]
    fn key_order_is_numeric_order(topic in name(), a: u64, b: u64, c: u64, d: u64) {
        let log = |seq| LogKey { topic: topic.clone(), seq }.encode_key();
        prop_assert_eq!(a.cmp(&b), log(a).cmp(&log(b)));
        let fin = |seq| FinKey { topic: topic.clone(), channel: "c".into(), seq }.encode_key();
        prop_assert_eq!(a.cmp(&b), fin(a).cmp(&fin(b)));
        let delayed = |due_ms, id| DelayedKey { due_ms, id }.encode_key();
        prop_assert_eq!((a, b).cmp(&(c, d)), delayed(a, b).cmp(&delayed(c, d)));
    }

    /// Every key under a prefix sorts below the prefix's end, and the end
    /// sorts above the prefix.
    #[test]
    fn prefix_end_bounds_the_prefix(topic in name(), channel in name(), seq: u64) {
        let prefix = fin_topic_prefix(&topic);
        let end = prefix_end(&prefix).unwrap();
        prop_assert!(prefix < end);
        let key = FinKey { topic, channel, seq }.encode_key();
        prop_assert!(key.as_slice() >= prefix.as_slice() && key < end);
    }

    /// Decoding random bytes returns a value or an error, never panics.
    #[test]
    fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = LogKey::decode_key(&bytes);
        let _ = StoredMessage::decode_value(&bytes);
        let _ = FinKey::decode_key(&bytes);
        let _ = FinMark::decode_value(&bytes);
        let _ = TopicKey::decode_key(&bytes);
        let _ = TopicRecord::decode_value(&bytes);
        let _ = ChannelKey::decode_key(&bytes);
        let _ = ChannelRecord::decode_value(&bytes);
        let _ = WatermarkKey::decode_key(&bytes);
        let _ = FloorKey::decode_key(&bytes);
        let _ = Seq::decode_value(&bytes);
        let _ = DelayedKey::decode_key(&bytes);
        let _ = DelayedMessage::decode_value(&bytes);
        let _ = CountKey::decode_key(&bytes);
        let _ = Count::decode_value(&bytes);
    }

    /// Random bytes that start like a real key (a tag, a plausible length)
    /// reach deeper into the decoders than uniform noise does.
    #[test]
    fn decoders_never_panic_on_near_misses(
        tag in prop::sample::select(vec![b'T', b'C', b'W', b'F', 0u8, 0xFF]),
        len in 0u8..=255,
        rest in proptest::collection::vec(any::<u8>(), 0..300),
    ) {
        let mut bytes = vec![tag, len];
        bytes.extend_from_slice(&rest);
        let _ = TopicKey::decode_key(&bytes);
        let _ = ChannelKey::decode_key(&bytes);
        let _ = WatermarkKey::decode_key(&bytes);
        let _ = FloorKey::decode_key(&bytes);
        let _ = LogKey::decode_key(&bytes[1..]);
        let _ = FinKey::decode_key(&bytes[1..]);
        let _ = TopicRecord::decode_value(&[1, tag, len]);
        let _ = TopicRecord::decode_value(&bytes);
    }
}

#[test]
fn prefix_end_carries_and_gives_up_on_all_ff() {
    assert_eq!(prefix_end(&[1, 2]), Some(vec![1, 3]));
    assert_eq!(prefix_end(&[1, 0xFF]), Some(vec![2]));
    assert_eq!(prefix_end(&[0xFF, 0xFF]), None);
    assert_eq!(prefix_end(&[]), None);
}

#[test]
fn meta_values_refuse_unknown_versions_and_flags() {
    assert!(ChannelRecord::decode_value(&[2, 0]).is_err());
    assert!(ChannelRecord::decode_value(&[1, 0b10]).is_err());
    assert!(ChannelRecord::decode_value(&[1, 0, 0]).is_err());
    assert_eq!(
        ChannelRecord::decode_value(&[1, 1]),
        Ok(ChannelRecord { paused: true })
    );
}

// ---- the store ----------------------------------------------------------

fn msg(body: &str) -> StoredMessage {
    StoredMessage {
        timestamp_ns: 1_700_000_000_000_000_000,
        attempts: 1,
        body: Bytes::copy_from_slice(body.as_bytes()),
    }
}

fn open(dir: &Path, sync: SyncPolicy) -> Store {
    Store::open(
        dir,
        StoreOptions {
            sync,
            ..StoreOptions::default()
        },
    )
    .unwrap()
}

fn bodies(entries: &[(u64, StoredMessage)]) -> Vec<(u64, String)> {
    entries
        .iter()
        .map(|(seq, m)| (*seq, String::from_utf8(m.body.to_vec()).unwrap()))
        .collect()
}

/// Polls `cond` until it holds or `within` passes: for effects of a
/// background thread, which no paused clock controls.
async fn eventually(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    cond()
}

#[tokio::test]
async fn append_and_read_log_keep_topics_apart() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), SyncPolicy::Group);
    // "a" is a prefix of "ab" by name, never by key.
    store
        .append("a", 0, &[msg("a0"), msg("a1"), msg("a2")])
        .await
        .unwrap();
    store.append("ab", 0, &[msg("ab0")]).await.unwrap();
    store.append("b", 7, &[msg("b7")]).await.unwrap();
    store.append("a", 3, &[msg("a3")]).await.unwrap();

    let a = store.read_log("a", 0, 100).unwrap();
    assert_eq!(
        bodies(&a),
        [(0, "a0"), (1, "a1"), (2, "a2"), (3, "a3")].map(|(s, b)| (s, b.to_owned()))
    );
    assert_eq!(a[0].1, msg("a0"));
    assert_eq!(
        bodies(&store.read_log("ab", 0, 100).unwrap()),
        [(0, "ab0".to_owned())]
    );
    assert_eq!(
        bodies(&store.read_log("b", 0, 100).unwrap()),
        [(7, "b7".to_owned())]
    );
    assert!(store.read_log("c", 0, 100).unwrap().is_empty());

    // from_seq and limit.
    assert_eq!(
        bodies(&store.read_log("a", 2, 1).unwrap()),
        [(2, "a2".to_owned())]
    );
    assert!(store.read_log("a", 4, 10).unwrap().is_empty());
    assert!(store.read_log("a", 0, 0).unwrap().is_empty());

    assert_eq!(store.last_seq("a").unwrap(), Some(3));
    assert_eq!(store.last_seq("ab").unwrap(), Some(0));
    assert_eq!(store.last_seq("c").unwrap(), None);
    assert_eq!(store.next_seq("b").unwrap(), 8);
    assert_eq!(store.next_seq("c").unwrap(), 0);

    // Appending nothing writes nothing.
    let before = store.stats().batches;
    store.append("a", 99, &[]).await.unwrap();
    assert_eq!(store.stats().batches, before);
    assert_eq!(store.stats().messages, 6);
    store.close().await.unwrap();
}

#[tokio::test]
async fn bad_names_and_overflow_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), SyncPolicy::Group);
    let long = "x".repeat(256);
    assert!(matches!(
        store.append("", 0, &[msg("m")]).await,
        Err(StoreError::InvalidName { what: "topic", .. })
    ));
    assert!(matches!(
        store.finish("t", &long, 0).await,
        Err(StoreError::InvalidName {
            what: "channel",
            ..
        })
    ));
    assert!(store.read_log(&long, 0, 1).is_err());
    assert!(matches!(
        store.append("t", u64::MAX, &[msg("1"), msg("2")]).await,
        Err(StoreError::InvalidArgument(_))
    ));
    // The last seq itself is fine.
    store.append("t", u64::MAX, &[msg("max")]).await.unwrap();
    assert_eq!(store.last_seq("t").unwrap(), Some(u64::MAX));
    let tier = TopicMeta {
        name: "t".into(),
        tier: String::new(),
        paused: false,
        incarnation: 0,
        settings: Default::default(),
    };
    assert!(matches!(
        store.put_topic(&tier).await,
        Err(StoreError::InvalidName { what: "tier", .. })
    ));
    let name_255 = "n".repeat(255);
    store.append(&name_255, 0, &[msg("ok")]).await.unwrap();
    assert_eq!(store.read_log(&name_255, 0, 10).unwrap().len(), 1);
    store.close().await.unwrap();
}

#[tokio::test]
async fn fin_marks_and_advance_channel() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), SyncPolicy::Group);
    for seq in [1, 3, 4, 8] {
        store.finish("t", "c", seq).await.unwrap();
    }
    store.finish_many("t", "cd", &[2, 3]).await.unwrap();
    store.finish("tc", "d", 5).await.unwrap();

    assert_eq!(store.finished("t", "c", 0, 100).unwrap(), [1, 3, 4, 8]);
    assert_eq!(store.finished("t", "c", 4, 100).unwrap(), [4, 8]);
    assert_eq!(store.finished("t", "c", 0, 2).unwrap(), [1, 3]);
    assert_eq!(store.finished("t", "cd", 0, 100).unwrap(), [2, 3]);
    assert_eq!(store.finished("tc", "d", 0, 100).unwrap(), [5]);

    // Watermark 4: marks 1 and 3 go, 4 and 8 stay; neighbours untouched.
    store.advance_channel("t", "c", 4).await.unwrap();
    assert_eq!(store.finished("t", "c", 0, 100).unwrap(), [4, 8]);
    assert_eq!(store.finished("t", "cd", 0, 100).unwrap(), [2, 3]);
    assert_eq!(store.finished("tc", "d", 0, 100).unwrap(), [5]);

    store.advance_channel("t", "c", u64::MAX).await.unwrap();
    assert!(store.finished("t", "c", 0, 100).unwrap().is_empty());
    store.close().await.unwrap();
}

#[tokio::test]
async fn trim_log_deletes_the_range_and_keeps_seqs_moving() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), SyncPolicy::Group);
    let msgs: Vec<_> = (0..10).map(|i| msg(&format!("m{i}"))).collect();
    store.append("t", 0, &msgs).await.unwrap();
    store.append("tt", 0, &msgs).await.unwrap();

    store.trim_log("t", 6).await.unwrap();
    let left: Vec<u64> = store
        .read_log("t", 0, 100)
        .unwrap()
        .iter()
        .map(|e| e.0)
        .collect();
    assert_eq!(left, [6, 7, 8, 9]);
    assert_eq!(store.read_log("tt", 0, 100).unwrap().len(), 10);
    assert_eq!(store.next_seq("t").unwrap(), 10);

    // Trimmed empty: the floor still keeps the next seq past every old one.
    store.trim_log("t", 10).await.unwrap();
    assert!(store.read_log("t", 0, 100).unwrap().is_empty());
    assert_eq!(store.last_seq("t").unwrap(), None);
    assert_eq!(store.next_seq("t").unwrap(), 10);
    store.close().await.unwrap();
}

#[tokio::test]
async fn delete_topic_removes_only_that_topic() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), SyncPolicy::Group);
    for topic in ["a", "ab"] {
        store
            .put_topic(&TopicMeta {
                name: topic.into(),
                tier: "persistent".into(),
                paused: false,
                incarnation: 0,
                settings: Default::default(),
            })
            .await
            .unwrap();
        let ch = ChannelMeta {
            name: "c".into(),
            paused: false,
        };
        store.create_channel(topic, &ch, 0).await.unwrap();
        store.append(topic, 0, &[msg("0"), msg("1")]).await.unwrap();
        store.finish(topic, "c", 1).await.unwrap();
        store.trim_log(topic, 0).await.unwrap();
    }

    store.delete_topic("a").await.unwrap();
    assert!(store.read_log("a", 0, 10).unwrap().is_empty());
    assert!(store.finished("a", "c", 0, 10).unwrap().is_empty());
    assert_eq!(store.next_seq("a").unwrap(), 0);

    assert_eq!(store.read_log("ab", 0, 10).unwrap().len(), 2);
    assert_eq!(store.finished("ab", "c", 0, 10).unwrap(), [1]);
    let topics = store.load_topics().unwrap();
    assert_eq!(topics.len(), 1);
    assert_eq!(topics[0].meta.name, "ab");
    assert_eq!(topics[0].channels.len(), 1);
    assert_eq!(topics[0].next_seq, 2);
    store.close().await.unwrap();
}

#[tokio::test]
async fn metadata_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path(), SyncPolicy::Group);
        let tickets = TopicMeta {
            name: "tickets".into(),
            tier: "persistent".into(),
            paused: false,
            incarnation: 0,
            settings: Default::default(),
        };
        store.put_topic(&tickets).await.unwrap();
        store
            .put_topic(&TopicMeta {
                name: "batch".into(),
                tier: "delayed".into(),
                paused: true,
                incarnation: 0,
                settings: Default::default(),
            })
            .await
            .unwrap();
        let mut workers = ChannelMeta {
            name: "workers".into(),
            paused: false,
        };
        store.create_channel("tickets", &workers, 0).await.unwrap();
        let audit = ChannelMeta {
            name: "audit".into(),
            paused: false,
        };
        store.create_channel("tickets", &audit, 5).await.unwrap();
        let gone = ChannelMeta {
            name: "gone".into(),
            paused: false,
        };
        store.create_channel("tickets", &gone, 0).await.unwrap();
        store.delete_channel("tickets", "gone").await.unwrap();

        store
            .append("tickets", 0, &[msg("0"), msg("1"), msg("2")])
            .await
            .unwrap();
        store.finish("tickets", "workers", 1).await.unwrap();
        store
            .advance_channel("tickets", "workers", 1)
            .await
            .unwrap();
        workers.paused = true;
        store.put_channel("tickets", &workers).await.unwrap();
        store.close().await.unwrap();
        // A closed store refuses reads and writes, and has let go of the
        // directory: it opens again while this handle still exists.
        assert_eq!(
            store.append("tickets", 3, &[msg("late")]).await,
            Err(StoreError::Closed)
        );
        assert_eq!(store.last_seq("tickets"), Err(StoreError::Closed));
        assert_eq!(store.close().await, Ok(()));
        let again = open(dir.path(), SyncPolicy::Group);
        again.close().await.unwrap();
    }

    let store = open(dir.path(), SyncPolicy::Group);
    let topics = store.load_topics().unwrap();
    assert_eq!(
        topics,
        vec![
            TopicState {
                meta: TopicMeta {
                    name: "batch".into(),
                    tier: "delayed".into(),
                    paused: true,
                    incarnation: 0,
                    settings: Default::default(),
                },
                channels: vec![],
                next_seq: 0,
            },
            TopicState {
                meta: TopicMeta {
                    name: "tickets".into(),
                    tier: "persistent".into(),
                    paused: false,
                    incarnation: 0,
                    settings: Default::default(),
                },
                channels: vec![
                    ChannelState {
                        meta: ChannelMeta {
                            name: "audit".into(),
                            paused: false,
                        },
                        low_watermark: 5,
                    },
                    ChannelState {
                        meta: ChannelMeta {
                            name: "workers".into(),
                            paused: true,
                        },
                        low_watermark: 1,
                    },
                ],
                next_seq: 3,
            },
        ]
    );
    assert_eq!(store.finished("tickets", "workers", 0, 10).unwrap(), [1]);
    assert_eq!(store.read_log("tickets", 0, 10).unwrap().len(), 3);
    store.close().await.unwrap();
}

fn delayed(topic: &str, channel: Option<&str>, body: &str) -> DelayedMessage {
    DelayedMessage {
        topic: topic.into(),
        channel: channel.map(str::to_owned),
        incarnation: 7,
        message: msg(body),
    }
}

fn due_bodies(due: &DueDelayed) -> Vec<(u64, String)> {
    due.due
        .iter()
        .map(|(key, entry)| {
            let body = String::from_utf8(entry.message.body.to_vec()).unwrap();
            (key.due_ms, body)
        })
        .collect()
}

#[tokio::test]
async fn delayed_entries_come_back_in_due_order_and_only_when_due() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), SyncPolicy::Group);
    store
        .put_delayed(300, &[delayed("t", None, "c1"), delayed("t", None, "c2")])
        .await
        .unwrap();
    store
        .put_delayed(100, &[delayed("u", None, "a")])
        .await
        .unwrap();
    store
        .put_delayed(200, &[delayed("t", None, "b")])
        .await
        .unwrap();

    let none = store.read_delayed(None, 99, 10).unwrap();
    assert!(none.due.is_empty());
    assert_eq!(none.next_due_ms, Some(100));
    let some = store.read_delayed(None, 250, 10).unwrap();
    assert_eq!(
        due_bodies(&some),
        vec![(100, "a".into()), (200, "b".into())]
    );
    assert_eq!(some.next_due_ms, Some(300));
    // The limit cuts a batch; reading after its last key goes on from there.
    let first = store.read_delayed(None, 1000, 3).unwrap();
    assert_eq!(first.due.len(), 3);
    assert_eq!(first.next_due_ms, Some(300));
    let rest = store
        .read_delayed(first.due.last().map(|(k, _)| *k), 1000, 3)
        .unwrap();
    assert_eq!(due_bodies(&rest), vec![(300, "c2".into())]);
    assert_eq!(rest.next_due_ms, None);
    // Same due time, distinct ids, in write order.
    assert!(first.due[2].0 < rest.due[0].0);
    store.close().await.unwrap();
}

#[tokio::test]
async fn release_moves_entries_into_the_log_atomically_and_counts_follow() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path(), SyncPolicy::Group);
        store
            .put_delayed(10, &[delayed("t", None, "x"), delayed("t", None, "y")])
            .await
            .unwrap();
        store.append("t", 0, &[msg("0")]).await.unwrap();
        let requeued = store
            .requeue_delayed(20, &delayed("t", Some("ch"), "0"), 0)
            .await
            .unwrap();
        assert_eq!(requeued.due_ms, 20);
        // The requeue wrote the channel's FIN mark for seq 0.
        assert_eq!(store.finished("t", "ch", 0, 10).unwrap(), vec![0]);
        let mut counts = store.delayed_counts().unwrap();
        counts.sort();
        assert_eq!(
            counts,
            vec![("t".into(), None, 2), ("t".into(), Some("ch".into()), 1)]
        );

        let due = store.read_delayed(None, 10, 10).unwrap();
        let keys: Vec<_> = due.due.iter().map(|(k, _)| *k).collect();
        let messages: Vec<_> = due.due.iter().map(|(_, e)| e.message.clone()).collect();
        store
            .release_delayed(DelayedRelease {
                topic: "t",
                channel: None,
                first_seq: 1,
                messages: &messages,
                keys: &keys,
                skip_channels: &[],
            })
            .await
            .unwrap();
        let due = store.read_delayed(None, 20, 10).unwrap();
        assert_eq!(due_bodies(&due), vec![(20, "0".into())]);
        let keys: Vec<_> = due.due.iter().map(|(k, _)| *k).collect();
        let messages: Vec<_> = due.due.iter().map(|(_, e)| e.message.clone()).collect();
        store
            .release_delayed(DelayedRelease {
                topic: "t",
                channel: Some("ch"),
                first_seq: 3,
                messages: &messages,
                keys: &keys,
                skip_channels: &["other".to_owned()],
            })
            .await
            .unwrap();
        store.close().await.unwrap();
    }
    let store = open(dir.path(), SyncPolicy::Group);
    assert!(store
        .read_delayed(None, u64::MAX, 10)
        .unwrap()
        .due
        .is_empty());
    assert!(store.delayed_counts().unwrap().is_empty(), "all released");
    assert_eq!(
        bodies(&store.read_log("t", 0, 10).unwrap()),
        vec![
            (0, "0".into()),
            (1, "x".into()),
            (2, "y".into()),
            (3, "0".into())
        ]
    );
    // The channels that must not see the requeued message have its FIN mark.
    assert_eq!(store.finished("t", "other", 0, 10).unwrap(), vec![3]);
    store.close().await.unwrap();
}

#[tokio::test]
async fn delayed_ids_are_never_reused_across_opens() {
    let dir = tempfile::tempdir().unwrap();
    let mut ids = Vec::new();
    for round in 0..3 {
        let store = open(dir.path(), SyncPolicy::Group);
        let keys = store
            .put_delayed(5, &[delayed("t", None, "a"), delayed("t", None, "b")])
            .await
            .unwrap();
        ids.extend(keys.iter().map(|k| k.id));
        // Everything written so far is still there: no key was overwritten.
        let all = store.read_delayed(None, 5, 100).unwrap();
        assert_eq!(all.due.len(), 2 * (round + 1));
        store.close().await.unwrap();
    }
    let unique: std::collections::HashSet<_> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "{ids:?}");
}

#[tokio::test]
async fn deleting_a_topic_or_channel_drops_its_counts() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), SyncPolicy::Group);
    store
        .put_delayed(5, &[delayed("t", None, "a")])
        .await
        .unwrap();
    store
        .requeue_delayed(5, &delayed("t", Some("c"), "b"), 0)
        .await
        .unwrap();
    store
        .requeue_delayed(5, &delayed("u", Some("c"), "c"), 0)
        .await
        .unwrap();
    store.delete_channel("u", "c").await.unwrap();
    assert_eq!(
        store.delayed_counts().unwrap(),
        vec![("t".into(), None, 1), ("t".into(), Some("c".into()), 1)]
    );
    store.delete_topic("t").await.unwrap();
    assert!(store.delayed_counts().unwrap().is_empty());
    // The entries themselves wait until due, when the broker drops them.
    let due = store.read_delayed(None, 5, 10).unwrap();
    assert_eq!(due.due.len(), 3);
    let keys: Vec<_> = due.due.iter().map(|(k, _)| *k).collect();
    store.drop_delayed(&keys).await.unwrap();
    assert!(store.read_delayed(None, 5, 10).unwrap().due.is_empty());
    store.close().await.unwrap();
}

#[tokio::test]
async fn deleting_a_channel_puts_its_earlier_requeues_below_a_durable_floor() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), SyncPolicy::Group);
    assert_eq!(store.requeue_floor("t", "c").unwrap(), 0);
    store
        .requeue_delayed(5, &delayed("t", Some("c"), "old"), 0)
        .await
        .unwrap();
    store.delete_channel("t", "c").await.unwrap();
    store
        .requeue_delayed(5, &delayed("t", Some("c"), "new"), 0)
        .await
        .unwrap();
    store.close().await.unwrap();
    // After a restart the floor still tells the two apart.
    let store = open(dir.path(), SyncPolicy::Group);
    let floor = store.requeue_floor("t", "c").unwrap();
    let due = store.read_delayed(None, 5, 10).unwrap().due;
    let below: Vec<bool> = due.iter().map(|(key, _)| key.id < floor).collect();
    assert_eq!(
        below,
        [true, false],
        "old below the floor, new at or above it"
    );
    // A topic's deletion takes its floors with it.
    store.delete_topic("t").await.unwrap();
    assert_eq!(store.requeue_floor("t", "c").unwrap(), 0);
    store.close().await.unwrap();
}

#[tokio::test]
async fn create_channel_clears_marks_left_under_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), SyncPolicy::Group);
    // A FIN racing a delete can leave a mark behind the deleted channel.
    store.finish("t", "c", 3).await.unwrap();
    let ch = ChannelMeta {
        name: "c".into(),
        paused: false,
    };
    store.create_channel("t", &ch, 0).await.unwrap();
    assert!(store.finished("t", "c", 0, 10).unwrap().is_empty());
    store.close().await.unwrap();
}

#[tokio::test]
async fn corrupt_records_are_reported_not_panicked_on() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), SyncPolicy::Group);
    store.append("t", 0, &[msg("fine")]).await.unwrap();
    // Write a too-short value under a valid log key, bypassing the codec.
    let key = LogKey {
        topic: "t".into(),
        seq: 1,
    }
    .encode_key();
    let db = store.engine.db().unwrap();
    db.put_cf(engine::cf(&db, Cf::Log).unwrap(), key, [0u8; 3])
        .unwrap();
    drop(db);
    match store.read_log("t", 0, 10) {
        Err(StoreError::Corrupt { cf: "log", key, .. }) => assert!(key.starts_with("0174")),
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert_eq!(store.read_log("t", 0, 1).unwrap().len(), 1);
    store.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn group_commit_shares_fsyncs() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open(dir.path(), SyncPolicy::Group));
    let tasks: Vec<_> = (0..200u64)
        .map(|i| {
            let store = Arc::clone(&store);
            tokio::spawn(async move { store.append("t", i, &[msg(&i.to_string())]).await })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let stats = store.stats();
    assert_eq!(stats.requests, 200);
    assert_eq!(stats.messages, 200);
    // Every append was answered after a sync, but they shared them.
    assert!(stats.syncs >= 1);
    assert!(
        stats.syncs <= 50,
        "200 concurrent appends took {} fsyncs",
        stats.syncs
    );
    assert_eq!(stats.syncs, stats.batches);
    assert_eq!(store.read_log("t", 0, 1000).unwrap().len(), 200);

    // FIN marks alone are never synced.
    let before = store.stats().syncs;
    for seq in 0..20 {
        store.finish("t", "c", seq).await.unwrap();
    }
    assert_eq!(store.stats().syncs, before);
    store.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn group_size_is_bounded() {
    for opts in [
        StoreOptions {
            max_batch_requests: 1,
            ..StoreOptions::default()
        },
        StoreOptions {
            max_batch_bytes: 1,
            ..StoreOptions::default()
        },
    ] {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path(), opts).unwrap());
        let tasks: Vec<_> = (0..30u64)
            .map(|i| {
                let store = Arc::clone(&store);
                tokio::spawn(async move { store.append("t", i, &[msg("x")]).await })
            })
            .collect();
        for task in tasks {
            task.await.unwrap().unwrap();
        }
        // One request per write, so one fsync each.
        assert_eq!(store.stats().syncs, 30);
        assert_eq!(store.stats().batches, 30);
        store.close().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn always_syncs_each_request() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open(dir.path(), SyncPolicy::Always));
    let tasks: Vec<_> = (0..40u64)
        .map(|i| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                store.append("t", i, &[msg("x")]).await.unwrap();
                store.finish("t", "c", i).await.unwrap();
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let stats = store.stats();
    assert_eq!(stats.syncs, 40, "{stats:?}");
    assert_eq!(stats.requests, 80);
    assert_eq!(store.finished("t", "c", 0, 100).unwrap().len(), 40);
    store.close().await.unwrap();
}

#[tokio::test]
async fn interval_syncs_in_the_background_and_never_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), SyncPolicy::Interval(Duration::from_millis(10)));
    store.append("t", 0, &[msg("x")]).await.unwrap();
    assert!(eventually(Duration::from_secs(5), || store.stats().syncs >= 1).await);
    // Idle: nothing new to sync, so the ticker stays quiet.
    let idle = store.stats().syncs;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(store.stats().syncs, idle);
    store.close().await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), SyncPolicy::Never);
    for i in 0..20 {
        store.append("t", i, &[msg("x")]).await.unwrap();
    }
    assert_eq!(store.stats().syncs, 0);
    // A clean shutdown still syncs once.
    store.close().await.unwrap();
    assert_eq!(store.stats().syncs, 1);
}

#[tokio::test]
async fn a_failed_write_answers_err_and_the_next_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), SyncPolicy::Group);
    store.counters.fail_writes.store(1, Ordering::Release);
    let err = store.append("t", 0, &[msg("lost")]).await.unwrap_err();
    assert!(matches!(err, StoreError::Io(_)), "{err:?}");
    assert!(store.read_log("t", 0, 10).unwrap().is_empty());
    assert_eq!(store.stats().write_errors, 1);
    assert_eq!(store.stats().messages, 0);

    store.append("t", 0, &[msg("kept")]).await.unwrap();
    assert_eq!(
        bodies(&store.read_log("t", 0, 10).unwrap()),
        [(0, "kept".to_owned())]
    );
    // The failure made the writer reopen the database before the next write.
    assert_eq!(store.stats().reopens, 1);
    store.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reads_go_on_while_the_writer_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open(dir.path(), SyncPolicy::Group));
    let first: Vec<_> = (0..100).map(|i| msg(&i.to_string())).collect();
    store.append("t", 0, &first).await.unwrap();

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (store, stop) = (Arc::clone(&store), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut reads = 0;
            while !stop.load(Ordering::Acquire) {
                // Each read sees the whole log or an error while the database
                // is swapped; never a panic, never a partial log.
                if let Ok(log) = store.read_log("t", 0, 1000) {
                    assert!(log.len() >= 100, "{}", log.len());
                    reads += 1;
                }
            }
            reads
        })
    };
    for round in 0..3u64 {
        store.counters.fail_writes.store(1, Ordering::Release);
        assert!(store.append("t", 1000 + round, &[msg("no")]).await.is_err());
        // Past the backoff of the previous round's reopen.
        if round > 0 {
            tokio::time::sleep(writer::REOPEN_BACKOFF).await;
        }
        store.append("t", 100 + round, &[msg("yes")]).await.unwrap();
    }
    stop.store(true, Ordering::Release);
    assert!(reader.join().unwrap() > 0);
    assert_eq!(store.stats().reopens, 3);
    assert_eq!(store.read_log("t", 0, 1000).unwrap().len(), 103);
    store.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_group_answers_every_request_with_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open(dir.path(), SyncPolicy::Group));
    store.counters.fail_writes.store(3, Ordering::Release);
    let tasks: Vec<_> = (0..100u64)
        .map(|i| {
            let store = Arc::clone(&store);
            tokio::spawn(async move { (i, store.append("t", i, &[msg("x")]).await) })
        })
        .collect();
    let mut acked = Vec::new();
    let mut failed = 0;
    for task in tasks {
        match task.await.unwrap() {
            (i, Ok(())) => acked.push(i),
            (_, Err(StoreError::Io(_))) => failed += 1,
            (_, Err(e)) => panic!("unexpected {e:?}"),
        }
    }
    assert!(
        failed >= 3,
        "three failed writes answer at least three requests"
    );
    let stored: Vec<u64> = store
        .read_log("t", 0, 1000)
        .unwrap()
        .iter()
        .map(|e| e.0)
        .collect();
    // Exactly the acknowledged appends are in the log: no false OK, and a
    // failed group left nothing half-written.
    assert_eq!(stored, acked);
    assert_eq!(acked.len() + failed, 100);
    store.close().await.unwrap();
}

#[tokio::test]
async fn open_fails_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    // A file where the directory should be.
    let file = dir.path().join("file");
    std::fs::write(&file, b"not a db").unwrap();
    assert!(matches!(
        Store::open(&file, StoreOptions::default()),
        Err(StoreError::Io(_))
    ));
    // The same directory twice: RocksDB's lock refuses the second.
    let db = dir.path().join("db");
    let first = Store::open(&db, StoreOptions::default()).unwrap();
    assert!(matches!(
        Store::open(&db, StoreOptions::default()),
        Err(StoreError::Io(_))
    ));
    let zero = StoreOptions {
        queue_capacity: 0,
        ..StoreOptions::default()
    };
    assert!(matches!(
        Store::open(&dir.path().join("other"), zero),
        Err(StoreError::InvalidArgument(_))
    ));
    first.close().await.unwrap();
}

#[tokio::test]
async fn trimmed_space_is_reclaimed() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), SyncPolicy::Never);
    // Incompressible bodies, so lz4 does not hide the volume.
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut noise = |n: usize| -> Bytes {
        (0..n)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect::<Vec<u8>>()
            .into()
    };
    for chunk in 0..20u64 {
        let msgs: Vec<_> = (0..500)
            .map(|_| StoredMessage {
                timestamp_ns: 0,
                attempts: 0,
                body: noise(1024),
            })
            .collect();
        store.append("t", chunk * 500, &msgs).await.unwrap();
    }
    store.compact().unwrap();
    let full = store.disk_bytes().unwrap();
    assert!(full > 8 << 20, "10 MB written, {full} bytes on disk");

    store.advance_channel("t", "c", 10_000).await.unwrap();
    store.trim_log("t", 10_000).await.unwrap();
    store.compact().unwrap();
    let trimmed = store.disk_bytes().unwrap();
    assert!(trimmed < full / 10, "{full} bytes before, {trimmed} after");
    assert!(store.read_log("t", 0, 10).unwrap().is_empty());
    store.close().await.unwrap();
}

// ---- crashes and full disks, in a child process ----------------------------

/// Selects what the re-executed test binary does in [`child`].
const CHILD_MODE: &str = "TRIAGE_STORE_TEST_CHILD";
const CHILD_DIR: &str = "TRIAGE_STORE_TEST_DIR";
const CHILD_TEST: &str = "store::tests::child";

/// Runs this test binary as a child that executes only [`child`].
fn child_command(mode: &str, dir: &Path) -> Process {
    let exe = std::env::current_exe().unwrap();
    let mut cmd = Process::new(exe);
    cmd.args([CHILD_TEST, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_MODE, mode)
        .env(CHILD_DIR, dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    cmd
}

/// The child's side: a no-op in a normal test run. Under `crash` it appends
/// from 32 tasks until killed; under `full` it appends until the disk
/// (a file size limit) refuses. Each acknowledged append prints
/// `ack <first seq> <count>` and flushes, so the parent knows exactly what was
/// acknowledged before the kill.
#[test]
fn child() {
    let Ok(mode) = std::env::var(CHILD_MODE) else {
        return;
    };
    let dir = std::env::var(CHILD_DIR).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let store = Arc::new(open(Path::new(&dir), SyncPolicy::Group));
        let next = Arc::new(AtomicU64::new(0));
        let tasks = if mode == "crash" { 32 } else { 4 };
        let body_len = if mode == "crash" { 100 } else { 16 << 10 };
        let mut handles = Vec::new();
        for task in 0..tasks {
            let (store, next) = (Arc::clone(&store), Arc::clone(&next));
            handles.push(tokio::spawn(async move {
                let deadline = Instant::now() + Duration::from_secs(120);
                let mut errors = 0;
                while Instant::now() < deadline && errors < 20 {
                    let count = 1 + task % 4;
                    let first = next.fetch_add(count, Ordering::Relaxed);
                    let msgs: Vec<_> = (first..first + count)
                        .map(|seq| StoredMessage {
                            timestamp_ns: seq as i64,
                            attempts: 1,
                            body: expected_body(seq, body_len),
                        })
                        .collect();
                    let line = match store.append("t", first, &msgs).await {
                        Ok(()) => format!("ack {first} {count}\n"),
                        Err(e) => {
                            errors += 1;
                            format!("err {e}\n")
                        }
                    };
                    let mut out = std::io::stdout().lock();
                    out.write_all(line.as_bytes()).unwrap();
                    out.flush().unwrap();
                }
            }));
        }
        for h in handles {
            h.await.unwrap();
        }
        // Closed before exiting: RocksDB aborts a process that exits while
        // a database is still open. Under `full` the final sync may fail.
        let closed = store.close().await;
        println!("done {closed:?}");
    });
}

fn expected_body(seq: u64, len: usize) -> Bytes {
    let mut body = format!("message {seq} ").into_bytes();
    body.resize(len.max(body.len()), b'.');
    body.into()
}

#[derive(Default)]
struct ChildReport {
    acked: Vec<u64>,
    errors: Vec<String>,
    /// Messages acknowledged after the first error: the store recovered.
    acked_after_error: usize,
}

fn parse_line(line: &str, report: &mut ChildReport) {
    if let Some(rest) = line.strip_prefix("ack ") {
        let mut parts = rest.split(' ').map(|p| p.parse::<u64>().unwrap());
        let (first, count) = (parts.next().unwrap(), parts.next().unwrap());
        report.acked.extend(first..first + count);
        if !report.errors.is_empty() {
            report.acked_after_error += count as usize;
        }
    } else if let Some(rest) = line.strip_prefix("err ") {
        report.errors.push(rest.to_owned());
    }
}

/// Asserts every acknowledged seq is in the reopened store with its body.
async fn assert_all_acked_present(dir: &Path, acked: &[u64], body_len: usize) {
    let store = open(dir, SyncPolicy::Group);
    let log = store.read_log("t", 0, usize::MAX).unwrap();
    let stored: std::collections::HashMap<u64, StoredMessage> = log.into_iter().collect();
    let missing: Vec<u64> = acked
        .iter()
        .copied()
        .filter(|seq| !stored.contains_key(seq))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged messages lost, e.g. {:?}",
        missing.len(),
        acked.len(),
        &missing[..missing.len().min(10)]
    );
    for seq in acked {
        assert_eq!(stored[seq].body, expected_body(*seq, body_len), "seq {seq}");
    }
    store.close().await.unwrap();
}

#[tokio::test]
async fn nothing_acknowledged_is_lost_on_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = child_command("crash", dir.path()).spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let mut report = ChildReport::default();
    while report.acked.len() < 3000 {
        let line = lines
            .next()
            .expect("the child stopped before 3000 acks")
            .unwrap();
        parse_line(&line, &mut report);
    }
    // SIGKILL mid-stream: no destructor, no final sync.
    child.kill().unwrap();
    child.wait().unwrap();
    // Acks the child printed before it died are acknowledged too.
    for line in lines {
        parse_line(&line.unwrap(), &mut report);
    }
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_all_acked_present(dir.path(), &report.acked, 100).await;
}

/// A real failing disk: the child runs under a file size limit (with
/// SIGXFSZ ignored, so writes past it fail with EFBIG as on a full disk).
/// Appends must start failing, none may be acknowledged falsely, appends
/// must succeed again once the store has reopened onto a fresh WAL file, and
/// a reopened store must hold every acknowledged message.
#[tokio::test]
async fn a_full_disk_fails_appends_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let inner = child_command("full", dir.path());
    let mut cmd = Process::new("sh");
    // `ulimit -f` counts 512-byte blocks in dash, 1024 in bash: 8 or 16 MiB,
    // far below the 64 MiB memtable, so the WAL hits it first.
    cmd.arg("-c")
        .arg("trap '' XFSZ; ulimit -f 16384; exec \"$0\" \"$@\"")
        .arg(inner.get_program())
        .args(inner.get_args())
        .envs(inner.get_envs().filter_map(|(k, v)| Some((k, v?))))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let output = cmd.spawn().unwrap().wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    let mut report = ChildReport::default();
    for line in text.lines() {
        parse_line(line, &mut report);
    }
    assert!(output.status.success(), "child failed: {text}");
    assert!(text.contains("done"), "{text}");
    assert!(
        !report.errors.is_empty(),
        "no append failed under the size limit"
    );
    assert!(report.acked.len() > 100, "only {} acks", report.acked.len());
    // The limit is per file: once the writer reopened the database, its new
    // WAL file had room again, as a disk does when space is freed.
    assert!(
        report.acked_after_error > 0,
        "no append succeeded after the first failure"
    );
    assert_all_acked_present(dir.path(), &report.acked, 16 << 10).await;
}

// ---- measurement, run by hand ---------------------------------------------

/// `cargo test -p triage-broker --release store::tests::measure -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread")]
#[ignore = "a measurement, not a test"]
async fn measure_group_commit() {
    for (tasks, per_append) in [(64usize, 1u64), (64, 200)] {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(open(dir.path(), SyncPolicy::Group));
        let next = Arc::new(AtomicU64::new(0));
        let total = 200_000u64;
        let started = Instant::now();
        let handles: Vec<_> = (0..tasks)
            .map(|_| {
                let (store, next) = (Arc::clone(&store), Arc::clone(&next));
                tokio::spawn(async move {
                    let msgs: Vec<_> = (0..per_append)
                        .map(|_| StoredMessage {
                            timestamp_ns: 0,
                            attempts: 1,
                            body: Bytes::from(vec![b'x'; 200]),
                        })
                        .collect();
                    loop {
                        let first = next.fetch_add(per_append, Ordering::Relaxed);
                        if first >= total {
                            break;
                        }
                        store.append("bench", first, &msgs).await.unwrap();
                    }
                })
            })
            .collect();
        for h in handles {
            h.await.unwrap();
        }
        let took = started.elapsed();
        let s = store.stats();
        println!(
            "{tasks} tasks x {per_append} msgs/append: {:.0} msg/s, {} appends, {} syncs \
             ({:.1} appends/sync), fsync mean {:.2} ms max {:.2} ms",
            s.messages as f64 / took.as_secs_f64(),
            s.requests,
            s.syncs,
            s.requests as f64 / s.syncs.max(1) as f64,
            s.sync_nanos_total as f64 / s.syncs.max(1) as f64 / 1e6,
            s.sync_nanos_max as f64 / 1e6,
        );
        let started = Instant::now();
        let mut from = 0;
        let mut read = 0;
        loop {
            let batch = store.read_log("bench", from, 10_000).unwrap();
            let Some(last) = batch.last() else { break };
            from = last.0 + 1;
            read += batch.len();
        }
        println!(
            "  read back {read} msgs at {:.0} msg/s",
            read as f64 / started.elapsed().as_secs_f64()
        );
        store.close().await.unwrap();
    }
}
