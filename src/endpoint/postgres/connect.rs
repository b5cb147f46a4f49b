//! Opening one PostgreSQL connection the way libpq would: the connection string's libpq-only
//! parameters (`sslmode=verify-full`, `sslrootcert`, `sslcert`, `sslkey`, `passfile`, …) are
//! taken out and honoured here (tokio-postgres refuses them), the password comes from
//! `password_file`, the URL, or the password file (`passfile`, `$PGPASSFILE`, `~/.pgpass`), and
//! every secret file is read again for each new connection, so a rotated password or URL
//! works without a restart. Used by the pool and by the lead's own connection.

use std::path::{Path, PathBuf};

use tokio_postgres::Client;

use super::tls::{RootCert, SslMode, TlsSettings};
use crate::config::{redact, SideConfig};
use crate::endpoint::EndpointError;
use crate::side::Side;

/// Why a connection could not be opened.
#[derive(Debug)]
pub enum ConnectError {
    /// Before talking to the server: a secret or certificate file, a bad setting. The
    /// message names the file or setting, never a secret.
    Setup(String),
    /// The driver's error (unreachable, TLS refused, authentication failed, …).
    Driver(tokio_postgres::Error),
}

/// A connection string split into what tokio-postgres takes and what tandem handles.
#[derive(Debug)]
pub struct Conninfo {
    /// What tokio-postgres gets (its `ssl_mode` set from `sslmode`).
    pub config: tokio_postgres::Config,
    /// libpq's TLS parameters, which tandem honours itself.
    pub tls: TlsSettings,
    /// libpq's `passfile`.
    pub passfile: Option<PathBuf>,
}

/// Parameters libpq knows and tokio-postgres does not, that tandem cannot honour: refused
/// with a reason rather than silently ignored.
const UNSUPPORTED: &[(&str, &str)] = &[
    ("sslpassword", "encrypted client keys are not supported; give an unencrypted key file readable only by tandem's user"),
    ("sslcrl", "certificate revocation lists are not supported"),
    ("sslcrldir", "certificate revocation lists are not supported"),
    ("sslcertmode", "sslcertmode is not supported (a client certificate is sent when sslcert names a file that exists)"),
    ("requirepeer", "requirepeer is not supported"),
    ("service", "connection service files are not supported; give the parameters in the url"),
];

/// Parses a connection string (a `postgres://` URL or `key=value` pairs). libpq's defaults
/// from the environment apply where the string says nothing: `PGSSLMODE`, `PGSSLROOTCERT`,
/// `PGSSLCERT`, `PGSSLKEY`, `PGPASSFILE`. Errors never quote a password.
pub fn parse(url: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Conninfo, String> {
    let (rest, ours) = split_params(url)?;
    let config: tokio_postgres::Config = rest.parse().map_err(|e| {
        format!(
            "the url is not a valid PostgreSQL connection string ({})",
            redact(&format!("{e}"))
        )
    })?;
    let get = |key: &str, var: &str| -> Option<String> {
        ours.iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .or_else(|| env(var).filter(|v| !v.is_empty()))
    };
    for (key, reason) in UNSUPPORTED {
        if ours.iter().any(|(k, v)| k == key && !v.is_empty()) {
            return Err(format!("{key}: {reason}"));
        }
    }
    if let Some(v) = get("gssencmode", "PGGSSENCMODE") {
        if v == "require" {
            return Err(
                "gssencmode=require: GSSAPI encryption is not supported; use sslmode".into(),
            );
        }
    }
    let root_cert = get("sslrootcert", "PGSSLROOTCERT").map(|v| match v.as_str() {
        "system" => RootCert::System,
        _ => RootCert::File(PathBuf::from(v)),
    });
    let mode = match get("sslmode", "PGSSLMODE") {
        Some(m) => SslMode::parse(&m)?,
        // libpq 16: the system's roots make sense only with the host name checked.
        None if root_cert == Some(RootCert::System) => SslMode::VerifyFull,
        None => SslMode::Prefer,
    };
    if root_cert == Some(RootCert::System) && mode != SslMode::VerifyFull {
        return Err(format!(
            "weak sslmode \"{}\" may not be used with sslrootcert=system (use \"verify-full\")",
            mode.name()
        ));
    }
    let tls13_only = match get("ssl_min_protocol_version", "PGSSLMINPROTOCOLVERSION").as_deref() {
        None | Some("TLSv1.2") => false,
        Some("TLSv1.3") => true,
        Some(v) => {
            return Err(format!(
                "ssl_min_protocol_version \"{v}\" is not supported (TLSv1.2 or TLSv1.3)"
            ))
        }
    };
    match get("ssl_max_protocol_version", "PGSSLMAXPROTOCOLVERSION").as_deref() {
        None | Some("TLSv1.3") | Some("") => {}
        Some(v) => {
            return Err(format!(
                "ssl_max_protocol_version \"{v}\" is not supported (TLSv1.2 and TLSv1.3 are always allowed)"
            ))
        }
    }
    let tls = TlsSettings {
        mode,
        root_cert,
        cert: get("sslcert", "PGSSLCERT").map(PathBuf::from),
        key: get("sslkey", "PGSSLKEY").map(PathBuf::from),
        sni: get("sslsni", "PGSSLSNI").as_deref() != Some("0"),
        tls13_only,
    };
    let mut config = config;
    config.ssl_mode(mode.driver_mode());
    Ok(Conninfo {
        config,
        tls,
        passfile: get("passfile", "PGPASSFILE").map(PathBuf::from),
    })
}

/// The libpq parameters tandem takes out of a connection string before tokio-postgres sees it.
const OURS: &[&str] = &[
    "sslmode",
    "sslrootcert",
    "sslcert",
    "sslkey",
    "sslsni",
    "sslcompression",
    "ssl_min_protocol_version",
    "ssl_max_protocol_version",
    "passfile",
    "gssencmode",
    "sslpassword",
    "sslcrl",
    "sslcrldir",
    "sslcertmode",
    "requirepeer",
    "service",
];

/// Splits `url` into the string tokio-postgres gets and tandem's `(key, value)` pairs.
fn split_params(url: &str) -> Result<(String, Vec<(String, String)>), String> {
    let mut ours = Vec::new();
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let Some((base, query)) = url.split_once('?') else {
            return Ok((url.to_string(), ours));
        };
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let key = percent_decode(k)?;
            if OURS.contains(&key.as_str()) {
                ours.push((key, percent_decode(v)?));
            } else {
                kept.push(pair);
            }
        }
        let rest = if kept.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        return Ok((rest, ours));
    }
    let mut kept = Vec::new();
    for (k, v) in key_values(url)? {
        if OURS.contains(&k.as_str()) {
            ours.push((k, v));
        } else {
            kept.push(format!(
                "{k}='{}'",
                v.replace('\\', "\\\\").replace('\'', "\\'")
            ));
        }
    }
    Ok((kept.join(" "), ours))
}

/// `%XX` escapes of a URL query part.
fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| "a bad %-escape in the url's parameters".to_string())?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "the url's parameters are not UTF-8".to_string())
}

/// libpq's `key=value key2='quoted \' value'` form.
fn key_values(s: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            return Ok(out);
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            key.push(c);
            chars.next();
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.next() != Some('=') {
            return Err(format!(
                "missing \"=\" after \"{key}\" in the connection string"
            ));
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'\'') {
            chars.next();
            loop {
                match chars.next() {
                    Some('\\') => value.extend(chars.next()),
                    Some('\'') => break,
                    Some(c) => value.push(c),
                    None => {
                        return Err("an unterminated quoted value in the connection string".into())
                    }
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                chars.next();
                if c == '\\' {
                    value.extend(chars.next());
                } else {
                    value.push(c);
                }
            }
        }
        out.push((key, value));
    }
}

/// The password for host/port/database/user in a libpq password file, read now. A file
/// others may read is ignored with a warning, as libpq does.
pub fn password_from_passfile(
    file: &Path,
    host: &str,
    port: u16,
    db: &str,
    user: &str,
) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(file).ok()?;
    if !meta.is_file() {
        return None;
    }
    if meta.mode() & 0o077 != 0 {
        tracing::warn!(
            "password file \"{}\" has group or world access; permissions should be u=rw (0600) \
             or less: it is ignored",
            file.display()
        );
        return None;
    }
    let text = std::fs::read_to_string(file).ok()?;
    let port = port.to_string();
    let wanted = [host, port.as_str(), db, user];
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .find_map(|line| {
            let fields = passfile_fields(line);
            if fields.len() < 5 {
                return None;
            }
            let matches = wanted
                .iter()
                .zip(&fields)
                .all(|(want, field)| field == "*" || field == want);
            matches.then(|| fields[4..].join(":"))
        })
}

/// The `:`-separated fields of a password file line (`\:` and `\\` escape).
fn passfile_fields(line: &str) -> Vec<String> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => field.extend(chars.next()),
            ':' if fields.len() < 4 => fields.push(std::mem::take(&mut field)),
            c => field.push(c),
        }
    }
    fields.push(field);
    fields
}

/// Opens connections for one side; cheap to keep, reads its files at each connection.
#[derive(Debug, Clone)]
pub struct Connector {
    side: Side,
    side_config: SideConfig,
}

impl Connector {
    /// Checks the connection string now (so a typo is a configuration error, exit 2); reads
    /// no file yet. Returns where it connects (host, port, database) for messages.
    pub fn new(sc: &SideConfig, side: Side) -> Result<(Connector, String), EndpointError> {
        let info = parse(sc.url.expose(), &env)
            .map_err(|m| EndpointError::Config(format!("side {side}: {}", redact(&m))))?;
        let target = target_of(&info.config);
        Ok((
            Connector {
                side,
                side_config: sc.clone(),
            },
            target,
        ))
    }

    /// The driver configuration and TLS settings for a connection opened now: secret files
    /// and the password file read again.
    pub fn prepare(&self) -> Result<Conninfo, ConnectError> {
        let setup = |what: String| ConnectError::Setup(what);
        let url = self
            .side_config
            .current_url()
            .map_err(|e| setup(format!("url_file: {e}")))?;
        let mut info = parse(url.expose(), &env).map_err(|m| setup(redact(&m)))?;
        match self
            .side_config
            .current_password()
            .map_err(|e| setup(format!("password_file: {e}")))?
        {
            Some(pw) => {
                info.config.password(pw.expose());
            }
            None if info.config.get_password().is_none() => {
                if let Some(pw) = self.passfile_password(&info) {
                    info.config.password(pw);
                }
            }
            None => {}
        }
        Ok(info)
    }

    fn passfile_password(&self, info: &Conninfo) -> Option<String> {
        let file = info
            .passfile
            .clone()
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".pgpass")))?;
        let c = &info.config;
        let host = match c.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
            _ => "localhost".to_string(),
        };
        let port = c.get_ports().first().copied().unwrap_or(5432);
        let user = c
            .get_user()
            .map(str::to_string)
            .or_else(|| std::env::var("USER").ok())?;
        let db = c.get_dbname().unwrap_or(&user).to_string();
        password_from_passfile(&file, &host, port, &db, &user)
    }

    /// Opens a connection, `tweak` adjusting the driver configuration (application name,
    /// timeouts, session settings); the connection's task runs until the client is dropped.
    pub async fn connect(
        &self,
        tweak: impl FnOnce(&mut tokio_postgres::Config),
    ) -> Result<Client, ConnectError> {
        let mut info = self.prepare()?;
        tweak(&mut info.config);
        let tls = info
            .tls
            .client_config()
            .map_err(|m| ConnectError::Setup(redact(&m)))?;
        let tls = match tls {
            Some(c) => tokio_postgres_rustls::MakeRustlsConnect::new(c),
            // Never used: tokio-postgres does not start TLS with sslmode=disable.
            None => tokio_postgres_rustls::MakeRustlsConnect::new(
                rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
                    rustls::crypto::aws_lc_rs::default_provider(),
                ))
                .with_safe_default_protocol_versions()
                .map_err(|e| ConnectError::Setup(format!("TLS setup failed: {e}")))?
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth(),
            ),
        };
        let (client, connection) = info
            .config
            .connect(tls)
            .await
            .map_err(ConnectError::Driver)?;
        tokio::spawn(async move {
            // Ends when the client is dropped or the server goes away; the client then
            // reports itself closed.
            let _ = connection.await;
        });
        Ok(client)
    }

    /// The side this connector serves.
    pub fn side(&self) -> Side {
        self.side
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// `host:port/db`, never a user or password.
pub fn target_of(c: &tokio_postgres::Config) -> String {
    let host = c
        .get_hosts()
        .first()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(h) => h.clone(),
            tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
        })
        .unwrap_or_else(|| "localhost".into());
    let port = c.get_ports().first().copied().unwrap_or(5432);
    let db = c.get_dbname().unwrap_or("");
    format!("{host}:{port}/{db}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn libpq_parameters_are_taken_out_of_urls_and_key_value_strings() {
        let info = parse(
            "postgres://u:pw@db.example:6432/app?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem&application_name=x",
            &no_env,
        )
        .expect("url");
        assert_eq!(info.tls.mode, SslMode::VerifyFull);
        assert_eq!(
            info.tls.root_cert,
            Some(RootCert::File("/etc/ca.pem".into()))
        );
        assert_eq!(info.config.get_application_name(), Some("x"));
        assert_eq!(
            info.config.get_ssl_mode(),
            tokio_postgres::config::SslMode::Require
        );

        let info = parse(
            "host=db port=5432 user=u password='a b\\'c' sslmode=verify-ca sslcert=/c.crt sslkey=/c.key dbname=app",
            &no_env,
        )
        .expect("key=value");
        assert_eq!(info.tls.mode, SslMode::VerifyCa);
        assert_eq!(info.tls.cert, Some("/c.crt".into()));
        assert_eq!(info.config.get_password(), Some(&b"a b'c"[..]));
        assert_eq!(info.config.get_dbname(), Some("app"));
    }

    #[test]
    fn defaults_follow_libpq() {
        let info = parse("postgres://u@h/db", &no_env).expect("url");
        assert_eq!(info.tls.mode, SslMode::Prefer);
        let env = |k: &str| (k == "PGSSLMODE").then(|| "require".to_string());
        assert_eq!(
            parse("postgres://u@h/db", &env).expect("url").tls.mode,
            SslMode::Require
        );
        let sys = parse("postgres://u@h/db?sslrootcert=system", &no_env).expect("system");
        assert_eq!(sys.tls.mode, SslMode::VerifyFull);
        let e = parse(
            "postgres://u@h/db?sslrootcert=system&sslmode=require",
            &no_env,
        )
        .expect_err("weak");
        assert!(e.contains("verify-full"), "{e}");
        let e = parse("postgres://u:secret@h/db?sslmode=bogus", &no_env).expect_err("bogus");
        assert!(
            e.contains("invalid sslmode") && !e.contains("secret"),
            "{e}"
        );
        let e = parse("postgres://u@h/db?sslpassword=x", &no_env).expect_err("encrypted key");
        assert!(e.contains("encrypted client keys"), "{e}");
    }

    #[test]
    fn password_file_lines_match_like_libpq() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().expect("tmp");
        let file = tmp.path().join("pgpass");
        std::fs::write(
            &file,
            "# comment\nother:5432:*:u:nope\ndb:*:app:u:pa\\:ss:word\n*:*:*:*:fallback\n",
        )
        .expect("write");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let pw = |host: &str, db: &str| password_from_passfile(&file, host, 5432, db, "u");
        assert_eq!(pw("db", "app").as_deref(), Some("pa:ss:word"));
        assert_eq!(pw("db", "other").as_deref(), Some("fallback"));
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        assert_eq!(pw("db", "app"), None, "a file others can read is ignored");
    }
}
