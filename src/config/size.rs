//! Sizes as written in the config file: a number of bytes (`65536`) or a
//! string with a unit: `"512B"`, `"64KiB"`, `"1MiB"`, `"2GiB"` (powers of
//! 1024) or `"64kB"`, `"1MB"`, `"1GB"` (powers of 1000). Whole numbers only.

use toml::de::DeValue;

use super::reader::FromValue;

const UNITS: &[(&str, u64)] = &[
    ("B", 1),
    ("KiB", 1 << 10),
    ("MiB", 1 << 20),
    ("GiB", 1 << 30),
    ("kB", 1000),
    ("KB", 1000),
    ("MB", 1_000_000),
    ("GB", 1_000_000_000),
];

/// Parses `"64KiB"` and the like; the error is a sentence about the input.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    let (number, unit) = s.split_at(digits);
    if number.is_empty() {
        return Err(format!(
            "{s:?} does not start with a number; write a size like \"64KiB\" or \"1MiB\""
        ));
    }
    let Some(&(_, factor)) = UNITS.iter().find(|(name, _)| *name == unit) else {
        let hint = if unit.is_empty() {
            "has no unit".to_owned()
        } else {
            format!("has an unknown unit {unit:?}")
        };
        return Err(format!(
            "{s:?} {hint}; use B, KiB, MiB or GiB (or kB, MB, GB), or a bare integer for bytes"
        ));
    };
    number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(factor))
        .ok_or_else(|| format!("{s:?} is too large"))
}

/// A size as the file gives it (an integer of bytes or a string with a
/// unit), parsed, or the sentence saying why it is not one.
pub(crate) struct Size(pub Result<u64, String>);

impl<'a> FromValue<'a> for Size {
    const EXPECTED: &'static str = "a size like \"64KiB\" or a number of bytes";

    fn from_value(value: &'a DeValue<'a>, subject: &str) -> Result<Self, String> {
        match value {
            DeValue::String(s) => Ok(Size(parse_size(s))),
            DeValue::Integer(i) => Ok(Size(
                u64::from_str_radix(i.as_str(), i.radix())
                    .map_err(|_| format!("{subject} must be a positive number of bytes")),
            )),
            other => Err(format!(
                "{subject} must be {}, not {}",
                Self::EXPECTED,
                super::reader::type_name(other)
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_multiply() {
        assert_eq!(parse_size("512B"), Ok(512));
        assert_eq!(parse_size("64KiB"), Ok(65_536));
        assert_eq!(parse_size("1MiB"), Ok(1_048_576));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("64kB"), Ok(64_000));
        assert_eq!(parse_size("1MB"), Ok(1_000_000));
    }

    #[test]
    fn mistakes_are_named() {
        assert!(parse_size("1024").unwrap_err().contains("no unit"));
        assert!(
            parse_size("1mb")
                .unwrap_err()
                .contains("unknown unit \"mb\"")
        );
        assert!(parse_size("KiB").unwrap_err().contains("number"));
        assert!(
            parse_size("1.5MiB")
                .unwrap_err()
                .contains("unknown unit \".5MiB\"")
        );
        assert!(parse_size("-1B").is_err());
        assert!(
            parse_size("99999999999999GiB")
                .unwrap_err()
                .contains("too large")
        );
        assert!(parse_size("").is_err());
        assert!(parse_size("5é").is_err());
    }
}
