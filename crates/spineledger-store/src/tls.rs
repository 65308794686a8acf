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
//! every TLS connection of the process verifies against it, as libpq's `require` does
//! when a root certificate file is present. (`verify-ca`, which checks the chain but not
//! the name, is not offered: with a CA at hand, checking the name costs nothing.)
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
/// out and configured with [`trust_server_ca`].
///
/// # Errors
/// `verify-full` with no CA configured or given, `verify-ca`, or an unusable CA file.
pub fn libpq_url(url: &str) -> Result<String, StoreError> {
    let (base, separator, parameters): (&str, char, Vec<&str>) = match url.split_once('?') {
        Some((base, query)) => (base, '&', query.split('&').collect()),
        None if url.contains("://") => (url, '&', Vec::new()),
        None => ("", ' ', url.split_whitespace().collect()),
    };
    let mut kept = Vec::with_capacity(parameters.len());
    let mut verify_full = false;
    for parameter in parameters {
        match parameter.split_once('=') {
            Some(("sslmode", "verify-full")) => {
                verify_full = true;
                kept.push("sslmode=require");
            }
            Some(("sslmode", "verify-ca")) => {
                return Err(StoreError::Configuration(
                    "sslmode=verify-ca is not supported: use verify-full".into(),
                ));
            }
            Some(("sslrootcert", path)) => trust_server_ca(Path::new(path))?,
            _ => kept.push(parameter),
        }
    }
    if verify_full && !server_ca_configured() {
        return Err(StoreError::Configuration(
            "sslmode=verify-full needs the server's CA: sslrootcert=<file> in the URL, \
             --database-ca or PGSSLROOTCERT"
                .into(),
        ));
    }
    let joined = kept.join(&separator.to_string());
    Ok(match (base.is_empty(), joined.is_empty()) {
        (true, _) => joined,
        (false, true) => base.to_owned(),
        (false, false) => format!("{base}?{joined}"),
    })
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
    }
}
