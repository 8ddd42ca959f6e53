//! Delivery tiers and the rules that pick a topic's tier by name.

use crate::load::ConfigError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tier {
    Memory,
    Persistent,
    Delayed,
}

impl Tier {
    /// Every tier's name, as [`Tier::as_str`] spells it.
    pub const NAMES: &'static [&'static str] = &["memory", "persistent", "delayed"];

    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Memory => "memory",
            Tier::Persistent => "persistent",
            Tier::Delayed => "delayed",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverflowPolicy {
    /// Refuse the publish with `E_PUB_FAILED`.
    Reject,
    /// Write the overflow to the store; the channel reads it back in order
    /// as consumers catch up. Nothing is lost.
    Spill,
}

/// `pattern` is a glob over topic names (`tickets.*`, `batch-*`); the first
/// rule that matches gives a new topic its tier and its settings.
#[derive(Debug, Clone, PartialEq)]
pub struct TierRule {
    pub pattern: String,
    pub tier: Tier,
    pub settings: TopicSettings,
}

/// Per-topic delivery settings, from a [`TierRule`] or `/topic/create`.
/// The defaults change nothing: no delay, no batching, no dead letters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TopicSettings {
    /// Delayed tier: every publish without its own delay waits this long.
    pub delay: std::time::Duration,
    /// Delayed tier: due times are rounded up to a multiple of this, so
    /// messages due within one window are released together at its end.
    pub batch_window: std::time::Duration,
    /// A message that has been delivered this many times and is requeued
    /// (or times out) again moves to `<topic>.dead`. 0: never (as nsqd).
    pub max_attempts: u16,
}

impl TopicSettings {
    /// Why these settings cannot apply to a topic of `tier` whose longest
    /// allowed delay is `max_delay`, naming the offending field.
    ///
    /// # Errors
    /// `(field, reason)` for the first bad field.
    pub fn check(
        &self,
        tier: Tier,
        max_delay: std::time::Duration,
    ) -> Result<(), (&'static str, String)> {
        if tier != Tier::Delayed {
            if !self.delay.is_zero() {
                return Err(("delay", "applies only to delayed-tier topics".to_owned()));
            }
            if !self.batch_window.is_zero() {
                return Err((
                    "batch_window",
                    "applies only to delayed-tier topics".to_owned(),
                ));
            }
        }
        if self.delay > max_delay {
            return Err((
                "delay",
                format!(
                    "must not exceed max_req_timeout ({} ms)",
                    max_delay.as_millis()
                ),
            ));
        }
        if self.batch_window > max_delay {
            return Err((
                "batch_window",
                format!(
                    "must not exceed max_req_timeout ({} ms)",
                    max_delay.as_millis()
                ),
            ));
        }
        Ok(())
    }
}

impl std::fmt::Display for Tier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Tier {
    type Err = ParseNameError;

    /// `memory`, `persistent` or `delayed`, ignoring ASCII case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "memory" => Ok(Tier::Memory),
            "persistent" => Ok(Tier::Persistent),
            "delayed" => Ok(Tier::Delayed),
            _ => Err(ParseNameError::new("tier", s, Tier::NAMES)),
        }
    }
}

impl OverflowPolicy {
    /// Every policy's name, as [`OverflowPolicy::as_str`] spells it.
    pub const NAMES: &'static [&'static str] = &["reject", "spill"];

    pub fn as_str(self) -> &'static str {
        match self {
            OverflowPolicy::Reject => "reject",
            OverflowPolicy::Spill => "spill",
        }
    }
}

impl std::fmt::Display for OverflowPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for OverflowPolicy {
    type Err = ParseNameError;

    /// `reject` or `spill`, ignoring ASCII case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "reject" => Ok(OverflowPolicy::Reject),
            "spill" => Ok(OverflowPolicy::Spill),
            _ => Err(ParseNameError::new(
                "overflow policy",
                s,
                OverflowPolicy::NAMES,
            )),
        }
    }
}

/// A name that is not one of an enum's spellings (a tier, an overflow policy,
/// a log format). The message lists the allowed names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {value:?}: expected one of {}", allowed.join(", "))]
pub struct ParseNameError {
    what: &'static str,
    value: String,
    allowed: &'static [&'static str],
}

impl ParseNameError {
    pub(crate) fn new(what: &'static str, value: &str, allowed: &'static [&'static str]) -> Self {
        ParseNameError {
            what,
            value: value.to_owned(),
            allowed,
        }
    }

    /// The names that would have been accepted.
    pub fn allowed(&self) -> &'static [&'static str] {
        self.allowed
    }
}

/// nsqd's suffix for topics and channels that live only in memory, drop what
/// overflows and vanish with their last client.
pub const EPHEMERAL_SUFFIX: &str = "#ephemeral";

/// Whether a topic or channel name is ephemeral (ends in `#ephemeral`).
pub fn is_ephemeral(name: &str) -> bool {
    name.ends_with(EPHEMERAL_SUFFIX)
}

/// Topics the broker itself publishes to (`_triage.backpressure`, ...). They
/// are always [`Tier::Memory`]: their events are about the present, and a
/// subscriber that creates one before its first event must not give it a
/// durable tier the broker would then refuse to publish into.
pub const SYSTEM_TOPIC_PREFIX: &str = "_triage.";

/// [`TierRule`]s compiled once, to pick tiers for many topics without
/// recompiling globs. Build it with [`crate::BrokerConfig::tier_matcher`] (or
/// [`TierMatcher::new`]) when the broker starts and keep it.
///
/// Few rules are expected, so each is its own matcher tried in order; that
/// keeps "first match wins" obvious where a `GlobSet` would report every match.
#[derive(Debug, Clone)]
pub struct TierMatcher {
    rules: Vec<(globset::GlobMatcher, Tier, TopicSettings)>,
    default: Tier,
}

impl TierMatcher {
    /// Compiles `rules`; `default` is the tier of a topic no rule matches.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming `tier_rules[i].pattern` when a pattern is
    /// empty or not a valid glob.
    pub fn new(rules: &[TierRule], default: Tier) -> Result<Self, ConfigError> {
        let compiled = rules
            .iter()
            .enumerate()
            .map(|(i, rule)| Ok((compile_pattern(i, &rule.pattern)?, rule.tier, rule.settings)))
            .collect::<Result<_, ConfigError>>()?;
        Ok(TierMatcher {
            rules: compiled,
            default,
        })
    }

    /// `#ephemeral` topics and system topics ([`SYSTEM_TOPIC_PREFIX`]) are
    /// always [`Tier::Memory`]; otherwise the tier of the first rule whose
    /// pattern matches; otherwise the default tier.
    pub fn tier_for(&self, topic: &str) -> Tier {
        self.rule_for(topic).0
    }

    /// The tier as [`TierMatcher::tier_for`] picks it, with the settings of
    /// the rule that picked it (defaults when no rule did).
    pub fn rule_for(&self, topic: &str) -> (Tier, TopicSettings) {
        if is_ephemeral(topic) || topic.starts_with(SYSTEM_TOPIC_PREFIX) {
            return (Tier::Memory, TopicSettings::default());
        }
        self.rules
            .iter()
            .find(|(glob, _, _)| glob.is_match(topic))
            .map_or(
                (self.default, TopicSettings::default()),
                |&(_, tier, settings)| (tier, settings),
            )
    }
}

fn compile_pattern(index: usize, pattern: &str) -> Result<globset::GlobMatcher, ConfigError> {
    let invalid = |reason: String| ConfigError::Invalid {
        key: format!("tier_rules[{index}].pattern"),
        value: format!("{pattern:?}"),
        reason,
        origin: None,
    };
    if pattern.is_empty() {
        return Err(invalid(
            "a pattern must not be empty; use \"*\" to match every topic".to_owned(),
        ));
    }
    globset::Glob::new(pattern)
        .map(|glob| glob.compile_matcher())
        .map_err(|e| {
            invalid(format!(
                "not a valid glob ({}); use * and ? wildcards, [abc] classes or {{a,b}} alternatives",
                e.kind()
            ))
        })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn rule(pattern: &str, tier: Tier) -> TierRule {
        TierRule {
            settings: TopicSettings::default(),
            pattern: pattern.to_owned(),
            tier,
        }
    }

    #[test]
    fn names_parse_and_print() {
        for tier in [Tier::Memory, Tier::Persistent, Tier::Delayed] {
            assert_eq!(tier.as_str().parse::<Tier>().unwrap(), tier);
            assert_eq!(tier.to_string(), tier.as_str());
        }
        assert_eq!("Persistent".parse::<Tier>().unwrap(), Tier::Persistent);
        let err = "disk".parse::<Tier>().unwrap_err().to_string();
        assert_eq!(
            err,
            "unknown tier \"disk\": expected one of memory, persistent, delayed"
        );
        assert_eq!(
            "spill".parse::<OverflowPolicy>().unwrap(),
            OverflowPolicy::Spill
        );
        assert_eq!(
            "reject".parse::<OverflowPolicy>().unwrap(),
            OverflowPolicy::Reject
        );
        let err = "drop".parse::<OverflowPolicy>().unwrap_err().to_string();
        assert!(err.contains("reject, spill"), "{err}");
    }

    #[test]
    fn first_matching_rule_wins() {
        let matcher = TierMatcher::new(
            &[
                rule("tickets.urgent", Tier::Memory),
                rule("tickets.*", Tier::Persistent),
                rule("batch-*", Tier::Delayed),
                rule("*", Tier::Persistent),
            ],
            Tier::Memory,
        )
        .unwrap();
        assert_eq!(matcher.tier_for("tickets.urgent"), Tier::Memory);
        assert_eq!(matcher.tier_for("tickets.new"), Tier::Persistent);
        assert_eq!(matcher.tier_for("batch-nightly"), Tier::Delayed);
        assert_eq!(matcher.tier_for("other"), Tier::Persistent);
        assert_eq!(matcher.tier_for("batch-x#ephemeral"), Tier::Memory);
    }

    #[test]
    fn no_match_falls_back_to_default() {
        let matcher = TierMatcher::new(&[rule("a?c", Tier::Delayed)], Tier::Persistent).unwrap();
        assert_eq!(matcher.tier_for("abc"), Tier::Delayed);
        assert_eq!(matcher.tier_for("abbc"), Tier::Persistent);
        assert_eq!(matcher.tier_for("x#ephemeral"), Tier::Memory);
    }

    #[test]
    fn system_topics_are_always_memory() {
        let matcher = TierMatcher::new(&[rule("*", Tier::Persistent)], Tier::Persistent).unwrap();
        assert_eq!(matcher.tier_for("_triage.backpressure"), Tier::Memory);
        assert_eq!(matcher.tier_for("_triage"), Tier::Persistent);
        assert_eq!(matcher.tier_for("triage.backpressure"), Tier::Persistent);
    }

    #[test]
    fn bad_patterns_name_the_rule() {
        let rules = [rule("ok.*", Tier::Delayed), rule("bad[", Tier::Delayed)];
        let err = TierMatcher::new(&rules, Tier::Memory).unwrap_err();
        assert_eq!(err.key(), Some("tier_rules[1].pattern"));
        assert!(err.to_string().contains("not a valid glob"), "{err}");
        let err = TierMatcher::new(&[rule("", Tier::Delayed)], Tier::Memory).unwrap_err();
        assert_eq!(err.key(), Some("tier_rules[0].pattern"));
    }
}
