//! Model values as the MySQL driver's parameters, for the target's column types (the type map
//! in [`crate::ddl`]). A value the column cannot hold exactly is refused with why, never rounded
//! or cut: MySQL rounds a decimal with too many fractional digits with only a note, even in
//! strict mode, so decimals are checked here.

use cutover_model::{ColumnType, Date, Decimal, Timestamp, Value};
use mysql_async::Value as My;

const MICROS_PER_DAY: i64 = 86_400_000_000;

/// The `(precision, scale)` the target column has for a decimal of neutral type `ty`.
fn decimal_shape(ty: &ColumnType) -> Option<(u32, u32)> {
    match ty {
        ColumnType::Decimal {
            precision: Some(p),
            scale,
        } => Some((*p, scale.unwrap_or(0))),
        ColumnType::Decimal {
            precision: None, ..
        } => Some((65, 30)),
        _ => None,
    }
}

fn date_parts(d: &Date) -> Result<(u16, u8, u8), String> {
    match d.ymd() {
        Some((y, m, day)) if (1..=9999).contains(&y) => Ok((y as u16, m as u8, day as u8)),
        Some(_) => Err(format!("{d} is outside MySQL's years 1 to 9999")),
        None => Err(format!("{d} has no MySQL date")),
    }
}

/// `(y, m, d, h, mi, s, µs)` of a timestamp's microseconds since 2000-01-01.
fn timestamp_parts(ts: &Timestamp, zoned: bool) -> Result<My, String> {
    let Timestamp::Micros(m) = ts else {
        return Err(format!("{} has no MySQL timestamp", ts.display(zoned)));
    };
    let days = m.div_euclid(MICROS_PER_DAY);
    let tod = m.rem_euclid(MICROS_PER_DAY);
    let date = i32::try_from(days)
        .ok()
        .map(Date::Days)
        .ok_or_else(|| format!("{} is out of range", ts.display(zoned)))?;
    let (y, mo, d) = date_parts(&date)?;
    if zoned {
        // timestamp(6): 1970-01-01 00:00:01 to 2038-01-19 03:14:07.999999 UTC.
        let unix = ts.unix_micros().unwrap_or(i64::MIN);
        if !(1_000_000..2_147_483_648_000_000).contains(&unix) {
            return Err(format!(
                "{} is outside MySQL's timestamp range (1970-01-01 00:00:01 to 2038-01-19 \
                 03:14:07 UTC)",
                ts.display(true)
            ));
        }
    }
    let secs = tod / 1_000_000;
    Ok(My::Date(
        y,
        mo,
        d,
        (secs / 3600) as u8,
        (secs / 60 % 60) as u8,
        (secs % 60) as u8,
        (tod % 1_000_000) as u32,
    ))
}

fn decimal(d: &Decimal, ty: &ColumnType) -> Result<My, String> {
    let Decimal::Finite { .. } = d else {
        return Err(format!("{d} has no MySQL decimal"));
    };
    if let Some((p, s)) = decimal_shape(ty) {
        if let Decimal::Finite { digits, scale, .. } = d.normalized() {
            let int_digits = digits.len().saturating_sub(scale as usize);
            let int_digits = if digits == "0" { 0 } else { int_digits };
            if scale > s || int_digits > (p - s) as usize {
                return Err(format!(
                    "{d} does not fit decimal({p},{s}) exactly ({} digits before the point, {} \
                     after)",
                    int_digits, scale
                ));
            }
        }
    }
    Ok(My::Bytes(d.to_string().into_bytes()))
}

/// `v` as a parameter for a target column of neutral type `ty`; `Err` says why it cannot be
/// written exactly (the caller names table, column and key).
pub fn encode(v: &Value, ty: &ColumnType) -> Result<My, String> {
    Ok(match v {
        Value::Null => My::NULL,
        Value::Bool(b) => My::Int(i64::from(*b)),
        Value::Int(i) => My::Int(*i),
        Value::UInt(u) => My::UInt(*u),
        Value::Float32(f) if f.is_finite() => My::Float(*f),
        Value::Float64(f) if f.is_finite() => My::Double(*f),
        Value::Float32(f) => return Err(format!("MySQL floats cannot hold {f}")),
        Value::Float64(f) => return Err(format!("MySQL doubles cannot hold {f}")),
        Value::Decimal(d) => decimal(d, ty)?,
        Value::Text(s) | Value::Json(s) => My::Bytes(s.as_bytes().to_vec()),
        Value::Bytes(b) => My::Bytes(b.clone()),
        Value::Raw { text, .. } => My::Bytes(text.as_bytes().to_vec()),
        Value::Date(d) => {
            let (y, m, day) = date_parts(d)?;
            My::Date(y, m, day, 0, 0, 0, 0)
        }
        Value::Time(t) => {
            let us = t.micros();
            let secs = us / 1_000_000;
            My::Time(
                false,
                0,
                (secs / 3600) as u8,
                (secs / 60 % 60) as u8,
                (secs % 60) as u8,
                (us % 1_000_000) as u32,
            )
        }
        Value::Timestamp(ts) => timestamp_parts(ts, false)?,
        Value::TimestampTz(ts) => timestamp_parts(ts, true)?,
        Value::Uuid(u) => My::Bytes(uuid_text(u).into_bytes()),
        Value::TimeTz(_) | Value::Interval(_) | Value::Array(_) => {
            return Err(format!(
                "MySQL has no type that holds a {} exactly",
                v.kind()
            ))
        }
    })
}

/// 8-4-4-4-12 lower-case hex.
pub fn uuid_text(u: &[u8; 16]) -> String {
    let hex: String = u.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_written_exactly_or_refused_with_why() {
        let dec = |s: &str| Value::Decimal(s.parse().unwrap());
        let ty = ColumnType::Decimal {
            precision: Some(5),
            scale: Some(2),
        };
        assert!(matches!(encode(&dec("123.40"), &ty), Ok(My::Bytes(_))));
        assert!(encode(&dec("123.456"), &ty)
            .unwrap_err()
            .contains("decimal(5,2)"));
        assert!(encode(&dec("1234"), &ty).is_err());
        assert!(encode(&dec("NaN"), &ty).is_err());
        assert!(encode(&Value::Float64(f64::NAN), &ColumnType::Float { bits: 64 }).is_err());
        let ts = Timestamp::parse("2038-01-19 03:14:08", true).unwrap();
        let zoned = ColumnType::Timestamp { zoned: true };
        assert!(encode(&Value::TimestampTz(ts), &zoned)
            .unwrap_err()
            .contains("2038"));
        let ts = Timestamp::parse("1999-12-31 23:59:59.5", false).unwrap();
        assert_eq!(
            encode(
                &Value::Timestamp(ts),
                &ColumnType::Timestamp { zoned: false }
            )
            .unwrap(),
            My::Date(1999, 12, 31, 23, 59, 59, 500_000)
        );
        let bc = Value::Date("0044-03-15 BC".parse().unwrap());
        assert!(encode(&bc, &ColumnType::Date).is_err());
        assert_eq!(
            uuid_text(&[0xab; 16]),
            "abababab-abab-abab-abab-abababababab"
        );
    }
}
