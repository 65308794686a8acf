//! TLS to PostgreSQL, with libpq's `sslmode` semantics.
//!
//! | `sslmode` | what a connection does |
//! |---|---|
//! | `disable` | plaintext |
//! | `prefer` (tokio-postgres' default) | TLS if the server offers it, else plaintext |
//! | `require` | TLS or no connection |
//! | `verify-full` | TLS, the server's certificate verified against the configured CA and its name against the host |
//!
//! Like libpq, `prefer` and `require` encrypt without verifying who answers (protection
//! from eavesdroppers, not from an impostor); `verify-full` needs the CA that issued the
//! server's certificate: `sslrootcert=<file>` in the URL, or [`trust_server_ca`] (the
//! binary's `--database-ca`, or `PGSSLROOTCERT` as for libpq). Once a CA is configured,
//! the process is stricter than libpq: every connection that is not `disable` requires
//! TLS (a `prefer` cannot fall back to plaintext when an attacker answers "no TLS") and
//! verifies the certificate chain and the host name. (`verify-ca`, which checks the
//! chain but not the name, is not offered: with a CA at hand, checking the name costs
//! nothing.)
//!
//! tokio-postgres parses only `disable`, `prefer` and `require`, so [`libpq_url`] turns
//! `verify-full` into `require` plus the CA requirement before parsing.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres::Config;
use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::StoreError;

/// The CA server certificates are verified against, once configured.
static SERVER_CA: OnceLock<(PathBuf, Arc<RootCertStore>)> = OnceLock::new();

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// From now on, verify every PostgreSQL server certificate against the CA certificates in
/// the PEM file at `path`, and the server's name against the host connected to. Once per
/// process; configuring the same file again is a no-op, another file an error.
///
/// # Errors
/// The file cannot be read, holds no certificate, or another CA is already configured.
pub fn trust_server_ca(path: &Path) -> Result<(), StoreError> {
    if let Some((configured, _)) = SERVER_CA.get() {
        return if configured == path {
            Ok(())
        } else {
            Err(StoreError::Configuration(format!(
                "the PostgreSQL server CA is already {}; cannot also use {}",
                configured.display(),
                path.display()
            )))
        };
    }
    let failed = |reason: String| {
        StoreError::Configuration(format!(
            "cannot use {} as the PostgreSQL server CA: {reason}",
            path.display()
        ))
    };
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(|error| failed(error.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| failed(error.to_string()))?;
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(certificates);
    if added == 0 {
        return Err(failed("no certificate in it".into()));
    }
    let _ = SERVER_CA.set((path.to_owned(), Arc::new(roots)));
    trust_server_ca_is(path)
}

/// `Ok` when the configured CA is the one at `path` (a concurrent first configuration of
/// another file loses).
fn trust_server_ca_is(path: &Path) -> Result<(), StoreError> {
    match SERVER_CA.get() {
        Some((configured, _)) if configured == path => Ok(()),
        _ => Err(StoreError::Configuration(
            "another PostgreSQL server CA was configured at the same time".into(),
        )),
    }
}

/// Whether a server CA is configured.
pub fn server_ca_configured() -> bool {
    SERVER_CA.get().is_some()
}

/// The configured server CA's file, if any.
pub fn server_ca_path() -> Option<&'static Path> {
    SERVER_CA.get().map(|(path, _)| path.as_path())
}

/// `config` as it is connected with: once a CA is configured, `prefer` becomes
/// `require`, so a verified connection can never quietly become a plaintext one.
pub fn effective(config: &Config) -> std::borrow::Cow<'_, Config> {
    if server_ca_configured() && config.get_ssl_mode() == SslMode::Prefer {
        let mut strict = config.clone();
        strict.ssl_mode(SslMode::Require);
        std::borrow::Cow::Owned(strict)
    } else {
        std::borrow::Cow::Borrowed(config)
    }
}

/// The connector every connection uses (pools, single connections, the projectors'
/// LISTEN connection). It only matters when the connection's `sslmode` asks for TLS.
///
/// # Errors
/// rustls refuses the protocol versions (never expected).
pub fn connector() -> Result<MakeRustlsConnect, StoreError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|error| StoreError::Configuration(format!("TLS: {error}")))?;
    let config = match SERVER_CA.get() {
        Some((_, roots)) => builder
            .with_root_certificates(Arc::clone(roots))
            .with_no_client_auth(),
        None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(EncryptOnly(provider())))
            .with_no_client_auth(),
    };
    Ok(MakeRustlsConnect::new(config))
}

/// libpq's `require`/`prefer` without a CA: the handshake's signatures are checked (so
/// the session keys belong to whoever holds the certificate's key), the certificate is
/// not (anyone may hold it).
#[derive(Debug)]
struct EncryptOnly(Arc<CryptoProvider>);

impl ServerCertVerifier for EncryptOnly {
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

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A URL (or key=value string) tokio-postgres can parse, from one in libpq's terms:
/// `sslmode=verify-full` becomes `require` and needs a CA, `sslrootcert=<file>` is taken
/// out and configured with [`trust_server_ca`]. Everything else is passed on untouched.
///
/// # Errors
/// `verify-full` with no CA configured or given, `verify-ca`, or an unusable CA file.
pub fn libpq_url(url: &str) -> Result<String, StoreError> {
    let is_url = url.starts_with("postgres://") || url.starts_with("postgresql://");
    let mut verify_full = false;
    let translated = if is_url {
        let Some((base, query)) = url.split_once('?') else {
            return Ok(url.to_owned());
        };
        let mut kept = Vec::new();
        for parameter in query.split('&') {
            let (key, value) = parameter.split_once('=').unwrap_or((parameter, ""));
            match translate(key, &percent_decode(value), &mut verify_full)? {
                Translated::Keep => kept.push(parameter.to_owned()),
                Translated::Replace(value) => kept.push(format!("{key}={value}")),
                Translated::Drop => {}
            }
        }
        if kept.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", kept.join("&"))
        }
    } else {
        let mut kept = Vec::new();
        for (key, value, raw) in key_values(url)? {
            match translate(&key, &value, &mut verify_full)? {
                Translated::Keep => kept.push(raw),
                Translated::Replace(value) => kept.push(format!("{key}={value}")),
                Translated::Drop => {}
            }
        }
        kept.join(" ")
    };
    if verify_full && !server_ca_configured() {
        return Err(StoreError::Configuration(
            "sslmode=verify-full needs the server's CA: sslrootcert=<file> in the URL, \
             --database-ca or PGSSLROOTCERT"
                .into(),
        ));
    }
    Ok(translated)
}

enum Translated {
    Keep,
    Replace(&'static str),
    Drop,
}

fn translate(key: &str, value: &str, verify_full: &mut bool) -> Result<Translated, StoreError> {
    match (key, value) {
        ("sslmode", "verify-full") => {
            *verify_full = true;
            Ok(Translated::Replace("require"))
        }
        ("sslmode", "verify-ca") => Err(StoreError::Configuration(
            "sslmode=verify-ca is not supported: use verify-full".into(),
        )),
        // A later sslmode overrides an earlier verify-full, as in libpq.
        ("sslmode", _) => {
            *verify_full = false;
            Ok(Translated::Keep)
        }
        ("sslrootcert", path) => {
            trust_server_ca(Path::new(path))?;
            Ok(Translated::Drop)
        }
        _ => Ok(Translated::Keep),
    }
}

/// `%XX` escapes decoded (a path in a URL); an invalid escape is kept as written.
fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let escaped = (bytes[index] == b'%')
            .then(|| value.get(index + 1..index + 3))
            .flatten()
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(byte) => {
                decoded.push(byte);
                index += 3;
            }
            None => {
                decoded.push(bytes[index]);
                index += 1;
            }
        }
    }
    String::from_utf8_lossy(&decoded).into_owned()
}

/// The `key=value` pairs of a libpq key/value string (spaces around `=` allowed, values
/// optionally in single quotes with `\` escapes): (key, value, the pair as written).
fn key_values(text: &str) -> Result<Vec<(String, String, String)>, StoreError> {
    let malformed = || StoreError::Configuration("a malformed key=value connection string".into());
    let mut pairs = Vec::new();
    let mut rest = text.trim_start();
    while !rest.is_empty() {
        let start = rest;
        let equals = rest.find('=').ok_or_else(malformed)?;
        let key = rest[..equals].trim().to_owned();
        if key.is_empty() || key.contains(char::is_whitespace) {
            return Err(malformed());
        }
        rest = rest[equals + 1..].trim_start();
        let mut value = String::new();
        if let Some(quoted) = rest.strip_prefix('\'') {
            let mut chars = quoted.char_indices();
            let mut end = None;
            while let Some((at, c)) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next().map(|(_, c)| c)),
                    '\'' => {
                        end = Some(at + 1);
                        break;
                    }
                    c => value.push(c),
                }
            }
            rest = &quoted[end.ok_or_else(malformed)?..];
        } else {
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            value.push_str(&rest[..end]);
            rest = &rest[end..];
        }
        let raw = start[..start.len() - rest.len()].trim().to_owned();
        pairs.push((key, value, raw));
        rest = rest.trim_start();
    }
    Ok(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libpq_parameters_are_translated_and_the_rest_kept() {
        assert_eq!(
            libpq_url("postgres://a@h/db?sslmode=require&application_name=x").ok(),
            Some("postgres://a@h/db?sslmode=require&application_name=x".to_owned())
        );
        assert_eq!(
            libpq_url("host=h user=a sslmode=disable").ok(),
            Some("host=h user=a sslmode=disable".to_owned())
        );
        assert!(libpq_url("postgres://a@h/db?sslmode=verify-ca").is_err());
        // No CA is configured in this (unit test) process.
        assert!(libpq_url("postgres://a@h/db?sslmode=verify-full").is_err());
        assert!(libpq_url("host=h sslmode=verify-full").is_err());
        assert!(libpq_url("postgres://a@h/db?sslrootcert=/nonexistent/ca.pem").is_err());
        // A later sslmode wins, as in libpq.
        assert!(libpq_url("postgres://a@h/db?sslmode=verify-full&sslmode=disable").is_ok());
        // Quoted values keep their spaces; a '?' in a key=value password is no URL.
        assert_eq!(
            libpq_url("host=h password='a ? b  c' sslmode = require").ok(),
            Some("host=h password='a ? b  c' sslmode = require".to_owned())
        );
        assert!(libpq_url("host=h password='unterminated").is_err());
        assert_eq!(percent_decode("/etc/ssl/my%20ca.pem"), "/etc/ssl/my ca.pem");
        assert_eq!(percent_decode("100%"), "100%");
    }
}
