//! Credentials and their redaction, in one place: [`Secret`] holds a connection string and
//! prints it with the password replaced by `***`; [`redact`] does the same to any text (error
//! messages of drivers and of the config loader, which may quote a URL). Every message that
//! may hold a connection string goes through here before it is logged or shown.
//! [`SecretFile`] is a password or connection string kept in a file of its own
//! (`password_file`, `url_file`), read when a connection is opened, so a rotated secret is
//! used without a restart; its errors name the file, never what it holds.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// A connection string. Debug and Display print it with any password
/// replaced by `***` (postgres URL `postgres://user:pw@host/db` →
/// `postgres://user:***@host/db`; ADO.NET `password=...;`/`pwd=...;` →
/// `password=***;`).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a connection string.
    pub fn new(s: String) -> Self {
        Secret(s)
    }

    /// The real connection string, for handing to a driver only.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The connection string with credentials replaced by `***`.
    pub fn redacted(&self) -> String {
        // The whole value is one URL: its password ends at the authority's last '@', whatever
        // it contains (quotes and spaces end a URL in free text, not here).
        let s = &self.0;
        if let Some(i) = s.find("://") {
            let rest = &s[i + 3..];
            // The last '@' of all: a password may hold an unescaped '/', '?' or '#' (at worst
            // an '@' in the path or query hides a little more than the password).
            let at = rest.rfind('@');
            if let Some((colon, at)) = at.and_then(|at| rest[..at].find(':').map(|c| (c, at))) {
                return format!(
                    "{}{}***{}",
                    &s[..i + 3],
                    &rest[..=colon],
                    redact(&rest[at..])
                );
            }
        }
        redact(s)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Secret").field(&self.redacted()).finish()
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// The status page's operator token: never printed (Debug and Display show `***`), compared
/// in constant time.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    /// Wraps a token.
    pub fn new(s: String) -> Self {
        Token(s)
    }

    /// Whether `given` is this token; takes as long whatever the first differing byte.
    pub fn matches(&self, given: &str) -> bool {
        let (a, b) = (self.0.as_bytes(), given.as_bytes());
        let mut diff = a.len() ^ b.len();
        for (i, x) in a.iter().enumerate() {
            diff |= usize::from(x ^ b.get(i).copied().unwrap_or(0));
        }
        diff == 0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(***)")
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// A file that holds one secret (a password, or a whole connection string): a Docker or
/// Kubernetes secret, a systemd credential. Read anew each time a connection is opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretFile(PathBuf);

/// Why a [`SecretFile`] could not be read. Names the file, never its content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretFileError {
    /// The file is missing, unreadable or not UTF-8 text.
    #[error("cannot read {path}: {reason}")]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// The system's reason (never the content).
        reason: String,
    },
    /// The file holds nothing but blanks.
    #[error("{path} is empty")]
    Empty {
        /// The file.
        path: PathBuf,
    },
}

impl SecretFile {
    /// The secret in the file at `path`.
    pub fn new(path: PathBuf) -> Self {
        SecretFile(path)
    }

    /// Where the secret is.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Reads the secret now. Line ends at the end are dropped (`echo pw > file` and
    /// Kubernetes secrets written from text end with one); everything else is kept.
    pub fn read(&self) -> Result<Secret, SecretFileError> {
        let text = std::fs::read_to_string(&self.0).map_err(|e| SecretFileError::Unreadable {
            path: self.0.clone(),
            reason: io_reason(&e),
        })?;
        let value = text.trim_end_matches(['\n', '\r']);
        if value.trim().is_empty() {
            return Err(SecretFileError::Empty {
                path: self.0.clone(),
            });
        }
        Ok(Secret::new(value.to_string()))
    }
}

/// An I/O error's reason without the "(os error N)" tail, which tells a user nothing.
fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::InvalidData => "it is not UTF-8 text".to_string(),
        _ => {
            let m = e.to_string();
            match m.find(" (os error") {
                Some(i) => m[..i].to_string(),
                None => m,
            }
        }
    }
}

/// Redacts credentials in any text (URLs with `user:password@` and ADO.NET
/// `password=`/`pwd=` pairs). Used on error messages too.
pub fn redact(text: &str) -> String {
    redact_password_pairs(&redact_url_passwords(text))
}

/// Replaces the password of every `scheme://user:password@host` with `***`.
fn redact_url_passwords(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    // "//", not "://": a URL that lost its scheme ("//user:pw@host/db") still hides it.
    while let Some(i) = rest.find("//") {
        let (head, tail) = rest.split_at(i + 2);
        out.push_str(head);
        let token_end = tail
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '`' | '<' | '>'))
            .unwrap_or(tail.len());
        let token = &tail[..token_end];
        let host_end = token.find(['/', '?', '#']).unwrap_or(token.len());
        // A password with an unescaped '/', '?' or '#' ends the authority
        // early; then fall back to the last '@' rather than leak it.
        let at_sign = token[..host_end].rfind('@').or_else(|| token.rfind('@'));
        match at_sign.and_then(|at| token[..at].find(':').map(|colon| (colon, at))) {
            Some((colon, at)) if colon + 1 < at => {
                out.push_str(&token[..=colon]);
                out.push_str("***");
                rest = &tail[at..];
            }
            _ => rest = tail,
        }
    }
    out.push_str(rest);
    out
}

/// Replaces the value of every `password=`/`pwd=` pair (ADO.NET, JDBC, URL
/// query) with `***`.
fn redact_password_pairs(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut i = 0;
    while i < text.len() {
        match password_value_at(text, i) {
            Some(value) => {
                out.push_str(&text[copied..value.start]);
                out.push_str("***");
                copied = value.end;
                i = value.end;
            }
            None => i += 1,
        }
    }
    out.push_str(&text[copied..]);
    out
}

/// If a `password=` or `pwd=` pair (any case) starts at byte `i`, the byte
/// range of its value.
fn password_value_at(text: &str, i: usize) -> Option<Range<usize>> {
    let bytes = text.as_bytes();
    let before = i.checked_sub(1).map(|j| bytes[j]);
    let at_boundary = match before {
        None => true,
        Some(b) => b.is_ascii_whitespace() || b";?&\"'{(,".contains(&b),
    };
    if !at_boundary {
        return None;
    }
    let key = ["password", "pwd"].into_iter().find(|key| {
        bytes
            .get(i..i + key.len())
            .is_some_and(|k| k.eq_ignore_ascii_case(key.as_bytes()))
    })?;
    let skip_blanks = |mut j: usize| {
        while bytes.get(j).is_some_and(|b| *b == b' ' || *b == b'\t') {
            j += 1;
        }
        j
    };
    let j = skip_blanks(i + key.len());
    if bytes.get(j) != Some(&b'=') {
        return None;
    }
    let start = skip_blanks(j + 1);
    // In a URL query the value ends at '&'; in ADO.NET it ends at ';' and may
    // be quoted (a doubled quote escapes itself).
    let in_query = matches!(before, Some(b'?' | b'&'));
    let end = match bytes.get(start) {
        Some(&quote @ (b'"' | b'\'')) if !in_query => closing_quote(bytes, start, quote),
        _ => {
            let stops: &[u8] = if in_query { b"&# \t\r\n" } else { b";\r\n" };
            bytes[start..]
                .iter()
                .position(|b| stops.contains(b))
                .map_or(bytes.len(), |p| start + p)
        }
    };
    (end > start).then_some(start..end)
}

/// The byte just past the quote closing the one at `open`.
fn closing_quote(bytes: &[u8], open: usize, quote: u8) -> usize {
    let mut k = open + 1;
    while k < bytes.len() {
        if bytes[k] == quote {
            if bytes.get(k + 1) == Some(&quote) {
                k += 2;
                continue;
            }
            return k + 1;
        }
        k += 1;
    }
    bytes.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_files_drop_line_ends_and_never_show_their_content() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("pw");
        std::fs::write(&path, "s3 cret\r\n").expect("write");
        let file = SecretFile::new(path.clone());
        assert_eq!(file.read().expect("read").expose(), "s3 cret");
        std::fs::write(&path, "\n").expect("write");
        let e = file.read().expect_err("empty");
        assert_eq!(e.to_string(), format!("{} is empty", path.display()));
        std::fs::write(&path, [0xff_u8, b'x']).expect("write");
        let e = file.read().expect_err("binary").to_string();
        assert!(e.ends_with("it is not UTF-8 text"), "{e}");
        let missing = SecretFile::new(dir.path().join("nope"));
        let e = missing.read().expect_err("missing").to_string();
        assert_eq!(
            e,
            format!(
                "cannot read {}: No such file or directory",
                missing.path().display()
            )
        );
    }

    #[test]
    fn redacts_url_passwords() {
        for (text, expected) in [
            ("postgres://user:pw@host/db", "postgres://user:***@host/db"),
            (
                "postgresql://u:p%40ss@h:5432/db?sslmode=require",
                "postgresql://u:***@h:5432/db?sslmode=require",
            ),
            ("postgres://user@host/db", "postgres://user@host/db"),
            ("postgres://host:5432/db", "postgres://host:5432/db"),
            ("postgres://u:pa/ss@h/db", "postgres://u:***@h/db"),
            (
                "failed: postgres://a:1@h/x and postgres://b:2@h/y.",
                "failed: postgres://a:***@h/x and postgres://b:***@h/y.",
            ),
            (
                "postgres://u@h/db?password=secret&sslmode=require",
                "postgres://u@h/db?password=***&sslmode=require",
            ),
        ] {
            assert_eq!(redact(text), expected, "{text}");
        }
    }

    #[test]
    fn redacts_ado_net_passwords() {
        for (text, expected) in [
            (
                "Server=tcp:db,1433;Database=erp;User Id=sa;Password=S3cret!;Encrypt=true",
                "Server=tcp:db,1433;Database=erp;User Id=sa;Password=***;Encrypt=true",
            ),
            ("server=db;uid=sa;pwd=abc", "server=db;uid=sa;pwd=***"),
            ("PWD = abc ; x=1", "PWD = ***; x=1"),
            (
                "Server=db;Password=\"a;b\"\"c\";Database=x",
                "Server=db;Password=***;Database=x",
            ),
            ("Server=db;Password='x;y';", "Server=db;Password=***;"),
            ("Server=db;Password=;", "Server=db;Password=;"),
            ("Server=db;OldPassword=x;", "Server=db;OldPassword=x;"),
            ("no credentials here", "no credentials here"),
            ("Passwort=é;password=ü", "Passwort=é;password=***"),
        ] {
            assert_eq!(redact(text), expected, "{text}");
        }
    }
}
