//! triage-bench's command line: one subcommand per scenario, every run bounded
//! by `--duration` (and optionally `--count`), and checks that turn a bad
//! combination into one plain sentence before anything connects.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Serialize;

use crate::body::TIMESTAMP_LEN;

/// The longest run accepted: a load tool left running by mistake stops by itself.
pub const MAX_DURATION: Duration = Duration::from_secs(3600);

#[derive(Debug, Parser)]
#[command(
    name = "triage-bench",
    version,
    about = "Load generator speaking NSQ protocol V2, for triaged or nsqd"
)]
pub struct Cli {
    #[command(flatten)]
    pub common: Common,
    #[command(subcommand)]
    pub mode: Mode,
}

/// Options every scenario takes.
#[derive(Debug, Clone, Args, Serialize)]
pub struct Common {
    /// The broker's TCP address (protocol V2).
    #[arg(
        long,
        global = true,
        default_value = "127.0.0.1:4150",
        value_name = "ADDR"
    )]
    pub tcp: SocketAddr,
    /// triaged's HTTP address: topics are created there with their tier and
    /// channels before the run. Leave it out when aiming at nsqd.
    #[arg(long, global = true, value_name = "ADDR")]
    pub http: Option<SocketAddr>,
    /// How long the load runs (e.g. 500ms, 10s, 2m); at most 1h.
    #[arg(long, global = true, default_value = "10s", value_parser = parse_duration, value_name = "DURATION")]
    #[serde(serialize_with = "as_secs")]
    pub duration: Duration,
    /// How long consumers may keep receiving once publishing has stopped.
    #[arg(long, global = true, default_value = "5s", value_parser = parse_duration, value_name = "DURATION")]
    #[serde(serialize_with = "as_secs")]
    pub drain_timeout: Duration,
    /// Write the report as JSON to this file.
    #[arg(long, global = true, value_name = "FILE")]
    #[serde(skip)]
    pub json: Option<PathBuf>,
    /// Draw the latency distribution as a PNG to this file.
    #[arg(long, global = true, value_name = "FILE")]
    #[serde(skip)]
    pub plot: Option<PathBuf>,
    /// Ask consumers' connections for this output buffer timeout in ms
    /// (IDENTIFY); the broker's default (250 ms in nsqd) otherwise.
    #[arg(long, global = true, value_parser = clap::value_parser!(i64).range(1..=60_000), value_name = "MS")]
    pub output_buffer_timeout: Option<i64>,
    /// With --http and --tier delayed: the topic's default delay, so every
    /// publish waits this long in the delayed tier (end-to-end latency then
    /// includes it: lateness is latency minus this).
    #[arg(long, global = true, value_parser = parse_duration, value_name = "DURATION")]
    #[serde(serialize_with = "as_secs_opt")]
    pub delay: Option<Duration>,
    /// No progress line on stderr.
    #[arg(long, global = true)]
    #[serde(skip)]
    pub quiet: bool,
}

#[derive(Debug, Clone, Subcommand, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Publish as fast as allowed (PUB, or MPUB when --batch > 1).
    Pub(PubArgs),
    /// Consume and FIN; reports how many arrived and their age on arrival.
    Sub(SubArgs),
    /// Publish and consume at once; end-to-end latency from each body's send timestamp.
    Pubsub(PubSubArgs),
    /// Urgent probes at a steady rate on a memory topic while a flood saturates a persistent topic.
    Isolation(IsolationArgs),
}

impl Mode {
    pub fn name(&self) -> &'static str {
        match self {
            Mode::Pub(_) => "pub",
            Mode::Sub(_) => "sub",
            Mode::Pubsub(_) => "pubsub",
            Mode::Isolation(_) => "isolation",
        }
    }
}

/// A delivery tier, as triaged's `POST /topic/create?tier=` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    Memory,
    Persistent,
    Delayed,
}

impl Tier {
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Memory => "memory",
            Tier::Persistent => "persistent",
            Tier::Delayed => "delayed",
        }
    }
}

/// What is published: body size, batching, pace and an optional total.
#[derive(Debug, Clone, Args, Serialize)]
pub struct Load {
    /// Bytes per message body; the first 8 carry the send time.
    #[arg(long, default_value_t = 200, value_name = "BYTES")]
    pub size: usize,
    /// Messages per command: 1 sends PUB, more send MPUB.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=100_000), value_name = "N")]
    pub batch: u32,
    /// Total messages per second over all publishers (default: as fast as the broker answers).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..), value_name = "MSG/S")]
    pub rate: Option<u64>,
    /// Stop after publishing this many messages (the duration still bounds the run).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..), value_name = "N")]
    pub count: Option<u64>,
}

#[derive(Debug, Clone, Args, Serialize)]
pub struct TopicArgs {
    #[arg(long, default_value = "sub_bench")]
    pub topic: String,
    /// Create the topic with this tier first (triaged only; needs --http).
    #[arg(long)]
    pub tier: Option<Tier>,
}

#[derive(Debug, Clone, Args, Serialize)]
pub struct PubArgs {
    #[command(flatten)]
    pub topic: TopicArgs,
    #[command(flatten)]
    pub load: Load,
    /// With --http, create this channel before publishing, as NSQ's bench
    /// procedure does, so the publish rate includes the fan-out into it.
    #[arg(long)]
    pub channel: Option<String>,
    /// Publishing connections, each with one command in flight.
    #[arg(long, default_value_t = 2, value_parser = connections)]
    pub connections: u32,
}

#[derive(Debug, Clone, Args, Serialize)]
pub struct SubArgs {
    #[command(flatten)]
    pub topic: TopicArgs,
    #[arg(long, default_value = "ch")]
    pub channel: String,
    /// Consuming connections.
    #[arg(long, default_value_t = 2, value_parser = connections)]
    pub connections: u32,
    /// RDY per connection.
    #[arg(long, default_value_t = 2500, value_parser = clap::value_parser!(u64).range(1..))]
    pub rdy: u64,
    /// Stop after receiving this many messages (the duration still bounds the run).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..), value_name = "N")]
    pub count: Option<u64>,
}

#[derive(Debug, Clone, Args, Serialize)]
pub struct PubSubArgs {
    #[command(flatten)]
    pub topic: TopicArgs,
    #[command(flatten)]
    pub load: Load,
    #[arg(long, default_value = "ch")]
    pub channel: String,
    #[arg(long, default_value_t = 2, value_parser = connections)]
    pub publishers: u32,
    #[arg(long, default_value_t = 2, value_parser = connections)]
    pub consumers: u32,
    /// RDY per consumer connection.
    #[arg(long, default_value_t = 2500, value_parser = clap::value_parser!(u64).range(1..))]
    pub rdy: u64,
}

#[derive(Debug, Clone, Args, Serialize)]
pub struct IsolationArgs {
    /// The urgent topic; created with tier memory when --http is given.
    #[arg(long, default_value = "bench_urgent")]
    pub urgent_topic: String,
    /// The flooded topic; created with tier persistent when --http is given.
    #[arg(long, default_value = "bench_flood")]
    pub flood_topic: String,
    #[arg(long, default_value = "ch")]
    pub channel: String,
    /// Urgent probes per second, each one PUB.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub probe_rate: u64,
    /// Bytes per message body, probes and flood alike.
    #[arg(long, default_value_t = 200, value_name = "BYTES")]
    pub size: usize,
    /// Flood publishing connections, each sending MPUB as fast as it is answered.
    #[arg(long, default_value_t = 2, value_parser = connections)]
    pub flood_publishers: u32,
    /// Messages per flood MPUB.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub flood_batch: u32,
    /// Connections consuming the flood (0: nobody drains it).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(0..=1000))]
    pub flood_consumers: u32,
    /// RDY per consumer connection.
    #[arg(long, default_value_t = 2500, value_parser = clap::value_parser!(u64).range(1..))]
    pub rdy: u64,
    /// Probes alone for this long before the flood starts, for an idle baseline (0s: none).
    #[arg(long, default_value = "0s", value_parser = parse_duration, value_name = "DURATION")]
    #[serde(serialize_with = "as_secs")]
    pub baseline: Duration,
}

fn connections(s: &str) -> Result<u32, String> {
    match s.parse::<u32>() {
        Ok(n @ 1..=1000) => Ok(n),
        _ => Err(format!("{s:?} is not a connection count from 1 to 1000")),
    }
}

fn as_secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

fn as_secs_opt<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_f64(d.as_secs_f64()),
        None => s.serialize_none(),
    }
}

/// `500ms`, `10s`, `2m`, `1h`, or a bare number of seconds.
///
/// # Errors
/// A sentence naming the input when it is not such a duration.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("{s:?} is not a duration like 500ms, 10s or 2m");
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let value: f64 = number.parse().map_err(|_| bad())?;
    let secs = match unit {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(bad()),
    };
    Duration::try_from_secs_f64(secs).map_err(|_| bad())
}

impl Cli {
    /// Checks what clap cannot: combinations, name rules, and the bounds
    /// that keep every run finite.
    ///
    /// # Errors
    /// One sentence saying what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        let c = &self.common;
        if c.duration.is_zero() || c.duration > MAX_DURATION {
            return Err(format!(
                "--duration must be more than 0 and at most 1h, not {:?}",
                c.duration
            ));
        }
        if c.drain_timeout > MAX_DURATION {
            return Err("--drain-timeout must be at most 1h".to_owned());
        }
        let check_topic = |topic: &TopicArgs| -> Result<(), String> {
            check_name("topic", &topic.topic)?;
            if topic.tier.is_some() && c.http.is_none() {
                return Err(
                    "--tier needs --http, the triaged HTTP address to create the topic on"
                        .to_owned(),
                );
            }
            Ok(())
        };
        match &self.mode {
            Mode::Pub(a) => {
                check_topic(&a.topic)?;
                if let Some(channel) = &a.channel {
                    check_name("channel", channel)?;
                    if c.http.is_none() {
                        return Err("--channel on pub needs --http, the triaged HTTP address to create it on".to_owned());
                    }
                }
                check_size(a.load.size)
            }
            Mode::Sub(a) => {
                check_topic(&a.topic)?;
                check_name("channel", &a.channel)
            }
            Mode::Pubsub(a) => {
                check_topic(&a.topic)?;
                check_name("channel", &a.channel)?;
                check_size(a.load.size)
            }
            Mode::Isolation(a) => {
                check_name("topic", &a.urgent_topic)?;
                check_name("topic", &a.flood_topic)?;
                check_name("channel", &a.channel)?;
                if a.urgent_topic == a.flood_topic {
                    return Err("--urgent-topic and --flood-topic must differ".to_owned());
                }
                if a.baseline > MAX_DURATION {
                    return Err("--baseline must be at most 1h".to_owned());
                }
                check_size(a.size)
            }
        }
    }
}

fn check_name(what: &str, name: &str) -> Result<(), String> {
    if triage_protocol::names::is_valid_topic_name(name) {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a valid {what} name (1 to 64 of a-z A-Z 0-9 . _ -, optionally ending in #ephemeral)"
        ))
    }
}

fn check_size(size: usize) -> Result<(), String> {
    if (TIMESTAMP_LEN..=1 << 20).contains(&size) {
        Ok(())
    } else {
        Err(format!(
            "--size must be from {TIMESTAMP_LEN} bytes (the send timestamp) to 1 MiB, not {size}"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, String> {
        let cli = Cli::try_parse_from(std::iter::once("triage-bench").chain(args.iter().copied()))
            .map_err(|e| e.to_string())?;
        cli.validate()?;
        Ok(cli)
    }

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn defaults_follow_nsq_bench() {
        let cli = parse(&["pub"]).unwrap();
        let Mode::Pub(a) = cli.mode else {
            panic!("not pub")
        };
        assert_eq!((a.load.size, a.load.batch, a.connections), (200, 200, 2));
        assert_eq!(a.topic.topic, "sub_bench");
        assert_eq!(cli.common.duration, Duration::from_secs(10));
    }

    #[test]
    fn bad_combinations_are_one_sentence() {
        for args in [
            &["pub", "--tier", "memory"][..],
            &["pub", "--size", "4"],
            &["pub", "--topic", "no spaces"],
            &["sub", "--channel", ""],
            &["pub", "--duration", "0s"],
            &["pub", "--duration", "2h"],
            &["isolation", "--urgent-topic", "a", "--flood-topic", "a"],
        ] {
            let err = parse(args).expect_err(&format!("{args:?} accepted"));
            assert!(!err.trim().contains('\n'), "{args:?}: {err}");
        }
    }

    #[test]
    fn global_options_go_after_the_subcommand_too() {
        let cli = parse(&["pubsub", "--duration", "1s", "--tcp", "127.0.0.1:1"]).unwrap();
        assert_eq!(cli.common.duration, Duration::from_secs(1));
        assert_eq!(cli.common.tcp.port(), 1);
    }
}
