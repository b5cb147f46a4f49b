//! ADO.NET connection strings (`server=tcp:host,1433;database=..;user=..;password=..`) →
//! a tiberius `Config`, with TLS on unless the string turns it off, and a description of the
//! target (host, port, database) that never contains a credential.

use std::time::Duration;

use crate::config::{redact, Side, SideConfig};
use crate::endpoint::EndpointError;

/// A parsed connection string: the driver config and what to show in messages.
pub struct Ado {
    pub config: tiberius::Config,
    /// `host:port/database`, never a user or password.
    pub target: String,
    /// From `Connect Timeout` (seconds), default 5 s.
    pub connect_timeout: Duration,
}

/// Splits `key=value;...` the ADO.NET way: keys are case-insensitive and trimmed; a value may
/// be quoted with '…', "…" (the quote doubled inside) or {…}. Returns lower-cased keys.
pub fn pairs(s: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let mut rest = s;
    loop {
        rest = rest.trim_start_matches([' ', ';']);
        if rest.is_empty() {
            return Ok(out);
        }
        let Some(eq) = rest.find('=') else {
            return Err(format!(
                "\"{}\" has no '=': expected key=value pairs separated by ';'",
                first_word(rest)
            ));
        };
        let key = rest[..eq].trim().to_ascii_lowercase();
        rest = rest[eq + 1..].trim_start_matches(' ');
        let (value, after) = match rest.chars().next() {
            Some(q @ ('\'' | '"')) => quoted(&rest[1..], q).ok_or_else(|| {
                format!("the value of {key} starts with {q} but has no closing {q}")
            })?,
            Some('{') => {
                let end = rest.find('}').ok_or_else(|| {
                    format!("the value of {key} starts with {{ but has no closing }}")
                })?;
                (rest[1..end].to_string(), &rest[end + 1..])
            }
            _ => {
                let end = rest.find(';').unwrap_or(rest.len());
                (rest[..end].trim_end().to_string(), &rest[end..])
            }
        };
        let after = after.trim_start_matches(' ');
        if !after.is_empty() && !after.starts_with(';') {
            return Err(format!("unexpected text after the quoted value of {key}"));
        }
        out.push((key, value));
        rest = after;
    }
}

fn first_word(s: &str) -> String {
    s.split(';').next().unwrap_or("").chars().take(20).collect()
}

/// A value after its opening quote `q`, up to the closing one (a doubled quote is one quote).
fn quoted(s: &str, q: char) -> Option<(String, &str)> {
    let mut value = String::new();
    let mut chars = s.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c == q {
            if chars.peek().map(|(_, n)| *n) == Some(q) {
                value.push(q);
                chars.next();
                continue;
            }
            return Some((value, &s[i + c.len_utf8()..]));
        }
        value.push(c);
    }
    None
}

fn get<'a>(pairs: &'a [(String, String)], names: &[&str]) -> Option<&'a str> {
    pairs
        .iter()
        .rev()
        .find(|(k, _)| names.contains(&k.as_str()))
        .map(|(_, v)| v.as_str())
}

/// `tcp:host,port`, `host\instance`, `host` → (host, port, instance).
fn server(value: &str) -> (String, Option<u16>, Option<String>) {
    let v = value.trim();
    let v = v.strip_prefix("tcp:").unwrap_or(v);
    let (hostpart, port) = match v.rsplit_once(',') {
        Some((h, p)) => (h, p.trim().parse::<u16>().ok()),
        None => (v, None),
    };
    let (host, instance) = match hostpart.split_once('\\') {
        Some((h, i)) => (h, Some(i.to_string())),
        None => (hostpart, None),
    };
    let host = match host.trim() {
        "." | "(local)" | "" => "localhost".to_string(),
        h => h.to_string(),
    };
    (host, port, instance)
}

/// Parses the connection string for side `side`. Errors never repeat a password.
pub fn parse(s: &str, side: Side) -> Result<Ado, EndpointError> {
    let bad = |m: String| {
        EndpointError::Config(format!(
            "side {side}: the url is not a valid SQL Server (ADO.NET) connection string: {} \
             (expected e.g. server=tcp:host,1433;database=app;user=tandem;password=${{MSSQL_PASSWORD}};TrustServerCertificate=true)",
            redact(&m)
        ))
    };
    if s.contains("://") {
        return Err(bad(
            "a URL was given, but kind = \"mssql\" takes an ADO.NET string".into(),
        ));
    }
    let p = pairs(s).map_err(bad)?;
    let Some(server_value) = get(
        &p,
        &[
            "server",
            "data source",
            "address",
            "addr",
            "network address",
        ],
    ) else {
        return Err(bad("server= is missing".into()));
    };
    if let Some(v) = get(
        &p,
        &[
            "integrated security",
            "integratedsecurity",
            "trusted_connection",
        ],
    ) {
        if matches!(v.to_ascii_lowercase().as_str(), "true" | "yes" | "sspi") {
            return Err(bad(
                "integrated (Windows) security is not supported: give user= and password=".into(),
            ));
        }
    }
    if get(&p, &["user", "user id", "uid", "username"]).is_none() {
        return Err(bad(
            "user= is missing (SQL Server authentication is required)".into(),
        ));
    }
    let connect_timeout = match get(&p, &["connect timeout", "connection timeout", "timeout"]) {
        Some(v) => Duration::from_secs(
            v.trim()
                .parse::<u64>()
                .map_err(|_| bad(format!("Connect Timeout={v} is not a number of seconds")))?
                .max(1),
        ),
        None => Duration::from_secs(5),
    };
    let mut config = tiberius::Config::from_ado_string(s).map_err(|e| bad(e.to_string()))?;
    if get(&p, &["application name", "app"]).is_none() {
        config.application_name("tandem");
    }
    let (host, port, instance) = server(server_value);
    let database = get(&p, &["database", "initial catalog"]).unwrap_or("");
    let target = match (port, instance) {
        (Some(port), _) => format!("{host}:{port}/{database}"),
        (None, Some(i)) => format!("{host}\\{i}/{database}"),
        (None, None) => format!("{host}:1433/{database}"),
    };
    Ok(Ado {
        config,
        target,
        connect_timeout,
    })
}

/// The side's connection as it is now: `url_file` and `password_file` are read again, so the
/// next connection after a rotation uses the new secret. The password from `password_file`
/// wins over one in the string.
pub fn for_side(sc: &SideConfig, side: Side) -> Result<Ado, EndpointError> {
    let file_error = |key: &str, e: crate::config::SecretFileError| {
        EndpointError::Config(format!("side {side}: {key}: {e}"))
    };
    let url = sc.current_url().map_err(|e| file_error("url_file", e))?;
    let mut ado = parse(url.expose(), side)?;
    if let Some(password) = sc
        .current_password()
        .map_err(|e| file_error("password_file", e))?
    {
        let p = pairs(url.expose()).unwrap_or_default();
        let user = get(&p, &["user", "user id", "uid", "username"]).unwrap_or("");
        ado.config
            .authentication(tiberius::AuthMethod::sql_server(user, password.expose()));
    }
    Ok(ado)
}

/// The same connection string pointing at another database (used by the tests to create
/// throwaway databases next to the given one).
pub fn with_database(s: &str, database: &str) -> Result<String, String> {
    let p = pairs(s)?;
    let mut out: Vec<String> = p
        .iter()
        .filter(|(k, _)| k != "database" && k != "initial catalog")
        .map(|(k, v)| format!("{k}={}", quote(v)))
        .collect();
    out.push(format!("database={}", quote(database)));
    Ok(out.join(";"))
}

/// A value quoted when it holds a character the syntax uses.
fn quote(v: &str) -> String {
    if v.contains([';', '=', '\'', '"', '{', '}']) || v.trim() != v {
        format!("\"{}\"", v.replace('"', "\"\""))
    } else {
        v.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_pairs_with_quotes() {
        let p = pairs("Server=tcp:db,1433; Database=app;Password='a;b''c';User Id={x;y}").unwrap();
        assert_eq!(
            p,
            vec![
                ("server".into(), "tcp:db,1433".into()),
                ("database".into(), "app".into()),
                ("password".into(), "a;b'c".into()),
                ("user id".into(), "x;y".into()),
            ]
        );
        assert!(pairs("server").is_err());
        assert!(pairs("password='open").is_err());
    }

    #[test]
    fn parses_target_without_credentials() {
        let a = parse(
            "server=tcp:db.example,14330;database=legacy;user=tandem;password=S3cret!;TrustServerCertificate=true",
            Side::A,
        )
        .unwrap();
        assert_eq!(a.target, "db.example:14330/legacy");
        assert_eq!(a.connect_timeout, Duration::from_secs(5));
        let b = parse("server=.\\SQLEXPRESS;user=u;password=p", Side::B).unwrap();
        assert_eq!(b.target, "localhost\\SQLEXPRESS/");
    }

    #[test]
    fn errors_never_show_the_password() {
        for s in [
            "server=db;password=S3cretPw;integrated security=true;user=u",
            "password=S3cretPw;database=x",
            "server=db;user=u;password=S3cretPw;connect timeout=soon",
            "mssql://u:S3cretPw@db/x",
        ] {
            let e = match parse(s, Side::A) {
                Ok(_) => panic!("{s} parsed"),
                Err(e) => e.to_string(),
            };
            assert!(!e.contains("S3cretPw"), "{e}");
            assert!(e.contains("side A"), "{e}");
        }
    }

    #[test]
    fn swaps_the_database() {
        let s = with_database("server=tcp:h,1433;Database=old;password='p;w'", "t_1").unwrap();
        assert_eq!(s, "server=tcp:h,1433;password=\"p;w\";database=t_1");
    }
}
