//! The canonical text of values and rows, and the row hash: what every engine must produce,
//! byte for byte, for the same value, so that range checksums computed inside different
//! engines compare equal exactly when the rows are equal.
//!
//! The forms are PostgreSQL's own output with `TimeZone = UTC`, `DateStyle = ISO`,
//! `IntervalStyle = iso_8601`, `extra_float_digits >= 1` and `bytea_output = hex`, except where a
//! value has several spellings:
//! - decimals without trailing fractional zeros (`1.50` → `1.5`, `0.00` → `0`; PostgreSQL
//!   `trim_scale`), `NaN`, `Infinity`, `-Infinity`;
//! - floats in the shortest text that reads back to the same bits, fixed notation for decimal
//!   exponents in `[-4, 15)` (`[-4, 6)` for 32-bit floats), else `1.5e-07` / `1e+100`;
//!   `-0`, `NaN`, `Infinity`, `-Infinity`;
//! - JSON as `jsonb` prints it: object keys sorted shorter first, then bytewise, the last of
//!   duplicate keys kept, `", "` and `": "` separators, numbers as exact decimals (`1e2` →
//!   `100`, `1.50` stays `1.50`), strings re-escaped;
//! - bytes as `\x` and lower-case hex; booleans `t`/`f`; timestamps with a zone in UTC
//!   (`2026-01-01 06:30:00.5+00`).
//!
//! A row's canonical text is PostgreSQL's record text (`ROW(…)::text`) of its values'
//! canonical texts: `(1,"a b",,"")` (NULL is nothing, the empty string is `""`), which is
//! injective. Its hash is the first 8 bytes of the MD5 of that text, as a big-endian `i64`
//! (`('x' || left(md5(t), 16))::bit(64)::bigint` in PostgreSQL, `CONV(LEFT(MD5(t), 16), 16, 10)`
//! in MySQL); a range's digest is the row count and the wrapping sum of its rows' hashes,
//! which does not depend on the order rows are read in and adds up across slices.

use cutover_model::Value;
use md5::{Digest, Md5};

/// The canonical text of `v`, `None` for NULL.
pub fn value_text(v: &Value) -> Option<String> {
    Some(match v {
        Value::Null => return None,
        Value::Bool(b) => (if *b { "t" } else { "f" }).to_owned(),
        Value::Int(i) => i.to_string(),
        Value::UInt(u) => u.to_string(),
        Value::Float32(f) => float32_text(*f),
        Value::Float64(f) => float64_text(*f),
        Value::Decimal(d) => d.normalized().to_string(),
        Value::Text(s) => s.clone(),
        Value::Bytes(b) => bytes_text(b),
        Value::Date(d) => d.to_string(),
        Value::Time(t) => t.to_string(),
        Value::TimeTz(t) => t.to_string(),
        Value::Timestamp(t) => t.display(false).to_string(),
        Value::TimestampTz(t) => t.display(true).to_string(),
        Value::Interval(i) => i.to_string(),
        Value::Uuid(u) => uuid_text(u),
        Value::Json(s) => json_text(s).unwrap_or_else(|| s.clone()),
        Value::Array(a) => format!("{:?}", a.elements),
        Value::Raw { text, .. } => text.clone(),
    })
}

/// `\x0aff`: PostgreSQL's hex form of bytes (also what its input function reads back).
pub fn bytes_text(b: &[u8]) -> String {
    let mut s = String::with_capacity(2 + 2 * b.len());
    s.push_str("\\x");
    push_hex(&mut s, b);
    s
}

fn push_hex(s: &mut String, b: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for byte in b {
        s.push(char::from(DIGITS[usize::from(byte >> 4)]));
        s.push(char::from(DIGITS[usize::from(byte & 15)]));
    }
}

/// `a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11`.
pub fn uuid_text(u: &[u8; 16]) -> String {
    let mut hex = String::with_capacity(32);
    push_hex(&mut hex, u);
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// Shortest round-trip text of a 64-bit float, laid out as PostgreSQL prints it.
pub fn float64_text(f: f64) -> String {
    if f.is_nan() {
        return "NaN".to_owned();
    }
    if f.is_infinite() {
        return (if f > 0.0 { "Infinity" } else { "-Infinity" }).to_owned();
    }
    layout_float(&format!("{f:e}"), 15)
}

/// Shortest round-trip text of a 32-bit float, laid out as PostgreSQL prints `real`.
pub fn float32_text(f: f32) -> String {
    if f.is_nan() {
        return "NaN".to_owned();
    }
    if f.is_infinite() {
        return (if f > 0.0 { "Infinity" } else { "-Infinity" }).to_owned();
    }
    layout_float(&format!("{f:e}"), 6)
}

/// `sci` is Rust's shortest scientific form (`-1.5e-7`); fixed notation for exponents in
/// `[-4, fixed_below)`, else `-1.5e-07`.
fn layout_float(sci: &str, fixed_below: i32) -> String {
    let (mantissa, exp) = sci.split_once('e').unwrap_or((sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (neg, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => (true, m),
        None => (false, mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let sign = if neg { "-" } else { "" };
    if digits == "0" {
        return format!("{sign}0");
    }
    if (-4..fixed_below).contains(&exp) {
        let point = exp + 1; // digits before the decimal point
        if point <= 0 {
            let zeros = "0".repeat(point.unsigned_abs() as usize);
            format!("{sign}0.{zeros}{digits}")
        } else if point as usize >= digits.len() {
            let zeros = "0".repeat(point as usize - digits.len());
            format!("{sign}{digits}{zeros}")
        } else {
            let (i, f) = digits.split_at(point as usize);
            format!("{sign}{i}.{f}")
        }
    } else {
        let esign = if exp < 0 { '-' } else { '+' };
        let m = if digits.len() > 1 {
            format!("{}.{}", &digits[..1], &digits[1..])
        } else {
            digits
        };
        format!("{sign}{m}e{esign}{:02}", exp.unsigned_abs())
    }
}

/// A row's canonical text from its values' canonical texts: PostgreSQL's record text form.
pub fn row_text<'a>(values: impl IntoIterator<Item = Option<&'a str>>) -> String {
    let mut out = String::from("(");
    for (i, v) in values.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let Some(v) = v else { continue };
        let quote = v.is_empty()
            || v.bytes().any(|b| {
                matches!(
                    b,
                    b'"' | b'\\' | b'(' | b')' | b',' | b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c
                )
            });
        if !quote {
            out.push_str(v);
            continue;
        }
        out.push('"');
        for c in v.chars() {
            if c == '"' || c == '\\' {
                out.push(c);
            }
            out.push(c);
        }
        out.push('"');
    }
    out.push(')');
    out
}

/// The row hash: the first 8 bytes of MD5(text), big-endian, as a signed 64-bit integer.
pub fn row_hash(text: &str) -> i64 {
    let digest = Md5::digest(text.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(first)
}

/// The canonical JSON text of a document, as `jsonb` prints it; `None` if it is not JSON.
pub fn json_text(text: &str) -> Option<String> {
    let mut p = JsonParser {
        s: text.as_bytes(),
        i: 0,
    };
    let v = p.value()?;
    p.ws();
    if p.i != p.s.len() {
        return None;
    }
    let mut out = String::with_capacity(text.len());
    write_json(&v, &mut out);
    Some(out)
}

enum Json {
    Null,
    Bool(bool),
    Number(String),
    Str(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

struct JsonParser<'a> {
    s: &'a [u8],
    i: usize,
}

impl JsonParser<'_> {
    fn ws(&mut self) {
        while self
            .s
            .get(self.i)
            .is_some_and(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
        {
            self.i += 1;
        }
    }

    fn eat(&mut self, lit: &str) -> bool {
        if self.s[self.i..].starts_with(lit.as_bytes()) {
            self.i += lit.len();
            true
        } else {
            false
        }
    }

    fn value(&mut self) -> Option<Json> {
        self.ws();
        match *self.s.get(self.i)? {
            b'n' => self.eat("null").then_some(Json::Null),
            b't' => self.eat("true").then_some(Json::Bool(true)),
            b'f' => self.eat("false").then_some(Json::Bool(false)),
            b'"' => self.string().map(Json::Str),
            b'[' => {
                self.i += 1;
                let mut items = Vec::new();
                self.ws();
                if self.eat("]") {
                    return Some(Json::Array(items));
                }
                loop {
                    items.push(self.value()?);
                    self.ws();
                    if self.eat("]") {
                        return Some(Json::Array(items));
                    }
                    if !self.eat(",") {
                        return None;
                    }
                }
            }
            b'{' => {
                self.i += 1;
                let mut fields: Vec<(String, Json)> = Vec::new();
                self.ws();
                if !self.eat("}") {
                    loop {
                        self.ws();
                        let k = self.string()?;
                        self.ws();
                        if !self.eat(":") {
                            return None;
                        }
                        let v = self.value()?;
                        fields.retain(|(name, _)| name != &k);
                        fields.push((k, v));
                        self.ws();
                        if self.eat("}") {
                            break;
                        }
                        if !self.eat(",") {
                            return None;
                        }
                    }
                }
                fields.sort_by(|(a, _), (b, _)| {
                    a.len()
                        .cmp(&b.len())
                        .then_with(|| a.as_bytes().cmp(b.as_bytes()))
                });
                Some(Json::Object(fields))
            }
            _ => self.number().map(Json::Number),
        }
    }

    fn string(&mut self) -> Option<String> {
        if !self.eat("\"") {
            return None;
        }
        let mut out: Vec<u8> = Vec::new();
        loop {
            let b = *self.s.get(self.i)?;
            self.i += 1;
            match b {
                b'"' => return String::from_utf8(out).ok(),
                b'\\' => {
                    let e = *self.s.get(self.i)?;
                    self.i += 1;
                    let c = match e {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => {
                            let hi = self.hex4()?;
                            let cp = if (0xD800..0xDC00).contains(&hi) {
                                if !self.eat("\\u") {
                                    return None;
                                }
                                let lo = self.hex4()?;
                                if !(0xDC00..0xE000).contains(&lo) {
                                    return None;
                                }
                                0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                            } else {
                                hi
                            };
                            char::from_u32(cp)?
                        }
                        _ => return None,
                    };
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
                b if b < 0x20 => return None,
                b => out.push(b),
            }
        }
    }

    fn hex4(&mut self) -> Option<u32> {
        let h = std::str::from_utf8(self.s.get(self.i..self.i + 4)?).ok()?;
        self.i += 4;
        u32::from_str_radix(h, 16).ok()
    }

    /// A JSON number as PostgreSQL's `numeric` prints it: exponents expanded, scale kept.
    fn number(&mut self) -> Option<String> {
        let start = self.i;
        while self
            .s
            .get(self.i)
            .is_some_and(|b| b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.' | b'e' | b'E'))
        {
            self.i += 1;
        }
        let t = std::str::from_utf8(&self.s[start..self.i]).ok()?;
        let (mantissa, exp) = match t.find(['e', 'E']) {
            Some(at) => (&t[..at], t[at + 1..].parse::<i64>().ok()?),
            None => (t, 0),
        };
        let (neg, body) = match mantissa.strip_prefix('-') {
            Some(b) => (true, b),
            None => (false, mantissa),
        };
        let (int, frac) = body.split_once('.').unwrap_or((body, ""));
        if int.is_empty()
            || !int.bytes().all(|b| b.is_ascii_digit())
            || !frac.bytes().all(|b| b.is_ascii_digit())
            || (int.len() > 1 && int.starts_with('0'))
            || (body.contains('.') && frac.is_empty())
            || exp.abs() > 100_000
        {
            return None;
        }
        let digits = format!("{int}{frac}");
        let scale = frac.len() as i64 - exp;
        let plain = if scale <= 0 {
            format!("{digits}{}", "0".repeat(scale.unsigned_abs() as usize))
        } else {
            let scale = scale as usize;
            let padded = if digits.len() <= scale {
                format!("{}{digits}", "0".repeat(scale + 1 - digits.len()))
            } else {
                digits
            };
            let (i, f) = padded.split_at(padded.len() - scale);
            format!("{i}.{f}")
        };
        let d: cutover_model::Decimal = format!("{}{plain}", if neg { "-" } else { "" })
            .parse()
            .ok()?;
        Some(d.to_string())
    }
}

fn write_json(v: &Json, out: &mut String) {
    match v {
        Json::Null => out.push_str("null"),
        Json::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Json::Number(n) => out.push_str(n),
        Json::Str(s) => write_json_string(s, out),
        Json::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_json(item, out);
            }
            out.push(']');
        }
        Json::Object(fields) => {
            out.push('{');
            for (i, (k, item)) in fields.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_json_string(k, out);
                out.push_str(": ");
                write_json(item, out);
            }
            out.push('}');
        }
    }
}

fn write_json_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn floats_print_as_postgresql_does() {
        for (f, text) in [
            (1.5e-7, "1.5e-07"),
            (123456789012345.0, "123456789012345"),
            (1234567890123456.0, "1.234567890123456e+15"),
            (-0.0, "-0"),
            (0.0001, "0.0001"),
            (1e15, "1e+15"),
            (1e-5, "1e-05"),
            (1e100, "1e+100"),
            (0.1, "0.1"),
            (-2.5, "-2.5"),
            (100.0, "100"),
        ] {
            assert_eq!(float64_text(f), text, "{f}");
        }
        for (f, text) in [
            (1e6f32, "1e+06"),
            (123456.0, "123456"),
            (1234567.0, "1.234567e+06"),
            (1e-5, "1e-05"),
            (100000.0, "100000"),
            (0.1, "0.1"),
        ] {
            assert_eq!(float32_text(f), text, "{f}");
        }
        assert_eq!(float64_text(f64::NAN), "NaN");
        assert_eq!(float64_text(f64::NEG_INFINITY), "-Infinity");
    }

    #[test]
    fn json_prints_as_jsonb_does() {
        assert_eq!(
            json_text(r#"{"bb":1.50,"a":[1e2,-0.0, 1E-2, "x\/\u00e9\t"], "c":{}}"#).as_deref(),
            Some(r#"{"a": [100, 0.0, 0.01, "x/é\t"], "c": {}, "bb": 1.50}"#)
        );
        assert_eq!(
            json_text(r#" {"a":1, "a" : 2} "#).as_deref(),
            Some(r#"{"a": 2}"#)
        );
        assert_eq!(json_text("[1, 2"), None);
        assert_eq!(json_text("01"), None);
        assert_eq!(json_text(r#""\ud83d\ude00""#).as_deref(), Some("\"😀\""));
    }

    #[test]
    fn rows_quote_like_record_text() {
        assert_eq!(
            row_text([
                Some("1"),
                Some("a b"),
                None,
                Some(""),
                Some("x\"y"),
                Some("\\x01")
            ]),
            r#"(1,"a b",,"","x""y","\\x01")"#
        );
        assert_eq!(row_text(std::iter::empty()), "()");
    }

    #[test]
    fn the_row_hash_is_md5s_first_8_bytes() {
        // md5("") = d41d8cd98f00b204e9800998ecf8427e
        assert_eq!(row_hash(""), 0xd41d8cd98f00b204u64 as i64);
    }

    #[test]
    fn decimals_lose_only_trailing_zeros() {
        let d = |s: &str| Value::Decimal(s.parse().unwrap());
        assert_eq!(value_text(&d("1.500")).as_deref(), Some("1.5"));
        assert_eq!(value_text(&d("0.00")).as_deref(), Some("0"));
        assert_eq!(value_text(&d("-Infinity")).as_deref(), Some("-Infinity"));
        assert_eq!(value_text(&Value::Null), None);
        assert_eq!(
            value_text(&Value::Bytes(vec![0, 255])).as_deref(),
            Some("\\x00ff")
        );
    }

    proptest! {
        #[test]
        fn float64_text_reads_back_to_the_same_bits(bits in any::<u64>()) {
            let f = f64::from_bits(bits);
            prop_assume!(f.is_finite());
            let back: f64 = float64_text(f).parse().unwrap();
            prop_assert_eq!(back.to_bits(), f.to_bits());
        }

        #[test]
        fn float32_text_reads_back_to_the_same_bits(bits in any::<u32>()) {
            let f = f32::from_bits(bits);
            prop_assume!(f.is_finite());
            let back: f32 = float32_text(f).parse().unwrap();
            prop_assert_eq!(back.to_bits(), f.to_bits());
        }

        #[test]
        fn row_text_is_injective_for_a_table_width(
            (a, b) in (1usize..4).prop_flat_map(|n| {
                let col = || proptest::collection::vec(proptest::option::of("[a-c \"\\\\(),]{0,3}"), n);
                (col(), col())
            })
        ) {
            let ta = row_text(a.iter().map(|v| v.as_deref()));
            let tb = row_text(b.iter().map(|v| v.as_deref()));
            prop_assert_eq!(ta == tb, a == b);
        }

        #[test]
        fn trailing_zeros_never_change_a_decimal_text(digits in "[0-9]{1,12}", scale in 0usize..8, extra in 1usize..4) {
            let digits = format!("{digits}{}", "0".repeat(scale + 1));
            let (i, f) = digits.split_at(digits.len() - scale - 1);
            let short: cutover_model::Decimal = format!("{i}.{f}").parse().unwrap();
            let long: cutover_model::Decimal = format!("{i}.{f}{}", "0".repeat(extra)).parse().unwrap();
            prop_assert_eq!(value_text(&Value::Decimal(short)), value_text(&Value::Decimal(long)));
        }

        #[test]
        fn json_whitespace_and_key_order_never_change_the_text(keys in proptest::collection::btree_map("[a-z]{1,5}", 0i64..1000, 0..6)) {
            let fwd: Vec<String> = keys.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
            let rev: Vec<String> = keys.iter().rev().map(|(k, v)| format!("\n \"{k}\" :  {v} ")).collect();
            let a = json_text(&format!("{{{}}}", fwd.join(","))).unwrap();
            let b = json_text(&format!(" {{ {} }}", rev.join(" , "))).unwrap();
            prop_assert_eq!(a, b);
        }
    }
}
