//! Issue 11 §2–3 from the command line: no password on it (PG* variables, ~/.pgpass, a service
//! file), --source-env-prefix/--target-env-prefix giving the two sides different credentials,
//! an ill-formed string refused as such, and a sync whose replication runs over verify-full with
//! a private CA.

use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

use cutover_testkit::{Pki, Postgres};

use super::{command, text};

const PW_USER: &str = "pw_user";
const PW_SECRET: &str = "cli-s3cret";
const OTHER_USER: &str = "pw_other";
const OTHER_SECRET: &str = "cli-other";

struct Secure {
    pg: Postgres,
    dir: tempfile::TempDir,
}

fn secure() -> &'static Secure {
    static SECURE: OnceLock<Secure> = OnceLock::new();
    SECURE.get_or_init(|| {
        let pki = Pki::generate(&["localhost", "127.0.0.1"]).unwrap();
        let mut setup = pki.server_setup();
        setup.hba = vec![
            format!("host all {PW_USER} 127.0.0.1/32 scram-sha-256"),
            format!("host all {OTHER_USER} 127.0.0.1/32 scram-sha-256"),
        ];
        let pg = Postgres::dedicated_with(&setup).unwrap();
        pg.psql(
            "",
            &format!(
                "CREATE ROLE {PW_USER} LOGIN PASSWORD '{PW_SECRET}'; \
                 CREATE ROLE {OTHER_USER} LOGIN PASSWORD '{OTHER_SECRET}';"
            ),
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.crt"), &pki.ca_pem).unwrap();
        Secure { pg, dir }
    })
}

/// Two databases with the same rows, readable by both password roles.
fn equal_pair(pg: &Postgres) -> (String, String) {
    let sql = "CREATE TABLE t (id int PRIMARY KEY, v text); \
               INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 200) g; \
               GRANT SELECT ON t TO pw_user, pw_other;";
    let a = pg.fresh_database("cli_libpq_a").unwrap();
    let b = pg.fresh_database("cli_libpq_b").unwrap();
    pg.psql(&a, sql).unwrap();
    pg.psql(&b, sql).unwrap();
    (a, b)
}

/// `cutover ARGS` with only the given PG* variables and HOME.
fn run(args: &[&str], vars: &[(&str, &str)], home: &Path) -> (i32, String, String) {
    let mut cmd: Command = command(args);
    for (k, _) in std::env::vars() {
        if k.contains("PG") {
            cmd.env_remove(k);
        }
    }
    cmd.env("HOME", home);
    for (k, v) in vars {
        cmd.env(k, v);
    }
    let o = cmd.output().unwrap();
    let (out, err) = text(&o);
    (o.status.code().unwrap_or(-1), out, err)
}

fn write_private(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

#[test]
fn verify_reaches_a_password_role_with_no_password_on_the_command_line() {
    let s = secure();
    let (a, b) = equal_pair(&s.pg);
    let port = s.pg.port().to_string();
    let home = tempfile::tempdir().unwrap();
    let url = |db: &str| format!("postgres://{PW_USER}@127.0.0.1:{port}/{db}");

    // PGPASSWORD.
    let (code, out, err) = run(
        &["verify", "--source", &url(&a), "--target", &url(&b)],
        &[("PGPASSWORD", PW_SECRET)],
        home.path(),
    );
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(!out.contains(PW_SECRET) && !err.contains(PW_SECRET));

    // Nothing: refused with the ways to give it.
    let (code, _, err) = run(
        &["verify", "--source", &url(&a), "--target", &url(&b)],
        &[],
        home.path(),
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("PGPASSWORD") && err.contains(".pgpass"),
        "{err}"
    );

    // ~/.pgpass (mode 0600) with keyword/value strings.
    write_private(
        &home.path().join(".pgpass"),
        &format!("127.0.0.1:{port}:*:{PW_USER}:{PW_SECRET}\n"),
    );
    let kv = |db: &str| format!("host=127.0.0.1 port={port} user={PW_USER} dbname={db}");
    let (code, out, err) = run(
        &["verify", "--source", &kv(&a), "--target", &kv(&b)],
        &[],
        home.path(),
    );
    assert_eq!(code, 0, "{out}\n{err}");

    // A service file (PGSERVICEFILE) and `service=` / PGDATABASE.
    let services = s.dir.path().join("services.conf");
    write_private(
        &services,
        &format!("[app]\nhost=127.0.0.1\nport={port}\nuser={PW_USER}\npassword={PW_SECRET}\n"),
    );
    let empty = tempfile::tempdir().unwrap();
    let (code, out, err) = run(
        &[
            "verify",
            "--source",
            &format!("service=app dbname={a}"),
            "--target",
            &format!("postgres:///{b}?service=app"),
        ],
        &[("PGSERVICEFILE", services.to_str().unwrap())],
        empty.path(),
    );
    assert_eq!(code, 0, "{out}\n{err}");
}

#[test]
fn prefix_flags_give_the_two_sides_different_credentials() {
    let s = secure();
    let (a, b) = equal_pair(&s.pg);
    let port = s.pg.port().to_string();
    let home = tempfile::tempdir().unwrap();
    // Only pw_user may connect to the source, only pw_other to the target.
    s.pg.psql("", &format!("REVOKE CONNECT ON DATABASE {a} FROM PUBLIC; GRANT CONNECT ON DATABASE {a} TO {PW_USER}; \
                            REVOKE CONNECT ON DATABASE {b} FROM PUBLIC; GRANT CONNECT ON DATABASE {b} TO {OTHER_USER};"))
        .unwrap();
    let vars = [
        ("OLD_PGHOST", "127.0.0.1"),
        ("OLD_PGPORT", port.as_str()),
        ("OLD_PGUSER", PW_USER),
        ("OLD_PGPASSWORD", PW_SECRET),
        ("OLD_PGDATABASE", a.as_str()),
        ("NEW_PGHOST", "127.0.0.1"),
        ("NEW_PGPORT", port.as_str()),
        ("NEW_PGUSER", OTHER_USER),
        ("NEW_PGPASSWORD", OTHER_SECRET),
        ("NEW_PGDATABASE", b.as_str()),
    ];
    // No --source/--target at all: each side from its prefix's variables.
    let (code, out, err) = run(
        &[
            "verify",
            "--source-env-prefix",
            "OLD_",
            "--target-env-prefix",
            "NEW_",
        ],
        &vars,
        home.path(),
    );
    assert_eq!(code, 0, "{out}\n{err}");
    // Swapped, each side is refused by the server.
    let (code, _, err) = run(
        &[
            "verify",
            "--source-env-prefix",
            "NEW_",
            "--target-env-prefix",
            "OLD_",
            "--source",
            &format!("dbname={a}"),
            "--target",
            &format!("dbname={b}"),
        ],
        &vars,
        home.path(),
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("permission denied") || err.contains("CONNECT"),
        "{err}"
    );
    assert!(
        !err.contains(PW_SECRET) && !err.contains(OTHER_SECRET),
        "{err}"
    );
}

#[test]
fn an_ill_formed_connection_string_is_refused_as_such() {
    let home = tempfile::tempdir().unwrap();
    for (source, says) in [
        ("host=db dbname", "missing \"=\" after \"dbname\""),
        ("host=db dbnme=app", "invalid connection option \"dbnme\""),
        ("postgres://u:hunter2@db:54x2/app", "invalid port \"54x2\""),
    ] {
        let (code, _, err) = run(
            &[
                "sync",
                "--source",
                source,
                "--target",
                "host=db dbname=x user=u",
            ],
            &[],
            home.path(),
        );
        assert_eq!(code, 2, "{source}: {err}");
        assert!(err.contains(says), "{source}: {err}");
        assert!(
            !err.contains("cannot be") && !err.contains("hunter2"),
            "{source}: {err}"
        );
    }
}

#[test]
fn sync_replicates_over_verify_full_with_a_private_ca() {
    let s = secure();
    let pg = &s.pg;
    let src = pg.fresh_database("cli_tls_s").unwrap();
    let dst = pg.fresh_database("cli_tls_t").unwrap();
    pg.psql(
        &src,
        "CREATE TABLE t (id int PRIMARY KEY, v text); \
         INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 300) g;",
    )
    .unwrap();
    let ca = s.dir.path().join("ca.crt");
    let conn = |db: &str| {
        format!(
            "host=localhost hostaddr=127.0.0.1 port={} user=postgres dbname={db} sslmode=verify-full sslrootcert={}",
            pg.port(),
            ca.display()
        )
    };
    let home = tempfile::tempdir().unwrap();
    let args = |extra: &[&str]| {
        let mut v = vec![
            "sync".to_owned(),
            "--source".to_owned(),
            conn(&src),
            "--target".to_owned(),
            conn(&dst),
            "--stop-when-caught-up".to_owned(),
            "--retry-for".to_owned(),
            "0".to_owned(),
        ];
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let a = args(&[]);
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let (code, out, err) = run(&a, &[], home.path());
    assert_eq!(code, 0, "{out}\n{err}");
    // A change after the copy arrives through the replication connection.
    pg.psql(&src, "UPDATE t SET v = 'over tls' WHERE id = 42")
        .unwrap();
    let (code, out, err) = run(&a, &[], home.path());
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(
        pg.psql(&dst, "SELECT v FROM t WHERE id = 42").unwrap(),
        "over tls"
    );

    // The same server under a name its certificate does not carry.
    let wrong = conn(&src).replace("host=localhost", "host=db.wrong.example");
    let (code, _, err) = run(
        &["verify", "--source", &wrong, "--target", &conn(&dst)],
        &[],
        home.path(),
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("db.wrong.example") && err.contains("verify-ca"),
        "{err}"
    );
}
