//! Layer 0, a leaf. Human-readable durations and sizes, shared by the config file and annotations.
//!
//! Both follow ingress-nginx so values migrate unchanged: a bare number of seconds
//! (`"60"`) or a number with a unit (`"100ms"`, `"1s"`, `"2m"`, `"1h"`); sizes are
//! bytes or `k`/`m`/`g` (binary multiples, as nginx reads `client_max_body_size`).

use std::time::Duration;

use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum UnitError {
    #[error("invalid duration {0:?}: expected seconds or a number with ms, s, m, h or d")]
    Duration(String),
    #[error("invalid size {0:?}: expected bytes or a number with k, m or g")]
    Size(String),
}

/// Parses `"60"`, `"60s"`, `"100ms"`, `"2m"`, `"1h"`, `"1m30s"` (nginx also accepts combinations).
pub fn parse_duration(input: &str) -> Result<Duration, UnitError> {
    let err = || UnitError::Duration(input.to_string());
    let s = input.trim();
    if s.is_empty() {
        return Err(err());
    }
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(err)?;
        if digits == 0 {
            return Err(err());
        }
        let value: u64 = rest[..digits].parse().map_err(|_| err())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let part = match &rest[..unit_len] {
            "ms" => Duration::from_millis(value),
            "s" => Duration::from_secs(value),
            "m" => Duration::from_secs(value.saturating_mul(60)),
            "h" => Duration::from_secs(value.saturating_mul(3600)),
            "d" => Duration::from_secs(value.saturating_mul(86_400)),
            _ => return Err(err()),
        };
        total = total.saturating_add(part);
        rest = &rest[unit_len..];
    }
    Ok(total)
}

/// Parses `"1m"`, `"512k"`, `"8192"`, `"0"` into bytes.
pub fn parse_size(input: &str) -> Result<u64, UnitError> {
    let err = || UnitError::Size(input.to_string());
    let s = input.trim();
    let (digits, multiplier) = match s.as_bytes().last() {
        Some(b'k' | b'K') => (&s[..s.len() - 1], 1u64 << 10),
        Some(b'm' | b'M') => (&s[..s.len() - 1], 1 << 20),
        Some(b'g' | b'G') => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    let value: u64 = digits.parse().map_err(|_| err())?;
    value.checked_mul(multiplier).ok_or_else(err)
}

/// Serde adapters so config fields can say `#[serde(with = "units::duration")]`.
pub mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let raw = super::StringOrNumber::deserialize(d)?;
        super::parse_duration(&raw.0).map_err(serde::de::Error::custom)
    }

    pub fn serialize<S: Serializer>(value: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{}ms", value.as_millis()))
    }
}

/// Any value with a text form (`FromStr` to read it, `Display` to show it):
/// parsed once, when the file is read, so a bad value is an error naming its
/// key and the rest of the code sees only the typed value.
pub mod parsed {
    use std::fmt::Display;
    use std::str::FromStr;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn deserialize<'de, D, T>(d: D) -> Result<T, D::Error>
    where
        D: Deserializer<'de>,
        T: FromStr,
        T::Err: Display,
    {
        let raw = String::deserialize(d)?;
        raw.parse().map_err(serde::de::Error::custom)
    }

    pub fn serialize<S: Serializer, T: Display>(value: &T, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(value)
    }
}

pub mod size {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        let raw = super::StringOrNumber::deserialize(d)?;
        super::parse_size(&raw.0).map_err(serde::de::Error::custom)
    }

    pub fn serialize<S: Serializer>(value: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(*value)
    }
}

/// YAML users write both `60` and `"60s"`; accept either.
struct StringOrNumber(String);

impl<'de> serde::Deserialize<'de> for StringOrNumber {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum Raw {
            S(String),
            N(u64),
        }
        Ok(match Raw::deserialize(d)? {
            Raw::S(s) => StringOrNumber(s),
            Raw::N(n) => StringOrNumber(n.to_string()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let ok = [
            ("60", Duration::from_secs(60)),
            ("5s", Duration::from_secs(5)),
            ("100ms", Duration::from_millis(100)),
            ("2m", Duration::from_secs(120)),
            ("1h", Duration::from_secs(3600)),
            ("1m30s", Duration::from_secs(90)),
            (" 3 ", Duration::from_secs(3)),
        ];
        for (input, want) in ok {
            assert_eq!(parse_duration(input), Ok(want), "{input}");
        }
        for bad in ["", "s", "1x", "-1", "1.5s", "ms5"] {
            assert!(parse_duration(bad).is_err(), "{bad} should fail");
        }
    }

    #[test]
    fn sizes() {
        let ok = [
            ("0", 0),
            ("8192", 8192),
            ("1k", 1024),
            ("1m", 1 << 20),
            ("2G", 2 << 30),
        ];
        for (input, want) in ok {
            assert_eq!(parse_size(input), Ok(want), "{input}");
        }
        for bad in ["", "m", "1.5m", "-1", "1t", "99999999999g"] {
            assert!(parse_size(bad).is_err(), "{bad} should fail");
        }
    }

    #[test]
    fn fuzzed_units_never_panic() {
        crate::fuzz::texts(
            &[
                "60",
                "1m30s",
                "100ms",
                "18446744073709551615h",
                "8m",
                "512k",
            ],
            crate::fuzz::iterations(20_000),
            |text| {
                let _ = parse_duration(text);
                let _ = parse_size(text);
            },
        );
    }
}
