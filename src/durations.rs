//! Grant durations: the one textual form kube-jit accepts (`90s`, `15m`,
//! `1h30m`), shared by the CRD schema (as a CEL regex) and the operator, so
//! both always agree on what a duration means.

use std::fmt;
use std::time::Duration;

/// Hours, minutes and seconds in that order, each optional, whole numbers with
/// bounded digits so no form can overflow (in CEL's `duration()` or here).
pub const PATTERN: &str = "^([0-9]{1,4}h)?([0-9]{1,6}m)?([0-9]{1,8}s)?$";

/// Why a duration string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("duration is empty")]
    Empty,
    #[error("duration {0:?} must look like 90s, 15m or 1h30m: whole hours (up to 4 digits), minutes and seconds")]
    Malformed(String),
    #[error("duration must be more than zero")]
    Zero,
}

/// Parses the kube-jit duration form. Accepts exactly what [`PATTERN`] accepts
/// (apart from the empty string), and rejects zero.
pub fn parse(text: &str) -> Result<Duration, DurationError> {
    if text.is_empty() {
        return Err(DurationError::Empty);
    }
    let malformed = || DurationError::Malformed(text.to_string());
    let mut rest = text;
    let mut total: u64 = 0;
    // Units must appear in this order, each at most once.
    for (unit, seconds, max_digits) in [('h', 3600u64, 4usize), ('m', 60, 6), ('s', 1, 8)] {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 || rest.as_bytes().get(digits) != Some(&(unit as u8)) {
            continue;
        }
        if digits > max_digits {
            return Err(malformed());
        }
        let value: u64 = rest[..digits].parse().map_err(|_| malformed())?;
        total += value * seconds;
        rest = &rest[digits + 1..];
    }
    if !rest.is_empty() {
        return Err(malformed());
    }
    if total == 0 {
        return Err(DurationError::Zero);
    }
    Ok(Duration::from_secs(total))
}

/// Formats a duration in the same form, largest units first (`1h30m`, `45s`).
pub fn format(duration: Duration) -> String {
    Display(duration).to_string()
}

/// Displays a [`Duration`] in kube-jit's form.
pub struct Display(pub Duration);

impl fmt::Display for Display {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.0.as_secs();
        let (h, m, s) = (secs / 3600, (secs % 3600) / 60, secs % 60);
        if secs == 0 {
            return f.write_str("0s");
        }
        if h > 0 {
            write!(f, "{h}h")?;
        }
        if m > 0 {
            write!(f, "{m}m")?;
        }
        if s > 0 {
            write!(f, "{s}s")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_documented_forms() {
        for (text, secs) in [
            ("90s", 90),
            ("15m", 900),
            ("1h30m", 5400),
            ("1h", 3600),
            ("2h0m5s", 7205),
            ("0h1s", 1),
            ("9999h", 9999 * 3600),
            ("99999999s", 99_999_999),
        ] {
            assert_eq!(parse(text), Ok(Duration::from_secs(secs)), "{text}");
        }
    }

    #[test]
    fn rejects_everything_else() {
        for text in [
            "",
            "0s",
            "0h0m0s",
            "-5m",
            "5",
            "m",
            "1.5h",
            "1m1h",
            "1h1h",
            "1d",
            " 5m",
            "5m ",
            "5M",
            "10000h",
            "1234567m",
            "123456789s",
            "PT5M",
            "5mm",
            "٣m",
            "５m",
            "1e3s",
            "+5m",
        ] {
            assert!(parse(text).is_err(), "{text:?} should be rejected");
        }
    }

    #[test]
    fn zero_has_its_own_reason() {
        assert_eq!(parse("0m"), Err(DurationError::Zero));
    }

    proptest::proptest! {
        /// The parser and the schema's regex (what admission enforces) agree on
        /// every input: nothing the API server accepts is refused here, and the
        /// other way round. Zero is the one form both parse but policy refuses.
        #[test]
        fn parser_agrees_with_the_schema_pattern(text in "\\PC{0,24}|[0-9hms]{0,16}|[0-9]{1,9}[hms]") {
            let pattern = regex::Regex::new(PATTERN).unwrap();
            let schema_ok = !text.is_empty() && pattern.is_match(&text);
            match parse(&text) {
                Ok(d) => proptest::prop_assert!(schema_ok && d.as_secs() > 0, "{text:?}"),
                Err(DurationError::Zero) => proptest::prop_assert!(schema_ok, "{text:?}"),
                Err(_) => proptest::prop_assert!(!schema_ok, "{text:?}"),
            }
        }

        #[test]
        fn format_then_parse_is_identity(secs in 1u64..9999 * 3600) {
            let d = Duration::from_secs(secs);
            proptest::prop_assert_eq!(parse(&format(d)), Ok(d));
        }
    }

    #[test]
    fn format_round_trips() {
        for secs in [1, 59, 60, 61, 3599, 3600, 5400, 86_400, 9999 * 3600] {
            let d = Duration::from_secs(secs);
            assert_eq!(parse(&format(d)), Ok(d));
        }
    }
}
