//! TLS to PostgreSQL with libpq's semantics, so that a URL that works with `psql` works here.
//!
//! `sslmode`: `disable` (never), `prefer` (the default: TLS when the server offers it),
//! `require` (TLS or fail), `verify-ca` (the certificate chains to `sslrootcert`),
//! `verify-full` (that, and it names the host). As in libpq, `prefer` and `require` verify the
//! chain too when a root certificate file exists (`sslrootcert`, or `~/.postgresql/root.crt`);
//! `sslrootcert=system` uses the system's trusted roots and asks for `verify-full`. A client
//! certificate (`sslcert`/`sslkey`, default `~/.postgresql/postgresql.crt` and `.key`) is sent
//! when its file exists; a key readable by group or others is refused, as libpq does. Files
//! are read at every connection, so a renewed certificate is used without a restart.
//!
//! rustls (through tokio-postgres-rustls) does the TLS; this module builds its configuration.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore};

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// No TLS.
    Disable,
    /// TLS when the server offers it (libpq's default).
    Prefer,
    /// TLS or fail; the certificate is checked only when a root certificate file exists.
    Require,
    /// TLS, and the server's certificate chains to a trusted root.
    VerifyCa,
    /// `VerifyCa`, and the certificate names the host connected to.
    VerifyFull,
}

impl SslMode {
    /// Parses the value of `sslmode`.
    pub fn parse(value: &str) -> Result<SslMode, String> {
        Ok(match value {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            "allow" => {
                return Err(
                    "sslmode=allow is not supported (use prefer, or disable)".to_string(),
                )
            }
            other => {
                return Err(format!(
                    "invalid sslmode \"{other}\" (expected disable, prefer, require, verify-ca or verify-full)"
                ))
            }
        })
    }

    /// What tokio-postgres is told: whether TLS is tried, and whether it is a must.
    pub fn driver_mode(self) -> tokio_postgres::config::SslMode {
        use tokio_postgres::config::SslMode as D;
        match self {
            SslMode::Disable => D::Disable,
            SslMode::Prefer => D::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => D::Require,
        }
    }

    /// The value as written in a URL.
    pub fn name(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

/// Where trusted roots come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootCert {
    /// A PEM file (`sslrootcert=FILE`).
    File(PathBuf),
    /// The system's trusted roots (`sslrootcert=system`).
    System,
}

/// The TLS settings of a connection string (libpq's `ssl*` parameters).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// `sslmode` (default `prefer`).
    pub mode: SslMode,
    /// `None`: the default file, `~/.postgresql/root.crt`, when it exists.
    pub root_cert: Option<RootCert>,
    /// `None`: `~/.postgresql/postgresql.crt` when it exists.
    pub cert: Option<PathBuf>,
    /// `None`: `~/.postgresql/postgresql.key`.
    pub key: Option<PathBuf>,
    /// `sslsni` (default on): send the host name in the handshake.
    pub sni: bool,
    /// `ssl_min_protocol_version` is TLSv1.3 (the default, TLSv1.2, allows both).
    pub tls13_only: bool,
}

impl Default for TlsSettings {
    fn default() -> Self {
        TlsSettings {
            mode: SslMode::Prefer,
            root_cert: None,
            cert: None,
            key: None,
            sni: true,
            tls13_only: false,
        }
    }
}

/// `~/.postgresql/NAME`, libpq's default place for certificates.
fn default_file(name: &str) -> Option<PathBuf> {
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".postgresql").join(name))
}

impl TlsSettings {
    /// The rustls configuration for these settings, reading the files now; `None` for
    /// `sslmode=disable`. Errors are for the user (they name files, never their content).
    pub fn client_config(&self) -> Result<Option<ClientConfig>, String> {
        if self.mode == SslMode::Disable {
            return Ok(None);
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let roots = self.roots()?;
        let verify = matches!(self.mode, SslMode::VerifyCa | SslMode::VerifyFull);
        let verifier: Arc<dyn ServerCertVerifier> = match roots {
            None if verify => {
                let file = default_file("root.crt").map_or_else(
                    || "~/.postgresql/root.crt".into(),
                    |p| p.display().to_string(),
                );
                return Err(format!(
                    "sslmode={} needs the certificate of the authority that signed the server's: \
                     root certificate file \"{file}\" does not exist; give sslrootcert=FILE, \
                     use the system's trusted roots with sslrootcert=system, or choose \
                     sslmode=require to connect without checking the certificate",
                    self.mode.name()
                ));
            }
            None => Arc::new(AnyCertificate(provider.clone())),
            Some(roots) => {
                let webpki =
                    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                        .build()
                        .map_err(|e| format!("the root certificates cannot be used: {e}"))?;
                if self.mode == SslMode::VerifyFull {
                    webpki
                } else {
                    Arc::new(AnyName(webpki))
                }
            }
        };
        let versions: &[&rustls::SupportedProtocolVersion] = if self.tls13_only {
            &[&rustls::version::TLS13]
        } else {
            rustls::DEFAULT_VERSIONS
        };
        let builder = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .map_err(|e| format!("TLS setup failed: {e}"))?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let mut config = match self.client_identity()? {
            Some((chain, key)) => builder.with_client_auth_cert(chain, key).map_err(|e| {
                format!("the client certificate and key cannot be used together: {e}")
            })?,
            None => builder.with_no_client_auth(),
        };
        config.enable_sni = self.sni;
        Ok(Some(config))
    }

    /// The trusted roots: the named file (which must exist), the system's, or the default
    /// file when it exists.
    fn roots(&self) -> Result<Option<RootCertStore>, String> {
        let file = match &self.root_cert {
            Some(RootCert::System) => {
                let found = rustls_native_certs::load_native_certs();
                let mut roots = RootCertStore::empty();
                roots.add_parsable_certificates(found.certs);
                if roots.is_empty() {
                    return Err(
                        "sslrootcert=system: no trusted root certificates found on this system"
                            .to_string(),
                    );
                }
                return Ok(Some(roots));
            }
            Some(RootCert::File(path)) => path.clone(),
            None => match default_file("root.crt") {
                Some(path) if path.exists() => path,
                _ => return Ok(None),
            },
        };
        let certs = read_certs(&file, "root certificate")?;
        let mut roots = RootCertStore::empty();
        let (_, unusable) = roots.add_parsable_certificates(certs);
        if roots.is_empty() {
            return Err(format!(
                "root certificate file \"{}\" holds no usable certificate ({unusable} rejected)",
                file.display()
            ));
        }
        Ok(Some(roots))
    }

    /// The client certificate chain and key, when a certificate file exists.
    #[allow(clippy::type_complexity)]
    fn client_identity(
        &self,
    ) -> Result<Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>, String> {
        // libpq: a certificate file that does not exist means no client certificate.
        let cert = match self.cert.clone().or_else(|| default_file("postgresql.crt")) {
            Some(path) if path.exists() => path,
            _ => return Ok(None),
        };
        let chain = read_certs(&cert, "client certificate")?;
        let key = match self.key.clone().or_else(|| default_file("postgresql.key")) {
            Some(path) if path.exists() => path,
            Some(path) => {
                return Err(format!(
                    "certificate present, but not private key file \"{}\"",
                    path.display()
                ))
            }
            None => return Err("certificate present, but no private key file (sslkey)".into()),
        };
        check_key_permissions(&key)?;
        let key = PrivateKeyDer::from_pem_file(&key).map_err(|e| {
            format!(
                "could not load private key file \"{}\": {}",
                key.display(),
                pem_reason(&e)
            )
        })?;
        Ok(Some((chain, key)))
    }
}

/// libpq's rule: a private key must not be readable by group or others, unless root owns it
/// and only its group may read it.
fn check_key_permissions(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).map_err(|e| {
        format!(
            "could not read private key file \"{}\": {}",
            path.display(),
            crate::secret::redact(&e.to_string())
        )
    })?;
    let mode = meta.mode();
    let allowed = if meta.uid() == 0 { 0o640 } else { 0o600 };
    if mode & 0o777 & !allowed != 0 {
        return Err(format!(
            "private key file \"{}\" has group or world access; file must have permissions \
             u=rw (0600) or less if owned by the current user, or permissions u=rw,g=r (0640) \
             or less if owned by root",
            path.display()
        ));
    }
    Ok(())
}

/// The certificates in a PEM file.
fn read_certs(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| {
            format!(
                "could not read {what} file \"{}\": {}",
                path.display(),
                pem_reason(&e)
            )
        })?;
    if certs.is_empty() {
        return Err(format!(
            "{what} file \"{}\" holds no PEM certificate",
            path.display()
        ));
    }
    Ok(certs)
}

/// A PEM error's reason; never the file's bytes.
fn pem_reason(e: &rustls::pki_types::pem::Error) -> String {
    use rustls::pki_types::pem::Error as E;
    match e {
        E::Io(io) => {
            let m = io.to_string();
            m.find(" (os error")
                .map_or(m.clone(), |i| m[..i].to_string())
        }
        E::NoItemsFound => "no PEM section of the expected kind".to_string(),
        _ => "it is not valid PEM".to_string(),
    }
}

/// `require`/`prefer` without a root certificate: any certificate is accepted (as libpq does),
/// but the handshake's signatures are still checked, so the session is encrypted end to end
/// with whoever answered.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca`: the chain is checked, the name is not. webpki checks the chain first, so a
/// certificate that fails only on its name has a good chain.
#[derive(Debug)]
struct AnyName(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_as_libpq_spells_them() {
        for m in ["disable", "prefer", "require", "verify-ca", "verify-full"] {
            assert_eq!(SslMode::parse(m).expect(m).name(), m);
        }
        assert!(SslMode::parse("verify_full")
            .expect_err("typo")
            .contains("expected disable"));
        assert!(SslMode::parse("allow").is_err());
    }

    #[test]
    fn verify_modes_without_a_root_certificate_say_what_to_do() {
        let tmp = tempfile::tempdir().expect("tmp");
        let settings = TlsSettings {
            mode: SslMode::VerifyFull,
            root_cert: Some(RootCert::File(tmp.path().join("ca.pem"))),
            ..TlsSettings::default()
        };
        let e = settings.client_config().expect_err("no file");
        assert!(e.contains("ca.pem") && e.contains("No such file"), "{e}");
    }

    #[test]
    fn a_key_others_can_read_is_refused_as_libpq_does() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().expect("tmp");
        let key = tmp.path().join("k.key");
        std::fs::write(
            &key,
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        )
        .expect("write");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let e = check_key_permissions(&key).expect_err("0644");
        assert!(e.contains("has group or world access"), "{e}");
        assert!(!e.contains("AAAA"), "{e}");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        assert!(check_key_permissions(&key).is_ok());
    }
}
