//! triage-config: the one typed configuration tree for triage's binaries.
//!
//! Precedence: built-in defaults ([`BrokerConfig::default`], the only place a
//! default lives) < TOML file (`--config FILE`) < `TRIAGE_*` environment
//! variables < command-line flags (nsqd's names, so triaged can stand in for
//! nsqd). [`BrokerConfig::validate`] runs before anything starts, and its
//! error names the key and what is allowed.
//!
//! Modules: [`broker`] (the tree and its defaults), [`check`] (which program
//! a file is for, and all that is wrong with it), [`units`] (durations like
//! `60s`/`1m30s` and sizes like `1 MiB`), [`flags`] (clap arguments), [`load`]
//! (merging the layers), [`tier`] (tiers and topic-name rules), [`sync`] (when
//! the persistent tier fsyncs, and what a crash loses under each policy),
//! [`worker`] (the `triage-worker` file: its tree, defaults and checks, here so
//! that `triagectl config check` reads worker files by the worker's rules).

pub mod auth;
pub mod broker;
pub mod check;
pub mod flags;
pub mod load;
pub mod sync;
pub mod tier;
pub mod tls;
pub mod units;
pub mod worker;

pub use auth::AuthHttpRequestMethod;
pub use broker::{BrokerConfig, LogFormat};
pub use check::{check_config_toml, guess_kind, ConfigKind};
pub use flags::{normalize_nsqd_args, BrokerArgs};
pub use load::{
    broker_from_toml, check_broker_toml, load_broker, load_broker_with_env, ConfigError, Origin,
};
pub use sync::{ParseSyncPolicyError, SyncPolicy};
pub use tier::{OverflowPolicy, ParseNameError, Tier, TierMatcher, TierRule, TopicSettings};
pub use tls::{TlsClientAuthPolicy, TlsMinVersion};
