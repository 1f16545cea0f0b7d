//! `kafka://host[:port][,host:port…][/]?prefix=…&partitions=…` and the settings it carries,
//! topic names, and the partition of a key. Pure (unit-tested).

use std::time::Duration;

use cutover_connector::{percent_decode, ConnectorError, ErrorKind};
use cutover_model::TableName;

/// A Kafka target as the user named it.
#[derive(Debug, Clone, PartialEq)]
pub struct KafkaEndpoint {
    /// `host:port` of each bootstrap broker.
    pub brokers: Vec<String>,
    /// The first part of every topic (`?prefix=`); default the migration's name. A table's
    /// events go to `<prefix>.<schema>.<table>`.
    pub prefix: Option<String>,
    /// Partitions of a topic cutover creates (`?partitions=`).
    pub partitions: i32,
    /// Replicas of a topic cutover creates (`?replication=`).
    pub replication: i16,
    /// The largest message the brokers take (`?max-message-bytes=`): the broker's
    /// `message.max.bytes` and the topics' `max.message.bytes`, 1048588 by default in Kafka.
    pub max_message_bytes: usize,
    pub connect_timeout: Duration,
}

/// Kafka's own default for `message.max.bytes` (1 MiB and a record batch's header).
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 1_048_588;

/// The longest topic name Kafka takes.
const MAX_TOPIC: usize = 249;

fn invalid(msg: impl Into<String>) -> ConnectorError {
    ConnectorError::new(ErrorKind::InvalidInput, msg)
}

impl KafkaEndpoint {
    pub fn parse(url: &str) -> Result<KafkaEndpoint, ConnectorError> {
        let Some(rest) = url.strip_prefix("kafka://") else {
            return Err(invalid(format!(
                "{url:?}: a Kafka URL starts with kafka://, e.g. kafka://127.0.0.1:9092?prefix=school"
            )));
        };
        let (authority, query) = rest.split_once('?').unwrap_or((rest, ""));
        let authority = authority.trim_end_matches('/');
        if authority.contains('/') {
            return Err(invalid(format!(
                "{url:?}: a Kafka URL has no path; name the topics' prefix with ?prefix=NAME"
            )));
        }
        if authority.contains('@') {
            return Err(invalid(format!(
                "{url:?}: this build talks to Kafka without authentication (no SASL, no TLS): \
                 leave the user out of the URL"
            )));
        }
        let mut e = KafkaEndpoint {
            brokers: Vec::new(),
            prefix: None,
            partitions: 1,
            replication: 1,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            connect_timeout: Duration::from_secs(10),
        };
        for h in authority.split(',').filter(|h| !h.is_empty()) {
            e.brokers.push(if h.contains(':') {
                h.to_owned()
            } else {
                format!("{h}:9092")
            });
        }
        if e.brokers.is_empty() {
            e.brokers.push("127.0.0.1:9092".to_owned());
        }
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let v = percent_decode(v, "parameters")?;
            let number = |what: &str, range: std::ops::RangeInclusive<u64>| {
                v.parse::<u64>()
                    .ok()
                    .filter(|n| range.contains(n))
                    .ok_or_else(|| {
                        invalid(format!(
                            "{what}={v}: give a number from {} to {}",
                            range.start(),
                            range.end()
                        ))
                    })
            };
            match k {
                "prefix" => e.prefix = Some(check_prefix(&v)?),
                "partitions" => e.partitions = number(k, 1..=10_000)? as i32,
                "replication" => e.replication = number(k, 1..=32)? as i16,
                "max-message-bytes" | "max_message_bytes" => {
                    e.max_message_bytes = number(k, 1024..=(1 << 31) - 1)? as usize
                }
                "connect-timeout" | "connect_timeout" => {
                    e.connect_timeout = Duration::from_secs(number(k, 1..=3600)?)
                }
                other => {
                    return Err(invalid(format!(
                        "{other}: not a setting of a Kafka target; use prefix, partitions, replication, \
                         max-message-bytes, connect-timeout"
                    )))
                }
            }
        }
        Ok(e)
    }

    /// The URL, for messages (it holds no secrets).
    pub fn redacted(&self) -> String {
        format!("kafka://{}", self.brokers.join(","))
    }
}

fn check_prefix(prefix: &str) -> Result<String, ConnectorError> {
    if prefix.is_empty()
        || prefix.len() > 200
        || !prefix.chars().all(legal)
        || prefix.starts_with('.')
        || prefix.ends_with('.')
    {
        return Err(invalid(format!(
            "prefix={prefix:?}: give up to 200 of the characters a Kafka topic takes \
             (letters, digits, '.', '_', '-'), not starting or ending with '.'"
        )));
    }
    Ok(prefix.to_owned())
}

fn legal(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

/// `name` as one part of a topic name: characters Kafka does not take in a topic name, and
/// `.` (which separates the parts), become `_`.
pub fn topic_part(name: &str) -> String {
    let t: String = name
        .chars()
        .map(|c| if legal(c) && c != '.' { c } else { '_' })
        .collect();
    if t.is_empty() {
        "_".to_owned()
    } else {
        t
    }
}

/// The topic of `table`'s events: `<prefix>.<schema>.<table>` (`<prefix>.<table>` for an
/// engine without schemas), Debezium's naming.
pub fn topic(prefix: &str, table: &TableName) -> Result<String, ConnectorError> {
    let name = match &table.schema {
        Some(s) => format!("{prefix}.{}.{}", topic_part(s), topic_part(&table.name)),
        None => format!("{prefix}.{}", topic_part(&table.name)),
    };
    if name.len() > MAX_TOPIC {
        return Err(invalid(format!(
            "the topic of {table} would be {} characters long ({name}), more than Kafka's {MAX_TOPIC}: \
             give a shorter ?prefix=",
            name.len()
        )));
    }
    Ok(name)
}

/// Kafka's murmur2 (the Java client's `Utils.murmur2`): what its default partitioner hashes a
/// message's key with.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let mut h: u32 = SEED ^ (data.len() as u32);
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if let Some(&b) = rest.first() {
        h ^= u32::from(b);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition the Java client's default partitioner gives a keyed message: the positive
/// part of `murmur2(key)` modulo the topic's partitions, so other producers and consumers of
/// the topic agree on where a key's messages are.
pub fn partition_of(key: &[u8], partitions: i32) -> i32 {
    if partitions <= 1 {
        return 0;
    }
    (murmur2(key) & 0x7fff_ffff) % partitions
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_url_parses() {
        let e = KafkaEndpoint::parse(
            "kafka://k1:9093,k2?prefix=school.cdc&partitions=6&replication=3&max-message-bytes=2097152&connect-timeout=5",
        )
        .unwrap();
        assert_eq!(e.brokers, ["k1:9093", "k2:9092"]);
        assert_eq!(e.prefix.as_deref(), Some("school.cdc"));
        assert_eq!((e.partitions, e.replication), (6, 3));
        assert_eq!(e.max_message_bytes, 2 << 20);
        assert_eq!(e.connect_timeout, Duration::from_secs(5));
        assert_eq!(e.redacted(), "kafka://k1:9093,k2:9092");
        let d = KafkaEndpoint::parse("kafka://").unwrap();
        assert_eq!(d.brokers, ["127.0.0.1:9092"]);
        assert_eq!(d.max_message_bytes, DEFAULT_MAX_MESSAGE_BYTES);
    }

    #[test]
    fn bad_urls_say_what_to_fix() {
        for (url, says) in [
            ("nats://x", "starts with kafka://"),
            ("kafka://h/school", "?prefix=NAME"),
            ("kafka://u:p@h", "without authentication"),
            ("kafka://h?prefix=a b", "characters a Kafka topic takes"),
            ("kafka://h?prefix=.a", "not starting or ending"),
            ("kafka://h?partitions=0", "from 1 to"),
            ("kafka://h?color=red", "not a setting"),
        ] {
            let e = KafkaEndpoint::parse(url).unwrap_err().to_string();
            assert!(e.contains(says), "{url}: {e}");
        }
    }

    #[test]
    fn topics_are_prefix_schema_table_with_illegal_characters_replaced() {
        let t = TableName::new(Some("public"), "students");
        assert_eq!(topic("school", &t).unwrap(), "school.public.students");
        let t = TableName::new(None, "a.b c/ü");
        assert_eq!(topic("p", &t).unwrap(), "p.a_b_c__");
        let long = TableName::new(None, &"x".repeat(250));
        assert!(topic("p", &long).unwrap_err().to_string().contains("249"));
    }

    #[test]
    fn murmur2_matches_the_java_clients_test_vectors() {
        // org.apache.kafka.common.utils.UtilsTest#testMurmur2.
        for (key, hash) in [
            ("21", -973932308),
            ("foobar", -790332482),
            ("a-little-bit-long-string", -985981536),
            ("a-little-bit-longer-string", -1486304829),
            (
                "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58897971,
            ),
            ("abc", 479470107),
        ] {
            assert_eq!(murmur2(key.as_bytes()), hash, "{key}");
        }
        assert_eq!(partition_of(b"21", 1), 0);
        assert_eq!(partition_of(b"21", 7), (-973932308i32 & 0x7fff_ffff) % 7);
    }
}
