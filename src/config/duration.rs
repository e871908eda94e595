//! Durations as written in the config file: `"500ms"`, `"5s"`, `"2m"`, `"24h"`,
//! `"7d"`, or a concatenation such as `"1h30m"`.
//!
//! Whole numbers only, always with a unit: a bare `"5"` is ambiguous (seconds?
//! milliseconds?), so it is rejected rather than guessed.

use std::time::Duration;

/// The units a duration may use.
const UNITS: &[(&str, Unit)] = &[
    ("ms", Unit::Millis),
    ("s", Unit::Secs(1)),
    ("m", Unit::Secs(60)),
    ("h", Unit::Secs(3600)),
    ("d", Unit::Secs(86_400)),
];

#[derive(Debug, Clone, Copy)]
enum Unit {
    Millis,
    /// Seconds per unit.
    Secs(u64),
}

/// Parses a duration such as `"500ms"`, `"5s"`, `"24h"` or `"1m30s"`.
///
/// The error is a plain sentence about the input, meant to follow a phrase such
/// as "`connect` is not a valid duration: ".
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    if s.is_empty() {
        return Err("the duration is empty; write a number and a unit, as in \"5s\"".into());
    }
    if s.starts_with('-') {
        return Err(format!("{s:?} is negative; durations must be positive"));
    }
    let mut rest = s;
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let (part, tail) = parse_part(s, rest)?;
        total = total
            .checked_add(part)
            .ok_or_else(|| format!("{s:?} is too long"))?;
        rest = tail;
    }
    Ok(total)
}

/// Parses one `<number><unit>` at the start of `rest`; `whole` is the full input, for messages.
fn parse_part<'s>(whole: &str, rest: &'s str) -> Result<(Duration, &'s str), String> {
    let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    let (number, after) = rest.split_at(digits);
    if number.is_empty() {
        return Err(format!(
            "{whole:?} must start each part with a number, as in \"5s\" or \"1m30s\""
        ));
    }
    if after.starts_with('.') {
        return Err(format!(
            "{whole:?} has a fraction; use whole numbers with a smaller unit, as in \"1500ms\""
        ));
    }
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{whole:?} is too long"))?;
    let unit_len = after.len()
        - after
            .trim_start_matches(|c: char| !c.is_ascii_digit())
            .len();
    let (unit, tail) = after.split_at(unit_len);
    let Some((_, unit)) = UNITS.iter().find(|(name, _)| *name == unit) else {
        return Err(bad_unit(whole, unit));
    };
    let duration = match unit {
        Unit::Millis => Some(Duration::from_millis(number)),
        Unit::Secs(factor) => number.checked_mul(*factor).map(Duration::from_secs),
    }
    .ok_or_else(|| format!("{whole:?} is too long"))?;
    Ok((duration, tail))
}

/// The message for a number followed by nothing, or by something that is not a unit.
fn bad_unit(whole: &str, unit: &str) -> String {
    if unit.is_empty() {
        format!("{whole:?} has no unit; add one of ms, s, m, h, d, as in \"{whole}s\"")
    } else {
        format!("{whole:?} has an unknown unit {unit:?}; use ms, s, m, h or d")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_units() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn concatenations_add_up() {
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1s500ms"), Ok(Duration::from_millis(1500)));
    }

    #[test]
    fn rejects_empty_and_negative() {
        assert!(parse_duration("").unwrap_err().contains("empty"));
        assert!(parse_duration("-5s").unwrap_err().contains("negative"));
    }

    #[test]
    fn rejects_missing_or_unknown_units() {
        let err = parse_duration("5").unwrap_err();
        assert!(err.contains("no unit"), "{err}");
        let err = parse_duration("5sec").unwrap_err();
        assert!(err.contains("unknown unit \"sec\""), "{err}");
        let err = parse_duration("5w").unwrap_err();
        assert!(err.contains("unknown unit \"w\""), "{err}");
        assert!(parse_duration("s").unwrap_err().contains("number"));
        assert!(parse_duration("5 s").is_err());
        assert!(parse_duration(" 5s").is_err());
        assert!(parse_duration("1m30").unwrap_err().contains("no unit"));
    }

    #[test]
    fn rejects_fractions() {
        assert!(parse_duration("1.5s").unwrap_err().contains("fraction"));
    }

    #[test]
    fn rejects_overflow_without_panicking() {
        assert!(
            parse_duration("99999999999999999999s")
                .unwrap_err()
                .contains("too long")
        );
        assert!(
            parse_duration("18446744073709551615d")
                .unwrap_err()
                .contains("too long")
        );
        let max = format!("{}s{}s", u64::MAX, u64::MAX);
        assert!(parse_duration(&max).unwrap_err().contains("too long"));
    }

    #[test]
    fn never_panics_on_odd_input() {
        for s in ["ms", "é", "5é", "1h€", "\u{0}", "5ms5", "+5s"] {
            assert!(parse_duration(s).is_err(), "{s}");
        }
    }
}
