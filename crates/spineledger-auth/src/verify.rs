//! Verifying bearer tokens against trusted issuers' keys.
//!
//! Each trusted issuer comes with its own keys (a JWKS document, the format identity
//! providers publish at their `jwks_uri`): a key signs for its issuer only, so the local
//! development key can never mint a token that claims the production identity provider.
//! A token is checked for: an accepted asymmetric algorithm (never `none` or HMAC, whose
//! secret the service would have to share), a trusted key (by `kid`, or by algorithm when
//! the token names none), the signature, `iss`, `aud`, `exp`, `nbf` (30 s of clock
//! leeway each way), and `sub`. Only then are the spineledger claims read.
//!
//! A JWKS file is read again when it changes (checked at most every few seconds), so an
//! identity provider's key rotation reaches the service by replacing the file: add the
//! new key, let tokens signed by the old one expire, remove it.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, errors::ErrorKind};

use crate::AuthError;
use crate::principal::{Claims, Principal};

/// The signature algorithms accepted: the asymmetric ones identity providers use.
pub const ACCEPTED_ALGORITHMS: [Algorithm; 9] = [
    Algorithm::EdDSA,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
];

/// Clock skew tolerated on `exp` and `nbf`, in seconds.
pub const LEEWAY_SECONDS: u64 = 30;

/// How often a JWKS file is looked at for changes.
const RECHECK_INTERVAL: Duration = Duration::from_secs(5);

/// One public key of an issuer.
struct TrustedKey {
    kid: Option<String>,
    /// The one algorithm the key verifies (its `alg`, or implied by its type).
    algorithm: Algorithm,
    key: DecodingKey,
}

impl TrustedKey {
    fn signs(&self, kid: Option<&str>, algorithm: Algorithm) -> bool {
        let kid_matches = match kid {
            Some(kid) => self.kid.as_deref() == Some(kid),
            None => true,
        };
        kid_matches && self.algorithm == algorithm && self.key.family() == algorithm.family()
    }
}

/// Parses a JWKS document into the signing keys it holds. Encryption keys are skipped;
/// symmetric (`oct`) keys are refused: a shared secret would let anyone who can read the
/// service's configuration mint tokens.
fn parse_jwks(json: &str) -> Result<Vec<TrustedKey>, String> {
    let set: JwkSet =
        serde_json::from_str(json).map_err(|error| format!("not a JWKS document: {error}"))?;
    let mut keys = Vec::with_capacity(set.keys.len());
    for jwk in &set.keys {
        if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
            continue;
        }
        if matches!(jwk.algorithm, AlgorithmParameters::OctetKey(_)) {
            return Err("symmetric (oct) keys are not accepted".into());
        }
        // One algorithm per key (RFC 8725 3.1): the one the JWK names, else the one its
        // key type implies (RS256 for RSA, the JOSE default; a PS* key must say so).
        let algorithm = match jwk.common.key_algorithm {
            Some(algorithm) => Algorithm::try_from(algorithm)
                .ok()
                .filter(|algorithm| ACCEPTED_ALGORITHMS.contains(algorithm))
                .ok_or_else(|| format!("key algorithm {algorithm} is not accepted"))?,
            None => match &jwk.algorithm {
                AlgorithmParameters::OctetKeyPair(_) => Algorithm::EdDSA,
                AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
                    EllipticCurve::P256 => Algorithm::ES256,
                    EllipticCurve::P384 => Algorithm::ES384,
                    _ => return Err("an EC key without alg must be on P-256 or P-384".into()),
                },
                AlgorithmParameters::RSA(_) => Algorithm::RS256,
                _ => return Err("a key of a type the service does not accept".into()),
            },
        };
        let key = DecodingKey::from_jwk(jwk).map_err(|error| format!("unusable key: {error}"))?;
        keys.push(TrustedKey {
            kid: jwk.common.key_id.clone(),
            algorithm,
            key,
        });
    }
    if keys.is_empty() {
        return Err("no signing keys".into());
    }
    Ok(keys)
}

/// Where an issuer's keys come from.
enum KeySource {
    /// Given once (the development key, tests).
    Fixed(Arc<Vec<TrustedKey>>),
    /// A JWKS file, read again when it changes.
    File(JwksFile),
}

struct JwksFile {
    path: PathBuf,
    recheck: Duration,
    state: RwLock<FileState>,
}

struct FileState {
    keys: Arc<Vec<TrustedKey>>,
    modified: Option<SystemTime>,
    checked: Instant,
}

impl JwksFile {
    fn open(path: &Path, recheck: Duration) -> Result<Self, AuthError> {
        let (keys, modified) = Self::read(path)?;
        Ok(Self {
            path: path.to_owned(),
            recheck,
            state: RwLock::new(FileState {
                keys: Arc::new(keys),
                modified,
                checked: Instant::now(),
            }),
        })
    }

    fn read(path: &Path) -> Result<(Vec<TrustedKey>, Option<SystemTime>), AuthError> {
        let failed = |reason: String| AuthError::KeyFile {
            path: path.to_owned(),
            reason,
        };
        let modified = std::fs::metadata(path)
            .and_then(|metadata| metadata.modified())
            .ok();
        let text = std::fs::read_to_string(path).map_err(|error| failed(error.to_string()))?;
        let keys = parse_jwks(&text).map_err(failed)?;
        Ok((keys, modified))
    }

    /// The current keys; re-reads the file when it changed since the last look. A file
    /// that has become unreadable or invalid keeps the last good keys (and says so), so a
    /// half-written replacement cannot lock every client out.
    fn keys(&self) -> Arc<Vec<TrustedKey>> {
        {
            let state = self
                .state
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if state.checked.elapsed() < self.recheck {
                return Arc::clone(&state.keys);
            }
        }
        let mut state = self
            .state
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if state.checked.elapsed() >= self.recheck {
            state.checked = Instant::now();
            let modified = std::fs::metadata(&self.path)
                .and_then(|metadata| metadata.modified())
                .ok();
            if modified != state.modified {
                match Self::read(&self.path) {
                    Ok((keys, modified)) => {
                        tracing::info!(path = %self.path.display(), keys = keys.len(), "JWKS file reloaded");
                        state.keys = Arc::new(keys);
                        state.modified = modified;
                    }
                    Err(error) => {
                        tracing::warn!(%error, "JWKS file changed but cannot be used; keeping the previous keys");
                    }
                }
            }
        }
        Arc::clone(&state.keys)
    }
}

/// An issuer the service trusts, with the keys that sign for it.
pub struct TrustedIssuer {
    issuer: String,
    keys: KeySource,
}

impl std::fmt::Debug for TrustedIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let source = match &self.keys {
            KeySource::Fixed(keys) => format!("{} fixed keys", keys.len()),
            KeySource::File(file) => format!("JWKS file {}", file.path.display()),
        };
        f.debug_struct("TrustedIssuer")
            .field("issuer", &self.issuer)
            .field("keys", &source)
            .finish()
    }
}

impl TrustedIssuer {
    /// `issuer`, whose keys are in the JWKS file at `path` (re-read when it changes).
    ///
    /// # Errors
    /// The file cannot be read or holds no usable signing key.
    pub fn jwks_file(issuer: impl Into<String>, path: &Path) -> Result<Self, AuthError> {
        Self::jwks_file_rechecked(issuer, path, RECHECK_INTERVAL)
    }

    /// As [`TrustedIssuer::jwks_file`], looking for changes every `recheck`.
    pub(crate) fn jwks_file_rechecked(
        issuer: impl Into<String>,
        path: &Path,
        recheck: Duration,
    ) -> Result<Self, AuthError> {
        Ok(Self {
            issuer: issuer.into(),
            keys: KeySource::File(JwksFile::open(path, recheck)?),
        })
    }

    /// `issuer`, whose keys are the JWKS document `jwks`.
    ///
    /// # Errors
    /// The document holds no usable signing key.
    pub fn jwks(issuer: impl Into<String>, jwks: &str) -> Result<Self, AuthError> {
        Ok(Self {
            issuer: issuer.into(),
            keys: KeySource::Fixed(Arc::new(parse_jwks(jwks).map_err(AuthError::Key)?)),
        })
    }

    /// The issuer's name (`iss`).
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    fn current_keys(&self) -> Arc<Vec<TrustedKey>> {
        match &self.keys {
            KeySource::Fixed(keys) => Arc::clone(keys),
            KeySource::File(file) => file.keys(),
        }
    }
}

/// Verifies bearer tokens for one audience against the trusted issuers.
#[derive(Debug, Default)]
pub struct Verifier {
    audience: String,
    issuers: Vec<TrustedIssuer>,
}

impl Verifier {
    /// A verifier for tokens whose `aud` names `audience`, trusting no issuer yet (it
    /// refuses every token until one is added).
    pub fn new(audience: impl Into<String>) -> Self {
        Self {
            audience: audience.into(),
            issuers: Vec::new(),
        }
    }

    /// Trusts `issuer` too.
    ///
    /// # Errors
    /// An issuer of the same name is already trusted (its keys would be ambiguous).
    pub fn trust(mut self, issuer: TrustedIssuer) -> Result<Self, AuthError> {
        if self
            .issuers
            .iter()
            .any(|known| known.issuer == issuer.issuer)
        {
            return Err(AuthError::Key(format!(
                "issuer {} is configured twice",
                issuer.issuer
            )));
        }
        self.issuers.push(issuer);
        Ok(self)
    }

    /// The trusted issuers' names.
    pub fn issuers(&self) -> impl Iterator<Item = &str> {
        self.issuers.iter().map(TrustedIssuer::issuer)
    }

    /// The audience tokens must name.
    pub fn audience(&self) -> &str {
        &self.audience
    }

    /// The principal of the `authorization` metadata value (`Bearer <token>`).
    ///
    /// # Errors
    /// No or a malformed header, or a token [`Verifier::verify`] refuses.
    pub fn verify_authorization(
        &self,
        authorization: Option<&[u8]>,
    ) -> Result<Principal, AuthError> {
        let value = authorization.ok_or(AuthError::MissingToken)?;
        let value = std::str::from_utf8(value)
            .map_err(|_| AuthError::Malformed("the authorization header is not text".into()))?;
        let token = value
            .split_once(' ')
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim())
            .filter(|token| !token.is_empty())
            .ok_or_else(|| AuthError::Malformed("expected `Bearer <token>`".into()))?;
        self.verify(token)
    }

    /// The principal of a compact JWS `token`.
    ///
    /// # Errors
    /// See [`AuthError`]: every check named in the module documentation.
    pub fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|error| AuthError::Malformed(error.to_string()))?;
        if !ACCEPTED_ALGORITHMS.contains(&header.alg) {
            return Err(AuthError::UnsupportedAlgorithm(format!("{:?}", header.alg)));
        }
        let mut refusal = AuthError::UnknownKey;
        for issuer in &self.issuers {
            let keys = issuer.current_keys();
            for key in keys
                .iter()
                .filter(|key| key.signs(header.kid.as_deref(), header.alg))
            {
                let mut validation = Validation::new(header.alg);
                validation.leeway = LEEWAY_SECONDS;
                validation.validate_nbf = true;
                validation.set_issuer(&[&issuer.issuer]);
                validation.set_audience(&[&self.audience]);
                validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
                match jsonwebtoken::decode::<Claims>(token, &key.key, &validation) {
                    Ok(data) => return Principal::from_claims(data.claims),
                    Err(error) => match classify(error.kind()) {
                        // Another key of the same kid or algorithm may still verify it.
                        AuthError::BadSignature => refusal = AuthError::BadSignature,
                        other => return Err(other),
                    },
                }
            }
        }
        Err(refusal)
    }
}

fn classify(kind: &ErrorKind) -> AuthError {
    match kind {
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::ImmatureSignature => AuthError::NotYetValid,
        ErrorKind::InvalidIssuer => AuthError::WrongIssuer,
        ErrorKind::InvalidAudience => AuthError::WrongAudience,
        ErrorKind::MissingRequiredClaim(claim) => AuthError::MissingClaim(claim.clone()),
        ErrorKind::InvalidToken
        | ErrorKind::Base64(_)
        | ErrorKind::Json(_)
        | ErrorKind::Utf8(_)
        | ErrorKind::InvalidClaimFormat(_) => {
            AuthError::Malformed("its parts do not decode as a JWT's".into())
        }
        _ => AuthError::BadSignature,
    }
}
