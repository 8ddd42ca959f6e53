//! Topic and channel names: 1..=64 of `[.a-zA-Z0-9_-]`, optionally followed by
//! `#ephemeral` (the suffix counts toward the 64), as nsqd's `internal/protocol/names.go`.

pub const EPHEMERAL_SUFFIX: &str = "#ephemeral";

/// nsqd checks the length of the whole name, suffix included.
pub const MAX_NAME_LEN: usize = 64;

pub fn is_valid_topic_name(name: &str) -> bool {
    is_valid_name(name.as_bytes())
}

pub fn is_valid_channel_name(name: &str) -> bool {
    is_valid_name(name.as_bytes())
}

pub fn is_ephemeral(name: &str) -> bool {
    name.ends_with(EPHEMERAL_SUFFIX)
}

/// nsqd's `^[.a-zA-Z0-9_-]+(#ephemeral)?$` within 1..=64 bytes, on raw bytes so
/// the command decoder can check a parameter before turning it into a `String`.
pub(crate) fn is_valid_name(name: &[u8]) -> bool {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return false;
    }
    let stem = name
        .strip_suffix(EPHEMERAL_SUFFIX.as_bytes())
        .unwrap_or(name);
    !stem.is_empty()
        && stem
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_what_the_regex_accepts() {
        for name in [
            "a",
            "A.b_c-9",
            "...",
            "-",
            "_",
            "topic#ephemeral",
            "x#ephemeral",
            &"a".repeat(64),
        ] {
            assert!(is_valid_topic_name(name), "{name:?}");
            assert!(is_valid_channel_name(name), "{name:?}");
        }
        let longest_ephemeral = format!(
            "{}{EPHEMERAL_SUFFIX}",
            "a".repeat(64 - EPHEMERAL_SUFFIX.len())
        );
        assert_eq!(longest_ephemeral.len(), 64);
        assert!(is_valid_topic_name(&longest_ephemeral));
    }

    #[test]
    fn rejects_what_the_regex_or_length_rejects() {
        let too_long_ephemeral = format!(
            "{}{EPHEMERAL_SUFFIX}",
            "a".repeat(65 - EPHEMERAL_SUFFIX.len())
        );
        for name in [
            "",
            "#ephemeral",
            "a b",
            "a\n",
            "a#",
            "a#ephemera",
            "a#Ephemeral",
            "a#ephemeral#ephemeral",
            "#ephemeralx",
            "ä",
            "a/b",
            "a:b",
            &"a".repeat(65),
            &too_long_ephemeral,
        ] {
            assert!(!is_valid_topic_name(name), "{name:?}");
            assert!(!is_valid_channel_name(name), "{name:?}");
        }
    }

    #[test]
    fn ephemeral_suffix() {
        assert!(is_ephemeral("c#ephemeral"));
        assert!(!is_ephemeral("c"));
        assert!(!is_ephemeral("c#ephemeralx"));
    }

    #[test]
    fn every_ascii_byte_is_classified_like_the_regex() {
        for b in 0u8..128 {
            let expected = b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-';
            assert_eq!(is_valid_name(&[b]), expected, "byte {b}");
            assert_eq!(is_valid_name(&[b'a', b, b'z']), expected, "byte {b}");
        }
    }
}
