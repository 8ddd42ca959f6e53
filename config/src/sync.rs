//! When the persistent tier fsyncs its writes, and so what a crash can lose.
//!
//! | policy          | `kill -9` of triaged loses | power loss / kernel crash loses          |
//! |-----------------|----------------------------|------------------------------------------|
//! | `always`        | nothing acknowledged       | nothing acknowledged                     |
//! | `group`         | nothing acknowledged       | nothing acknowledged                     |
//! | `interval:<ms>` | nothing acknowledged       | up to `<ms>` of acknowledged writes      |
//! | `never`         | nothing acknowledged       | whatever the OS had not yet written back |
//!
//! A write is in the store's WAL (in the OS page cache) before it is
//! acknowledged under every policy, so killing the process alone never loses
//! an acknowledged message; the policies differ in whether the WAL has also
//! reached the disk when the client hears `OK`.
//!
//! Written as `always`, `group`, `never` or `interval:<ms>` (`interval:200`);
//! the interval may also be a duration with a unit (`interval:200ms`,
//! `interval:1s`) if it is a whole number of milliseconds, at least 1. Names
//! ignore ASCII case and surrounding spaces; duration units are
//! case-sensitive as everywhere else ([`crate::units`]).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::units::{format_duration, parse_duration, UnitError};

/// When the persistent tier's writes are fsynced. See the module doc for the
/// table of what each policy loses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum SyncPolicy {
    /// Every publish is written and fsynced on its own before `OK`.
    /// `kill -9`: loses nothing acknowledged. Power loss: loses nothing
    /// acknowledged. The slowest: one fsync per publish.
    Always,
    /// Concurrent publishes share one write and one fsync, which happens
    /// before any of them is answered `OK`.
    /// `kill -9`: loses nothing acknowledged. Power loss: loses nothing
    /// acknowledged. The default: as safe as `Always`, far fewer fsyncs under
    /// load.
    #[default]
    Group,
    /// `OK` after the write reaches the WAL (the OS page cache); the WAL is
    /// fsynced in the background this often (at least 1 ms, whole
    /// milliseconds).
    /// `kill -9`: loses nothing acknowledged (the write is in the WAL and the
    /// page cache, which outlive the process). Power loss: loses up to this
    /// interval of acknowledged writes.
    Interval(Duration),
    /// `OK` after the write reaches the WAL; never fsynced by triaged, the OS
    /// writes back when it chooses.
    /// `kill -9`: loses nothing acknowledged. Power loss: loses whatever the
    /// OS had not yet written back (on Linux typically up to ~30 s).
    Never,
}

impl SyncPolicy {
    /// The accepted forms, for error messages and help text.
    pub const EXPECTED: &'static str =
        "expected always, group, interval:<ms> (e.g. interval:200 or interval:1s) or never";

    /// Whether an acknowledged write has been fsynced, so that a power loss
    /// cannot lose it (`Always` and `Group`).
    pub fn fsyncs_before_ack(self) -> bool {
        matches!(self, SyncPolicy::Always | SyncPolicy::Group)
    }
}

/// A sync policy that is none of the allowed forms. The message says what was
/// wrong and lists the allowed forms ([`SyncPolicy::EXPECTED`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid sync policy {input:?}: {reason}; {}", SyncPolicy::EXPECTED)]
pub struct ParseSyncPolicyError {
    input: String,
    reason: String,
}

impl ParseSyncPolicyError {
    fn new(input: &str, reason: impl Into<String>) -> Self {
        ParseSyncPolicyError {
            input: input.to_owned(),
            reason: reason.into(),
        }
    }

    /// The text that was refused, as given.
    pub fn input(&self) -> &str {
        &self.input
    }

    /// What was wrong with it, without the list of allowed forms.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

const INTERVAL_PREFIX: &str = "interval:";

impl FromStr for SyncPolicy {
    type Err = ParseSyncPolicyError;

    /// `always`, `group`, `never`, `interval:<ms>` or `interval:<duration>`,
    /// ignoring ASCII case and surrounding spaces.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let text = s.trim();
        let lower = text.to_ascii_lowercase();
        match lower.as_str() {
            "always" => return Ok(SyncPolicy::Always),
            "group" => return Ok(SyncPolicy::Group),
            "never" => return Ok(SyncPolicy::Never),
            _ => {}
        }
        if !lower.starts_with(INTERVAL_PREFIX) {
            return Err(ParseSyncPolicyError::new(s, "unknown policy"));
        }
        // The prefix is ASCII, so its length is the same in `text`; the rest
        // keeps its case, since duration units are case-sensitive.
        let interval = text[INTERVAL_PREFIX.len()..].trim();
        parse_interval(interval)
            .map(SyncPolicy::Interval)
            .map_err(|reason| ParseSyncPolicyError::new(s, reason))
    }
}

/// A whole number of milliseconds, or a duration with a unit that is a whole
/// number of milliseconds; at least 1 ms.
fn parse_interval(text: &str) -> Result<Duration, String> {
    if text.is_empty() {
        return Err("the interval is missing".to_owned());
    }
    let interval = if text.bytes().all(|b| b.is_ascii_digit()) {
        let ms: u64 = text
            .parse()
            .map_err(|_| "the interval is too large".to_owned())?;
        Duration::from_millis(ms)
    } else {
        parse_duration(text).map_err(|e| match e {
            UnitError::MissingUnit(_) | UnitError::NotANumber(_) => {
                "the interval must be a whole number of milliseconds or a duration like 200ms \
                 or 1s"
                    .to_owned()
            }
            other => format!("the interval is not a valid duration ({other})"),
        })?
    };
    check_interval(interval)?;
    Ok(interval)
}

/// Why `interval` cannot be a sync interval, if it cannot: it must be a whole
/// number of milliseconds, at least 1 (what [`SyncPolicy`]'s text can say).
pub(crate) fn check_interval(interval: Duration) -> Result<(), String> {
    if interval < Duration::from_millis(1) {
        return Err("the interval must be at least 1 ms".to_owned());
    }
    if !interval.subsec_nanos().is_multiple_of(1_000_000) {
        return Err(format!(
            "the interval must be a whole number of milliseconds (got {})",
            format_duration(interval)
        ));
    }
    Ok(())
}

impl fmt::Display for SyncPolicy {
    /// The form [`SyncPolicy::from_str`] reads back: `interval:200` for a
    /// whole number of milliseconds. An interval that is not one (which
    /// [`crate::BrokerConfig::validate`] refuses) is shown exactly, e.g.
    /// `interval:1ms500us`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SyncPolicy::Always => f.write_str("always"),
            SyncPolicy::Group => f.write_str("group"),
            SyncPolicy::Never => f.write_str("never"),
            SyncPolicy::Interval(d) if d.subsec_nanos().is_multiple_of(1_000_000) => {
                write!(f, "{INTERVAL_PREFIX}{}", d.as_millis())
            }
            SyncPolicy::Interval(d) => write!(f, "{INTERVAL_PREFIX}{}", format_duration(*d)),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ms(n: u64) -> SyncPolicy {
        SyncPolicy::Interval(Duration::from_millis(n))
    }

    #[test]
    fn default_is_group() {
        assert_eq!(SyncPolicy::default(), SyncPolicy::Group);
    }

    #[test]
    fn forms_parse_and_print_back() {
        for (text, policy) in [
            ("always", SyncPolicy::Always),
            ("group", SyncPolicy::Group),
            ("never", SyncPolicy::Never),
            ("interval:1", ms(1)),
            ("interval:200", ms(200)),
            ("interval:250", ms(250)),
            ("interval:60000", ms(60_000)),
        ] {
            assert_eq!(text.parse::<SyncPolicy>(), Ok(policy), "{text}");
            assert_eq!(policy.to_string(), text);
            assert_eq!(policy.to_string().parse::<SyncPolicy>(), Ok(policy));
        }
    }

    #[test]
    fn case_and_spaces_are_ignored() {
        assert_eq!(" Group ".parse::<SyncPolicy>(), Ok(SyncPolicy::Group));
        assert_eq!("ALWAYS".parse::<SyncPolicy>(), Ok(SyncPolicy::Always));
        assert_eq!("Never\n".parse::<SyncPolicy>(), Ok(SyncPolicy::Never));
        assert_eq!("INTERVAL:200".parse::<SyncPolicy>(), Ok(ms(200)));
        assert_eq!(" interval: 200 ".parse::<SyncPolicy>(), Ok(ms(200)));
    }

    #[test]
    fn intervals_may_have_units() {
        assert_eq!("interval:200ms".parse::<SyncPolicy>(), Ok(ms(200)));
        assert_eq!("interval:1s".parse::<SyncPolicy>(), Ok(ms(1_000)));
        assert_eq!("interval:1.5s".parse::<SyncPolicy>(), Ok(ms(1_500)));
        assert_eq!("Interval:1m30s".parse::<SyncPolicy>(), Ok(ms(90_000)));
        assert_eq!("interval:1000us".parse::<SyncPolicy>(), Ok(ms(1)));
        // Printed back in milliseconds.
        assert_eq!(ms(1_000).to_string(), "interval:1000");
    }

    #[test]
    fn bad_forms_say_why_and_list_the_allowed_ones() {
        for (bad, reason) in [
            ("", "unknown policy"),
            ("sometimes", "unknown policy"),
            ("groups", "unknown policy"),
            ("interval", "unknown policy"),
            ("interval:", "missing"),
            ("interval:0", "at least 1 ms"),
            ("interval:0s", "at least 1 ms"),
            ("interval:500us", "at least 1 ms"),
            ("interval:1500us", "whole number of milliseconds"),
            ("interval:-5", "negative"),
            ("interval:1.5", "whole number of milliseconds or a duration"),
            ("interval:abc", "whole number of milliseconds or a duration"),
            ("interval:5x", "unknown unit"),
            // Units stay case-sensitive: `S` is not seconds.
            ("interval:1S", "unknown unit"),
            ("interval:99999999999999999999", "too large"),
            ("interval:6000000h", "too large"),
        ] {
            let err = bad.parse::<SyncPolicy>().unwrap_err();
            assert_eq!(err.input(), bad);
            assert!(err.reason().contains(reason), "{bad}: {err}");
            let message = err.to_string();
            assert!(
                message.contains("always, group, interval:<ms>") && message.contains("never"),
                "{bad}: {message}"
            );
        }
        assert_eq!(
            "sometimes".parse::<SyncPolicy>().unwrap_err().to_string(),
            "invalid sync policy \"sometimes\": unknown policy; expected always, group, \
             interval:<ms> (e.g. interval:200 or interval:1s) or never"
        );
    }

    #[test]
    fn odd_intervals_display_exactly_and_are_refused() {
        let odd = SyncPolicy::Interval(Duration::from_micros(1_500));
        assert_eq!(odd.to_string(), "interval:1ms500us");
        assert!(odd.to_string().parse::<SyncPolicy>().is_err());
        assert_eq!(ms(0).to_string(), "interval:0");
        assert!(check_interval(Duration::ZERO).is_err());
        assert!(check_interval(Duration::from_micros(1_500)).is_err());
        assert!(check_interval(Duration::from_millis(1)).is_ok());
    }

    #[test]
    fn only_always_and_group_fsync_before_ack() {
        assert!(SyncPolicy::Always.fsyncs_before_ack());
        assert!(SyncPolicy::Group.fsyncs_before_ack());
        assert!(!ms(200).fsyncs_before_ack());
        assert!(!SyncPolicy::Never.fsyncs_before_ack());
    }
}
