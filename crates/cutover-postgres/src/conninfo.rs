//! libpq's connection settings: URLs and keyword/value strings, the `PG*` environment
//! variables, the connection service file and the password file, resolved in libpq's order.
//!
//! Precedence for each setting (as libpq's `conninfo_add_defaults`): the string given >
//! the service's section in the service file (`service=` in the string, else `PGSERVICE`) >
//! the environment variable > the default. The password, if still unknown, comes from the
//! password file (`passfile`, `PGPASSFILE`, `~/.pgpass`). With an environment prefix, every
//! variable is read under it (`OLD_PGHOST`, `OLD_PGPASSFILE`, …) and the plain ones are not.
//!
//! Parsing is pure; [`resolve`] reads the two files it is pointed at and nothing else.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A connection string that cannot be understood, or a file it points at that cannot be used.
/// Messages name the part that is wrong and never contain a password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConnInfoError(pub String);

fn err(msg: impl Into<String>) -> ConnInfoError {
    ConnInfoError(msg.into())
}

/// The keywords libpq knows, with the variable each falls back to. Cutover honours the ones
/// [`crate::endpoint`] builds its configuration from and refuses the others when they ask
/// for something it cannot do.
const KEYWORDS: &[(&str, Option<&str>)] = &[
    ("host", Some("PGHOST")),
    ("hostaddr", Some("PGHOSTADDR")),
    ("port", Some("PGPORT")),
    ("dbname", Some("PGDATABASE")),
    ("user", Some("PGUSER")),
    ("password", Some("PGPASSWORD")),
    ("passfile", Some("PGPASSFILE")),
    ("service", Some("PGSERVICE")),
    ("sslmode", Some("PGSSLMODE")),
    ("sslrootcert", Some("PGSSLROOTCERT")),
    ("sslcert", Some("PGSSLCERT")),
    ("sslkey", Some("PGSSLKEY")),
    ("sslpassword", None),
    ("sslcrl", Some("PGSSLCRL")),
    ("sslcrldir", Some("PGSSLCRLDIR")),
    ("sslsni", Some("PGSSLSNI")),
    ("sslcompression", Some("PGSSLCOMPRESSION")),
    ("sslnegotiation", Some("PGSSLNEGOTIATION")),
    ("ssl_min_protocol_version", Some("PGSSLMINPROTOCOLVERSION")),
    ("ssl_max_protocol_version", Some("PGSSLMAXPROTOCOLVERSION")),
    ("requiressl", None),
    ("requirepeer", Some("PGREQUIREPEER")),
    ("gssencmode", Some("PGGSSENCMODE")),
    ("krbsrvname", Some("PGKRBSRVNAME")),
    ("gsslib", Some("PGGSSLIB")),
    ("gssdelegation", Some("PGGSSDELEGATION")),
    ("channel_binding", Some("PGCHANNELBINDING")),
    ("require_auth", Some("PGREQUIREAUTH")),
    ("connect_timeout", Some("PGCONNECT_TIMEOUT")),
    ("client_encoding", Some("PGCLIENTENCODING")),
    ("options", Some("PGOPTIONS")),
    ("application_name", Some("PGAPPNAME")),
    ("fallback_application_name", None),
    ("keepalives", None),
    ("keepalives_idle", None),
    ("keepalives_interval", None),
    ("keepalives_count", None),
    ("tcp_user_timeout", None),
    ("target_session_attrs", Some("PGTARGETSESSIONATTRS")),
    ("load_balance_hosts", Some("PGLOADBALANCEHOSTS")),
    ("replication", None),
];

fn known(keyword: &str) -> bool {
    KEYWORDS.iter().any(|(k, _)| *k == keyword)
}

/// Settings by libpq keyword, as given.
pub type Params = BTreeMap<String, String>;

/// Whether `s` is a string PostgreSQL should take although it has no `postgres://`: empty
/// (everything from the environment and the service file) or keyword/value (`host=db
/// dbname=app`, starting with a keyword and `=`).
pub fn claims(s: &str) -> bool {
    let s = s.trim_start();
    if s.is_empty() {
        return true;
    }
    let word: String = s
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    !word.is_empty() && s[word.len()..].trim_start().starts_with('=')
}

/// Whether `s` is a URL (`postgres://`, `postgresql://`) rather than keyword/value.
pub fn is_url(s: &str) -> bool {
    let lower = s.trim_start().to_ascii_lowercase();
    lower.starts_with("postgres://") || lower.starts_with("postgresql://")
}

/// Parses a URL or a keyword/value string into its settings (nothing filled in).
pub fn parse(s: &str) -> Result<Params, ConnInfoError> {
    if is_url(s) {
        parse_url(s.trim())
    } else {
        parse_keywords(s)
    }
}

/// libpq's `conninfo_parse`: `keyword = value` pairs separated by whitespace; a value is a
/// run of non-blanks or a single-quoted string, `\` escapes the next character in both.
fn parse_keywords(s: &str) -> Result<Params, ConnInfoError> {
    let mut params = Params::new();
    let mut chars = s.chars().peekable();
    let mut previous: Option<String> = None;
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            break;
        }
        let mut keyword = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            keyword.push(c);
            chars.next();
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.next() != Some('=') {
            // A word right after a password could be part of an unquoted password.
            let shown = if previous.as_deref() == Some("password") {
                "***".to_owned()
            } else {
                keyword.clone()
            };
            return Err(err(format!(
                "missing \"=\" after \"{shown}\" in the connection string (keyword=value pairs separated by spaces; quote values with spaces in them: password='a b')"
            )));
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'\'') {
            chars.next();
            let mut closed = false;
            while let Some(c) = chars.next() {
                match c {
                    '\\' => {
                        if let Some(n) = chars.next() {
                            value.push(n);
                        }
                    }
                    '\'' => {
                        closed = true;
                        break;
                    }
                    c => value.push(c),
                }
            }
            if !closed {
                return Err(err(format!(
                    "unterminated quoted string in the connection string (the value of {keyword})"
                )));
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                chars.next();
                if c == '\\' {
                    if let Some(n) = chars.next() {
                        value.push(n);
                    }
                } else {
                    value.push(c);
                }
            }
        }
        if !known(&keyword) {
            return Err(err(format!(
                "invalid connection option \"{keyword}\" in the connection string (libpq's keywords: host, port, dbname, user, password, sslmode, …)"
            )));
        }
        params.insert(keyword.clone(), value);
        previous = Some(keyword);
    }
    Ok(params)
}

/// libpq's `conninfo_uri_parse`:
/// `postgresql://[user[:password]@][host][:port][,…][/dbname][?keyword=value&…]`.
fn parse_url(url: &str) -> Result<Params, ConnInfoError> {
    let mut params = Params::new();
    let (_, rest) = url
        .split_once("://")
        .ok_or_else(|| err("not a postgres:// URL"))?;
    let (before_query, query) = match rest.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (rest, None),
    };
    let (authority, path) = match before_query.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (before_query, None),
    };
    let hostlist = match authority.rsplit_once('@') {
        Some((userinfo, hosts)) => {
            let (user, password) = match userinfo.split_once(':') {
                Some((u, p)) => (u, Some(p)),
                None => (userinfo, None),
            };
            if !user.is_empty() {
                params.insert("user".into(), decode(user, "the user name")?);
            }
            if let Some(p) = password {
                // Never echo any of it back.
                let p = decode(p, "the password").map_err(|_| {
                    err("invalid percent-encoding in the URL's password (write % as %25)")
                })?;
                params.insert("password".into(), p);
            }
            hosts
        }
        None => authority,
    };
    let mut hosts = Vec::new();
    let mut ports = Vec::new();
    if !hostlist.is_empty() {
        for spec in hostlist.split(',') {
            let (host, port) = if let Some(v6) = spec.strip_prefix('[') {
                let (addr, after) = v6.split_once(']').ok_or_else(|| {
                    err(format!(
                        "missing \"]\" after the IPv6 address in the URL's host \"{spec}\""
                    ))
                })?;
                let port = match after {
                    "" => None,
                    p => Some(p.strip_prefix(':').ok_or_else(|| {
                        err(format!(
                            "unexpected \"{p}\" after the IPv6 address [{addr}] in the URL"
                        ))
                    })?),
                };
                (addr.to_owned(), port)
            } else {
                match spec.split_once(':') {
                    Some((h, p)) => (decode(h, "a host name")?, Some(p)),
                    None => (decode(spec, "a host name")?, None),
                }
            };
            if let Some(p) = port {
                if !p.is_empty() && p.parse::<u16>().is_err() {
                    return Err(err(format!(
                        "invalid port \"{p}\" for host \"{host}\" in the URL (a number from 1 to 65535)"
                    )));
                }
            }
            hosts.push(host);
            ports.push(port.unwrap_or("").to_owned());
        }
        if hosts.iter().any(|h| !h.is_empty()) {
            params.insert("host".into(), hosts.join(","));
        }
        if ports.iter().any(|p| !p.is_empty()) {
            params.insert("port".into(), ports.join(","));
        }
    }
    if let Some(db) = path {
        if !db.is_empty() {
            params.insert("dbname".into(), decode(db, "the database name")?);
        }
    }
    for kv in query.into_iter().flat_map(|q| q.split('&')) {
        if kv.is_empty() {
            continue;
        }
        let (k, v) = kv.split_once('=').ok_or_else(|| {
            err(format!(
                "missing \"=\" in the URL's query parameter \"{}\" (write ?keyword=value&…)",
                if kv.to_ascii_lowercase().starts_with("password") {
                    "password…"
                } else {
                    kv
                }
            ))
        })?;
        let k = decode(k, "a query parameter's name")?;
        let v = if k == "password" {
            decode(v, "the password")
                .map_err(|_| err("invalid percent-encoding in the URL's password"))?
        } else {
            decode(v, &format!("the value of {k}"))?
        };
        // JDBC's spelling, as libpq accepts it.
        if k == "ssl" && v == "true" {
            params.insert("sslmode".into(), "require".into());
            continue;
        }
        if !known(&k) {
            return Err(err(format!(
                "invalid URL query parameter \"{k}\" (libpq's keywords: sslmode, sslrootcert, connect_timeout, application_name, …)"
            )));
        }
        params.insert(k, v);
    }
    Ok(params)
}

/// Percent-decoding, as libpq does (`%XX`; `+` stays `+`).
fn decode(s: &str, what: &str) -> Result<String, ConnInfoError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| {
                    err(format!(
                        "invalid percent-encoding in {what} of the URL (write % as %25)"
                    ))
                })?;
            if hex == 0 {
                return Err(err(format!("forbidden %00 in {what} of the URL")));
            }
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| err(format!("{what} in the URL is not valid UTF-8")))
}

/// The environment a side's settings are resolved in: a snapshot of the `PG*` variables under
/// one prefix, and the home directory (for `~/.pgpass`, `~/.pg_service.conf`,
/// `~/.postgresql/`).
#[derive(Debug, Clone, Default)]
pub struct Environment {
    prefix: String,
    vars: BTreeMap<String, String>,
    home: Option<PathBuf>,
    os_user: Option<String>,
}

impl Environment {
    /// The process's environment, with the variables of `prefix` (`None`: the plain `PG*`).
    pub fn process(prefix: Option<&str>) -> Environment {
        let home = std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .map(PathBuf::from);
        let os_user = os_user_name();
        Environment::new(prefix, std::env::vars(), home, os_user)
    }

    /// An environment of the given variables (for tests and for callers that hold their own).
    pub fn new(
        prefix: Option<&str>,
        vars: impl IntoIterator<Item = (String, String)>,
        home: Option<PathBuf>,
        os_user: Option<String>,
    ) -> Environment {
        let prefix = prefix.unwrap_or("").to_owned();
        let vars = vars
            .into_iter()
            .filter_map(|(k, v)| {
                let name = k.strip_prefix(prefix.as_str())?;
                name.starts_with("PG").then(|| (name.to_owned(), v))
            })
            .collect();
        Environment {
            prefix,
            vars,
            home,
            os_user,
        }
    }

    /// The variable `name` (`PGHOST`) under this environment's prefix.
    fn var(&self, name: &str) -> Option<&str> {
        self.vars.get(name).map(String::as_str)
    }

    /// How a variable is spelled here, for messages (`OLD_PGPASSFILE`).
    pub fn spelled(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// The home directory's file `name`.
    pub(crate) fn home_file(&self, name: &str) -> Option<PathBuf> {
        self.home.as_ref().map(|h| h.join(name))
    }
}

/// The name of the user this process runs as, from the password database, as libpq takes
/// its default user name (not `$USER`, which may be missing or stale).
#[cfg(unix)]
fn os_user_name() -> Option<String> {
    let mut buf = vec![0 as libc::c_char; 4096];
    // SAFETY: `pwd` and `buf` outlive the call; getpwuid_r writes into them only, and `result`
    // points at `pwd` (or is null) when it returns.
    unsafe {
        let mut pwd: libc::passwd = std::mem::zeroed();
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        let rc = libc::getpwuid_r(
            libc::geteuid(),
            &mut pwd,
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
        );
        if rc != 0 || result.is_null() || pwd.pw_name.is_null() {
            return None;
        }
        std::ffi::CStr::from_ptr(pwd.pw_name)
            .to_str()
            .ok()
            .map(str::to_owned)
    }
}

#[cfg(not(unix))]
fn os_user_name() -> Option<String> {
    std::env::var("USERNAME").ok().filter(|u| !u.is_empty())
}

/// Settings resolved in libpq's order, and where the password came from (for messages).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub params: Params,
    pub password_from: Option<String>,
    /// What was ignored, to be logged as a warning (a password file others can read).
    pub warnings: Vec<String>,
}

/// The service file's settings of a service, the string's own given first.
fn service_params(
    service: &str,
    env: &Environment,
) -> Result<Option<(Params, PathBuf)>, ConnInfoError> {
    let user_file = match env.var("PGSERVICEFILE") {
        Some(f) => Some(PathBuf::from(f)),
        None => env.home_file(".pg_service.conf"),
    };
    let sys_file =
        Path::new(env.var("PGSYSCONFDIR").unwrap_or(DEFAULT_SYSCONFDIR)).join("pg_service.conf");
    for file in user_file.into_iter().chain([sys_file]) {
        let text = match std::fs::read_to_string(&file) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(err(format!(
                    "cannot read the service file {}: {e}",
                    file.display()
                )))
            }
        };
        if let Some(p) = parse_service_file(&text, service, &file)? {
            return Ok(Some((p, file)));
        }
    }
    Ok(None)
}

/// Where libpq looks for `pg_service.conf` when `PGSYSCONFDIR` is not set (Debian's).
const DEFAULT_SYSCONFDIR: &str = "/etc/postgresql-common";

/// The `[service]` section of a service file: `keyword=value` lines, `#` comments.
fn parse_service_file(
    text: &str,
    service: &str,
    file: &Path,
) -> Result<Option<Params>, ConnInfoError> {
    let mut found: Option<Params> = None;
    let mut inside = false;
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[') {
            if found.is_some() && inside {
                break;
            }
            let name = name.strip_suffix(']').ok_or_else(|| {
                err(format!(
                    "syntax error in the service file {}, line {}: a section is [name]",
                    file.display(),
                    n + 1
                ))
            })?;
            inside = name.trim() == service;
            if inside {
                found = Some(Params::new());
            }
            continue;
        }
        if !inside {
            continue;
        }
        let (k, v) = line.split_once('=').ok_or_else(|| {
            err(format!(
                "syntax error in the service file {}, line {}: expected keyword=value",
                file.display(),
                n + 1
            ))
        })?;
        let (k, v) = (k.trim(), v.trim());
        if k == "service" {
            return Err(err(format!(
                "nested service specifications are not supported (service file {}, line {})",
                file.display(),
                n + 1
            )));
        }
        if !known(k) {
            return Err(err(format!(
                "invalid connection option \"{k}\" in the service file {}, line {}",
                file.display(),
                n + 1
            )));
        }
        if let Some(p) = found.as_mut() {
            p.entry(k.to_owned()).or_insert_with(|| v.to_owned());
        }
    }
    Ok(found)
}

/// `s` resolved in `env`: the string, then the service file, then the variables, then the
/// password file for a missing password. Defaults that depend on the machine (host, user)
/// are filled in too; the rest is left to the caller.
pub fn resolve(s: &str, env: &Environment) -> Result<Resolved, ConnInfoError> {
    let mut params = parse(s)?;
    let mut warnings = Vec::new();
    let mut password_from = params
        .contains_key("password")
        .then(|| "the connection string".to_owned());
    if let Some(service) = params
        .get("service")
        .cloned()
        .or_else(|| env.var("PGSERVICE").map(str::to_owned))
        .filter(|s| !s.is_empty())
    {
        let (from_file, file) = service_params(&service, env)?.ok_or_else(|| {
            err(format!(
                "definition of service \"{service}\" not found (looked in {}, then {}/pg_service.conf)",
                match env.var("PGSERVICEFILE") {
                    Some(f) => f.to_owned(),
                    None => "~/.pg_service.conf".to_owned(),
                },
                env.var("PGSYSCONFDIR").unwrap_or(DEFAULT_SYSCONFDIR)
            ))
        })?;
        if password_from.is_none() && from_file.contains_key("password") {
            password_from = Some(format!("the service file {}", file.display()));
        }
        for (k, v) in from_file {
            params.entry(k).or_insert(v);
        }
        params.insert("service".into(), service);
    }
    for (keyword, var) in KEYWORDS {
        let Some(var) = var else { continue };
        if params.contains_key(*keyword) {
            continue;
        }
        if let Some(v) = env.var(var) {
            if *keyword == "password" {
                password_from = Some(env.spelled(var));
            }
            params.insert((*keyword).to_owned(), v.to_owned());
        }
    }
    // Defaults libpq takes from the machine.
    let user = match params.get("user").filter(|u| !u.is_empty()) {
        Some(u) => u.clone(),
        None => env.os_user.clone().ok_or_else(|| {
            err(format!(
                "no user name: give user= (or user@ in the URL), or set {}",
                env.spelled("PGUSER")
            ))
        })?,
    };
    params.insert("user".into(), user.clone());
    if params.get("dbname").is_none_or(|d| d.is_empty()) {
        params.insert("dbname".into(), user);
    }
    if params.get("host").is_none_or(|h| h.is_empty()) && !params.contains_key("hostaddr") {
        params.insert("host".into(), default_host());
    }
    if params.get("password").is_none_or(|p| p.is_empty()) {
        let file = match params.get("passfile").filter(|f| !f.is_empty()) {
            Some(f) => Some(PathBuf::from(f)),
            None => env.home_file(".pgpass"),
        };
        if let Some(file) = file {
            match password_from_file(&file, &params) {
                Ok(Some(p)) => {
                    params.insert("password".into(), p);
                    password_from = Some(format!("the password file {}", file.display()));
                }
                Ok(None) => {}
                Err(warning) => warnings.push(warning),
            }
        }
    }
    Ok(Resolved {
        params,
        password_from,
        warnings,
    })
}

/// libpq's default host: its Unix socket directory (Debian's `/var/run/postgresql`, else
/// upstream's `/tmp`).
fn default_host() -> String {
    if Path::new("/var/run/postgresql").is_dir() {
        "/var/run/postgresql".to_owned()
    } else {
        "/tmp".to_owned()
    }
}

/// The password file's password for the first host, port, database and user (libpq's
/// `passwordFromFile`). `Err` is a warning: the file is ignored, as libpq does, when it is not
/// a plain file or others may read it.
fn password_from_file(file: &Path, params: &Params) -> Result<Option<String>, String> {
    let Ok(meta) = std::fs::metadata(file) else {
        return Ok(None);
    };
    if !meta.is_file() {
        return Err(format!(
            "password file \"{}\" is not a plain file; ignored",
            file.display()
        ));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if meta.permissions().mode() & 0o077 != 0 {
            return Err(format!(
                "password file \"{}\" has group or world access; permissions should be u=rw (0600) or less; ignored",
                file.display()
            ));
        }
    }
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) => {
            return Err(format!(
                "cannot read the password file \"{}\": {e}; ignored",
                file.display()
            ))
        }
    };
    let first = |k: &str| {
        params
            .get(k)
            .and_then(|v| v.split(',').next())
            .unwrap_or("")
            .to_owned()
    };
    let mut host = first("host");
    if host.is_empty() {
        host = first("hostaddr");
    }
    if host.is_empty() || host.starts_with('/') || host.starts_with('@') {
        host = "localhost".to_owned();
    }
    let mut port = first("port");
    if port.is_empty() {
        port = "5432".to_owned();
    }
    let wanted = [host, port, first("dbname"), first("user")];
    Ok(text.lines().find_map(|line| pgpass_line(line, &wanted)))
}

/// One line of a password file against host, port, database and user: fields separated by
/// `:`, `*` matches anything, `\` escapes `:` and `\`. The password is the rest of the line.
pub(crate) fn pgpass_line(line: &str, wanted: &[String; 4]) -> Option<String> {
    let line = line.trim_end_matches('\r');
    if line.starts_with('#') || line.is_empty() {
        return None;
    }
    let mut fields = Vec::with_capacity(5);
    let mut field = String::new();
    let mut raw_star = true;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if fields.len() == 4 {
            // The password: the rest, unescaped.
            match c {
                '\\' => field.push(chars.next().unwrap_or('\\')),
                c => field.push(c),
            }
            continue;
        }
        match c {
            '\\' => {
                raw_star = false;
                if let Some(n) = chars.next() {
                    field.push(n);
                }
            }
            ':' => {
                fields.push((std::mem::take(&mut field), raw_star));
                raw_star = true;
            }
            c => field.push(c),
        }
    }
    if fields.len() < 4 {
        return None;
    }
    let matches = fields
        .iter()
        .zip(wanted)
        .all(|((f, unescaped), w)| (*unescaped && f == "*") || f == w);
    matches.then_some(field)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pairs: &[(&str, &str)]) -> Params {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn keyword_strings_parse_like_libpq() {
        assert_eq!(
            parse("host=db port=5433 dbname = app user=bob").unwrap(),
            p(&[
                ("host", "db"),
                ("port", "5433"),
                ("dbname", "app"),
                ("user", "bob")
            ])
        );
        assert_eq!(
            parse(r"password='it''s' application_name='my app' options='-c x=\'y\''").unwrap_err(),
            err("missing \"=\" after \"***\" in the connection string (keyword=value pairs separated by spaces; quote values with spaces in them: password='a b')")
        );
        assert_eq!(
            parse(r"password='a b\'c' application_name=x\ y").unwrap(),
            p(&[("password", "a b'c"), ("application_name", "x y")])
        );
        assert_eq!(parse("").unwrap(), Params::new());
        let e = parse("host=db dbname").unwrap_err().0;
        assert!(e.contains("missing \"=\" after \"dbname\""), "{e}");
        let e = parse("hots=db").unwrap_err().0;
        assert!(e.contains("invalid connection option \"hots\""), "{e}");
        let e = parse("host='db").unwrap_err().0;
        assert!(e.contains("unterminated quoted string"), "{e}");
    }

    #[test]
    fn urls_parse_like_libpq() {
        assert_eq!(
            parse("postgresql://bob:s%40cret@h1:5433,[::1]:5434/my%20db?sslmode=verify-ca&application_name=x").unwrap(),
            p(&[
                ("user", "bob"),
                ("password", "s@cret"),
                ("host", "h1,::1"),
                ("port", "5433,5434"),
                ("dbname", "my db"),
                ("sslmode", "verify-ca"),
                ("application_name", "x"),
            ])
        );
        assert_eq!(
            parse("postgres://%2Fvar%2Frun%2Fpostgresql/app").unwrap(),
            p(&[("host", "/var/run/postgresql"), ("dbname", "app")])
        );
        assert_eq!(parse("postgres://").unwrap(), Params::new());
        assert_eq!(
            parse("postgres:///app?service=old&ssl=true").unwrap(),
            p(&[
                ("dbname", "app"),
                ("service", "old"),
                ("sslmode", "require")
            ])
        );
        let e = parse("postgres://h:54x2/db").unwrap_err().0;
        assert!(e.contains("invalid port \"54x2\""), "{e}");
        let e = parse("postgres://h/db?bogus=1").unwrap_err().0;
        assert!(e.contains("invalid URL query parameter \"bogus\""), "{e}");
        let e = parse("postgres://u:se%zzcret@h/db").unwrap_err().0;
        assert!(!e.contains("zz") && e.contains("password"), "{e}");
    }

    #[test]
    fn claims_keyword_strings_and_empty_ones() {
        assert!(claims(""));
        assert!(claims("  "));
        assert!(claims("host=db dbname=app"));
        assert!(claims("service = old"));
        assert!(!claims("data/app.db"));
        assert!(!claims("app.db"));
        assert!(!claims("sqlite://a.db"));
    }

    fn wanted(h: &str, p: &str, d: &str, u: &str) -> [String; 4] {
        [h.into(), p.into(), d.into(), u.into()]
    }

    #[test]
    fn pgpass_lines_match_with_wildcards_and_escapes() {
        let w = wanted("db", "5432", "app", "bob");
        assert_eq!(pgpass_line("db:5432:app:bob:pw", &w), Some("pw".into()));
        assert_eq!(
            pgpass_line("*:*:*:bob:pw:with:colons", &w),
            Some("pw:with:colons".into())
        );
        assert_eq!(pgpass_line("*:*:*:alice:pw", &w), None);
        assert_eq!(pgpass_line("# db:5432:app:bob:pw", &w), None);
        assert_eq!(pgpass_line("db:5432:app", &w), None);
        assert_eq!(
            pgpass_line(r"db:5432:app:bob:a\:b\\c", &w),
            Some(r"a:b\c".into())
        );
        let w = wanted("h:x", "5432", "*", "bob");
        assert_eq!(pgpass_line(r"h\:x:*:\*:bob:pw", &w), Some("pw".into()));
        assert_eq!(
            pgpass_line(r"h\:x:*:\*:bob:pw", &wanted("h:x", "1", "app", "bob")),
            None
        );
    }

    #[test]
    fn service_file_sections() {
        let text = "# comment\n[old]\nhost=db1\nport = 5433\n\n[new]\nhost=db2\n";
        let f = Path::new("/x");
        assert_eq!(
            parse_service_file(text, "old", f).unwrap(),
            Some(p(&[("host", "db1"), ("port", "5433")]))
        );
        assert_eq!(parse_service_file(text, "none", f).unwrap(), None);
        assert!(parse_service_file("[a]\nservice=b\n", "a", f).is_err());
        assert!(parse_service_file("[a]\nhots=b\n", "a", f).is_err());
    }

    #[test]
    fn string_then_service_then_environment_then_defaults() {
        let dir = std::env::temp_dir().join(format!("cutover-conninfo-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let services = dir.join("services.conf");
        std::fs::write(&services, "[old]\nhost=svc-host\ndbname=svc-db\n").unwrap();
        let env = Environment::new(
            Some("OLD_"),
            [
                (
                    "OLD_PGSERVICEFILE".to_owned(),
                    services.display().to_string(),
                ),
                ("OLD_PGHOST".to_owned(), "env-host".to_owned()),
                ("OLD_PGPORT".to_owned(), "6000".to_owned()),
                ("OLD_PGPASSWORD".to_owned(), "from-env".to_owned()),
                ("PGPASSWORD".to_owned(), "not-this-one".to_owned()),
                ("PGUSER".to_owned(), "not-this-one".to_owned()),
            ],
            Some(dir.clone()),
            Some("osuser".to_owned()),
        );
        let r = resolve("service=old dbname=given", &env).unwrap();
        assert_eq!(r.params["host"], "svc-host");
        assert_eq!(r.params["dbname"], "given");
        assert_eq!(r.params["port"], "6000");
        assert_eq!(r.params["user"], "osuser");
        assert_eq!(r.params["password"], "from-env");
        assert_eq!(r.password_from.as_deref(), Some("OLD_PGPASSWORD"));
        let r = resolve("", &Environment::new(None, [], None, Some("me".into()))).unwrap();
        assert_eq!(r.params["dbname"], "me");
        let e = resolve("service=nope", &env).unwrap_err().0;
        assert!(
            e.contains("definition of service \"nope\" not found"),
            "{e}"
        );

        // A password file others can read is ignored with a warning.
        use std::os::unix::fs::PermissionsExt;
        let pgpass = dir.join("pgpass");
        std::fs::write(&pgpass, "h:5432:d:u:secret\n").unwrap();
        std::fs::set_permissions(&pgpass, std::fs::Permissions::from_mode(0o644)).unwrap();
        let env = Environment::new(None, [], None, None);
        let s = format!("host=h dbname=d user=u passfile={}", pgpass.display());
        let r = resolve(&s, &env).unwrap();
        assert!(!r.params.contains_key("password"));
        assert!(
            r.warnings[0].contains("group or world access"),
            "{:?}",
            r.warnings
        );
        std::fs::set_permissions(&pgpass, std::fs::Permissions::from_mode(0o600)).unwrap();
        let r = resolve(&s, &env).unwrap();
        assert_eq!(r.params["password"], "secret");
        assert!(r.warnings.is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
