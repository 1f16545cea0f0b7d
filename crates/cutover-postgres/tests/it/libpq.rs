//! Issue 11 §2–3: libpq's conventions (PG* variables, the password file, the service file,
//! keyword/value strings, per-side prefixes) with a password-protected role, and TLS with a
//! private CA (verify-ca, verify-full, require, client certificates) for query, apply and
//! replication connections, against one dedicated server with `ssl = on`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use cutover_connector::ErrorKind;
use cutover_pipeline::Control;
use cutover_postgres::conninfo::Environment;
use cutover_postgres::schema::Selection;
use cutover_postgres::{CaptureNames, PgConnect, PgEndpoint, TlsMode};
use cutover_testkit::{Pki, Postgres};

const PW_USER: &str = "pw_user";
const PW_SECRET: &str = "pw: s3cret\\'x";
const OTHER_USER: &str = "pw_other";
const OTHER_SECRET: &str = "other-secret";
const CERT_USER: &str = "cert_user";

struct Secure {
    pg: Postgres,
    pki: Pki,
    /// ca.crt, client.crt, client.key, other-ca.crt.
    dir: PathBuf,
    db: String,
}

/// The dedicated TLS server: `pw_user`/`pw_other` need their scram passwords, `cert_user`
/// logs in with a client certificate over TLS only, everyone else is trusted.
fn secure() -> &'static Secure {
    static SECURE: OnceLock<Secure> = OnceLock::new();
    SECURE.get_or_init(|| {
        let pki = Pki::generate(&["localhost", "127.0.0.1"]).unwrap();
        let mut setup = pki.server_setup();
        setup.hba = vec![
            format!("hostssl all {CERT_USER} 127.0.0.1/32 cert"),
            format!("host all {CERT_USER} 127.0.0.1/32 reject"),
            format!("host all {PW_USER} 127.0.0.1/32 scram-sha-256"),
            format!("host all {OTHER_USER} 127.0.0.1/32 scram-sha-256"),
        ];
        let pg = Postgres::dedicated_with(&setup).unwrap();
        let lit = |s: &str| s.replace('\'', "''");
        pg.psql(
            "",
            &format!(
                "SET password_encryption = 'scram-sha-256'; \
                 CREATE ROLE {PW_USER} LOGIN PASSWORD '{}'; \
                 CREATE ROLE {OTHER_USER} LOGIN PASSWORD '{}'; \
                 CREATE ROLE {CERT_USER} LOGIN;",
                lit(PW_SECRET),
                lit(OTHER_SECRET)
            ),
        )
        .unwrap();
        let db = pg.fresh_database("libpq").unwrap();
        let dir = temp_dir("pki");
        write(&dir.join("ca.crt"), &pki.ca_pem, 0o644);
        let client = pki.client(CERT_USER).unwrap();
        write(&dir.join("client.crt"), &client.cert_pem, 0o644);
        write(&dir.join("client.key"), &client.key_pem, 0o600);
        let other = Pki::generate(&["localhost"]).unwrap();
        write(&dir.join("other-ca.crt"), &other.ca_pem, 0o644);
        Secure { pg, pki, dir, db }
    })
}

fn temp_dir(what: &str) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "cutover-libpq-{what}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write(path: &Path, text: &str, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn env(prefix: Option<&str>, vars: &[(&str, &str)], home: Option<&Path>) -> Environment {
    Environment::new(
        prefix,
        vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        home.map(Path::to_path_buf),
        Some("nobody-here".to_owned()),
    )
}

/// Who the server says we are, and whether the session is encrypted.
fn whoami(e: &PgEndpoint) -> Result<(String, bool), cutover_connector::ConnectorError> {
    let mut c = e.connect()?;
    let row = c
        .query_one(
            "SELECT current_user::text, coalesce((SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()), false)",
            &[],
        )
        .unwrap();
    Ok((row.get(0), row.get(1)))
}

#[test]
fn a_password_role_is_reached_through_pg_variables_with_no_password_in_the_string() {
    let s = secure();
    let port = s.pg.port().to_string();
    let vars = [
        ("PGHOST", "127.0.0.1"),
        ("PGPORT", port.as_str()),
        ("PGUSER", PW_USER),
        ("PGDATABASE", s.db.as_str()),
        ("PGPASSWORD", PW_SECRET),
        ("PGAPPNAME", "from-env"),
    ];
    // All from the environment: the empty string.
    let e = PgEndpoint::resolve("", &env(None, &vars, None)).unwrap();
    assert_eq!(whoami(&e).unwrap().0, PW_USER);
    assert!(!format!("{e:?}").contains("s3cret"), "{e:?}");
    let mut c = e.connect().unwrap();
    let app: String = c
        .query_one("SELECT current_setting('application_name')", &[])
        .unwrap()
        .get(0);
    assert_eq!(app, "from-env");
    // A keyword/value string names what it names; the variables fill in the rest.
    let e = PgEndpoint::resolve(
        &format!("host=127.0.0.1 dbname={} application_name='my app'", s.db),
        &env(None, &vars, None),
    )
    .unwrap();
    assert_eq!(whoami(&e).unwrap().0, PW_USER);
    // A URL without a password, too.
    let e = PgEndpoint::resolve(
        &format!("postgres://{PW_USER}@127.0.0.1:{port}/{}", s.db),
        &env(None, &vars, None),
    )
    .unwrap();
    assert_eq!(whoami(&e).unwrap().0, PW_USER);
    // Without the variable the server's refusal says so, as an authentication error.
    let e = PgEndpoint::resolve(
        &format!("postgres://{PW_USER}@127.0.0.1:{port}/{}", s.db),
        &env(None, &[], None),
    )
    .unwrap();
    let err = whoami(&e).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Auth, "{err}");
}

#[test]
fn a_password_file_is_read_with_wildcards_and_ignored_when_others_can_read_it() {
    let s = secure();
    let home = temp_dir("home");
    let pgpass = home.join(".pgpass");
    let escaped = PW_SECRET.replace('\\', "\\\\").replace(':', "\\:");
    write(
        &pgpass,
        &format!(
            "# comment\n127.0.0.1:{}:*:{OTHER_USER}:wrong\n127.0.0.1:{}:*:{PW_USER}:{escaped}\n",
            s.pg.port(),
            s.pg.port()
        ),
        0o600,
    );
    let conn = format!(
        "host=127.0.0.1 port={} user={PW_USER} dbname={}",
        s.pg.port(),
        s.db
    );
    // ~/.pgpass in the home directory …
    let e = PgEndpoint::resolve(&conn, &env(None, &[], Some(&home))).unwrap();
    assert_eq!(whoami(&e).unwrap().0, PW_USER);
    // … or PGPASSFILE.
    let elsewhere = temp_dir("passfile").join("pass");
    std::fs::copy(&pgpass, &elsewhere).unwrap();
    let e = PgEndpoint::resolve(
        &conn,
        &env(None, &[("PGPASSFILE", elsewhere.to_str().unwrap())], None),
    )
    .unwrap();
    assert_eq!(whoami(&e).unwrap().0, PW_USER);
    // A file the group may read is ignored, as libpq ignores it.
    write(&pgpass, &std::fs::read_to_string(&pgpass).unwrap(), 0o640);
    let e = PgEndpoint::resolve(&conn, &env(None, &[], Some(&home))).unwrap();
    assert_eq!(whoami(&e).unwrap_err().kind(), ErrorKind::Auth);
}

#[test]
fn a_service_file_names_the_database_and_the_string_overrides_it() {
    let s = secure();
    let dir = temp_dir("service");
    let file = dir.join("pg_service.conf");
    write(
        &file,
        &format!(
            "[old]\nhost=127.0.0.1\nport={}\nuser={PW_USER}\ndbname={}\npassword={PW_SECRET}\n\n[new]\nhost=127.0.0.1\nport={}\nuser={OTHER_USER}\ndbname={}\npassword={OTHER_SECRET}\n",
            s.pg.port(),
            s.db,
            s.pg.port(),
            s.db
        ),
        0o600,
    );
    let vars = [("PGSERVICEFILE", file.to_str().unwrap())];
    for conn in ["service=old", "postgres://?service=old"] {
        let e = PgEndpoint::resolve(conn, &env(None, &vars, None)).unwrap();
        assert_eq!(whoami(&e).unwrap().0, PW_USER, "{conn}");
    }
    // PGSERVICE picks the service; PGSYSCONFDIR/pg_service.conf is looked at too.
    let e = PgEndpoint::resolve(
        "",
        &env(
            None,
            &[
                ("PGSERVICE", "new"),
                ("PGSYSCONFDIR", dir.to_str().unwrap()),
            ],
            None,
        ),
    )
    .unwrap();
    assert_eq!(whoami(&e).unwrap().0, OTHER_USER);
    // What the string gives wins over the service.
    let e = PgEndpoint::resolve(
        &format!("service=old user={OTHER_USER} password={OTHER_SECRET}"),
        &env(None, &vars, None),
    )
    .unwrap();
    assert_eq!(whoami(&e).unwrap().0, OTHER_USER);
    let err = PgEndpoint::resolve("service=missing", &env(None, &vars, None)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(
        err.to_string()
            .contains("definition of service \"missing\" not found"),
        "{err}"
    );
}

#[test]
fn prefixes_give_each_side_its_own_credentials() {
    let s = secure();
    let port = s.pg.port().to_string();
    let vars = [
        ("OLD_PGHOST", "127.0.0.1"),
        ("OLD_PGPORT", port.as_str()),
        ("OLD_PGUSER", PW_USER),
        ("OLD_PGPASSWORD", PW_SECRET),
        ("NEW_PGHOST", "127.0.0.1"),
        ("NEW_PGPORT", port.as_str()),
        ("NEW_PGUSER", OTHER_USER),
        ("NEW_PGPASSWORD", OTHER_SECRET),
        // Not read by a side with a prefix.
        ("PGUSER", "postgres"),
        ("PGPASSWORD", "nope"),
    ];
    let conn = format!("dbname={}", s.db);
    let old = PgEndpoint::resolve(&conn, &env(Some("OLD_"), &vars, None)).unwrap();
    let new = PgEndpoint::resolve(&conn, &env(Some("NEW_"), &vars, None)).unwrap();
    assert_eq!(whoami(&old).unwrap().0, PW_USER);
    assert_eq!(whoami(&new).unwrap().0, OTHER_USER);
}

#[test]
fn strings_that_cannot_be_parsed_say_which_part() {
    let e = env(None, &[], None);
    for (conn, says) in [
        ("host=db dbname", "missing \"=\" after \"dbname\""),
        ("host=db dbnme=app", "invalid connection option \"dbnme\""),
        ("host='db", "unterminated quoted string"),
        ("postgres://h:5x/db", "invalid port \"5x\""),
        (
            "postgres://h/db?sslmod=require",
            "invalid URL query parameter \"sslmod\"",
        ),
        ("host=db sslmode=verify", "sslmode=verify is not one of"),
        ("host=db connect_timeout=soon", "connect_timeout=\"soon\""),
    ] {
        let err = PgEndpoint::resolve(conn, &e).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{conn}: {err}");
        assert!(err.to_string().contains(says), "{conn}: {err}");
    }
}

fn tls(conn: &str) -> Result<PgEndpoint, cutover_connector::ConnectorError> {
    PgEndpoint::resolve(conn, &env(None, &[], None))
}

#[test]
fn tls_verify_ca_verify_full_require_and_client_certificates() {
    let s = secure();
    let ca = s.dir.join("ca.crt");
    let ca = ca.display();
    let base = format!("port={} user=postgres dbname={}", s.pg.port(), s.db);

    // verify-full: the certificate names 127.0.0.1 and localhost.
    for host in ["host=127.0.0.1", "host=localhost hostaddr=127.0.0.1"] {
        let e = tls(&format!(
            "{host} {base} sslmode=verify-full sslrootcert={ca}"
        ))
        .unwrap();
        assert_eq!(e.tls(), TlsMode::VerifyFull);
        assert_eq!(whoami(&e).unwrap(), ("postgres".to_owned(), true), "{host}");
    }
    // A name the certificate does not carry: verify-full refuses, verify-ca checks the chain only.
    let wrong = format!("host=db.wrong.example hostaddr=127.0.0.1 {base} sslrootcert={ca}");
    let err = whoami(&tls(&format!("{wrong} sslmode=verify-full")).unwrap()).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("db.wrong.example") && msg.contains("certificate"),
        "a clear message: {msg}"
    );
    assert_eq!(
        whoami(&tls(&format!("{wrong} sslmode=verify-ca")).unwrap()).unwrap(),
        ("postgres".to_owned(), true)
    );
    // Another CA: even verify-ca refuses.
    let other = s.dir.join("other-ca.crt");
    let err = whoami(
        &tls(&format!(
            "host=127.0.0.1 {base} sslmode=verify-ca sslrootcert={}",
            other.display()
        ))
        .unwrap(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("certificate"), "{err}");
    // require: encrypted, nothing checked, no CA needed.
    let e = tls(&format!("host=127.0.0.1 {base} sslmode=require")).unwrap();
    assert_eq!(whoami(&e).unwrap(), ("postgres".to_owned(), true));
    // … and with a CA given, checked as verify-ca (libpq's rule).
    let e = tls(&format!(
        "host=db.wrong.example hostaddr=127.0.0.1 {base} sslmode=require sslrootcert={}",
        other.display()
    ))
    .unwrap();
    assert_eq!(e.tls(), TlsMode::VerifyCa);
    assert!(whoami(&e).is_err());
    // A client certificate logs cert_user in; without it the server refuses.
    let cert = format!(
        "host=localhost hostaddr=127.0.0.1 port={} dbname={} user={CERT_USER} sslmode=verify-full sslrootcert={ca}",
        s.pg.port(),
        s.db
    );
    let with_cert = format!(
        "{cert} sslcert={} sslkey={}",
        s.dir.join("client.crt").display(),
        s.dir.join("client.key").display()
    );
    assert_eq!(
        whoami(&tls(&with_cert).unwrap()).unwrap(),
        (CERT_USER.to_owned(), true)
    );
    assert_eq!(
        whoami(&tls(&cert).unwrap()).unwrap_err().kind(),
        ErrorKind::Auth
    );
    // A key others may read is refused before connecting.
    let loose = temp_dir("loose").join("client.key");
    write(
        &loose,
        &std::fs::read_to_string(s.dir.join("client.key")).unwrap(),
        0o644,
    );
    let err = tls(&format!(
        "{cert} sslcert={} sslkey={}",
        s.dir.join("client.crt").display(),
        loose.display()
    ))
    .unwrap_err();
    assert!(err.to_string().contains("group or world access"), "{err}");
    let _ = &s.pki;
}

/// Query, apply (pipelined, async) and replication connections over verify-full: an
/// in-process sync between two databases of the TLS server catches up.
#[test]
fn sync_runs_over_verify_full() {
    let s = secure();
    let src = s.pg.fresh_database("tls_s").unwrap();
    let dst = s.pg.fresh_database("tls_t").unwrap();
    s.pg.psql(
        &src,
        "CREATE TABLE t (id int PRIMARY KEY, v text); \
         INSERT INTO t SELECT g, 'row ' || g FROM generate_series(1, 500) g;",
    )
    .unwrap();
    let conn = |db: &str| {
        format!(
            "host=localhost hostaddr=127.0.0.1 port={} user=postgres dbname={db} sslmode=verify-full sslrootcert={}",
            s.pg.port(),
            s.dir.join("ca.crt").display()
        )
    };
    let se = tls(&conn(&src)).unwrap();
    let te = tls(&conn(&dst)).unwrap();
    let names = CaptureNames::for_migration(&dst);
    let side = |e: &PgEndpoint, peer: &PgEndpoint| PgConnect {
        endpoint: e.clone(),
        peer: Some(peer.clone()),
        selection: Selection::default(),
        names: names.clone(),
        truncate: false,
        jobs: 2,
    };
    let (sc, tc) = (side(&se, &te), side(&te, &se));
    let opts = cutover_pipeline::SyncOptions {
        stop_when_caught_up: true,
        ..Default::default()
    };
    let control = Arc::new(Control::default());
    let progress = Arc::new(cutover_connector::Progress::default());
    // Changes while the first run copies would need a writer; a second run picks up a
    // change made after the first through the replication connection.
    cutover_pipeline::run(&sc, &tc, &opts, &control, &progress).unwrap();
    s.pg.psql(
        &src,
        "UPDATE t SET v = 'changed' WHERE id = 7; DELETE FROM t WHERE id = 8;",
    )
    .unwrap();
    let report = cutover_pipeline::run(&sc, &tc, &opts, &control, &progress).unwrap();
    assert!(report.changes_applied >= 2, "{report:?}");
    let check = |db: &str| {
        s.pg.psql(db, "SELECT count(*), max(v) FILTER (WHERE id = 7) FROM t")
            .unwrap()
    };
    assert_eq!(check(&dst), "499|changed");
    // The replication session is encrypted too.
    let _ = cutover_postgres::cleanup(&se, &te, &names);
}
