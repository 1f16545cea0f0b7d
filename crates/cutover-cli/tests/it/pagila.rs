//! Issue 11: a real schema no one here wrote. Pagila (PostgreSQL License, vendored in
//! `tests/data/pagila`) has a partitioned table, enums, domains, tsvector and array columns,
//! views, triggers, functions, foreign keys and a table with REPLICA IDENTITY NOTHING. After
//! `sync` and `switch`, the new primary holds the same views, functions and triggers (by name
//! and definition) and Pagila's own views and triggers work there.

use std::path::Path;
use std::process::Command;

use cutover_testkit::Postgres;

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_cutover"));
    c.env_remove("CUTOVER_SOURCE").env_remove("CUTOVER_TARGET");
    cutover_testkit::end_with_test(&mut c);
    c
}

/// Loads a Pagila file with psql, not stopping at errors: on PostgreSQL 15 two statements of
/// the 17.a release fail harmlessly (`transaction_timeout`, a JSON_TABLE view).
fn load(pg: &Postgres, db: &str, file: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/pagila")
        .join(file);
    let out = Command::new(pg.bin_dir().join("psql"))
        .args(["-X", "-q", "-h", "127.0.0.1", "-U", "postgres"])
        .arg("-p")
        .arg(pg.port().to_string())
        .args(["-d", db, "-f"])
        .arg(&path)
        .env_remove("PGPASSWORD")
        .output()
        .expect("run psql");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Views, functions and triggers of the database, by name and definition.
const OBJECTS: &str = "SELECT string_agg(x, E'\\n' ORDER BY x) FROM (
    SELECT 'view ' || c.oid::regclass::text || ': ' || regexp_replace(pg_get_viewdef(c.oid), '\\s+', ' ', 'g') AS x
      FROM pg_class c WHERE c.relkind IN ('v', 'm') AND c.relnamespace = 'public'::regnamespace
    UNION ALL
    SELECT 'function ' || p.oid::regprocedure::text || ': ' || regexp_replace(pg_get_functiondef(p.oid), '\\s+', ' ', 'g')
      FROM pg_proc p WHERE p.pronamespace = 'public'::regnamespace AND p.prokind IN ('f', 'p')
    UNION ALL
    SELECT 'trigger ' || t.tgname || ': ' || pg_get_triggerdef(t.oid)
      FROM pg_trigger t WHERE NOT t.tgisinternal AND t.tgparentid = 0) o";

#[test]
fn pagila_arrives_whole_and_its_views_and_triggers_work_on_the_new_primary() {
    pagila(None);
}

/// The same into a target whose role is not a superuser (as on managed PostgreSQL): the apply
/// session cannot set `session_replication_role`, so the triggers must be there but disabled
/// while sync writes (a replicated update keeps the source's `last_update`), and enabled by
/// the switch.
#[test]
fn pagila_into_a_target_owned_by_a_role_that_is_not_superuser() {
    pagila(Some("pagila_owner"));
}

fn pagila(owner: Option<&str>) {
    let pg = Postgres::shared().unwrap();
    let src = pg.fresh_database("pagila_s").unwrap();
    let dst = pg.fresh_database("pagila_t").unwrap();
    if let Some(role) = owner {
        pg.psql(
            "postgres",
            &format!(
                "DO $$ BEGIN CREATE ROLE {role} LOGIN REPLICATION; EXCEPTION WHEN duplicate_object THEN NULL; END $$;
                 ALTER DATABASE {dst} OWNER TO {role};"
            ),
        )
        .unwrap();
        pg.psql(&dst, &format!("ALTER SCHEMA public OWNER TO {role}"))
            .unwrap();
    }
    load(pg, &src, "pagila-schema.sql");
    load(pg, &src, "pagila-data.sql");
    // What sync's refusal asks for (each named with its fix): updates and deletes of
    // `country` and two partitions without a key could not be replicated.
    pg.psql(
        &src,
        "ALTER TABLE country REPLICA IDENTITY DEFAULT;
         ALTER TABLE payment_p0000_default ADD PRIMARY KEY (payment_date, payment_id);
         ALTER TABLE payment_p2007_07_max ADD PRIMARY KEY (payment_date, payment_id);",
    )
    .unwrap();
    let s = pg.url(&src);
    let t = match owner {
        Some(role) => format!("postgres://{role}@127.0.0.1:{}/{dst}", pg.port()),
        None => pg.url(&dst),
    };
    let run = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--source", &s, "--target", &t]);
        let o = bin().args(&all).output().unwrap();
        let (out, err) = (
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        );
        (o.status.code(), out, err)
    };
    let (code, out, err) = run(&["sync", "--stop-when-caught-up"]);
    assert_eq!(code, Some(0), "sync:\n{out}\n{err}");

    let want = pg.psql(&src, OBJECTS).unwrap();
    let got = pg.psql(&dst, OBJECTS).unwrap();
    let (w, g): (Vec<&str>, Vec<&str>) = (want.lines().collect(), got.lines().collect());
    let missing: Vec<&&str> = w.iter().filter(|l| !g.contains(l)).collect();
    assert!(
        missing.is_empty(),
        "{} of {} definitions differ or are missing on the target, e.g. {:?}",
        missing.len(),
        w.len(),
        missing
            .iter()
            .take(5)
            .map(|l| l.chars().take(200).collect::<String>())
            .collect::<Vec<_>>()
    );

    // While sync writes, the target's triggers and rules are disabled: an update replicated
    // from the source keeps the source's values (the target's last_updated trigger would
    // stamp its own time), compared outside cutover.
    let disabled = |db: &str| -> i64 {
        pg.psql(
            db,
            "SELECT count(*) FROM pg_trigger WHERE NOT tgisinternal AND tgenabled = 'D'",
        )
        .unwrap()
        .parse()
        .unwrap()
    };
    assert!(disabled(&dst) >= 15, "triggers disabled on the target");
    pg.psql(
        &src,
        "UPDATE actor SET first_name = 'CUTOVER' WHERE actor_id <= 3",
    )
    .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(50));
    let (code, out, err) = run(&["sync", "--stop-when-caught-up"]);
    assert_eq!(code, Some(0), "sync again:\n{out}\n{err}");
    let actors = "SELECT string_agg(actor_id || ' ' || first_name || ' ' || last_update, ',' ORDER BY actor_id) FROM actor WHERE actor_id <= 3";
    assert_eq!(
        pg.psql(&dst, actors).unwrap(),
        pg.psql(&src, actors).unwrap(),
        "replicated updates did not fire the target's trigger"
    );

    let (code, out, err) = run(&["switch", "--json"]);
    assert_eq!(code, Some(0), "switch:\n{out}\n{err}");
    assert_eq!(
        disabled(&dst),
        0,
        "every trigger enabled on the new primary"
    );

    // Pagila's own views and triggers on the new primary.
    let n: i64 = pg
        .psql(&dst, "SELECT count(*) FROM actor_info")
        .unwrap()
        .parse()
        .unwrap();
    assert!(n > 100, "actor_info: {n}");
    pg.psql(
        &dst,
        "INSERT INTO film (title, language_id) VALUES ('CUTOVER TEST', 1);
         UPDATE film SET last_update = '2000-01-01', rental_duration = 4 WHERE title = 'CUTOVER TEST'",
    )
    .unwrap();
    let row = pg
        .psql(
            &dst,
            "SELECT last_update > '2020-01-01', fulltext IS NOT NULL FROM film WHERE title = 'CUTOVER TEST'",
        )
        .unwrap();
    assert_eq!(row, "t|t", "the last_updated and fulltext triggers fired");

    // The old primary follows now: its triggers are disabled; a rollback turns both around.
    assert!(disabled(&src) >= 15, "the old primary's triggers disabled");
    let (code, out, err) = run(&["rollback", "--json"]);
    assert_eq!(code, Some(0), "rollback:\n{out}\n{err}");
    assert_eq!(disabled(&src), 0, "the source's triggers enabled again");
    assert!(disabled(&dst) >= 15, "the target's triggers disabled again");
    let (code, _, err) = run(&["cleanup"]);
    assert_eq!(code, Some(0), "{err}");
}

/// Objects no table uses still belong to the application: a standalone sequence (its value
/// too), an enum, a domain, a composite and a range type nobody's column has.
#[test]
fn standalone_sequences_and_types_arrive() {
    let pg = Postgres::shared().unwrap();
    let src = pg.fresh_database("alone_s").unwrap();
    let dst = pg.fresh_database("alone_t").unwrap();
    pg.psql(
        &src,
        "CREATE SCHEMA billing;
         CREATE SEQUENCE billing.invoice_no START 1000 INCREMENT 5;
         SELECT nextval('billing.invoice_no'), nextval('billing.invoice_no');
         CREATE TYPE billing.mood AS ENUM ('sad', 'ok', 'happy');
         CREATE DOMAIN billing.cents AS bigint CHECK (VALUE >= 0);
         CREATE TYPE billing.pair AS (a int, b text);
         CREATE TYPE billing.floatrange AS RANGE (subtype = float8);
         CREATE TABLE t (id int PRIMARY KEY);
         INSERT INTO t VALUES (1);",
    )
    .unwrap();
    let run = |args: &[&str]| {
        let out = bin()
            .args(args)
            .arg("--source")
            .arg(pg.url(&src))
            .arg("--target")
            .arg(pg.url(&dst))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&["sync", "--stop-when-caught-up"]);
    let types = "SELECT string_agg(typname || ':' || typtype::text, ',' ORDER BY typname) FROM pg_type
                  WHERE typnamespace = 'billing'::regnamespace AND typname NOT LIKE '\\_%' AND typtype <> 'm'";
    assert_eq!(pg.psql(&dst, types).unwrap(), pg.psql(&src, types).unwrap());
    let seq = "SELECT seqstart || ' ' || seqincrement FROM pg_sequence WHERE seqrelid = 'billing.invoice_no'::regclass";
    assert_eq!(pg.psql(&dst, seq).unwrap(), "1000 5");
    run(&["switch"]);
    assert_eq!(
        pg.psql(&dst, "SELECT nextval('billing.invoice_no')")
            .unwrap(),
        "1010",
        "the sequence continues where the source's stands"
    );
    run(&["cleanup"]);
}
