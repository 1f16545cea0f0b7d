//! Exact decimals, as PostgreSQL `numeric` and MySQL `DECIMAL` hold them, incl. NaN and ±Infinity.

use std::fmt;
use std::str::FromStr;

/// An exact decimal number. Finite values keep their scale (`1.50` stays `1.50`), so a copy
/// writes back exactly what was read; [`Decimal::normalized`] gives the scale-free form used to
/// compare values across engines.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Decimal {
    Finite {
        /// Never true for zero.
        negative: bool,
        /// ASCII digits of the unscaled value, without leading zeros ("0" for zero).
        digits: String,
        /// Digits after the decimal point.
        scale: u32,
    },
    NaN,
    Infinity,
    NegInfinity,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an exact decimal: {text:?} (expected digits with an optional sign and point, NaN, Infinity or -Infinity)")]
pub struct ParseDecimalError {
    text: String,
}

impl Decimal {
    /// The same number with trailing fractional zeros removed: `1.500` → `1.5`, `-0.0` → `0`.
    pub fn normalized(&self) -> Decimal {
        match self {
            Decimal::Finite {
                negative,
                digits,
                scale,
            } => {
                let mut digits = digits.clone();
                let mut scale = *scale;
                while scale > 0 && digits.len() > 1 && digits.ends_with('0') {
                    digits.pop();
                    scale -= 1;
                }
                if digits == "0" {
                    scale = 0;
                }
                Decimal::Finite {
                    negative: *negative && digits != "0",
                    digits,
                    scale,
                }
            }
            other => other.clone(),
        }
    }

    pub fn is_finite(&self) -> bool {
        matches!(self, Decimal::Finite { .. })
    }
}

impl FromStr for Decimal {
    type Err = ParseDecimalError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let err = || ParseDecimalError {
            text: text.chars().take(64).collect(),
        };
        let t = text.trim();
        match t.to_ascii_lowercase().as_str() {
            "nan" => return Ok(Decimal::NaN),
            "infinity" | "+infinity" | "inf" | "+inf" => return Ok(Decimal::Infinity),
            "-infinity" | "-inf" => return Ok(Decimal::NegInfinity),
            _ => {}
        }
        let (negative, body) = match t.as_bytes().first() {
            Some(b'-') => (true, &t[1..]),
            Some(b'+') => (false, &t[1..]),
            _ => (false, t),
        };
        let (int_part, frac_part) = match body.split_once('.') {
            Some((i, f)) => (i, f),
            None => (body, ""),
        };
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(err());
        }
        if !int_part.bytes().all(|b| b.is_ascii_digit())
            || !frac_part.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(err());
        }
        let scale = u32::try_from(frac_part.len()).map_err(|_| err())?;
        let mut digits: String = int_part.trim_start_matches('0').to_owned();
        digits.push_str(frac_part);
        let digits = digits.trim_start_matches('0');
        let digits = if digits.is_empty() { "0" } else { digits };
        Ok(Decimal::Finite {
            negative: negative && digits != "0",
            digits: digits.to_owned(),
            scale,
        })
    }
}

impl fmt::Display for Decimal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Decimal::NaN => f.write_str("NaN"),
            Decimal::Infinity => f.write_str("Infinity"),
            Decimal::NegInfinity => f.write_str("-Infinity"),
            Decimal::Finite {
                negative,
                digits,
                scale,
            } => {
                if *negative {
                    f.write_str("-")?;
                }
                let scale = *scale as usize;
                if scale == 0 {
                    return f.write_str(digits);
                }
                if digits.len() > scale {
                    let (i, frac) = digits.split_at(digits.len() - scale);
                    write!(f, "{i}.{frac}")
                } else {
                    f.write_str("0.")?;
                    for _ in 0..scale - digits.len() {
                        f.write_str("0")?;
                    }
                    f.write_str(digits)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_exactly() {
        for text in [
            "0",
            "1.50",
            "-12.340",
            "0.001",
            "123456789012345678901234567890.5",
            "NaN",
            "Infinity",
            "-Infinity",
            "0.00",
        ] {
            let d: Decimal = text.parse().unwrap();
            assert_eq!(d.to_string(), text);
        }
        assert_eq!("-0.0".parse::<Decimal>().unwrap().to_string(), "0.0");
        assert_eq!("+.5".parse::<Decimal>().unwrap().to_string(), "0.5");
        assert_eq!("007".parse::<Decimal>().unwrap().to_string(), "7");
    }

    #[test]
    fn normalizes_trailing_zeros() {
        let d: Decimal = "1.500".parse().unwrap();
        assert_eq!(d.normalized().to_string(), "1.5");
        let z: Decimal = "-0.000".parse().unwrap();
        assert_eq!(z.normalized().to_string(), "0");
        let n: Decimal = "100".parse().unwrap();
        assert_eq!(n.normalized().to_string(), "100");
    }

    #[test]
    fn rejects_garbage() {
        for text in ["", "-", ".", "1.2.3", "1e5", "abc", "1 2"] {
            assert!(text.parse::<Decimal>().is_err(), "{text}");
        }
    }
}
