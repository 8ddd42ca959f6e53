//! The layers together: file < env < flags, the errors each layer gives, and
//! the example file and the docs table kept in step with the code.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use triage_config::load::{env_var, flag_for, KEYS};
use triage_config::{
    broker_from_toml, check_broker_toml, load_broker_with_env, AuthHttpRequestMethod, BrokerArgs,
    BrokerConfig, ConfigError, LogFormat, Origin, OverflowPolicy, SyncPolicy, Tier, TierRule,
    TlsClientAuthPolicy, TlsMinVersion, TopicSettings,
};

fn no_env(_: &str) -> Option<String> {
    None
}

fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    move |name| map.get(name).cloned()
}

fn args(flags: &[&str]) -> BrokerArgs {
    let all = std::iter::once("triaged")
        .chain(flags.iter().copied())
        .map(str::to_owned);
    BrokerArgs::try_parse_args(all).unwrap()
}

fn toml_file(text: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    file.write_all(text.as_bytes()).unwrap();
    file
}

fn with_config(file: &tempfile::NamedTempFile, flags: &[&str]) -> BrokerArgs {
    let mut all = vec!["--config".to_owned(), file.path().display().to_string()];
    all.extend(flags.iter().map(|f| (*f).to_owned()));
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    args(&all)
}

/// One non-default, mutually valid value for every key, as text.
const SAMPLES: &[(&str, &str)] = &[
    ("tcp_address", "127.0.0.1:5150"),
    ("http_address", "127.0.0.1:5151"),
    ("broadcast_address", "broker-1.example"),
    ("data_path", "/var/lib/triage"),
    ("mem_queue_size", "5"),
    ("max_msg_size", "2MiB"),
    ("max_body_size", "6MiB"),
    ("msg_timeout", "30s"),
    ("max_msg_timeout", "20m"),
    ("max_rdy_count", "100"),
    ("max_req_timeout", "2h"),
    ("max_heartbeat_interval", "45s"),
    ("client_timeout", "40s"),
    ("max_output_buffer_size", "128KiB"),
    ("max_output_buffer_timeout", "10s"),
    ("min_output_buffer_timeout", "50ms"),
    ("snappy", "false"),
    ("deflate", "false"),
    ("max_deflate_level", "9"),
    ("max_channel_consumers", "3"),
    ("max_connections", "10"),
    ("max_line_len", "4096"),
    ("handshake_timeout", "5s"),
    ("tls_cert", "/etc/triage/cert.pem"),
    ("tls_key", "/etc/triage/key.pem"),
    ("tls_root_ca_file", "/etc/triage/ca.pem"),
    ("tls_required", "true"),
    ("tls_client_auth_policy", "require-verify"),
    ("tls_min_version", "tls1.3"),
    ("https_address", "127.0.0.1:5152"),
    (
        "auth_http_addresses",
        "127.0.0.1:4181,http://auth.example/v1/auth",
    ),
    ("auth_http_request_method", "post"),
    ("auth_tokens_file", "/etc/triage/tokens.json"),
    ("admin_token", "0123456789abcdef0123"),
    ("lookupd_tcp_addresses", "10.0.0.1:4160,10.0.0.2:4160"),
    ("log_format", "json"),
    ("log_level", "triage_broker=debug"),
    ("default_tier", "memory"),
    ("memory_overflow", "reject"),
    ("sync_policy", "interval:250"),
    ("save_memory_on_shutdown", "false"),
    ("tier_rules", "tickets.*=persistent,batch-*=delayed"),
];

/// What [`SAMPLES`] should load as.
fn sampled() -> BrokerConfig {
    BrokerConfig {
        tcp_address: "127.0.0.1:5150".parse().unwrap(),
        http_address: "127.0.0.1:5151".parse().unwrap(),
        broadcast_address: "broker-1.example".into(),
        data_path: "/var/lib/triage".into(),
        mem_queue_size: 5,
        max_msg_size: 2 << 20,
        max_body_size: 6 << 20,
        msg_timeout: Duration::from_secs(30),
        max_msg_timeout: Duration::from_secs(20 * 60),
        max_rdy_count: 100,
        max_req_timeout: Duration::from_secs(2 * 3600),
        max_heartbeat_interval: Duration::from_secs(45),
        client_timeout: Duration::from_secs(40),
        max_output_buffer_size: 128 << 10,
        max_output_buffer_timeout: Duration::from_secs(10),
        min_output_buffer_timeout: Duration::from_millis(50),
        snappy: false,
        deflate: false,
        max_deflate_level: 9,
        max_channel_consumers: 3,
        max_connections: 10,
        max_line_len: 4096,
        handshake_timeout: Duration::from_secs(5),
        tls_cert: Some("/etc/triage/cert.pem".into()),
        tls_key: Some("/etc/triage/key.pem".into()),
        tls_root_ca_file: Some("/etc/triage/ca.pem".into()),
        tls_required: true,
        tls_client_auth_policy: TlsClientAuthPolicy::RequireVerify,
        tls_min_version: TlsMinVersion::Tls13,
        https_address: Some("127.0.0.1:5152".parse().unwrap()),
        auth_http_addresses: vec![
            "127.0.0.1:4181".into(),
            "http://auth.example/v1/auth".into(),
        ],
        auth_http_request_method: AuthHttpRequestMethod::Post,
        auth_tokens_file: Some("/etc/triage/tokens.json".into()),
        admin_token: Some("0123456789abcdef0123".into()),
        lookupd_tcp_addresses: vec!["10.0.0.1:4160".into(), "10.0.0.2:4160".into()],
        log_format: LogFormat::Json,
        log_level: "triage_broker=debug".into(),
        default_tier: Tier::Memory,
        memory_overflow: OverflowPolicy::Reject,
        sync_policy: SyncPolicy::Interval(Duration::from_millis(250)),
        save_memory_on_shutdown: false,
        tier_rules: vec![
            TierRule {
                settings: Default::default(),
                pattern: "tickets.*".into(),
                tier: Tier::Persistent,
            },
            TierRule {
                settings: Default::default(),
                pattern: "batch-*".into(),
                tier: Tier::Delayed,
            },
        ],
    }
}

fn is_tls(key: &str) -> bool {
    key.starts_with("tls_") || key == "https_address"
}

#[test]
fn samples_cover_every_key() {
    let sample_keys: Vec<&str> = SAMPLES.iter().map(|(k, _)| *k).collect();
    assert_eq!(sample_keys, KEYS);
    // And every sampled value differs from its default, so each check below
    // would notice a key that went nowhere.
    let defaults = BrokerConfig::default();
    for (key, _) in SAMPLES {
        let alone: Vec<(String, String)> = SAMPLES
            .iter()
            // TLS keys only load together (each needs the certificate).
            .filter(|(k, _)| k == key || is_tls(key) && is_tls(k))
            .map(|(k, v)| (env_var(k), (*v).to_owned()))
            .collect();
        let env = move |name: &str| {
            alone
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        let loaded = load_broker_with_env(&BrokerArgs::default(), &env).unwrap();
        assert_ne!(loaded, defaults, "{key}");
    }
}

#[test]
fn every_key_loads_from_the_environment() {
    let pairs: Vec<(String, &str)> = SAMPLES.iter().map(|(k, v)| (env_var(k), *v)).collect();
    let pairs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    let loaded = load_broker_with_env(&BrokerArgs::default(), &env_of(&pairs)).unwrap();
    assert_eq!(loaded, sampled());
}

#[test]
fn every_key_loads_from_flags() {
    let mut flags = Vec::new();
    for (key, value) in SAMPLES {
        let flag = flag_for(key);
        let values: Vec<&str> = match *key {
            "lookupd_tcp_addresses" | "tier_rules" | "auth_http_addresses" => {
                value.split(',').collect()
            }
            _ => vec![value],
        };
        flags.extend(values.into_iter().map(|v| format!("{flag}={v}")));
    }
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let loaded = load_broker_with_env(&args(&flags), &no_env).unwrap();
    assert_eq!(loaded, sampled());
}

#[test]
fn every_key_loads_from_toml_strings() {
    let mut text = String::new();
    for (key, value) in SAMPLES {
        match *key {
            "snappy" | "deflate" | "tls_required" | "save_memory_on_shutdown" => {
                text += &format!("{key} = {value}\n")
            }
            "lookupd_tcp_addresses" | "auth_http_addresses" => {
                let items: Vec<String> = value.split(',').map(|v| format!("{v:?}")).collect();
                text += &format!("{key} = [{}]\n", items.join(", "));
            }
            "tier_rules" => {}
            _ => text += &format!("{key} = {value:?}\n"),
        }
    }
    text += "[[tier_rules]]\npattern = \"tickets.*\"\ntier = \"persistent\"\n";
    text += "[[tier_rules]]\npattern = \"batch-*\"\ntier = \"delayed\"\n";
    assert_eq!(broker_from_toml(&text).unwrap(), sampled());
}

#[test]
fn toml_integers_are_milliseconds_and_bytes() {
    let config = broker_from_toml(
        "msg_timeout = 1500\nmax_msg_size = 1024\nmax_output_buffer_size = 4096\n\
         mem_queue_size = 7\nmax_line_len = 512\n",
    )
    .unwrap();
    assert_eq!(config.msg_timeout, Duration::from_millis(1500));
    assert_eq!(config.max_msg_size, 1024);
    assert_eq!(config.max_output_buffer_size, 4096);
    assert_eq!(config.mem_queue_size, 7);
    assert_eq!(config.max_line_len, 512);
}

#[test]
fn precedence_is_file_then_env_then_flags() {
    let file = toml_file(
        "msg_timeout = \"10s\"\nmax_rdy_count = 10\nmem_queue_size = 10\nlog_level = \"warn\"\n",
    );
    let env = env_of(&[
        ("TRIAGE_MAX_RDY_COUNT", "20"),
        ("TRIAGE_MEM_QUEUE_SIZE", "20"),
    ]);
    let loaded = load_broker_with_env(&with_config(&file, &["--mem-queue-size=30"]), &env).unwrap();
    assert_eq!(loaded.log_level, "warn", "file over default");
    assert_eq!(
        loaded.msg_timeout,
        Duration::from_secs(10),
        "file over default"
    );
    assert_eq!(loaded.max_rdy_count, 20, "env over file");
    assert_eq!(loaded.mem_queue_size, 30, "flag over env and file");
    assert_eq!(loaded.max_msg_size, 1 << 20, "default where nobody says");
}

#[test]
fn config_path_can_come_from_the_environment() {
    let file = toml_file("max_rdy_count = 42\n");
    let path = file.path().display().to_string();
    let env = env_of(&[("TRIAGE_CONFIG", &path)]);
    let loaded = load_broker_with_env(&BrokerArgs::default(), &env).unwrap();
    assert_eq!(loaded.max_rdy_count, 42);
}

#[test]
fn empty_env_clears_lists_and_optional_paths() {
    let file = toml_file(
        "lookupd_tcp_addresses = [\"a:4160\"]\ntls_root_ca_file = \"ca.pem\"\n\
         tls_cert = \"c.pem\"\ntls_key = \"k.pem\"\n",
    );
    let env = env_of(&[
        ("TRIAGE_LOOKUPD_TCP_ADDRESSES", ""),
        ("TRIAGE_TLS_ROOT_CA_FILE", ""),
    ]);
    let loaded = load_broker_with_env(&with_config(&file, &[]), &env).unwrap();
    assert!(loaded.lookupd_tcp_addresses.is_empty());
    assert_eq!(loaded.tls_root_ca_file, None);
    assert_eq!(loaded.tls_cert, Some(PathBuf::from("c.pem")));
}

#[test]
fn env_parse_error_names_key_variable_and_form() {
    let env = env_of(&[("TRIAGE_MSG_TIMEOUT", "abc")]);
    let err = load_broker_with_env(&BrokerArgs::default(), &env).unwrap_err();
    assert_eq!(err.key(), Some("msg_timeout"));
    let message = err.to_string();
    assert!(
        message.starts_with(
            "invalid value \"abc\" for msg_timeout (from TRIAGE_MSG_TIMEOUT): \
             expected a duration like 60s, 1m30s or 100ms"
        ),
        "{message}"
    );
}

#[test]
fn sync_policy_loads_from_each_layer_and_names_its_origin() {
    let file = toml_file("sync_policy = \"always\"\n");
    let loaded = load_broker_with_env(&with_config(&file, &[]), &no_env).unwrap();
    assert_eq!(loaded.sync_policy, SyncPolicy::Always);
    let env = env_of(&[("TRIAGE_SYNC_POLICY", " Never ")]);
    let loaded = load_broker_with_env(&with_config(&file, &[]), &env).unwrap();
    assert_eq!(loaded.sync_policy, SyncPolicy::Never, "env over file");
    let flags = with_config(&file, &["--sync-policy=interval:1s"]);
    let loaded = load_broker_with_env(&flags, &env).unwrap();
    assert_eq!(
        loaded.sync_policy,
        SyncPolicy::Interval(Duration::from_secs(1)),
        "flag over env and file"
    );

    let env = env_of(&[("TRIAGE_SYNC_POLICY", "fsync")]);
    let err = load_broker_with_env(&BrokerArgs::default(), &env).unwrap_err();
    assert_eq!(err.key(), Some("sync_policy"));
    assert_eq!(
        err.to_string(),
        "invalid value \"fsync\" for sync_policy (from TRIAGE_SYNC_POLICY): expected always, \
         group, interval:<ms> (e.g. interval:200 or interval:1s) or never (unknown policy)"
    );
    let config = BrokerConfig {
        sync_policy: SyncPolicy::Interval(Duration::ZERO),
        ..BrokerConfig::default()
    };
    assert_eq!(
        config.validate().unwrap_err().to_string(),
        "invalid sync_policy = \"interval:0\": the interval must be at least 1 ms"
    );
}

#[test]
fn env_durations_need_units() {
    let env = env_of(&[("TRIAGE_CLIENT_TIMEOUT", "60000")]);
    let err = load_broker_with_env(&BrokerArgs::default(), &env).unwrap_err();
    assert!(err.to_string().contains("needs a unit"), "{err}");
}

#[test]
fn file_parse_errors_name_key_file_and_form() {
    let file = toml_file("snappy = \"sometimes\"\n");
    let err = load_broker_with_env(&with_config(&file, &[]), &no_env).unwrap_err();
    let message = err.to_string();
    assert_eq!(err.key(), Some("snappy"));
    assert!(
        message.contains("for snappy (from config file "),
        "{message}"
    );
    assert!(message.contains("expected true or false"), "{message}");

    for (text, key, needle) in [
        ("msg_timeout = -5", "msg_timeout", "negative"),
        ("msg_timeout = true", "msg_timeout", "got a boolean"),
        (
            "max_msg_size = \"1 parsec\"",
            "max_msg_size",
            "unknown unit",
        ),
        ("max_msg_size = 5000000000", "max_msg_size", "too large"),
        ("max_rdy_count = 1.5", "max_rdy_count", "whole number"),
        ("tcp_address = \"nowhere\"", "tcp_address", "IP:PORT"),
        (
            "default_tier = \"disk\"",
            "default_tier",
            "memory, persistent, delayed",
        ),
        (
            "memory_overflow = \"drop\"",
            "memory_overflow",
            "reject, spill",
        ),
        ("log_format = \"xml\"", "log_format", "text, json"),
        (
            "sync_policy = \"sometimes\"",
            "sync_policy",
            "always, group, interval:<ms> (e.g. interval:200 or interval:1s) or never \
             (unknown policy)",
        ),
        (
            "sync_policy = \"interval:0\"",
            "sync_policy",
            "at least 1 ms",
        ),
        ("sync_policy = 200", "sync_policy", "got a integer"),
        (
            "lookupd_tcp_addresses = [1]",
            "lookupd_tcp_addresses",
            "list of strings",
        ),
        ("tier_rules = \"x\"", "tier_rules", "[[tier_rules]]"),
        (
            "[[tier_rules]]\npattern = \"a\"",
            "tier_rules",
            "has no tier",
        ),
        (
            "[[tier_rules]]\npattern = \"a\"\ntier = \"disk\"",
            "tier_rules",
            "persistent",
        ),
        (
            "[[tier_rules]]\npattern = \"a\"\ntier = \"memory\"\ntire = 1",
            "tier_rules",
            "unknown key \"tire\"",
        ),
    ] {
        let err = broker_from_toml(text).unwrap_err();
        assert_eq!(err.key(), Some(key), "{text}: {err}");
        assert!(err.to_string().contains(needle), "{text}: {err}");
    }
}

#[test]
fn check_names_every_bad_key_not_just_the_first() {
    let path = std::path::Path::new("bad.toml");
    let text = "colour = \"blue\"\nmsg_timeout = \"soon\"\nmax_rdy_count = -1\nmsg-timeout = 5\nsnappy = true\n";
    let errors = check_broker_toml(text, path);
    let mut keys: Vec<&str> = errors.iter().filter_map(ConfigError::key).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        ["colour", "max_rdy_count", "msg-timeout", "msg_timeout"],
        "{errors:?}"
    );
    // The first of them is what loading the same file reports.
    let first = broker_from_toml(text).unwrap_err();
    assert_eq!(first.key(), errors[0].key());

    // Read values are then validated; a syntax error stands alone.
    let errors = check_broker_toml("msg_timeout = \"10m\"\nmax_msg_timeout = \"5m\"\n", path);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].key(), Some("msg_timeout"));
    assert!(errors[0].to_string().contains("bad.toml"), "{}", errors[0]);
    let errors = check_broker_toml("msg_timeout = \n", path);
    assert!(
        matches!(errors[..], [ConfigError::Toml { .. }]),
        "{errors:?}"
    );
    assert!(check_broker_toml("", path).is_empty());
}

#[test]
fn unknown_file_key_is_rejected_with_a_suggestion() {
    let file = toml_file("msg-timeout = \"5s\"\n");
    let err = load_broker_with_env(&with_config(&file, &[]), &no_env).unwrap_err();
    assert!(matches!(err, ConfigError::UnknownKey { .. }), "{err:?}");
    assert_eq!(err.key(), Some("msg-timeout"));
    let message = err.to_string();
    assert!(message.contains("unknown key \"msg-timeout\""), "{message}");
    assert!(
        message.contains("did you mean \"msg_timeout\"?"),
        "{message}"
    );

    let err = broker_from_toml("nsqlookupd_tcp_addresses = []").unwrap_err();
    assert!(
        err.to_string()
            .contains("did you mean \"lookupd_tcp_addresses\""),
        "{err}"
    );
    let err = broker_from_toml("colour = \"blue\"").unwrap_err();
    assert_eq!(
        err.to_string(),
        "unknown key \"colour\" in config file <toml>"
    );
}

#[test]
fn missing_or_broken_file_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.toml");
    let args = BrokerArgs {
        config: Some(missing.clone()),
        ..BrokerArgs::default()
    };
    let err = load_broker_with_env(&args, &no_env).unwrap_err();
    assert!(matches!(err, ConfigError::ReadFile { .. }), "{err:?}");
    assert!(err.to_string().contains("nope.toml"), "{err}");

    let file = toml_file("msg_timeout = \n");
    let err = load_broker_with_env(&with_config(&file, &[]), &no_env).unwrap_err();
    assert!(matches!(err, ConfigError::Toml { .. }), "{err:?}");
}

#[test]
fn validation_errors_carry_the_origin_of_the_value() {
    let err = load_broker_with_env(&args(&["--max-rdy-count=70000"]), &no_env).unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid max_rdy_count = 70000 (from --max-rdy-count): must be between 1 and 65535: \
         IDENTIFY advertises it, and clients read it as a u16"
    );
    let env = env_of(&[("TRIAGE_LOG_LEVEL", "")]);
    let err = load_broker_with_env(&BrokerArgs::default(), &env).unwrap_err();
    assert!(err.to_string().contains("(from TRIAGE_LOG_LEVEL)"), "{err}");
    let err = load_broker_with_env(&args(&["--max-deflate-level=0"]), &no_env).unwrap_err();
    assert!(
        err.to_string().contains("(from --max-deflate-level)"),
        "{err}"
    );
    let err = broker_from_toml("max_deflate_level = 0").unwrap_err();
    assert!(
        err.to_string().contains("(from config file <toml>)"),
        "{err}"
    );

    let file = toml_file("[[tier_rules]]\npattern = \"ok\"\ntier = \"memory\"\n[[tier_rules]]\npattern = \"bad[\"\ntier = \"memory\"\n");
    let err = load_broker_with_env(&with_config(&file, &[]), &no_env).unwrap_err();
    assert_eq!(err.key(), Some("tier_rules[1].pattern"));
    let ConfigError::Invalid { origin, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(origin, &Some(Origin::File(file.path().to_owned())));

    // A default that conflicts with a value set elsewhere says it is the default.
    let err = load_broker_with_env(&args(&["--max-body-size=1000"]), &no_env).unwrap_err();
    assert!(
        err.to_string().starts_with(
            "invalid max_msg_size = 1 MiB (from default): must be at most max_body_size (1000)"
        ),
        "{err}"
    );
}

#[test]
fn every_validation_error_names_its_key() {
    type Breaker = fn(&mut BrokerConfig);
    let cases: &[(&str, Breaker)] = &[
        ("http_address", |c| c.http_address = c.tcp_address),
        ("broadcast_address", |c| c.broadcast_address = " ".into()),
        ("data_path", |c| c.data_path = PathBuf::new()),
        ("mem_queue_size", |c| c.mem_queue_size = 0),
        ("max_msg_size", |c| c.max_msg_size = 0),
        ("max_msg_size", |c| c.max_msg_size = c.max_body_size + 1),
        ("msg_timeout", |c| {
            c.msg_timeout = Duration::from_millis(999)
        }),
        ("msg_timeout", |c| {
            c.msg_timeout = Duration::from_secs(16 * 60)
        }),
        ("max_rdy_count", |c| c.max_rdy_count = 0),
        ("max_rdy_count", |c| c.max_rdy_count = 65_536),
        ("max_heartbeat_interval", |c| {
            c.max_heartbeat_interval = Duration::from_millis(500)
        }),
        ("client_timeout", |c| {
            c.client_timeout = Duration::from_secs(1)
        }),
        ("max_output_buffer_size", |c| c.max_output_buffer_size = 63),
        ("min_output_buffer_timeout", |c| {
            c.min_output_buffer_timeout = Duration::from_secs(31)
        }),
        ("max_deflate_level", |c| c.max_deflate_level = 0),
        ("max_deflate_level", |c| c.max_deflate_level = 10),
        ("max_connections", |c| c.max_connections = 0),
        ("max_line_len", |c| c.max_line_len = 64),
        ("handshake_timeout", |c| {
            c.handshake_timeout = Duration::ZERO
        }),
        ("tls_key", |c| c.tls_cert = Some("c.pem".into())),
        ("tls_cert", |c| c.tls_key = Some("k.pem".into())),
        ("tls_required", |c| c.tls_required = true),
        ("tls_root_ca_file", |c| {
            c.tls_root_ca_file = Some("ca.pem".into())
        }),
        ("tls_client_auth_policy", |c| {
            c.tls_client_auth_policy = TlsClientAuthPolicy::Require
        }),
        ("https_address", |c| {
            c.https_address = Some("127.0.0.1:4152".parse().unwrap())
        }),
        ("auth_http_addresses[1]", |c| {
            c.auth_http_addresses = vec!["a:4181".into(), "nohost".into()]
        }),
        ("admin_token", |c| c.admin_token = Some("short".into())),
        ("tls_client_auth_policy", |c| {
            c.tls_cert = Some("c.pem".into());
            c.tls_key = Some("k.pem".into());
            c.tls_client_auth_policy = TlsClientAuthPolicy::RequireVerify
        }),
        ("lookupd_tcp_addresses[1]", |c| {
            c.lookupd_tcp_addresses = vec!["a:4160".into(), "a".into()]
        }),
        ("lookupd_tcp_addresses[0]", |c| {
            c.lookupd_tcp_addresses = vec!["a:0".into()]
        }),
        ("log_level", |c| c.log_level = String::new()),
        ("sync_policy", |c| {
            c.sync_policy = SyncPolicy::Interval(Duration::ZERO)
        }),
        ("sync_policy", |c| {
            c.sync_policy = SyncPolicy::Interval(Duration::from_micros(1_500))
        }),
        ("tier_rules[0].pattern", |c| {
            c.tier_rules = vec![TierRule {
                settings: Default::default(),
                pattern: "{a".into(),
                tier: Tier::Delayed,
            }]
        }),
    ];
    for (key, break_it) in cases {
        let mut config = BrokerConfig::default();
        config.validate().unwrap();
        break_it(&mut config);
        let err = config.validate().unwrap_err();
        assert_eq!(err.key(), Some(*key), "{err}");
        assert!(
            err.to_string().starts_with(&format!("invalid {key} = ")),
            "{err}"
        );
    }
}

#[test]
fn valid_edges_pass() {
    let mut config = BrokerConfig {
        max_rdy_count: 65_535,
        max_deflate_level: 9,
        max_line_len: 134,
        msg_timeout: Duration::from_secs(1),
        max_msg_size: 5 << 20,
        client_timeout: Duration::from_secs(2),
        lookupd_tcp_addresses: vec!["[::1]:4160".into(), "lookupd:4160".into()],
        tls_cert: Some("c.pem".into()),
        tls_key: Some("k.pem".into()),
        tls_required: true,
        ..BrokerConfig::default()
    };
    config.validate().unwrap();
    config.tcp_address = "127.0.0.1:0".parse().unwrap();
    config.http_address = config.tcp_address;
    config.validate().unwrap();
}

#[test]
fn tier_matcher_uses_rules_then_default_and_ephemeral_is_memory() {
    let config = BrokerConfig {
        default_tier: Tier::Persistent,
        tier_rules: vec![
            TierRule {
                settings: Default::default(),
                pattern: "tickets.*".into(),
                tier: Tier::Delayed,
            },
            TierRule {
                settings: Default::default(),
                pattern: "tickets.urgent".into(),
                tier: Tier::Memory,
            },
        ],
        ..BrokerConfig::default()
    };
    let matcher = config.tier_matcher().unwrap();
    assert_eq!(
        matcher.tier_for("tickets.urgent"),
        Tier::Delayed,
        "first match wins"
    );
    assert_eq!(matcher.tier_for("tickets.x"), Tier::Delayed);
    assert_eq!(matcher.tier_for("orders"), Tier::Persistent);
    assert_eq!(matcher.tier_for("tickets.x#ephemeral"), Tier::Memory);
    assert_eq!(matcher.tier_for("orders#ephemeral"), Tier::Memory);

    let matcher = sampled().tier_matcher().unwrap();
    assert_eq!(matcher.tier_for("batch-1"), Tier::Delayed);
    assert_eq!(matcher.tier_for("tickets.1"), Tier::Persistent);
    assert_eq!(matcher.tier_for("other"), Tier::Memory);
    assert_eq!(matcher.tier_for("batch-1#ephemeral"), Tier::Memory);
}

#[test]
fn defaults_are_nsqds_and_valid() {
    let config = BrokerConfig::default();
    config.validate().unwrap();
    assert_eq!(config.tcp_address.to_string(), "127.0.0.1:4150");
    assert_eq!(config.http_address.to_string(), "127.0.0.1:4151");
    assert!(!config.broadcast_address.is_empty());
    assert_eq!(config.mem_queue_size, 10_000);
    assert_eq!(config.max_msg_size, 1 << 20);
    assert_eq!(config.max_body_size, 5 << 20);
    assert_eq!(config.msg_timeout, Duration::from_secs(60));
    assert_eq!(config.max_msg_timeout, Duration::from_secs(900));
    assert_eq!(config.max_rdy_count, 2500);
    assert_eq!(config.max_req_timeout, Duration::from_secs(3600));
    assert_eq!(config.max_output_buffer_size, 64 << 10);
    assert_eq!(config.min_output_buffer_timeout, Duration::from_millis(25));
    assert_eq!(config.max_deflate_level, 6);
    assert_eq!(config.default_tier, Tier::Persistent);
    assert_eq!(config.memory_overflow, OverflowPolicy::Spill);
    assert_eq!(config.sync_policy, SyncPolicy::Group);
    let loaded = load_broker_with_env(&BrokerArgs::default(), &no_env).unwrap();
    assert_eq!(loaded, config);
}

fn example_path() -> PathBuf {
    manifest_dir().join("triaged.example.toml")
}

#[test]
fn example_file_loads_as_the_defaults() {
    let args = BrokerArgs {
        config: Some(example_path()),
        ..BrokerArgs::default()
    };
    let loaded = load_broker_with_env(&args, &no_env).unwrap();
    assert_eq!(loaded, BrokerConfig::default());
}

#[test]
fn example_file_shows_every_key() {
    let text = std::fs::read_to_string(example_path()).unwrap();
    for key in KEYS {
        let shown = text.lines().any(|line| {
            let line = line.trim_start_matches('#').trim_start();
            line.starts_with(&format!("{key} =")) || line.starts_with(&format!("[[{key}]]"))
        });
        assert!(shown, "{key} is missing from triaged.example.toml");
    }
}

#[test]
fn example_file_commented_examples_are_valid() {
    // Lines like `# key = value` and `# [[tier_rules]]` are examples of
    // non-default settings; uncommented they must load too.
    let text = std::fs::read_to_string(example_path()).unwrap();
    let mut uncommented = String::new();
    for line in text.lines() {
        let body = line.strip_prefix("# ").unwrap_or(line);
        let is_setting = body.starts_with("[[")
            || body
                .split_once(" = ")
                .is_some_and(|(key, _)| KEYS.contains(&key) || RULE_KEYS.contains(&key));
        uncommented += if is_setting { body } else { line };
        uncommented.push('\n');
    }
    assert_ne!(
        uncommented, text,
        "the example has no commented-out settings"
    );
    let config = broker_from_toml(&uncommented).unwrap();
    assert!(!config.tier_rules.is_empty());
    // The example shows every setting a rule can carry.
    let batch = config
        .tier_rules
        .iter()
        .find(|r| r.tier == Tier::Delayed)
        .unwrap();
    assert!(!batch.settings.delay.is_zero() && !batch.settings.batch_window.is_zero());
    assert!(batch.settings.max_attempts > 0);
}

const RULE_KEYS: &[&str] = &["pattern", "tier", "delay", "batch_window", "max_attempts"];

#[test]
fn tier_rules_carry_topic_settings_checked_against_their_tier() {
    let config = broker_from_toml(
        "max_req_timeout = \"2h\"\n\
         [[tier_rules]]\npattern = \"batch-*\"\ntier = \"delayed\"\n\
         delay = \"90m\"\nbatch_window = 60000\nmax_attempts = 5\n\
         [[tier_rules]]\npattern = \"*\"\ntier = \"persistent\"\nmax_attempts = 3\n",
    )
    .unwrap();
    let matcher = config.tier_matcher().unwrap();
    let (tier, settings) = matcher.rule_for("batch-nightly");
    assert_eq!(tier, Tier::Delayed);
    assert_eq!(
        settings,
        TopicSettings {
            delay: Duration::from_secs(90 * 60),
            batch_window: Duration::from_secs(60),
            max_attempts: 5,
        }
    );
    assert_eq!(matcher.rule_for("tickets").1.max_attempts, 3);
    assert_eq!(matcher.rule_for("x#ephemeral").1, TopicSettings::default());

    for (text, key, needle) in [
        (
            "[[tier_rules]]\npattern = \"a\"\ntier = \"persistent\"\ndelay = \"5s\"",
            "tier_rules[0].delay",
            "only to delayed-tier topics",
        ),
        (
            "[[tier_rules]]\npattern = \"a\"\ntier = \"delayed\"\ndelay = \"2h\"",
            "tier_rules[0].delay",
            "max_req_timeout",
        ),
        (
            "[[tier_rules]]\npattern = \"a\"\ntier = \"delayed\"\nbatch_window = \"soon\"",
            "tier_rules",
            "batch_window",
        ),
        (
            "[[tier_rules]]\npattern = \"a\"\ntier = \"memory\"\nmax_attempts = 70000",
            "tier_rules",
            "0 to 65535",
        ),
    ] {
        let err = broker_from_toml(text).unwrap_err();
        assert_eq!(err.key(), Some(key), "{text}: {err}");
        assert!(err.to_string().contains(needle), "{text}: {err}");
    }
}

#[test]
fn docs_table_lists_every_key_variable_and_flag() {
    let path = manifest_dir().join("../docs/configuration.md");
    let docs = std::fs::read_to_string(path).unwrap();
    for key in KEYS {
        let row = docs
            .lines()
            .find(|line| line.starts_with(&format!("| `{key}` |")))
            .unwrap_or_else(|| panic!("no row for {key} in docs/configuration.md"));
        assert!(row.contains(&format!("`{}`", env_var(key))), "{row}");
        assert!(row.contains(&format!("`{}", flag_for(key))), "{row}");
    }
}

/// This package's directory, read when the test runs: the path compiled in
/// by `env!` goes stale when the same target dir serves a clone elsewhere.
fn manifest_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into())
}
