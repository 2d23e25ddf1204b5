//! The quantities of the rate and impairment sections, as people write them.
//!
//! The model keeps no floats (exact persistence, `Eq`): bit rates in bit/s, sizes in
//! bytes, times in µs, probabilities in parts per million. Each type reads the forms `tc`
//! users know (`"10mbit"`, `"64k"`, `"50ms"`, `"1.5%"`) and writes one canonical string
//! back, so the TOML config, the JSON API and `config export` all say the same thing.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A rate in bits per second (`"10mbit"`: k, m, g are powers of 1000 as in `tc`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BitRate(pub u64);

/// A size in bytes (`"64k"`: k, m are powers of 1024 as in `tc`'s burst).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteSize(pub u64);

/// A time in microseconds (`"50ms"`, `"1.5ms"`, `"200us"`, `"2s"`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Micros(pub u64);

/// A probability in parts per million (`"5%"`, `"0.1%"`; 100% = 1 000 000).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ppm(pub u32);

impl Ppm {
    pub const ONE: Ppm = Ppm(1_000_000);
}

/// A quantity that did not parse; the message says what to write instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} {input:?}: say e.g. {examples}")]
pub struct UnitError {
    what: &'static str,
    input: String,
    examples: &'static str,
}

/// Parses `<digits>[.<digits>]<unit>` exactly (no rounding beyond the unit's
/// resolution: the fraction is cut at it), with the unit looked up in `units`
/// (case-insensitive). `None` for anything else or on overflow.
fn parse_scaled(s: &str, units: &[(&str, u64)]) -> Option<u64> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let unit = unit.trim().to_ascii_lowercase();
    let factor = units.iter().find(|(u, _)| *u == unit)?.1;
    let (int, frac) = number.split_once('.').unwrap_or((number, ""));
    if int.is_empty() && frac.is_empty() || frac.contains('.') {
        return None;
    }
    let int: u128 = if int.is_empty() { 0 } else { int.parse().ok()? };
    let mut value = int.checked_mul(u128::from(factor))?;
    let mut scale = u128::from(factor);
    for digit in frac.bytes() {
        scale /= 10;
        value = value.checked_add(u128::from(digit - b'0') * scale)?;
    }
    u64::try_from(value).ok()
}

/// Writes `value` in the largest unit of `units` (largest first) that divides it.
fn write_scaled(f: &mut fmt::Formatter<'_>, value: u64, units: &[(&str, u64)]) -> fmt::Result {
    let (unit, factor) = units
        .iter()
        .find(|(_, factor)| value.is_multiple_of(*factor) && (value != 0 || *factor == 1))
        .copied()
        .unwrap_or(("", 1));
    write!(f, "{}{unit}", value / factor)
}

const RATE_UNITS: &[(&str, u64)] = &[
    ("gbit", 1_000_000_000),
    ("mbit", 1_000_000),
    ("kbit", 1_000),
    ("bit", 1),
];
const SIZE_UNITS: &[(&str, u64)] = &[
    ("m", 1 << 20),
    ("k", 1 << 10),
    ("b", 1),
    ("mb", 1 << 20),
    ("kb", 1 << 10),
    ("mib", 1 << 20),
    ("kib", 1 << 10),
    ("", 1),
];
const TIME_UNITS: &[(&str, u64)] = &[
    ("s", 1_000_000),
    ("ms", 1_000),
    ("us", 1),
    ("µs", 1),
    ("", 1),
];

impl FromStr for BitRate {
    type Err = UnitError;
    fn from_str(s: &str) -> Result<Self, UnitError> {
        // A bare number is ambiguous (bits? bytes?); only "0" may go without a unit.
        let zero = (s.trim() == "0").then_some(0);
        zero.or_else(|| parse_scaled(s, RATE_UNITS))
            .map(BitRate)
            .ok_or(UnitError {
                what: "rate",
                input: s.into(),
                examples: "10mbit, 512kbit, 1gbit",
            })
    }
}

impl fmt::Display for BitRate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_scaled(f, self.0, RATE_UNITS)
    }
}

impl FromStr for ByteSize {
    type Err = UnitError;
    fn from_str(s: &str) -> Result<Self, UnitError> {
        parse_scaled(s, SIZE_UNITS).map(ByteSize).ok_or(UnitError {
            what: "size",
            input: s.into(),
            examples: "1500, 64k, 1m",
        })
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_scaled(f, self.0, &SIZE_UNITS[..2])
    }
}

impl FromStr for Micros {
    type Err = UnitError;
    fn from_str(s: &str) -> Result<Self, UnitError> {
        // A bare number is ambiguous; only "0" may go without a unit.
        let bare = s.trim().bytes().all(|b| b.is_ascii_digit());
        let parsed = parse_scaled(s, TIME_UNITS).filter(|v| !bare || *v == 0);
        parsed.map(Micros).ok_or(UnitError {
            what: "time",
            input: s.into(),
            examples: "50ms, 1.5ms, 200us, 2s",
        })
    }
}

impl fmt::Display for Micros {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            0 => f.write_str("0ms"),
            v => write_scaled(f, v, &TIME_UNITS[..3]),
        }
    }
}

impl FromStr for Ppm {
    type Err = UnitError;
    fn from_str(s: &str) -> Result<Self, UnitError> {
        let error = || UnitError {
            what: "probability",
            input: s.into(),
            examples: "5%, 0.1%, 100%",
        };
        let t = s.trim();
        let value = if t == "0" {
            Some(0)
        } else {
            parse_scaled(t, &[("%", 10_000)])
        };
        match value {
            Some(v) if v <= 1_000_000 => Ok(Ppm(v as u32)),
            _ => Err(error()),
        }
    }
}

impl fmt::Display for Ppm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (int, frac) = (self.0 / 10_000, self.0 % 10_000);
        if frac == 0 {
            return write!(f, "{int}%");
        }
        let frac = format!("{frac:04}");
        write!(f, "{int}.{}%", frac.trim_end_matches('0'))
    }
}

/// serde through the canonical string (`Display`) and `FromStr`.
macro_rules! serde_as_string {
    ($($t:ty),*) => {$(
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    )*};
}
serde_as_string!(BitRate, ByteSize, Micros, Ppm);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_read_as_tc_writes_them() {
        assert_eq!("10mbit".parse(), Ok(BitRate(10_000_000)));
        assert_eq!("1.5Mbit".parse(), Ok(BitRate(1_500_000)));
        assert_eq!("512kbit".parse(), Ok(BitRate(512_000)));
        assert_eq!("1gbit".parse(), Ok(BitRate(1_000_000_000)));
        assert_eq!(BitRate(10_000_000).to_string(), "10mbit");
        assert_eq!(BitRate(1_500_000).to_string(), "1500kbit");
        assert_eq!(BitRate(7).to_string(), "7bit");
        assert_eq!("0".parse(), Ok(BitRate(0)));
        let err = "10 mbps".parse::<BitRate>().unwrap_err().to_string();
        assert_eq!(
            err, "rate \"10 mbps\": say e.g. 10mbit, 512kbit, 1gbit",
            "{err}"
        );
        for bad in ["", "mbit", "1..5mbit", "-1mbit", "99999999999gbit", "10"] {
            assert!(bad.parse::<BitRate>().is_err(), "{bad}");
        }
    }

    #[test]
    fn sizes_times_and_probabilities_round_trip() {
        assert_eq!("64k".parse(), Ok(ByteSize(65536)));
        assert_eq!("1500".parse(), Ok(ByteSize(1500)));
        assert_eq!(ByteSize(65536).to_string(), "64k");
        assert_eq!(ByteSize(1500).to_string(), "1500");
        assert_eq!("50ms".parse(), Ok(Micros(50_000)));
        assert_eq!("1.5ms".parse(), Ok(Micros(1_500)));
        assert_eq!("2s".parse(), Ok(Micros(2_000_000)));
        assert_eq!("0".parse(), Ok(Micros(0)));
        assert!("50".parse::<Micros>().is_err());
        assert_eq!(Micros(1_500).to_string(), "1500us");
        assert_eq!(Micros(50_000).to_string(), "50ms");
        assert_eq!("5%".parse(), Ok(Ppm(50_000)));
        assert_eq!("0.1%".parse(), Ok(Ppm(1_000)));
        assert_eq!("100%".parse(), Ok(Ppm::ONE));
        assert!("101%".parse::<Ppm>().is_err());
        assert!("0.5".parse::<Ppm>().is_err());
        assert_eq!(Ppm(1_500).to_string(), "0.15%");
        assert_eq!(Ppm(1).to_string(), "0.0001%");
        for p in [0, 1, 10, 1_000, 123_456, 1_000_000] {
            assert_eq!(Ppm(p).to_string().parse(), Ok(Ppm(p)));
        }
        for us in [0, 1, 999, 1_000, 1_500, 2_000_000] {
            assert_eq!(Micros(us).to_string().parse(), Ok(Micros(us)));
        }
    }

    proptest::proptest! {
        /// Any text is a value or an error, never a panic; any value reads back as
        /// itself from the text it writes.
        #[test]
        fn any_text_parses_or_is_refused(text in "\\PC{0,12}", n in proptest::prelude::any::<u64>()) {
            let _ = text.parse::<BitRate>();
            let _ = text.parse::<ByteSize>();
            let _ = text.parse::<Micros>();
            let _ = text.parse::<Ppm>();
            let _ = text.parse::<crate::policy::impair::GilbertElliott>();
            proptest::prop_assert_eq!(BitRate(n).to_string().parse(), Ok(BitRate(n)));
            proptest::prop_assert_eq!(ByteSize(n).to_string().parse(), Ok(ByteSize(n)));
            proptest::prop_assert_eq!(Micros(n).to_string().parse(), Ok(Micros(n)));
            let p = Ppm((n % 1_000_001) as u32);
            proptest::prop_assert_eq!(p.to_string().parse(), Ok(p));
        }
    }
}
