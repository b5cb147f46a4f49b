//! Production security on PostgreSQL (issue 17), against real servers: TLS with libpq's
//! `sslmode` semantics (a throwaway CA made here, a cluster started with `ssl = on`), client
//! certificates, passwords from `password_file` and the password file, a password rotated
//! while `run` keeps going, and nothing secret in what tandem prints.
//!
//! Every check runs the real binary and looks at what a user sees: the exit code and the
//! message. The server decides whether a connection was encrypted (`hostssl … trust` plus
//! `hostnossl … reject` for the role), so a test cannot pass over plain text by mistake.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use common::fixtures::{count, eventually_or, Env, A_SCHEMA, B_SCHEMA, DEMO_CONFIG};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use tandem::cluster::{Cluster, ServerSetup, ServerTls};

/// The certificates of a test run: a CA, a server certificate for `localhost` only (no IP
/// address), a client certificate for `cert_user`, and a second CA that signed nothing here.
struct Pki {
    dir: tempfile::TempDir,
    server: ServerTls,
}

impl Pki {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    CertifiedIssuer::self_signed(params, KeyPair::generate().expect("key")).expect("ca")
}

fn make_pki() -> Pki {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = ca("tandem test CA");
    let wrong = ca_pem_only("some other CA");
    let issue = |names: Vec<String>, cn: &str| {
        let mut params = CertificateParams::new(names).expect("params");
        params.distinguished_name.push(DnType::CommonName, cn);
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &ca).expect("sign");
        (cert.pem(), key.serialize_pem())
    };
    let (server_pem, server_key) = issue(vec!["localhost".into()], "localhost");
    let (client_pem, client_key) = issue(Vec::new(), "cert_user");
    let write = |name: &str, text: &str, mode: u32| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).expect("write pki file");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).expect("chmod");
    };
    write("ca.crt", &ca.pem(), 0o644);
    write("wrong_ca.crt", &wrong, 0o644);
    write("client.crt", &client_pem, 0o644);
    write("client.key", &client_key, 0o600);
    write("client_open.key", &client_key, 0o644);
    Pki {
        server: ServerTls {
            cert_pem: server_pem,
            key_pem: server_key,
            client_ca_pem: Some(ca.pem()),
        },
        dir,
    }
}

fn ca_pem_only(name: &str) -> String {
    ca(name).pem()
}

/// The TLS cluster of this test binary, its PKI, and the roles the tests log in as.
struct World {
    pki: Pki,
    cluster: Cluster,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        tandem::cluster::stop_all_at_exit();
        let pki = make_pki();
        let setup = ServerSetup {
            tls: Some(pki.server.clone()),
            hba: [
                "hostssl all cert_user 127.0.0.1/32 cert",
                "hostnossl all cert_user 127.0.0.1/32 reject",
                "hostssl all tls_user 127.0.0.1/32 trust",
                "hostnossl all tls_user 127.0.0.1/32 reject",
                "host all pw_user 127.0.0.1/32 scram-sha-256",
                "host all rot_user 127.0.0.1/32 scram-sha-256",
                "host all inline_user 127.0.0.1/32 scram-sha-256",
            ]
            .map(String::from)
            .to_vec(),
        };
        let cluster = Cluster::start_with("tls", &setup).expect("start a cluster with ssl = on");
        // Superusers: these tests are about connecting (least privilege has its own test).
        cluster
            .psql(
                "postgres",
                "CREATE ROLE cert_user LOGIN SUPERUSER;
                 CREATE ROLE tls_user LOGIN SUPERUSER;
                 CREATE ROLE pw_user LOGIN SUPERUSER PASSWORD 'Pw_first_1';
                 CREATE ROLE rot_user LOGIN SUPERUSER PASSWORD 'Rot_first_1';
                 CREATE ROLE inline_user LOGIN SUPERUSER PASSWORD 'Inl1ne_Pw_7';",
            )
            .expect("roles");
        World { pki, cluster }
    })
}

/// The sample schema on a fresh database of the TLS cluster (A) and of the shared plain
/// cluster (B), installed; the config is rewritten per case with [`Case::a`].
async fn env(name: &str) -> (Env, String) {
    let w = world();
    let db = format!(
        "s_{}_{}",
        common::db_stem(name, 30),
        std::process::id() % 100_000
    );
    w.cluster.create_database(&db).expect("create database");
    let (_, b_url) = common::fresh_dbs(name);
    let env = Env::on(
        w.cluster.url(&db),
        b_url,
        DEMO_CONFIG,
        A_SCHEMA,
        B_SCHEMA,
        true,
    )
    .await;
    (env, db)
}

/// A URL to the TLS cluster's database `db` as `user` at `host`, with query `params`.
fn url(user: &str, host: &str, db: &str, params: &str) -> String {
    let port = world().cluster.port();
    let q = if params.is_empty() {
        String::new()
    } else {
        format!("?{params}")
    };
    format!("postgres://{user}@{host}:{port}/{db}{q}")
}

/// Writes a config whose side A is `a_lines` (TOML lines under `[a]` after `kind`), B as in
/// `env`; returns its path.
fn config_with(env: &Env, file: &str, a_lines: &str) -> PathBuf {
    let text = DEMO_CONFIG
        .replace("url = \"${TANDEM_A_URL}\"", a_lines)
        .replace("${TANDEM_B_URL}", &env.b_url);
    let path = env.dir.path().join(file);
    std::fs::write(&path, text).expect("write config");
    path
}

/// The binary, with a home of its own (no `~/.pgpass`, no `~/.postgresql/`) and none of
/// libpq's variables from the caller.
fn tandem(config: &Path, home: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tandem"));
    c.arg("--config").arg(config).env("HOME", home);
    for v in [
        "PGSSLMODE",
        "PGSSLROOTCERT",
        "PGSSLCERT",
        "PGSSLKEY",
        "PGPASSFILE",
        "PGPASSWORD",
    ] {
        c.env_remove(v);
    }
    c
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `tandem check` with side A given by `a_lines`: (exit code, everything printed).
fn check(env: &Env, a_lines: &str) -> (Option<i32>, String) {
    let config = config_with(env, "case.toml", a_lines);
    let home = env.dir.path().join("home");
    std::fs::create_dir_all(&home).expect("home");
    let out = tandem(&config, &home)
        .arg("check")
        .output()
        .expect("run tandem check");
    (out.status.code(), text(&out))
}

fn a_url(u: &str) -> String {
    format!("url = \"{u}\"")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_connects_only_with_the_right_authority_and_host_name() {
    let (env, db) = env("verify_full").await;
    let w = world();
    let ca = w.pki.path("ca.crt").display().to_string();
    let wrong = w.pki.path("wrong_ca.crt").display().to_string();

    // tls_user may only come in over TLS (hostnossl … reject), so success proves TLS.
    let ok = url(
        "tls_user",
        "localhost",
        &db,
        &format!("sslmode=verify-full&sslrootcert={ca}"),
    );
    let (code, out) = check(&env, &a_url(&ok));
    assert_eq!(code, Some(0), "verify-full, right CA and host name:\n{out}");

    let bad_ca = url(
        "tls_user",
        "localhost",
        &db,
        &format!("sslmode=verify-full&sslrootcert={wrong}"),
    );
    let (code, out) = check(&env, &a_url(&bad_ca));
    assert_eq!(
        code,
        Some(2),
        "verify-full with another CA must fail:\n{out}"
    );
    assert!(
        out.contains("invalid peer certificate") && out.contains("UnknownIssuer"),
        "{out}"
    );
    assert!(
        out.contains("sslrootcert"),
        "the hint names the setting:\n{out}"
    );

    // The certificate names localhost, not 127.0.0.1.
    let by_ip = url(
        "tls_user",
        "127.0.0.1",
        &db,
        &format!("sslmode=verify-full&sslrootcert={ca}"),
    );
    let (code, out) = check(&env, &a_url(&by_ip));
    assert_eq!(
        code,
        Some(2),
        "verify-full with a host the certificate does not name:\n{out}"
    );
    assert!(out.contains("not valid for name"), "{out}");

    // verify-ca checks the chain only, as libpq does.
    let ca_only = url(
        "tls_user",
        "127.0.0.1",
        &db,
        &format!("sslmode=verify-ca&sslrootcert={ca}"),
    );
    let (code, out) = check(&env, &a_url(&ca_only));
    assert_eq!(code, Some(0), "verify-ca does not check the name:\n{out}");

    // verify-full without any root certificate says what to do.
    let none = url("tls_user", "localhost", &db, "sslmode=verify-full");
    let (code, out) = check(&env, &a_url(&none));
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains("root certificate file") && out.contains("sslrootcert=system"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_and_the_default_prefer_encrypt_and_disable_does_not() {
    let (env, db) = env("require").await;
    for params in ["sslmode=require", "", "sslmode=prefer"] {
        let (code, out) = check(&env, &a_url(&url("tls_user", "localhost", &db, params)));
        assert_eq!(code, Some(0), "{params:?} must connect over TLS:\n{out}");
    }
    let (code, out) = check(
        &env,
        &a_url(&url("tls_user", "localhost", &db, "sslmode=disable")),
    );
    assert_eq!(
        code,
        Some(2),
        "the server refuses tls_user without TLS:\n{out}"
    );
    assert!(out.contains("no encryption"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_logs_in_where_the_server_asks_for_one() {
    let (env, db) = env("client_cert").await;
    let w = world();
    let p = |n: &str| w.pki.path(n).display().to_string();
    let with_cert = url(
        "cert_user",
        "localhost",
        &db,
        &format!(
            "sslmode=verify-full&sslrootcert={}&sslcert={}&sslkey={}",
            p("ca.crt"),
            p("client.crt"),
            p("client.key")
        ),
    );
    let (code, out) = check(&env, &a_url(&with_cert));
    assert_eq!(
        code,
        Some(0),
        "hostssl … cert with the client certificate:\n{out}"
    );

    let without = url(
        "cert_user",
        "localhost",
        &db,
        &format!("sslmode=verify-full&sslrootcert={}", p("ca.crt")),
    );
    let (code, out) = check(&env, &a_url(&without));
    assert_eq!(code, Some(2), "no client certificate:\n{out}");
    assert!(out.contains("certificate"), "{out}");

    // A key others may read is refused before connecting, as libpq does, and its content
    // is never shown.
    let open = with_cert.replace("client.key", "client_open.key");
    let (code, out) = check(&env, &a_url(&open));
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("has group or world access"), "{out}");
    let key = std::fs::read_to_string(w.pki.path("client.key")).expect("key");
    for line in key.lines().filter(|l| !l.starts_with("-----")) {
        assert!(!out.contains(line), "the key's content leaked:\n{out}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_without_tls_refuses_require_with_a_clear_message() {
    // The shared clusters run with ssl = off.
    let (a, b) = common::fresh_dbs("no_tls");
    let env = Env::on(a, b, DEMO_CONFIG, A_SCHEMA, B_SCHEMA, true).await;
    let plain = format!("{}?sslmode=require", env.a_url);
    let (code, out) = check(&env, &a_url(&plain));
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("server does not support TLS"), "{out}");
    assert!(
        out.contains("ssl = off") && out.contains("sslmode=prefer"),
        "what to do:\n{out}"
    );
    // prefer falls back to plain text there.
    let (code, out) = check(&env, &a_url(&format!("{}?sslmode=prefer", env.a_url)));
    assert_eq!(code, Some(0), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwords_come_from_password_file_or_the_libpq_password_file() {
    use std::os::unix::fs::PermissionsExt;
    let (env, db) = env("password_sources").await;
    let dir = env.dir.path();
    let bare = url("pw_user", "localhost", &db, "sslmode=require");
    let pw_file = dir.join("pw");
    std::fs::write(&pw_file, "Pw_first_1\n").expect("write");
    let (code, out) = check(
        &env,
        &format!(
            "{}\npassword_file = \"{}\"",
            a_url(&bare),
            pw_file.display()
        ),
    );
    assert_eq!(code, Some(0), "password_file:\n{out}");

    // libpq's password file, named in the url (passfile) or found at ~/.pgpass.
    let port = world().cluster.port();
    let pgpass = dir.join("pgpass");
    std::fs::write(
        &pgpass,
        format!("# test\nlocalhost:{port}:*:pw_user:Pw_first_1\n"),
    )
    .expect("write");
    std::fs::set_permissions(&pgpass, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let with_passfile = format!("{bare}&passfile={}", pgpass.display());
    let (code, out) = check(&env, &a_url(&with_passfile));
    assert_eq!(code, Some(0), "passfile:\n{out}");
    let home = dir.join("home");
    std::fs::create_dir_all(&home).expect("home");
    std::fs::copy(&pgpass, home.join(".pgpass")).expect("copy");
    let (code, out) = check(&env, &a_url(&bare));
    assert_eq!(code, Some(0), "~/.pgpass:\n{out}");
    std::fs::remove_file(home.join(".pgpass")).expect("rm");

    // A wrong password fails, naming the user and never the password.
    std::fs::write(&pw_file, "Wrong_pw_9").expect("write");
    let (code, out) = check(
        &env,
        &format!(
            "{}\npassword_file = \"{}\"",
            a_url(&bare),
            pw_file.display()
        ),
    );
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("password authentication failed"), "{out}");
    assert!(!out.contains("Wrong_pw_9"), "{out}");

    // A missing file is a config error naming the file and the line.
    let (code, out) = check(
        &env,
        &format!(
            "{}\npassword_file = \"{}\"",
            a_url(&bare),
            dir.join("nope").display()
        ),
    );
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains("case.toml:5:") && out.contains("password_file") && out.contains("nope"),
        "{out}"
    );
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A plain HTTP GET: (status, body), or None when nothing answers.
fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    let status = raw.split(' ').nth(1)?.parse().ok()?;
    let body = raw.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
    Some((status, body))
}

fn stop(child: &mut Child) -> Option<i32> {
    // SAFETY: kill has no memory-safety preconditions; the pid is our child's.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    for _ in 0..400 {
        if let Ok(Some(status)) = child.try_wait() {
            return status.code();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    panic!("tandem did not stop within 40 s of SIGTERM");
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_password_is_used_without_a_restart() {
    let (env, db) = env("rotation").await;
    let w = world();
    let dir = env.dir.path();
    let pw_file = dir.join("a_password");
    std::fs::write(&pw_file, "Rot_first_1\n").expect("write");
    let config = config_with(
        &env,
        "rot.toml",
        &format!(
            "{}\npassword_file = \"{}\"",
            a_url(&url("rot_user", "localhost", &db, "sslmode=require")),
            pw_file.display()
        ),
    );
    let home = dir.join("home");
    std::fs::create_dir_all(&home).expect("home");
    let log_path = dir.join("run.log");
    let port = free_port();
    let mut child = tandem(&config, &home)
        .env("RUST_LOG", "tandem=debug")
        .args(["run", "--listen", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).expect("log"))
        .spawn()
        .expect("start tandem run");
    let logs = || read(&log_path);
    env.a
        .batch_execute(r#"INSERT INTO dbo."ORDERS" ("CUST_NAME", "AMOUNT") VALUES ('before', 1)"#)
        .await
        .expect("insert");
    eventually_or(
        Duration::from_secs(20),
        "the first change to arrive",
        || async {
            count(
                &env.b,
                "SELECT count(*) FROM orders WHERE customer = 'before'",
            )
            .await
                == 1
        },
        logs,
    )
    .await;

    // Rotate: the role's password and the file change, every session of the role ends.
    w.cluster
        .psql("postgres", "ALTER ROLE rot_user PASSWORD 'Rot_second_2'")
        .expect("alter role");
    std::fs::write(&pw_file, "Rot_second_2\n").expect("rotate the file");
    let killed = w
        .cluster
        .psql(
            "postgres",
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE usename = 'rot_user'",
        )
        .expect("terminate");
    assert_ne!(killed.trim(), "0", "tandem had sessions open as rot_user");
    env.a
        .batch_execute(r#"INSERT INTO dbo."ORDERS" ("CUST_NAME", "AMOUNT") VALUES ('after', 2)"#)
        .await
        .expect("insert");
    eventually_or(
        Duration::from_secs(30),
        "the change after the rotation to arrive",
        || async {
            count(
                &env.b,
                "SELECT count(*) FROM orders WHERE customer = 'after'",
            )
            .await
                == 1
        },
        logs,
    )
    .await;
    eventually_or(
        Duration::from_secs(15),
        "/readyz to say ready again (the lead retaken with the new password)",
        || async { get(port, "/readyz").map(|(s, _)| s) == Some(200) },
        logs,
    )
    .await;
    let still_old = w
        .cluster
        .psql(
            "postgres",
            "SELECT count(*) FROM pg_stat_activity WHERE usename = 'rot_user'",
        )
        .expect("count sessions");
    assert_ne!(
        still_old.trim(),
        "0",
        "new sessions were opened with the new password"
    );
    assert_eq!(stop(&mut child), Some(0), "{}", logs());
    let all = logs();
    for secret in ["Rot_first_1", "Rot_second_2"] {
        assert!(!all.contains(secret), "a password in the log:\n{all}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_secret_in_logs_errors_status_or_metrics() {
    let (env, db) = env("no_secrets").await;
    let w = world();
    let p = |n: &str| w.pki.path(n).display().to_string();
    // A: the password in the url itself, and a client key; B: the password in a file.
    let a = url(
        "inline_user:Inl1ne_Pw_7",
        "localhost",
        &db,
        &format!(
            "sslmode=verify-full&sslrootcert={}&sslcert={}&sslkey={}",
            p("ca.crt"),
            p("client.crt"),
            p("client.key")
        ),
    );
    let dir = env.dir.path();
    let b_pw = dir.join("b_password");
    std::fs::write(&b_pw, "File_Pw_8\n").expect("write");
    let toml = DEMO_CONFIG.replace("${TANDEM_A_URL}", &a).replace(
        "url = \"${TANDEM_B_URL}\"",
        &format!(
            "url = \"{}\"\npassword_file = \"{}\"",
            env.b_url,
            b_pw.display()
        ),
    );
    let config = dir.join("secrets.toml");
    std::fs::write(&config, &toml).expect("config");
    let home = dir.join("home");
    std::fs::create_dir_all(&home).expect("home");
    env.a
        .batch_execute(r#"INSERT INTO dbo."ORDERS" ("CUST_NAME", "AMOUNT") VALUES ('x', 1)"#)
        .await
        .expect("insert");

    let mut seen = String::new();
    for args in [
        vec!["check"],
        vec!["--log-format", "json", "run", "--once"],
        vec!["status", "--json"],
        vec!["status"],
        vec!["verify", "--json"],
        vec!["suspended", "list"],
    ] {
        let out = tandem(&config, &home)
            .env("RUST_LOG", "debug")
            .args(&args)
            .output()
            .expect("run tandem");
        let printed = text(&out);
        assert_eq!(out.status.code(), Some(0), "{args:?}:\n{printed}");
        seen.push_str(&printed);
    }
    // Error paths: a side that cannot be reached, and a config problem, quote the url.
    let down = toml.replace(
        &format!(":{}/", w.cluster.port()),
        &format!(":{}/", free_port()),
    );
    let down_path = dir.join("down.toml");
    std::fs::write(&down_path, &down).expect("config");
    let out = tandem(&down_path, &home)
        .arg("check")
        .output()
        .expect("check");
    assert_eq!(out.status.code(), Some(2));
    seen.push_str(&text(&out));
    let broken = toml.replace("sslmode=verify-full", "sslmode=verify-fully");
    let broken_path = dir.join("broken.toml");
    std::fs::write(&broken_path, &broken).expect("config");
    let out = tandem(&broken_path, &home)
        .arg("check")
        .output()
        .expect("check");
    assert_eq!(out.status.code(), Some(2));
    let printed = text(&out);
    assert!(printed.contains("invalid sslmode"), "{printed}");
    seen.push_str(&printed);

    // The service's endpoints and logs.
    let port = free_port();
    let log_path = dir.join("svc.log");
    let mut child = tandem(&config, &home)
        .env("RUST_LOG", "debug")
        .args(["run", "--listen", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).expect("log"))
        .spawn()
        .expect("start");
    eventually_or(
        Duration::from_secs(15),
        "/readyz to answer 200",
        || async { get(port, "/readyz").map(|(s, _)| s) == Some(200) },
        || read(&log_path),
    )
    .await;
    for path in ["/metrics", "/readyz", "/healthz"] {
        let (_, body) = get(port, path).expect("answer");
        seen.push_str(&body);
    }
    assert_eq!(stop(&mut child), Some(0), "{}", read(&log_path));
    seen.push_str(&read(&log_path));

    assert!(seen.contains("localhost"), "the outputs were collected");
    let key = std::fs::read_to_string(w.pki.path("client.key")).expect("key");
    let key_lines: Vec<&str> = key.lines().filter(|l| !l.starts_with("-----")).collect();
    for secret in ["Inl1ne_Pw_7", "File_Pw_8"].iter().chain(key_lines.iter()) {
        assert!(!seen.contains(secret), "{secret:?} was shown:\n{seen}");
    }
}

/// README's grants for the run role and an application role on one side (`{schema}`,
/// `{tables}` filled in), run by the DBA who installed tandem.
const README_GRANTS: &str = r#"
GRANT USAGE ON SCHEMA tandem TO {run};
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA tandem TO {run};
GRANT USAGE ON SCHEMA {schema} TO {run};
GRANT SELECT, INSERT, UPDATE, DELETE ON {tables} TO {run};
GRANT USAGE ON SCHEMA tandem TO {app};
GRANT INSERT ON tandem.outbox TO {app};
"#;

/// `install` as a DBA who owns the business tables but is no superuser; every other command
/// as a role holding exactly README's grants; and an application role that can write its
/// tables (and so the outbox) but neither read the outbox's row images nor touch the id map.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_as_the_dba_and_every_command_with_only_the_documented_grants() {
    let (a, b) = common::fresh_dbs("least_privilege");
    let config = DEMO_CONFIG.replace("[sync]\n", "[sync]\nmax_attempts = 1\n");
    let env = Env::on(a, b, &config, A_SCHEMA, B_SCHEMA, false).await;
    let db = env.a_url.rsplit('/').next().expect("db").to_string();
    let (dba, run, app) = (
        format!("dba_{db}"),
        format!("run_{db}"),
        format!("app_{db}"),
    );
    let sides = [
        (
            &env.a,
            &env.a_url,
            "dbo",
            r#"dbo."ORDERS", dbo."ORDER_ITEMS""#,
        ),
        (
            &env.b,
            &env.b_url,
            "public",
            "public.orders, public.order_items",
        ),
    ];
    for (c, _, schema, tables) in &sides {
        c.batch_execute(&format!(
            r#"CREATE ROLE {dba} LOGIN NOSUPERUSER; CREATE ROLE {run} LOGIN NOSUPERUSER;
               CREATE ROLE {app} LOGIN NOSUPERUSER;
               GRANT CREATE ON DATABASE "{db}" TO {dba};
               GRANT USAGE ON SCHEMA {schema} TO {dba};
               GRANT USAGE ON SCHEMA {schema} TO {app};
               GRANT SELECT, INSERT, UPDATE, DELETE ON {tables} TO {app};"#
        ))
        .await
        .expect("roles");
        // The DBA owns the business tables (a trigger needs the owner) and their schema
        // (public stays the database's: every role may use it).
        if *schema != "public" {
            c.batch_execute(&format!("ALTER SCHEMA {schema} OWNER TO {dba}"))
                .await
                .expect("schema owner");
        }
        for t in tables.split(", ") {
            c.batch_execute(&format!("ALTER TABLE {t} OWNER TO {dba}"))
                .await
                .expect("owner");
        }
    }
    let as_role = |url: &str, role: &str| url.replacen("postgres@", &format!("{role}@"), 1);
    let config_as = |role: &str| {
        let text = std::fs::read_to_string(&env.config_path)
            .expect("config")
            .replace(&env.a_url, &as_role(&env.a_url, role))
            .replace(&env.b_url, &as_role(&env.b_url, role));
        let path = env.dir.path().join(format!("{role}.toml"));
        std::fs::write(&path, text).expect("write config");
        path
    };
    let home = env.dir.path().join("home");
    std::fs::create_dir_all(&home).expect("home");
    let as_dba = config_as(&dba);
    let out = tandem(&as_dba, &home)
        .arg("install")
        .output()
        .expect("install");
    assert_eq!(
        out.status.code(),
        Some(0),
        "install as the DBA:\n{}",
        text(&out)
    );
    for (c, url, schema, tables) in &sides {
        let grants = README_GRANTS
            .replace("{run}", &run)
            .replace("{app}", &app)
            .replace("{schema}", schema)
            .replace("{tables}", tables);
        common::connect(&as_role(url, &dba))
            .await
            .batch_execute(&grants)
            .await
            .expect("the DBA grants README's privileges");
        // The run role is no superuser and owns nothing.
        let owned = count(
            c,
            &format!(
                "SELECT count(*) FROM pg_class c JOIN pg_roles r ON r.oid = c.relowner
                 WHERE r.rolname = '{run}'"
            ),
        )
        .await;
        assert_eq!(owned, 0);
        let superuser = count(
            c,
            &format!("SELECT count(*) FROM pg_roles WHERE rolname = '{run}' AND rolsuper"),
        )
        .await;
        assert_eq!(superuser, 0);
    }

    // The applications write as their own role; one change cannot be mapped ('Z' is no code
    // of the values map) and is suspended after its one attempt.
    let a_app = common::connect(&as_role(&env.a_url, &app)).await;
    a_app
        .batch_execute(
            r#"INSERT INTO dbo."ORDERS" ("CUST_NAME", "AMOUNT") SELECT 'g' || g, g FROM generate_series(1, 5) g;
               INSERT INTO dbo."ORDER_ITEMS" SELECT "ORDER_NO", 1, 2 FROM dbo."ORDERS";
               INSERT INTO dbo."ORDERS" ("CUST_NAME", "STATUS") VALUES ('odd', 'Z');"#,
        )
        .await
        .expect("application writes at A");
    let b_app = common::connect(&as_role(&env.b_url, &app)).await;
    b_app
        .batch_execute("INSERT INTO orders (customer, status) VALUES ('h', 'open')")
        .await
        .expect("application writes at B");

    let as_run = config_as(&run);
    let tandem_as_run = |args: &[&str]| {
        let out = tandem(&as_run, &home).args(args).output().expect("tandem");
        let printed = text(&out);
        assert!(
            !printed.contains("permission denied"),
            "{args:?}:\n{printed}"
        );
        (out.status.code(), printed)
    };
    let (code, out) = tandem_as_run(&["run", "--once"]);
    assert_eq!(
        code,
        Some(1),
        "run --once: one change failed and was suspended:\n{out}"
    );
    let (code, out) = tandem_as_run(&["status", "--json"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("\"suspended\": 1") || out.contains("\"suspended\":1"),
        "{out}"
    );
    let (code, out) = tandem_as_run(&["suspended", "list"]);
    assert_eq!(code, Some(0), "{out}");
    let id = out
        .split_whitespace()
        .find(|w| w.starts_with("A-"))
        .unwrap_or_else(|| panic!("an id in:\n{out}"))
        .to_string();
    let (code, out) = tandem_as_run(&["suspended", "show", &id]);
    assert_eq!(code, Some(0), "{out}");
    let (code, out) = tandem_as_run(&["suspended", "resubmit", &id]);
    assert_eq!(code, Some(0), "{out}");
    let (code, out) = tandem_as_run(&["run", "--once"]);
    assert_eq!(code, Some(1), "suspended again:\n{out}");
    let (code, out) = tandem_as_run(&["suspended", "discard", &id]);
    assert_eq!(code, Some(0), "{out}");
    // The code is fixed at A; a backfill brings the record whose insert was discarded.
    a_app
        .batch_execute(r#"UPDATE dbo."ORDERS" SET "STATUS" = 'C' WHERE "CUST_NAME" = 'odd'"#)
        .await
        .expect("fix the code");
    let (code, out) = tandem_as_run(&["run", "--once"]);
    assert_eq!(code, Some(0), "{out}");
    for entity in ["order", "order_item"] {
        let (code, out) = tandem_as_run(&["backfill", "--entity", entity]);
        assert_eq!(code, Some(0), "backfill {entity}:\n{out}");
    }
    let (code, out) = tandem_as_run(&["verify"]);
    assert_eq!(code, Some(0), "verify:\n{out}");
    let (code, out) = tandem_as_run(&["verify", "--repair"]);
    assert_eq!(code, Some(0), "verify --repair:\n{out}");
    let (code, out) = tandem_as_run(&["status"]);
    assert_eq!(code, Some(0), "{out}");

    // The application role can write its tables, but not read row images or links.
    for (c_url, what) in [(&env.a_url, "A"), (&env.b_url, "B")] {
        let c = common::connect(&as_role(c_url, &app)).await;
        for sql in [
            "SELECT image FROM tandem.outbox",
            "SELECT count(*) FROM tandem.id_map",
            "UPDATE tandem.id_map SET applied_seq = 0",
            "DELETE FROM tandem.id_map",
            "INSERT INTO tandem.id_map (entity, a_key, b_key, applied_seq) VALUES ('order', '[1]', '[1]', 0)",
            "DELETE FROM tandem.outbox",
            "UPDATE tandem.outbox SET suspended = false",
        ] {
            let e = c
                .batch_execute(sql)
                .await
                .expect_err(&format!("side {what}: the application role ran {sql}"));
            let m = e.as_db_error().map(|d| d.message().to_string()).unwrap_or_default();
            assert!(m.contains("permission denied"), "side {what}: {sql}: {m}");
        }
    }
}
