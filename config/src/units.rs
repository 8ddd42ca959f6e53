//! Durations and byte sizes as people write them.
//!
//! Durations use Go's `time.ParseDuration` format, which is what nsqd's flags
//! take: one or more `<number><unit>` parts such as `60s`, `1m30s`, `100ms`,
//! `2500us`, `1.5s`. Units are `ns`, `us` (or `µs`), `ms`, `s`, `m`, `h`; they
//! are case-sensitive, as in Go (`m` is minutes, `ms` milliseconds). Beyond Go,
//! spaces may sit between a number and its unit and between parts (`30 s`,
//! `1m 30s`). A bare number is refused (except `0`, as Go allows): whether it
//! means seconds or milliseconds is exactly the mistake a unit prevents. The
//! one place a bare integer is a duration is a TOML integer, read as
//! milliseconds as nsqd's config file does; that lives in [`crate::load`].
//!
//! Sizes are a number of bytes with an optional unit, case-insensitive, with
//! or without a space: `1048576`, `64KiB`, `1 MiB`, `5MB`.
//! - `KiB`, `MiB`, `GiB`, `TiB` are binary (1024-based);
//! - `KB`, `MB`, `GB`, `TB` are decimal (`5MB` = 5 000 000 bytes);
//! - the bare letters `K`, `M`, `G`, `T` (and `Ki`, `Mi`, ...) are binary, as
//!   in `docker --memory 512m` or `ulimit`;
//! - `B` or no unit is bytes.
//!
//! A fraction is allowed when the result is a whole number of bytes
//! (`1.5 KiB` = 1536, but `1.5 B` is refused).
//!
//! [`format_duration`] and [`format_size`] print values back in a form these
//! parsers accept, for messages and docs.

use std::time::Duration;

/// Why a duration or a size could not be read. The message describes the
/// text; the caller adds which key it was for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UnitError {
    #[error("the value is empty")]
    Empty,
    #[error("negative values are not allowed")]
    Negative,
    #[error("too large")]
    Overflow,
    #[error("no number at {0:?}")]
    NotANumber(String),
    #[error("a bare number needs a unit, e.g. {0}s or {0}ms")]
    MissingUnit(String),
    #[error("unknown unit {unit:?}; use one of {allowed}")]
    UnknownUnit { unit: String, allowed: &'static str },
    #[error("{0} is not a whole number of bytes")]
    FractionalBytes(String),
}

const DURATION_UNITS: &str = "ns, us, ms, s, m, h";
const SIZE_UNITS: &str =
    "B, KiB, MiB, GiB, TiB (1024-based), KB, MB, GB, TB (1000-based), K, M, G, T (1024-based)";

const NANOS_PER_SEC: u128 = 1_000_000_000;

/// Parses a Go-style duration (`60s`, `1m30s`, `100ms`, `1.5s`, `30 s`).
///
/// # Errors
/// [`UnitError`] for empty, negative, unitless (other than `0`), unknown-unit,
/// malformed or too large (more than `u64::MAX` nanoseconds, about 584 years)
/// input.
pub fn parse_duration(text: &str) -> Result<Duration, UnitError> {
    let s = text.trim();
    if s.is_empty() {
        return Err(UnitError::Empty);
    }
    if s.starts_with('-') {
        return Err(UnitError::Negative);
    }
    let s = s.strip_prefix('+').unwrap_or(s);
    if s == "0" {
        return Ok(Duration::ZERO);
    }

    let mut rest = s;
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let (number, after) = split_number(rest)?;
        let after = after.trim_start();
        let unit_len = after
            .find(|c: char| !(c.is_ascii_alphabetic() || c == 'µ' || c == 'μ'))
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        if unit.is_empty() {
            return Err(UnitError::MissingUnit(number.text.to_owned()));
        }
        let nanos_per_unit: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => NANOS_PER_SEC,
            "m" => 60 * NANOS_PER_SEC,
            "h" => 3_600 * NANOS_PER_SEC,
            _ => {
                return Err(UnitError::UnknownUnit {
                    unit: unit.to_owned(),
                    allowed: DURATION_UNITS,
                })
            }
        };
        // Like Go, digits past nanosecond precision are dropped, not refused.
        let part = number.scaled(nanos_per_unit).ok_or(UnitError::Overflow)?.0;
        total = total.checked_add(part).ok_or(UnitError::Overflow)?;
        rest = after.trim_start();
    }
    if total > u128::from(u64::MAX) {
        return Err(UnitError::Overflow);
    }
    let secs = u64::try_from(total / NANOS_PER_SEC).map_err(|_| UnitError::Overflow)?;
    // The remainder of a division by 1e9 always fits in u32.
    let nanos = u32::try_from(total % NANOS_PER_SEC).map_err(|_| UnitError::Overflow)?;
    Ok(Duration::new(secs, nanos))
}

/// Parses a byte size (`1048576`, `64KiB`, `1 MiB`, `5MB`, `512m`).
///
/// # Errors
/// [`UnitError`] for empty, negative, malformed, unknown-unit, fractional-byte
/// or larger than `u64::MAX` input.
pub fn parse_size(text: &str) -> Result<u64, UnitError> {
    let s = text.trim();
    if s.is_empty() {
        return Err(UnitError::Empty);
    }
    if s.starts_with('-') {
        return Err(UnitError::Negative);
    }
    let s = s.strip_prefix('+').unwrap_or(s);
    let (number, unit) = split_number(s)?;
    let unit = unit.trim();
    let multiplier: u128 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "ki" | "kib" => 1 << 10,
        "m" | "mi" | "mib" => 1 << 20,
        "g" | "gi" | "gib" => 1 << 30,
        "t" | "ti" | "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        _ => {
            return Err(UnitError::UnknownUnit {
                unit: unit.to_owned(),
                allowed: SIZE_UNITS,
            })
        }
    };
    let (bytes, exact) = number.scaled(multiplier).ok_or(UnitError::Overflow)?;
    if !exact {
        return Err(UnitError::FractionalBytes(s.to_owned()));
    }
    u64::try_from(bytes).map_err(|_| UnitError::Overflow)
}

/// A duration in the shortest form [`parse_duration`] reads back exactly:
/// `1m`, `1m30s`, `25ms`, `1s500ms`, `0s`.
pub fn format_duration(d: Duration) -> String {
    if d.is_zero() {
        return "0s".to_owned();
    }
    let mut nanos = d.as_nanos();
    let mut out = String::new();
    for (unit, size) in [
        ("h", 3_600 * NANOS_PER_SEC),
        ("m", 60 * NANOS_PER_SEC),
        ("s", NANOS_PER_SEC),
        ("ms", 1_000_000),
        ("us", 1_000),
        ("ns", 1),
    ] {
        let count = nanos / size;
        if count > 0 {
            out.push_str(&format!("{count}{unit}"));
            nanos %= size;
        }
    }
    out
}

/// A size in the largest binary unit that divides it (`64 KiB`, `5 MiB`),
/// or plain bytes (`1000`); [`parse_size`] reads it back exactly.
pub fn format_size(bytes: u64) -> String {
    for (unit, shift) in [("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)] {
        if bytes != 0 && bytes.trailing_zeros() >= shift {
            return format!("{} {unit}", bytes >> shift);
        }
    }
    bytes.to_string()
}

/// A non-negative decimal number as written: whole part and fraction digits.
struct Number<'a> {
    text: &'a str,
    whole: u128,
    /// Fraction digits as an integer, and how many digits that is.
    fraction: u128,
    fraction_digits: u32,
}

impl Number<'_> {
    /// `self * multiplier`, and whether the result is exact (no fraction of
    /// the unit was dropped). `None` on overflow.
    fn scaled(&self, multiplier: u128) -> Option<(u128, bool)> {
        let whole = self.whole.checked_mul(multiplier)?;
        let scale = 10u128.checked_pow(self.fraction_digits)?;
        let fraction_units = self.fraction.checked_mul(multiplier)?;
        let exact = fraction_units % scale == 0;
        Some((whole.checked_add(fraction_units / scale)?, exact))
    }
}

/// Longest fraction kept: beyond this the digits are below a nanosecond of an
/// hour (and below a byte of a TiB), so dropping them changes nothing.
const MAX_FRACTION_DIGITS: u32 = 24;

/// Splits `digits[.digits]` off the front of `s`. At least one digit is
/// needed on one side of the point (`.5` and `1.` are allowed, as in Go).
fn split_number(s: &str) -> Result<(Number<'_>, &str), UnitError> {
    let whole_len = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (whole_text, after_whole) = s.split_at(whole_len);
    let (fraction_text, rest) = match after_whole.strip_prefix('.') {
        Some(after_point) => {
            let len = after_point
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(after_point.len());
            after_point.split_at(len)
        }
        None => ("", after_whole),
    };
    if whole_text.is_empty() && fraction_text.is_empty() {
        let shown: String = s.chars().take(16).collect();
        return Err(UnitError::NotANumber(shown));
    }
    let mut whole: u128 = 0;
    for digit in whole_text.bytes() {
        whole = whole
            .checked_mul(10)
            .and_then(|w| w.checked_add(u128::from(digit - b'0')))
            .ok_or(UnitError::Overflow)?;
    }
    let mut fraction: u128 = 0;
    let mut fraction_digits = 0;
    for digit in fraction_text.bytes().take(MAX_FRACTION_DIGITS as usize) {
        fraction = fraction * 10 + u128::from(digit - b'0');
        fraction_digits += 1;
    }
    let text = &s[..s.len() - rest.len()];
    Ok((
        Number {
            text,
            whole,
            fraction,
            fraction_digits,
        },
        rest,
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn go_durations() {
        assert_eq!(parse_duration("60s").unwrap(), ms(60_000));
        assert_eq!(parse_duration("1m30s").unwrap(), ms(90_000));
        assert_eq!(parse_duration("100ms").unwrap(), ms(100));
        assert_eq!(parse_duration("1h").unwrap(), ms(3_600_000));
        assert_eq!(parse_duration("2500us").unwrap(), ms(2_500) / 1000);
        assert_eq!(parse_duration("2500µs").unwrap(), ms(2_500) / 1000);
        assert_eq!(parse_duration("15ns").unwrap(), Duration::from_nanos(15));
        assert_eq!(parse_duration("1.5s").unwrap(), ms(1_500));
        assert_eq!(parse_duration(".5s").unwrap(), ms(500));
        assert_eq!(parse_duration("1.s").unwrap(), ms(1_000));
        assert_eq!(parse_duration("1h15m30.5s").unwrap(), ms(4_530_500));
        assert_eq!(parse_duration("+5s").unwrap(), ms(5_000));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        assert_eq!(parse_duration("0s").unwrap(), Duration::ZERO);
    }

    #[test]
    fn human_durations() {
        assert_eq!(parse_duration("30 s").unwrap(), ms(30_000));
        assert_eq!(parse_duration(" 1m 30s ").unwrap(), ms(90_000));
        assert_eq!(parse_duration("1.25 h").unwrap(), ms(4_500_000));
    }

    #[test]
    fn fraction_beyond_nanoseconds_is_truncated() {
        assert_eq!(
            parse_duration("0.0000000019s").unwrap(),
            Duration::from_nanos(1)
        );
    }

    #[test]
    fn duration_rejects() {
        assert_eq!(parse_duration(""), Err(UnitError::Empty));
        assert_eq!(parse_duration("   "), Err(UnitError::Empty));
        assert_eq!(parse_duration("-5s"), Err(UnitError::Negative));
        assert_eq!(
            parse_duration("60"),
            Err(UnitError::MissingUnit("60".into()))
        );
        assert_eq!(
            parse_duration("1m30"),
            Err(UnitError::MissingUnit("30".into()))
        );
        assert!(matches!(
            parse_duration("5x"),
            Err(UnitError::UnknownUnit { ref unit, .. }) if unit == "x"
        ));
        // Units are case-sensitive as in Go: `M` could be read as months.
        assert!(matches!(
            parse_duration("5M"),
            Err(UnitError::UnknownUnit { .. })
        ));
        assert!(matches!(
            parse_duration("abc"),
            Err(UnitError::NotANumber(_))
        ));
        assert!(matches!(
            parse_duration("60s!"),
            Err(UnitError::NotANumber(_))
        ));
        assert!(matches!(parse_duration("."), Err(UnitError::NotANumber(_))));
        assert_eq!(
            parse_duration("1..5s"),
            Err(UnitError::MissingUnit("1.".into()))
        );
        assert_eq!(
            parse_duration("99999999999999999999999h"),
            Err(UnitError::Overflow)
        );
        assert_eq!(parse_duration("6000000h"), Err(UnitError::Overflow));
        assert_eq!(
            parse_duration("999999999999999999999999999999999999999999ns"),
            Err(UnitError::Overflow)
        );
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1048576").unwrap(), 1_048_576);
        assert_eq!(parse_size("0").unwrap(), 0);
        assert_eq!(parse_size("1 MiB").unwrap(), 1 << 20);
        assert_eq!(parse_size("64KiB").unwrap(), 64 << 10);
        assert_eq!(parse_size("64kib").unwrap(), 64 << 10);
        assert_eq!(parse_size("5MB").unwrap(), 5_000_000);
        assert_eq!(parse_size("5 mb").unwrap(), 5_000_000);
        assert_eq!(parse_size("2KB").unwrap(), 2_000);
        assert_eq!(parse_size("3GB").unwrap(), 3_000_000_000);
        assert_eq!(parse_size("512m").unwrap(), 512 << 20);
        assert_eq!(parse_size("16K").unwrap(), 16 << 10);
        assert_eq!(parse_size("2G").unwrap(), 2 << 30);
        assert_eq!(parse_size("1Ti").unwrap(), 1 << 40);
        assert_eq!(parse_size("100 B").unwrap(), 100);
        assert_eq!(parse_size("1.5 KiB").unwrap(), 1536);
        assert_eq!(parse_size("0.5KB").unwrap(), 500);
    }

    #[test]
    fn size_rejects() {
        assert_eq!(parse_size(""), Err(UnitError::Empty));
        assert_eq!(parse_size("-1"), Err(UnitError::Negative));
        assert_eq!(parse_size("-1 MiB"), Err(UnitError::Negative));
        assert!(matches!(parse_size("abc"), Err(UnitError::NotANumber(_))));
        assert!(matches!(parse_size("MiB"), Err(UnitError::NotANumber(_))));
        assert!(matches!(
            parse_size("5 parsecs"),
            Err(UnitError::UnknownUnit { .. })
        ));
        assert!(matches!(
            parse_size("1 MiB 2"),
            Err(UnitError::UnknownUnit { .. })
        ));
        assert!(matches!(
            parse_size("1.5 B"),
            Err(UnitError::FractionalBytes(_))
        ));
        assert!(matches!(
            parse_size("0.3 KiB"),
            Err(UnitError::FractionalBytes(_))
        ));
        assert_eq!(parse_size("18446744073709551616"), Err(UnitError::Overflow));
        assert_eq!(parse_size("16777216 TiB"), Err(UnitError::Overflow));
        assert_eq!(
            parse_size("99999999999999999999999999999999999999999"),
            Err(UnitError::Overflow)
        );
        assert_eq!(parse_size("18446744073709551615").unwrap(), u64::MAX);
    }

    #[test]
    fn formats_round_trip() {
        for d in [
            Duration::ZERO,
            ms(25),
            ms(1_500),
            ms(60_000),
            ms(90_000),
            ms(3_600_000),
            ms(900_000),
            Duration::from_nanos(1_234_567_891),
        ] {
            assert_eq!(parse_duration(&format_duration(d)).unwrap(), d, "{d:?}");
        }
        assert_eq!(format_duration(ms(60_000)), "1m");
        assert_eq!(format_duration(ms(90_000)), "1m30s");
        assert_eq!(format_duration(ms(25)), "25ms");
        for n in [
            0,
            1,
            1000,
            1024,
            65_536,
            1 << 20,
            5 << 20,
            3 << 40,
            u64::MAX,
        ] {
            assert_eq!(parse_size(&format_size(n)).unwrap(), n, "{n}");
        }
        assert_eq!(format_size(1 << 20), "1 MiB");
        assert_eq!(format_size(64 << 10), "64 KiB");
        assert_eq!(format_size(1000), "1000");
    }
}
