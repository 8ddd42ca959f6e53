//! `triagectl`: the admin CLI. Talks to a broker's HTTP admin API (topics,
//! channels, stats, publishing) and checks config files offline.
//!
//! Exit codes: 0 success; 1 the broker is unreachable or refused the request;
//! 2 bad usage (clap's message, a bad topic or channel name) or a config file
//! that does not pass `config check`. `completions` and `config check` work
//! offline.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use bytes::Bytes;
use clap::{CommandFactory, Parser, Subcommand};
use serde_json::{json, Value};
use triage_broker::ctl::client::{encode, AdminClient, CtlError};
use triage_broker::ctl::cluster::{self, Cluster};
use triage_broker::ctl::table;
use triage_broker::ctl::tail::{self, Tail};
use triage_config::Tier;

#[derive(Debug, Parser)]
#[command(
    name = "triagectl",
    version,
    about = "Administer a triaged broker over its HTTP API"
)]
struct Cli {
    /// The broker's HTTP address, HOST:PORT.
    #[arg(
        long,
        global = true,
        default_value = "127.0.0.1:4151",
        env = "TRIAGECTL_HTTP_ADDRESS",
        value_parser = parse_address
    )]
    http_address: String,
    /// The broker's admin_token, sent as a bearer token on every request
    /// (needed for changes when the broker sets one).
    #[arg(
        long,
        global = true,
        env = "TRIAGECTL_ADMIN_TOKEN",
        hide_env_values = true
    )]
    admin_token: Option<String>,
    /// A lookupd's HTTP address, HOST:PORT (repeatable, or comma-separated):
    /// `stats`, `topic list` and topic and channel changes then act on every
    /// broker lookupd knows (changes: every broker holding the topic) instead
    /// of --http-address. Other commands still use --http-address.
    #[arg(
        long,
        global = true,
        env = "TRIAGECTL_LOOKUPD_HTTP_ADDRESS",
        value_delimiter = ',',
        value_parser = parse_address
    )]
    lookupd_http_address: Vec<String>,
    /// Print JSON for scripts instead of tables for people.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List, create, delete, pause, unpause or empty topics.
    #[command(subcommand)]
    Topic(TopicCommand),
    /// List, create, delete, pause, unpause or empty a topic's channels.
    #[command(subcommand)]
    Channel(ChannelCommand),
    /// Topics and channels with depth, in-flight and consumers.
    Stats {
        /// Only this topic.
        #[arg(long, value_parser = parse_topic)]
        topic: Option<String>,
    },
    /// Publish MESSAGEs to TOPIC, or each line of stdin when none are given.
    Pub {
        #[arg(value_parser = parse_topic)]
        topic: String,
        messages: Vec<String>,
    },
    /// Print the messages published to TOPIC as they arrive, one per line
    /// (like nsq_tail), from an ephemeral channel of its own.
    Tail {
        #[arg(value_parser = parse_topic)]
        topic: String,
        /// Stop after N messages.
        #[arg(short = 'n', long = "count", value_name = "N")]
        count: Option<u64>,
        /// The broker's TCP address, HOST:PORT; asked from the broker's
        /// HTTP API (/info) when omitted.
        #[arg(long, env = "TRIAGECTL_TCP_ADDRESS", value_parser = parse_address)]
        tcp_address: Option<String>,
    },
    /// Check configuration files offline.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Print a shell completion script: `source <(triagectl completions bash)`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Subcommand)]
enum TopicCommand {
    List,
    Create {
        #[arg(value_parser = parse_topic)]
        topic: String,
        /// memory, persistent or delayed; the broker's tier rules decide when omitted.
        #[arg(long, value_parser = parse_tier)]
        tier: Option<Tier>,
        #[command(flatten)]
        settings: TopicSettingsArgs,
    },
    Delete {
        #[arg(value_parser = parse_topic)]
        topic: String,
    },
    Pause {
        #[arg(value_parser = parse_topic)]
        topic: String,
    },
    Unpause {
        #[arg(value_parser = parse_topic)]
        topic: String,
    },
    /// Drop every queued message of the topic and its channels.
    Empty {
        #[arg(value_parser = parse_topic)]
        topic: String,
    },
    /// Move a topic to another tier in place, for messages published from now on.
    ///
    /// What the topic already holds keeps the guarantee it was accepted with, and pending delayed messages still come out when due.
    /// Settings not given are kept (delay and batch window only while the
    /// topic stays delayed). A topic without a log (memory under
    /// memory_overflow = reject, or #ephemeral) and a _triage. system topic
    /// cannot leave memory.
    SetTier {
        #[arg(value_parser = parse_topic)]
        topic: String,
        /// memory, persistent or delayed.
        #[arg(value_parser = parse_tier)]
        tier: Tier,
        #[command(flatten)]
        settings: TopicSettingsArgs,
    },
}

/// A topic's settings, for `topic create` and `topic set-tier`.
#[derive(Debug, Clone, clap::Args)]
struct TopicSettingsArgs {
    /// Delayed tier: every publish waits this long (e.g. 30m).
    #[arg(long, value_name = "DURATION")]
    delay: Option<String>,
    /// Delayed tier: messages due within one window are released together (e.g. 1h).
    #[arg(long, value_name = "DURATION")]
    batch_window: Option<String>,
    /// A message delivered this many times that comes back moves to <topic>.dead.
    #[arg(long, value_name = "N")]
    max_attempts: Option<u16>,
}

impl TopicSettingsArgs {
    /// `&key=value` for each setting given; the broker checks the values
    /// and names a bad one.
    fn query(&self) -> String {
        let settings = [
            ("delay", self.delay.clone()),
            ("batch_window", self.batch_window.clone()),
            ("max_attempts", self.max_attempts.map(|n| n.to_string())),
        ];
        settings
            .into_iter()
            .filter_map(|(key, value)| value.map(|value| format!("&{key}={}", encode(&value))))
            .collect()
    }
}

#[derive(Debug, Subcommand)]
enum ChannelCommand {
    List {
        #[arg(value_parser = parse_topic)]
        topic: String,
    },
    Create(ChannelArgs),
    Delete(ChannelArgs),
    Pause(ChannelArgs),
    Unpause(ChannelArgs),
    /// Drop every queued message of the channel.
    Empty(ChannelArgs),
}

#[derive(Debug, clap::Args)]
struct ChannelArgs {
    #[arg(value_parser = parse_topic)]
    topic: String,
    #[arg(value_parser = parse_channel)]
    channel: String,
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Validate a broker TOML file; prints `ok`, or one line per bad key.
    Check { file: PathBuf },
}

fn parse_topic(name: &str) -> Result<String, String> {
    if triage_protocol::names::is_valid_topic_name(name) {
        Ok(name.to_owned())
    } else {
        Err(bad_name())
    }
}

fn parse_channel(name: &str) -> Result<String, String> {
    if triage_protocol::names::is_valid_channel_name(name) {
        Ok(name.to_owned())
    } else {
        Err(bad_name())
    }
}

fn bad_name() -> String {
    "names are 1 to 64 characters of letters, digits, '.', '_' and '-', optionally ending in #ephemeral".to_owned()
}

fn parse_tier(raw: &str) -> Result<Tier, String> {
    raw.parse()
        .map_err(|_| "expected memory, persistent or delayed".to_owned())
}

/// HOST:PORT, with an `http://` prefix and a trailing `/` tolerated.
fn parse_address(raw: &str) -> Result<String, String> {
    let addr = raw.trim_start_matches("http://").trim_end_matches('/');
    let valid = !addr.is_empty()
        && !addr.contains('/')
        && addr
            .parse::<hyper::http::uri::Authority>()
            .is_ok_and(|a| a.port_u16().is_some());
    if valid {
        Ok(addr.to_owned())
    } else {
        Err("expected HOST:PORT, e.g. 127.0.0.1:4151".to_owned())
    }
}

fn main() -> ExitCode {
    // Bad usage exits 2 with clap's message; --help and --version exit 0.
    let cli = Cli::parse();
    match &cli.command {
        Command::Config(ConfigCommand::Check { file }) => return config_check(file),
        Command::Completions { shell } => {
            // Into a buffer first: clap_complete panics on a failed write
            // (`| head`), and a CLI answers that with a sentence.
            let mut script = Vec::new();
            clap_complete::generate(*shell, &mut Cli::command(), "triagectl", &mut script);
            let mut stdout = std::io::stdout().lock();
            if let Err(e) = stdout.write_all(&script).and_then(|()| stdout.flush()) {
                eprintln!("triagectl: cannot write to stdout: {e}");
                return ExitCode::FAILURE;
            }
            return ExitCode::SUCCESS;
        }
        _ => {}
    }
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            // One plain sentence on stderr: what an admin needs, no backtrace.
            eprintln!("triagectl: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the command; a cluster command that failed on some brokers has
/// printed one line per failure and exits 1.
fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let (output, failures) =
        if !cli.lookupd_http_address.is_empty() && is_cluster_wide(&cli.command) {
            let cluster = Cluster::new(&cli.lookupd_http_address, cli.admin_token);
            runtime.block_on(execute_cluster(&cluster, cli.command, cli.json))?
        } else {
            let client = AdminClient::new(cli.http_address).with_token(cli.admin_token);
            let output = runtime.block_on(execute(&client, cli.command, cli.json))?;
            (output, Vec::new())
        };
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(output.as_bytes())
        .and_then(|()| stdout.flush())
        .context("cannot write to stdout")?;
    for failure in &failures {
        eprintln!("triagectl: {failure}");
    }
    Ok(if failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// A topic or channel change: the request and how to describe it.
struct Change {
    topic: String,
    /// `topic orders` or `channel orders/billing`.
    subject: String,
    path: String,
    past: &'static str,
    /// Said after `past`: ` to memory` for a tier change.
    detail: String,
    fields: Value,
}

impl Change {
    fn is_create_topic(&self) -> bool {
        self.path.starts_with("/topic/create?")
    }
}

/// The change `command` asks for, if it is one that runs cluster-wide.
fn change_of(command: &Command) -> Option<Change> {
    let topic_change = |endpoint: &str, topic: &String, past| Change {
        topic: topic.clone(),
        subject: format!("topic {topic}"),
        path: format!("/topic/{endpoint}?topic={}", encode(topic)),
        past,
        detail: String::new(),
        fields: json!({ "topic": topic }),
    };
    Some(match command {
        Command::Topic(TopicCommand::Create {
            topic,
            tier,
            settings,
        }) => {
            let mut change = topic_change("create", topic, "created");
            if let Some(tier) = tier {
                change.path.push_str("&tier=");
                change.path.push_str(tier.as_str());
            }
            change.path.push_str(&settings.query());
            change
        }
        Command::Topic(TopicCommand::SetTier {
            topic,
            tier,
            settings,
        }) => {
            let mut change = topic_change("tier", topic, "tier set");
            change.path.push_str(&format!("&tier={}", tier.as_str()));
            change.path.push_str(&settings.query());
            change.detail = format!(" to {tier}");
            change.fields["tier"] = Value::from(tier.as_str());
            change
        }
        Command::Topic(TopicCommand::Delete { topic }) => topic_change("delete", topic, "deleted"),
        Command::Topic(TopicCommand::Pause { topic }) => topic_change("pause", topic, "paused"),
        Command::Topic(TopicCommand::Unpause { topic }) => {
            topic_change("unpause", topic, "unpaused")
        }
        Command::Topic(TopicCommand::Empty { topic }) => topic_change("empty", topic, "emptied"),
        Command::Channel(cmd) => {
            let (endpoint, args, past) = match cmd {
                ChannelCommand::Create(args) => ("create", args, "created"),
                ChannelCommand::Delete(args) => ("delete", args, "deleted"),
                ChannelCommand::Pause(args) => ("pause", args, "paused"),
                ChannelCommand::Unpause(args) => ("unpause", args, "unpaused"),
                ChannelCommand::Empty(args) => ("empty", args, "emptied"),
                ChannelCommand::List { .. } => return None,
            };
            let ChannelArgs { topic, channel } = args;
            Change {
                topic: topic.clone(),
                subject: format!("channel {topic}/{channel}"),
                path: format!(
                    "/channel/{endpoint}?topic={}&channel={}",
                    encode(topic),
                    encode(channel)
                ),
                past,
                detail: String::new(),
                fields: json!({ "topic": topic, "channel": channel }),
            }
        }
        _ => return None,
    })
}

fn is_cluster_wide(command: &Command) -> bool {
    matches!(
        command,
        Command::Stats { .. } | Command::Topic(TopicCommand::List)
    ) || change_of(command).is_some()
}

/// Runs one command on the brokers lookupd names; returns what to print and
/// one sentence per broker that failed.
async fn execute_cluster(
    cluster: &Cluster,
    command: Command,
    as_json: bool,
) -> anyhow::Result<(String, Vec<String>)> {
    if let Some(change) = change_of(&command) {
        return Ok(change_cluster(cluster, change, as_json).await?);
    }
    let (topic, listing) = match command {
        Command::Stats { topic } => (topic, false),
        _ => (None, true),
    };
    let brokers = cluster.brokers().await?;
    if brokers.is_empty() {
        anyhow::bail!("lookupd knows no brokers");
    }
    let answers = cluster
        .on_each(&brokers, |client| {
            let topic = topic.clone();
            async move { client.stats(topic.as_deref(), false).await }
        })
        .await;
    let mut reached = Vec::new();
    let mut failures = Vec::new();
    for (addr, answer) in answers {
        match answer {
            Ok(stats) => reached.push((addr, stats)),
            Err(e) => failures.push(broker_failure(&addr, &e)),
        }
    }
    let total = cluster::aggregate(&reached);
    let output = if listing {
        topic_list(&total, as_json)
    } else if as_json {
        format!("{total}\n")
    } else {
        table::stats(&total)
    };
    Ok((output, failures))
}

/// Makes `change` on every broker holding its topic (every broker, to create
/// one); one line per broker that made it, one failure per broker that did not.
async fn change_cluster(
    cluster: &Cluster,
    change: Change,
    as_json: bool,
) -> Result<(String, Vec<String>), CtlError> {
    let create = change.is_create_topic();
    let brokers = if create {
        cluster.brokers().await?
    } else {
        cluster.brokers_holding(&change.topic).await?
    };
    if brokers.is_empty() {
        return Err(CtlError::NoSuchTopic(change.topic));
    }
    let answers = cluster
        .on_each(&brokers, |client| {
            let path = change.path.clone();
            let topic = change.topic.clone();
            async move {
                client.post(&path, Bytes::new()).await?;
                if create {
                    topic_tier(&client, &topic).await.map(Some)
                } else {
                    Ok(None)
                }
            }
        })
        .await;
    let mut lines = String::new();
    let mut per_broker = Vec::new();
    let mut failures = Vec::new();
    for (addr, answer) in answers {
        match answer {
            Ok(tier) => {
                let tier_note = tier.as_ref().map(|t| format!(" ({t})")).unwrap_or_default();
                lines.push_str(&format!(
                    "{} {}{}{tier_note} on {addr}\n",
                    change.subject, change.past, change.detail
                ));
                per_broker.push(json!({ "address": addr, "ok": true, "tier": tier }));
            }
            Err(e) => {
                let failure = broker_failure(&addr, &e);
                per_broker.push(json!({ "address": addr, "ok": false, "error": failure }));
                failures.push(failure);
            }
        }
    }
    let output = if as_json {
        let mut value = change.fields;
        value["result"] = Value::from(change.past);
        value["brokers"] = Value::from(per_broker);
        format!("{value}\n")
    } else {
        lines
    };
    Ok((output, failures))
}

/// One sentence naming the broker: the unreachable errors name it already.
fn broker_failure(addr: &str, error: &CtlError) -> String {
    match error {
        CtlError::Unreachable { .. } | CtlError::Timeout { .. } => error.to_string(),
        _ => format!("the broker at {addr}: {error}"),
    }
}

/// `topic list` of one broker's `/stats` or of the cluster's sum.
fn topic_list(stats: &Value, as_json: bool) -> String {
    if !as_json {
        return table::topic_list(stats);
    }
    let topics: Vec<Value> = table::topics(stats)
        .iter()
        .map(|t| {
            json!({
                "topic": t["topic_name"],
                "tier": t["tier"],
                "channels": table::channels(t).len(),
                "paused": t["paused"],
            })
        })
        .collect();
    format!("{}\n", Value::from(topics))
}

/// Runs one command against the broker and returns what to print.
async fn execute(client: &AdminClient, command: Command, as_json: bool) -> anyhow::Result<String> {
    let done = |action: &str, fields: Value, sentence: String| {
        if as_json {
            let mut value = fields;
            value["result"] = Value::from(action);
            format!("{value}\n")
        } else {
            format!("{sentence}\n")
        }
    };
    if let Some(change) = change_of(&command) {
        client.post(&change.path, Bytes::new()).await?;
        let create = change.is_create_topic();
        let mut fields = change.fields;
        let mut sentence = format!("{} {}{}", change.subject, change.past, change.detail);
        if create {
            // The broker's tier rules may have chosen it.
            let tier = topic_tier(client, &change.topic).await?;
            sentence.push_str(&format!(" ({tier})"));
            fields["tier"] = Value::from(tier);
        }
        return Ok(done(change.past, fields, sentence));
    }
    Ok(match command {
        Command::Topic(TopicCommand::List) => {
            topic_list(&client.stats(None, false).await?, as_json)
        }
        Command::Channel(ChannelCommand::List { topic }) => {
            let stats = client.stats(Some(&topic), false).await?;
            let entry = table::topics(&stats)
                .iter()
                .find(|t| t["topic_name"] == topic.as_str())
                .ok_or_else(|| CtlError::NoSuchTopic(topic.clone()))?;
            if as_json {
                let channels: Vec<Value> = table::channels(entry)
                    .iter()
                    .map(|c| {
                        json!({
                            "channel": c["channel_name"],
                            "depth": c["depth"],
                            "in_flight": c["in_flight_count"],
                            "clients": c["client_count"],
                            "paused": c["paused"],
                        })
                    })
                    .collect();
                format!("{}\n", Value::from(channels))
            } else {
                table::channel_list(entry)
            }
        }
        Command::Stats { topic } => {
            if as_json {
                // The broker's own JSON, untouched, so scripts written for
                // nsqd's /stats keep working.
                let mut path = "/stats?format=json".to_owned();
                if let Some(topic) = &topic {
                    path.push_str("&topic=");
                    path.push_str(&encode(topic));
                }
                let body = client.get(&path).await?;
                let mut text = String::from_utf8_lossy(&body).into_owned();
                if !text.ends_with('\n') {
                    text.push('\n');
                }
                text
            } else {
                table::stats(&client.stats(topic.as_deref(), false).await?)
            }
        }
        Command::Pub { topic, messages } => {
            let messages: Vec<Vec<u8>> = if messages.is_empty() {
                read_stdin_lines()?
            } else {
                messages.into_iter().map(String::into_bytes).collect()
            };
            if messages.iter().any(Vec::is_empty) {
                anyhow::bail!("cannot publish an empty message");
            }
            let count = if messages.is_empty() {
                0
            } else {
                client.publish(&topic, &messages).await?
            };
            let noun = if count == 1 { "message" } else { "messages" };
            done(
                "published",
                json!({ "topic": topic, "count": count }),
                format!("published {count} {noun} to {topic}"),
            )
        }
        Command::Tail {
            topic,
            count,
            tcp_address,
        } => {
            // Refuse a typo rather than create a topic by tailing it (SUB
            // would); this also says early when the broker is unreachable.
            topic_tier(client, &topic).await?;
            let addr = match tcp_address {
                Some(addr) => addr,
                None => tcp_address_of(client).await?,
            };
            let spec = Tail {
                addr,
                topic,
                channel: tail::ephemeral_channel(),
                limit: count,
            };
            let mut stdout = std::io::stdout();
            tail::tail(&spec, &mut stdout).await?;
            String::new()
        }
        Command::Topic(_) | Command::Channel(_) => unreachable!("changes are handled above"),
        Command::Config(_) | Command::Completions { .. } => {
            unreachable!("offline commands run before the runtime")
        }
    })
}

/// The broker's TCP address: the host `triagectl` reaches its HTTP API on,
/// and the TCP port `/info` reports.
async fn tcp_address_of(client: &AdminClient) -> anyhow::Result<String> {
    let body = client.get("/info").await?;
    let port = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|info| info["tcp_port"].as_u64())
        .context("the broker's /info has no tcp_port; pass --tcp-address")?;
    let authority: hyper::http::uri::Authority = client
        .addr()
        .parse()
        .context("the HTTP address is not HOST:PORT")?;
    Ok(format!("{}:{port}", authority.host()))
}

/// The tier the broker gave `topic`: the rules may have chosen it.
async fn topic_tier(client: &AdminClient, topic: &str) -> Result<String, CtlError> {
    let stats = client.stats(Some(topic), false).await?;
    table::topics(&stats)
        .iter()
        .find(|t| t["topic_name"] == topic)
        .and_then(|t| t["tier"].as_str())
        .map(str::to_owned)
        .ok_or_else(|| CtlError::NoSuchTopic(topic.to_owned()))
}

/// Each non-empty line of stdin is one message, as `to_nsq` reads them.
fn read_stdin_lines() -> anyhow::Result<Vec<Vec<u8>>> {
    let mut messages = Vec::new();
    for line in std::io::stdin().lock().split(b'\n') {
        let mut line = line.context("cannot read stdin")?;
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        if !line.is_empty() {
            messages.push(line);
        }
    }
    Ok(messages)
}

/// `config check FILE`: offline, so it works before a broker exists.
fn config_check(file: &std::path::Path) -> ExitCode {
    let text = match std::fs::read_to_string(file) {
        Ok(text) => text,
        Err(e) => {
            eprintln!("triagectl: cannot read {}: {e}", file.display());
            return ExitCode::from(2);
        }
    };
    let errors = triage_config::check_broker_toml(&text, file);
    if errors.is_empty() {
        println!("ok");
        return ExitCode::SUCCESS;
    }
    // One line per problem, so every bad key can be fixed in one pass.
    for error in &errors {
        eprintln!("triagectl: {error}");
    }
    ExitCode::from(2)
}
