//! The protocol codec on the broker's hot paths: decoding a stream of PUB and
//! MPUB commands as a connection reads them, and encoding message frames as
//! a connection writes them. 200-byte bodies, as in NSQ's bench procedure.

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use triage_protocol::frame::encode_message;
use triage_protocol::{decode_command, Command, Limits, Message, MessageId};

const BODY: usize = 200;
const MESSAGES: usize = 1000;
const MPUB_BATCH: usize = 100;

fn body() -> Bytes {
    Bytes::from(vec![b'x'; BODY])
}

/// `MESSAGES` messages as a stream of commands, `batch` per command (1 = PUB).
fn command_stream(batch: usize) -> BytesMut {
    let mut out = BytesMut::new();
    for _ in 0..MESSAGES / batch {
        let command = if batch == 1 {
            Command::Pub {
                topic: "sub_bench".to_owned(),
                body: body(),
            }
        } else {
            Command::Mpub {
                topic: "sub_bench".to_owned(),
                bodies: vec![body(); batch],
            }
        };
        command.encode(&mut out);
    }
    out
}

fn decode_all(mut stream: BytesMut, limits: &Limits) -> usize {
    let mut messages = 0;
    while let Some(command) = decode_command(&mut stream, limits).expect("valid stream") {
        messages += match command {
            Command::Pub { .. } => 1,
            Command::Mpub { bodies, .. } => bodies.len(),
            _ => 0,
        };
    }
    assert_eq!(messages, MESSAGES);
    messages
}

fn decode(c: &mut Criterion) {
    let limits = Limits::default();
    let mut group = c.benchmark_group("codec/decode");
    group.throughput(Throughput::Elements(MESSAGES as u64));
    for (name, batch) in [("pub", 1), ("mpub_100", MPUB_BATCH)] {
        let stream = command_stream(batch);
        group.bench_function(name, |b| {
            b.iter_batched(
                || stream.clone(),
                |stream| decode_all(stream, &limits),
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

fn encode(c: &mut Criterion) {
    let messages: Vec<Message> = (0..MESSAGES as u64)
        .map(|i| Message {
            timestamp_ns: 1_700_000_000_000_000_000 + i as i64,
            attempts: 1,
            id: MessageId::from_u64(i),
            body: body(),
        })
        .collect();
    let mut out = BytesMut::with_capacity(MESSAGES * (BODY + 64));
    let mut group = c.benchmark_group("codec/encode");
    group.throughput(Throughput::Elements(MESSAGES as u64));
    group.bench_function("message_frames", |b| {
        b.iter(|| {
            out.clear();
            for msg in &messages {
                encode_message(msg, &mut out);
            }
            out.len()
        })
    });
    group.finish();
}

criterion_group!(benches, decode, encode);
criterion_main!(benches);
