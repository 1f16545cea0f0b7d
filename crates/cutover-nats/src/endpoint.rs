//! `nats://[user[:password]@]host[:port][,host:port…][/]?stream=…&subject=…` and the settings it
//! carries. Parsing is pure (unit-tested).

use std::time::Duration;

use cutover_connector::{percent_decode, ConnectorError, ErrorKind};

/// A NATS JetStream target as the user named it.
#[derive(Debug, Clone, PartialEq)]
pub struct NatsEndpoint {
    /// `host:port` of each server.
    pub servers: Vec<String>,
    pub user: Option<String>,
    pub password: Option<String>,
    pub token: Option<String>,
    /// A `.creds` file (JWT + nkey seed).
    pub creds: Option<String>,
    /// A CA certificate (PEM) to verify the servers with; implies TLS.
    pub tls_ca: Option<String>,
    pub tls: bool,
    /// The JetStream stream the events go to (`?stream=`); default `cutover_<migration>`.
    pub stream: Option<String>,
    /// The first tokens of every subject (`?subject=`); default `cutover.<migration>`. A table's
    /// events go to `<subject>.<schema>.<table>`.
    pub subject: Option<String>,
    /// The stream's de-duplication window (`?dedup-window=` seconds), for a stream cutover
    /// creates.
    pub dedup_window: Duration,
    pub connect_timeout: Duration,
    /// The stream's replicas, for a stream cutover creates (`?replicas=`).
    pub replicas: usize,
}

/// JetStream's own default is two minutes; a sync that restarts later than the window after a
/// crash could publish its last batch again, so cutover asks for more.
pub const DEFAULT_DEDUP_WINDOW: Duration = Duration::from_secs(30 * 60);

fn invalid(msg: impl Into<String>) -> ConnectorError {
    ConnectorError::new(ErrorKind::InvalidInput, msg)
}

impl NatsEndpoint {
    /// Parses `url`; credentials the URL leaves out come from `<prefix>NATS_USER`,
    /// `NATS_PASSWORD`, `NATS_TOKEN` and `NATS_CREDS` (through `env`).
    pub fn parse(
        url: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<NatsEndpoint, ConnectorError> {
        let (tls, rest) = if let Some(r) = url.strip_prefix("nats://") {
            (false, r)
        } else if let Some(r) = url.strip_prefix("tls://") {
            (true, r)
        } else {
            return Err(invalid(format!(
                "{url:?}: a NATS URL starts with nats:// (or tls://), e.g. nats://127.0.0.1:4222?stream=school"
            )));
        };
        let (authority, query) = match rest.split_once('?') {
            Some((a, q)) => (a, q),
            None => (rest, ""),
        };
        let authority = authority.trim_end_matches('/');
        if authority.contains('/') {
            return Err(invalid(format!(
                "{url:?}: a NATS URL has no path; name the stream with ?stream=NAME"
            )));
        }
        let (userinfo, hosts) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let mut e = NatsEndpoint {
            servers: Vec::new(),
            user: None,
            password: None,
            token: None,
            creds: None,
            tls_ca: None,
            tls,
            stream: None,
            subject: None,
            dedup_window: DEFAULT_DEDUP_WINDOW,
            connect_timeout: Duration::from_secs(10),
            replicas: 1,
        };
        if let Some(u) = userinfo {
            match u.split_once(':') {
                Some((user, pass)) => {
                    e.user = Some(percent_decode(user, "user")?);
                    e.password = Some(percent_decode(pass, "password")?);
                }
                // A lone user part is a token, as the NATS clients read it.
                None => e.token = Some(percent_decode(u, "token")?),
            }
        }
        for h in hosts.split(',').filter(|h| !h.is_empty()) {
            let server = if h.contains(':') {
                h.to_owned()
            } else {
                format!("{h}:4222")
            };
            e.servers.push(server);
        }
        if e.servers.is_empty() {
            e.servers.push("127.0.0.1:4222".to_owned());
        }
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let v = percent_decode(v, "parameters")?;
            let secs = |what: &str| -> Result<Duration, ConnectorError> {
                v.parse::<u64>()
                    .map(Duration::from_secs)
                    .map_err(|_| invalid(format!("{what}={v}: give a number of seconds")))
            };
            match k {
                "stream" => e.stream = Some(check_stream_name(&v)?),
                "subject" => e.subject = Some(check_subject_prefix(&v)?),
                "dedup-window" | "dedup_window" => e.dedup_window = secs(k)?,
                "connect-timeout" | "connect_timeout" => e.connect_timeout = secs(k)?,
                "creds" => e.creds = Some(v),
                "tls-ca" | "tls_ca" => {
                    e.tls_ca = Some(v);
                    e.tls = true;
                }
                "tls" => e.tls = v == "true" || v == "1" || v.is_empty(),
                "replicas" => {
                    e.replicas = v
                        .parse()
                        .ok()
                        .filter(|n| (1..=5).contains(n))
                        .ok_or_else(|| invalid(format!("replicas={v}: give 1 to 5")))?
                }
                other => {
                    return Err(invalid(format!(
                    "{other}: not a setting of a NATS target; use stream, subject, dedup-window, \
                         connect-timeout, creds, tls-ca, tls, replicas"
                )))
                }
            }
        }
        if e.user.is_none() && e.token.is_none() {
            e.user = env("NATS_USER");
            e.password = env("NATS_PASSWORD");
            e.token = env("NATS_TOKEN");
        }
        if e.creds.is_none() {
            e.creds = env("NATS_CREDS");
        }
        Ok(e)
    }

    /// The URL without secrets, for messages.
    pub fn redacted(&self) -> String {
        let auth = match (&self.user, &self.token) {
            (Some(u), _) => format!("{u}:***@"),
            (None, Some(_)) => "***@".to_owned(),
            _ => String::new(),
        };
        let scheme = if self.tls { "tls" } else { "nats" };
        format!("{scheme}://{auth}{}", self.servers.join(","))
    }
}

/// A stream name JetStream accepts: no spaces, `.`, `*`, `>`, path separators.
pub fn check_stream_name(name: &str) -> Result<String, ConnectorError> {
    if name.is_empty()
        || name
            .chars()
            .any(|c| c.is_whitespace() || matches!(c, '.' | '*' | '>' | '/' | '\\'))
    {
        return Err(invalid(format!(
            "stream={name:?}: a JetStream stream name cannot be empty or hold spaces, '.', '*', '>', '/' or '\\'"
        )));
    }
    Ok(name.to_owned())
}

fn check_subject_prefix(prefix: &str) -> Result<String, ConnectorError> {
    if prefix.is_empty()
        || prefix.split('.').any(|t| {
            t.is_empty()
                || t.chars()
                    .any(|c| c.is_whitespace() || matches!(c, '*' | '>'))
        })
    {
        return Err(invalid(format!(
            "subject={prefix:?}: give dot-separated tokens without spaces or wildcards (cutover.school)"
        )));
    }
    Ok(prefix.to_owned())
}

/// `name` as one subject token: characters NATS gives meaning to (`.`, `*`, `>`, spaces) and
/// anything outside printable ASCII become `_`.
pub fn subject_token(name: &str) -> String {
    let t: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && !matches!(c, '.' | '*' | '>') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if t.is_empty() {
        "_".to_owned()
    } else {
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn none(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn a_full_url_parses() {
        let e = NatsEndpoint::parse(
            "nats://app:p%40ss@h1:4222,h2?stream=school&subject=cdc.school&dedup-window=60&replicas=3",
            &none,
        )
        .unwrap();
        assert_eq!(e.servers, ["h1:4222", "h2:4222"]);
        assert_eq!(e.user.as_deref(), Some("app"));
        assert_eq!(e.password.as_deref(), Some("p@ss"));
        assert_eq!(e.stream.as_deref(), Some("school"));
        assert_eq!(e.subject.as_deref(), Some("cdc.school"));
        assert_eq!(e.dedup_window, Duration::from_secs(60));
        assert_eq!(e.replicas, 3);
        assert_eq!(e.redacted(), "nats://app:***@h1:4222,h2:4222");
    }

    #[test]
    fn credentials_come_from_the_environment_when_the_url_has_none() {
        let env = |k: &str| (k == "NATS_PASSWORD" || k == "NATS_USER").then(|| format!("v-{k}"));
        let e = NatsEndpoint::parse("nats://127.0.0.1:4222", &env).unwrap();
        assert_eq!(e.user.as_deref(), Some("v-NATS_USER"));
        assert_eq!(e.password.as_deref(), Some("v-NATS_PASSWORD"));
        assert_eq!(e.dedup_window, DEFAULT_DEDUP_WINDOW);
    }

    #[test]
    fn bad_urls_say_what_to_fix() {
        for (url, says) in [
            ("redis://x", "starts with nats://"),
            ("nats://h/school", "?stream=NAME"),
            ("nats://h?stream=a.b", "stream name"),
            ("nats://h?subject=a..b", "dot-separated"),
            ("nats://h?dedup-window=soon", "seconds"),
            ("nats://h?color=red", "not a setting"),
        ] {
            let e = NatsEndpoint::parse(url, &none).unwrap_err().to_string();
            assert!(e.contains(says), "{url}: {e}");
        }
    }

    #[test]
    fn table_names_become_single_tokens() {
        assert_eq!(subject_token("students"), "students");
        assert_eq!(subject_token("a.b c*>"), "a_b_c__");
        assert_eq!(subject_token(""), "_");
    }
}
