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
//!   (`2026-01-01 06:30:00.5+00`);
//! - arrays as PostgreSQL's array text of their elements' canonical texts (`{1,NULL,"a b"}`,
//!   `{{1,2},{3,4}}`, `[0:1]={x,y}`), quoted exactly where `array_out` quotes.
//!
//! Some values have no canonical text: JSON nested deeper than [`MAX_JSON_DEPTH`] and text that
//! is not valid UTF-8 are a [`CanonicalError`], which callers report naming table, column and
//! key; never a crash, never a replacement.
//!
//! The full specification, value by value, with how PostgreSQL and SQLite produce each form, is
//! `docs/CANONICAL.md` at the root of the repository.
//!
//! A row's canonical text is PostgreSQL's record text (`ROW(…)::text`) of its values'
//! canonical texts: `(1,"a b",,"")` (NULL is nothing, the empty string is `""`), which is
//! injective. Its hash is the first 8 bytes of the MD5 of that text, as a big-endian `i64`
//! (`('x' || left(md5(t), 16))::bit(64)::bigint` in PostgreSQL, `CONV(LEFT(MD5(t), 16), 16, 10)`
//! in MySQL); a range's digest is the row count and the wrapping sum of its rows' hashes,
//! which does not depend on the order rows are read in and adds up across slices.

use cutover_model::{Array, TableName, Value};

use crate::{ConnectorError, ErrorKind};
use md5::{Digest, Md5};

/// How deep JSON may nest (arrays and objects, the outermost counting as 1) for its canonical
/// text; deeper documents are a [`CanonicalError::JsonTooDeep`]. The canonicaliser parses,
/// writes and drops documents without recursion, so no depth can overflow a stack: the limit
/// bounds the work per value and keeps every engine's implementation simple (SQLite's registered
/// functions are this code; another engine may need recursion). 1,000 is ten times what MySQL
/// allows (100) and well above serde_json's default (128); PostgreSQL has no fixed limit (jsonb
/// nests until `max_stack_depth`, 2 MB by default, allows), so a PostgreSQL table can hold
/// documents cutover does not canonicalise in Rust; see `docs/CANONICAL.md`.
pub const MAX_JSON_DEPTH: usize = 1_000;

/// A value that has no canonical text. Callers name the table, column and key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CanonicalError {
    #[error("a JSON value nests deeper than {limit} levels, the most cutover compares")]
    JsonTooDeep { limit: usize },
    #[error("a text value is not valid UTF-8 (byte {valid_up_to} starts an invalid sequence)")]
    InvalidUtf8 { valid_up_to: usize },
}

impl CanonicalError {
    /// The error as an engine reports it: where the value is (table, column, key; never the
    /// value) and the fix.
    pub fn at(&self, table: &TableName, column: &str, key: &[Value]) -> ConnectorError {
        let (kind, fix) = match self {
            CanonicalError::JsonTooDeep { .. } => (
                ErrorKind::UnsupportedType,
                "verify cannot compare this row; flatten the document, or leave the table out \
                 (--exclude-tables)",
            ),
            CanonicalError::InvalidUtf8 { .. } => (
                ErrorKind::InvalidInput,
                "text must be UTF-8 to compare as text; store such values as BLOB \
                 (UPDATE … SET col = CAST(col AS BLOB)), or correct the text",
            ),
        };
        ConnectorError::new(
            kind,
            format!(
                "table {table}, column {column}, key {}: {self}: {fix}",
                crate::key_text(key)
            ),
        )
    }
}

/// The canonical text of `v`, `None` for NULL.
pub fn value_text(v: &Value) -> Result<Option<String>, CanonicalError> {
    Ok(Some(match v {
        Value::Null => return Ok(None),
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
        Value::Json(s) => json_text(s)?.unwrap_or_else(|| s.clone()),
        Value::Array(a) => array_text(a)?,
        Value::Raw { text, .. } => text.clone(),
    }))
}

/// Text from a database as canonical text: valid UTF-8 or an error, never replaced.
pub fn text_from_bytes(b: &[u8]) -> Result<&str, CanonicalError> {
    std::str::from_utf8(b).map_err(|e| CanonicalError::InvalidUtf8 {
        valid_up_to: e.valid_up_to(),
    })
}

/// PostgreSQL's array output (`array_out`) of the elements' canonical texts: `{1,2,NULL}`,
/// `{{1,2},{3,4}}`, `[0:1]={a,b}` when a lower bound is not 1, `{}` when empty.
pub fn array_text(a: &Array) -> Result<String, CanonicalError> {
    array_literal(a, value_text)
}

/// An array in PostgreSQL's array notation (what `array_out` writes and `array_in` reads),
/// each element's text given by `element` (`None`: NULL) and quoted where `array_out` would:
/// the one writer of array text for the canonical form and for the engines' own encodings.
pub fn array_literal<E>(
    a: &Array,
    mut element: impl FnMut(&Value) -> Result<Option<String>, E>,
) -> Result<String, E> {
    let mut out = String::new();
    if a.dims.is_empty() || a.dims.iter().any(|&(_, len)| len <= 0) {
        return Ok("{}".to_owned());
    }
    if a.dims.iter().any(|&(lower, _)| lower != 1) {
        for &(lower, len) in &a.dims {
            let upper = i64::from(lower) + i64::from(len) - 1;
            out.push_str(&format!("[{lower}:{upper}]"));
        }
        out.push('=');
    }
    let mut elements = a.elements.iter();
    array_level(&a.dims, &mut elements, &mut element, &mut out)?;
    Ok(out)
}

fn array_level<E>(
    dims: &[(i32, i32)],
    elements: &mut std::slice::Iter<'_, Value>,
    element: &mut impl FnMut(&Value) -> Result<Option<String>, E>,
    out: &mut String,
) -> Result<(), E> {
    let Some((&(_, len), inner)) = dims.split_first() else {
        return Ok(());
    };
    out.push('{');
    for i in 0..len {
        if i > 0 {
            out.push(',');
        }
        if !inner.is_empty() {
            array_level(inner, elements, element, out)?;
            continue;
        }
        // Fewer elements than the dimensions say (a malformed array): the rest are NULL.
        match elements.next().map(&mut *element).transpose()?.flatten() {
            None => out.push_str("NULL"),
            Some(text) => push_array_element(&text, out),
        }
    }
    out.push('}');
    Ok(())
}

/// One element as `array_out` writes it: quoted if empty, `NULL` in any case, or holding
/// `{`, `}`, `,`, `"`, `\` or white space (space, tab, newline, carriage return, vertical tab,
/// form feed); `"` and `\` backslash-escaped inside the quotes.
fn push_array_element(text: &str, out: &mut String) {
    let quote = text.is_empty()
        || text.eq_ignore_ascii_case("NULL")
        || text.bytes().any(|b| {
            matches!(
                b,
                b'{' | b'}' | b',' | b'"' | b'\\' | b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c
            )
        });
    if !quote {
        out.push_str(text);
        return;
    }
    out.push('"');
    for c in text.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
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

/// The canonical JSON text of a document, as `jsonb` prints it; `Ok(None)` if it is not JSON
/// (its canonical text is then the text as it is), an error if it nests deeper than
/// [`MAX_JSON_DEPTH`].
pub fn json_text(text: &str) -> Result<Option<String>, CanonicalError> {
    let mut p = JsonParser {
        s: text.as_bytes(),
        i: 0,
        too_deep: false,
    };
    let v = p.value();
    if p.too_deep {
        return Err(CanonicalError::JsonTooDeep {
            limit: MAX_JSON_DEPTH,
        });
    }
    let Some(v) = v else { return Ok(None) };
    p.ws();
    if p.i != p.s.len() {
        return Ok(None);
    }
    let mut out = String::with_capacity(text.len());
    write_json(&v, &mut out);
    Ok(Some(out))
}

enum Json {
    Null,
    Bool(bool),
    Number(String),
    Str(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

impl Drop for Json {
    /// Without recursion, however deep the document.
    fn drop(&mut self) {
        let mut children = match self {
            Json::Array(items) => std::mem::take(items),
            Json::Object(fields) => std::mem::take(fields).into_iter().map(|(_, v)| v).collect(),
            _ => return,
        };
        while let Some(mut child) = children.pop() {
            match &mut child {
                Json::Array(items) => children.append(items),
                Json::Object(fields) => {
                    children.extend(std::mem::take(fields).into_iter().map(|(_, v)| v))
                }
                _ => {}
            }
        }
    }
}

struct JsonParser<'a> {
    s: &'a [u8],
    i: usize,
    /// Set when nesting would pass [`MAX_JSON_DEPTH`]; parsing stops there.
    too_deep: bool,
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

    /// One value and everything nested in it, without recursion: containers being filled
    /// wait on `open`. `None` if it is not JSON (or, with `too_deep`, nests too deep).
    fn value(&mut self) -> Option<Json> {
        enum Open {
            Array(Vec<Json>),
            /// Fields so far, and the key whose value is being read.
            Object(Vec<(String, Json)>, String),
        }
        let mut open: Vec<Open> = Vec::new();
        loop {
            // Read the start of a value: a scalar, or an empty or newly opened container.
            self.ws();
            let mut done = match *self.s.get(self.i)? {
                b'n' => self.eat("null").then_some(Json::Null)?,
                b't' => self.eat("true").then_some(Json::Bool(true))?,
                b'f' => self.eat("false").then_some(Json::Bool(false))?,
                b'"' => Json::Str(self.string()?),
                b'[' | b'{' => {
                    if open.len() >= MAX_JSON_DEPTH {
                        self.too_deep = true;
                        return None;
                    }
                    let array = self.s[self.i] == b'[';
                    self.i += 1;
                    self.ws();
                    if array && self.eat("]") {
                        Json::Array(Vec::new())
                    } else if !array && self.eat("}") {
                        Json::Object(Vec::new())
                    } else if array {
                        open.push(Open::Array(Vec::new()));
                        continue;
                    } else {
                        let key = self.key()?;
                        open.push(Open::Object(Vec::new(), key));
                        continue;
                    }
                }
                _ => Json::Number(self.number()?),
            };
            // A value is complete: hand it to the container around it, closing containers
            // that end here.
            loop {
                let Some(top) = open.last_mut() else {
                    return Some(done);
                };
                self.ws();
                match top {
                    Open::Array(items) => {
                        items.push(done);
                        if self.eat(",") {
                            break;
                        }
                        if !self.eat("]") {
                            return None;
                        }
                        done = Json::Array(std::mem::take(items));
                    }
                    Open::Object(fields, key) => {
                        let key = std::mem::take(key);
                        fields.retain(|(name, _)| name != &key);
                        fields.push((key, done));
                        if self.eat(",") {
                            let next = self.key()?;
                            if let Some(Open::Object(_, key)) = open.last_mut() {
                                *key = next;
                            }
                            break;
                        }
                        if !self.eat("}") {
                            return None;
                        }
                        let mut fields = std::mem::take(fields);
                        fields.sort_by(|(a, _), (b, _)| {
                            a.len()
                                .cmp(&b.len())
                                .then_with(|| a.as_bytes().cmp(b.as_bytes()))
                        });
                        done = Json::Object(fields);
                    }
                }
                open.pop();
            }
        }
    }

    /// An object's key and the `:` after it.
    fn key(&mut self) -> Option<String> {
        self.ws();
        let k = self.string()?;
        self.ws();
        self.eat(":").then_some(k)
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

/// Writes a document without recursion: what is left to write waits on a stack.
fn write_json(v: &Json, out: &mut String) {
    enum Next<'a> {
        Value(&'a Json),
        Key(&'a str),
        Punct(&'static str),
    }
    let mut todo = vec![Next::Value(v)];
    while let Some(next) = todo.pop() {
        match next {
            Next::Punct(p) => out.push_str(p),
            Next::Key(k) => {
                write_json_string(k, out);
                out.push_str(": ");
            }
            Next::Value(Json::Null) => out.push_str("null"),
            Next::Value(Json::Bool(b)) => out.push_str(if *b { "true" } else { "false" }),
            Next::Value(Json::Number(n)) => out.push_str(n),
            Next::Value(Json::Str(s)) => write_json_string(s, out),
            Next::Value(Json::Array(items)) => {
                out.push('[');
                todo.push(Next::Punct("]"));
                for (i, item) in items.iter().enumerate().rev() {
                    todo.push(Next::Value(item));
                    if i > 0 {
                        todo.push(Next::Punct(", "));
                    }
                }
            }
            Next::Value(Json::Object(fields)) => {
                out.push('{');
                todo.push(Next::Punct("}"));
                for (i, (k, item)) in fields.iter().enumerate().rev() {
                    todo.push(Next::Value(item));
                    todo.push(Next::Key(k));
                    if i > 0 {
                        todo.push(Next::Punct(", "));
                    }
                }
            }
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
        let j = |t: &str| json_text(t).unwrap();
        assert_eq!(
            j(r#"{"bb":1.50,"a":[1e2,-0.0, 1E-2, "x\/\u00e9\t"], "c":{}}"#).as_deref(),
            Some(r#"{"a": [100, 0.0, 0.01, "x/é\t"], "c": {}, "bb": 1.50}"#)
        );
        assert_eq!(j(r#" {"a":1, "a" : 2} "#).as_deref(), Some(r#"{"a": 2}"#));
        assert_eq!(j("[1, 2"), None);
        assert_eq!(j("01"), None);
        assert_eq!(j(r#""\ud83d\ude00""#).as_deref(), Some("\"😀\""));
    }

    fn nested(depth: usize) -> String {
        format!("{}1{}", "[".repeat(depth), "]".repeat(depth))
    }

    #[test]
    fn json_deeper_than_the_limit_is_an_error_not_a_crash() {
        let too_deep = Err(CanonicalError::JsonTooDeep {
            limit: MAX_JSON_DEPTH,
        });
        for depth in [MAX_JSON_DEPTH + 1, 10_000, 100_000] {
            assert_eq!(json_text(&nested(depth)), too_deep, "{depth}");
            let objects = format!("{}1{}", r#"{"a":"#.repeat(depth), "}".repeat(depth));
            assert_eq!(json_text(&objects), too_deep, "{depth}");
            assert_eq!(value_text(&Value::Json(nested(depth))), too_deep);
            // Inside an array too.
            let a = Value::Array(Array::from_elements(vec![Value::Json(nested(depth))]));
            assert_eq!(value_text(&a), too_deep);
        }
        // Unclosed and deeper than the limit: too deep (it is not reported as "not JSON").
        assert_eq!(json_text(&"[".repeat(100_000)), too_deep);
    }

    #[test]
    fn json_at_the_limit_fits_a_small_stack() {
        // Nothing recurses per level: 64 KiB of stack are enough, even in debug builds.
        let (arrays, objects, deeper) = std::thread::Builder::new()
            .stack_size(64 * 1024)
            .spawn(|| {
                let objects = format!(
                    "{}1{}",
                    r#"{"a":"#.repeat(MAX_JSON_DEPTH),
                    "}".repeat(MAX_JSON_DEPTH)
                );
                let deeper = json_text(&nested(100_000));
                (
                    json_text(&nested(MAX_JSON_DEPTH)),
                    json_text(&objects),
                    deeper,
                )
            })
            .unwrap()
            .join()
            .unwrap();
        assert!(deeper.is_err());
        assert_eq!(arrays, Ok(Some(nested(MAX_JSON_DEPTH))));
        let expected = format!(
            "{}1{}",
            r#"{"a": "#.repeat(MAX_JSON_DEPTH),
            "}".repeat(MAX_JSON_DEPTH)
        );
        assert_eq!(objects, Ok(Some(expected)));
    }

    #[test]
    fn arrays_print_as_array_out_does() {
        let a = |elements: Vec<Value>| Value::Array(Array::from_elements(elements));
        let t = |s: &str| Value::Text(s.to_owned());
        let text = |v: &Value| value_text(v).unwrap().unwrap();
        assert_eq!(
            text(&a(vec![Value::Int(1), Value::Int(2), Value::Null])),
            "{1,2,NULL}"
        );
        assert_eq!(text(&a(vec![])), "{}");
        assert_eq!(
            text(&a(vec![
                t(""),
                t("null"),
                t("NULL"),
                t("NULLs"),
                t("a b"),
                t("x\"y"),
                t("back\\slash"),
                t("{}"),
                t("a,b"),
                t("tab\t"),
                t("v\u{b}"),
                t("plain"),
                t("é(x)"),
            ])),
            "{\"\",\"null\",\"NULL\",NULLs,\"a b\",\"x\\\"y\",\"back\\\\slash\",\"{}\",\"a,b\",\
             \"tab\t\",\"v\u{b}\",plain,é(x)}"
        );
        let two = Value::Array(Array {
            dims: vec![(1, 2), (1, 2)],
            elements: vec![Value::Int(1), Value::Int(2), Value::Int(3), Value::Null],
        });
        assert_eq!(text(&two), "{{1,2},{3,NULL}}");
        let shifted = Value::Array(Array {
            dims: vec![(0, 2), (-1, 1)],
            elements: vec![t("a"), t("b c")],
        });
        assert_eq!(text(&shifted), r#"[0:1][-1:-1]={{a},{"b c"}}"#);
        // Elements in their own canonical text.
        let mixed = a(vec![
            Value::Decimal("1.50".parse().unwrap()),
            Value::Float64(-0.0),
            Value::Bytes(vec![0, 255]),
            Value::Json(r#"{"b":1,"a":2}"#.to_owned()),
            Value::Bool(true),
        ]);
        assert_eq!(
            text(&mixed),
            r#"{1.5,-0,"\\x00ff","{\"a\": 2, \"b\": 1}",t}"#
        );
    }

    #[test]
    fn invalid_utf8_is_an_error() {
        assert_eq!(text_from_bytes(b"ok"), Ok("ok"));
        assert_eq!(
            text_from_bytes(b"a\xff"),
            Err(CanonicalError::InvalidUtf8 { valid_up_to: 1 })
        );
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
        let text = |v: &Value| value_text(v).unwrap();
        assert_eq!(text(&d("1.500")).as_deref(), Some("1.5"));
        assert_eq!(text(&d("0.00")).as_deref(), Some("0"));
        assert_eq!(text(&d("-Infinity")).as_deref(), Some("-Infinity"));
        assert_eq!(text(&Value::Null), None);
        assert_eq!(
            text(&Value::Bytes(vec![0, 255])).as_deref(),
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
            prop_assert_eq!(
                value_text(&Value::Decimal(short)).unwrap(),
                value_text(&Value::Decimal(long)).unwrap()
            );
        }

        #[test]
        fn json_whitespace_and_key_order_never_change_the_text(keys in proptest::collection::btree_map("[a-z]{1,5}", 0i64..1000, 0..6)) {
            let fwd: Vec<String> = keys.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
            let rev: Vec<String> = keys.iter().rev().map(|(k, v)| format!("\n \"{k}\" :  {v} ")).collect();
            let a = json_text(&format!("{{{}}}", fwd.join(","))).unwrap().unwrap();
            let b = json_text(&format!(" {{ {} }}", rev.join(" , "))).unwrap().unwrap();
            prop_assert_eq!(a, b);
        }
    }
}
