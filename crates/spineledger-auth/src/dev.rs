//! The local development signing key: an Ed25519 key in a PKCS#8 PEM file that
//! `spineledger token issue` signs with and `spineledger serve` trusts only when told to
//! (by default only on a loopback listener).
//!
//! It makes the first local start easy without making it open: the key is created on
//! first use (mode 0600, in the operator's configuration directory, never in the
//! repository), its tokens name their own issuer ([`DEV_ISSUER`]) so no configured
//! identity provider can be impersonated with it, and neither the key nor a token is ever
//! logged.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey, spki::der::pem::LineEnding};
use jsonwebtoken::jwk::{
    AlgorithmParameters, CommonParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm,
    OctetKeyPairParameters, OctetKeyPairType, PublicKeyUse, ThumbprintHash,
};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rand::RngCore;

use crate::principal::{Audience, Claims, EVERY_CLINIC};
use crate::verify::TrustedIssuer;
use crate::{AuthError, Role};

/// The issuer (`iss`) of development tokens.
pub const DEV_ISSUER: &str = "urn:spineledger:dev";

/// The audience (`aud`) the service expects unless configured otherwise.
pub const DEFAULT_AUDIENCE: &str = "spineledger";

/// The file name of the development key in the configuration directory.
const FILE_NAME: &str = "dev-signing-key.pem";

/// Where the development key lives unless configured otherwise:
/// `$XDG_CONFIG_HOME/spineledger/dev-signing-key.pem`, else
/// `$HOME/.config/spineledger/dev-signing-key.pem`.
pub fn default_path() -> Option<PathBuf> {
    config_path(FILE_NAME)
}

/// `file_name` in spineledger's configuration directory: `$XDG_CONFIG_HOME/spineledger/`,
/// else `$HOME/.config/spineledger/`.
pub fn config_path(file_name: &str) -> Option<PathBuf> {
    let from = |name: &str| {
        std::env::var_os(name)
            .filter(|value| !value.is_empty())
            .map(PathBuf::from)
    };
    let config =
        from("XDG_CONFIG_HOME").or_else(|| from("HOME").map(|home| home.join(".config")))?;
    Some(config.join("spineledger").join(file_name))
}

/// A development signing key.
pub struct DevKey {
    encoding: EncodingKey,
    public: Jwk,
    kid: String,
}

impl std::fmt::Debug for DevKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

/// What a development token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRequest {
    /// The role.
    pub role: Role,
    /// The clinics granted; empty with `every_clinic`.
    pub clinics: Vec<uuid::Uuid>,
    /// Grant every clinic (analyst, auditor).
    pub every_clinic: bool,
    /// The subject.
    pub subject: String,
    /// How long the token is valid from now.
    pub ttl: Duration,
    /// The audience.
    pub audience: String,
}

impl TokenRequest {
    /// A token of `role` for `clinics`, issued to `subject`, valid for `ttl`, for the
    /// default audience.
    pub fn for_clinics(
        role: Role,
        clinics: &[uuid::Uuid],
        subject: impl Into<String>,
        ttl: Duration,
    ) -> Self {
        Self {
            role,
            clinics: clinics.to_vec(),
            every_clinic: false,
            subject: subject.into(),
            ttl,
            audience: DEFAULT_AUDIENCE.to_owned(),
        }
    }
}

impl DevKey {
    /// A fresh key held in memory only (tests).
    ///
    /// # Errors
    /// The key cannot be encoded (never expected).
    pub fn generate() -> Result<Self, AuthError> {
        Self::from_signing_key(&Self::generate_signing_key()).map_err(AuthError::Key)
    }

    /// The key in the PEM file at `path`, created there first if there is none (the
    /// directory 0700, the file 0600 and never overwritten: two processes starting at once
    /// end up with the same key). Returns the key and whether it was created.
    ///
    /// # Errors
    /// The file cannot be created or read, or holds no Ed25519 key.
    pub fn load_or_create(path: &Path) -> Result<(Self, bool), AuthError> {
        let (key, created) = load_or_create_key_file(path)?;
        let key = Self::from_signing_key(&key).map_err(|reason| AuthError::KeyFile {
            path: path.to_owned(),
            reason,
        })?;
        Ok((key, created))
    }

    fn generate_signing_key() -> SigningKey {
        let mut seed = [0_u8; 32];
        rand::rng().fill_bytes(&mut seed);
        SigningKey::from_bytes(&seed)
    }

    fn from_signing_key(key: &SigningKey) -> Result<Self, String> {
        let der = key
            .to_pkcs8_der()
            .map_err(|error| format!("cannot encode the key: {error}"))?;
        let encoding = EncodingKey::from_ed_der(der.as_bytes());
        let mut public = Jwk {
            common: CommonParameters {
                public_key_use: Some(PublicKeyUse::Signature),
                key_algorithm: Some(KeyAlgorithm::EdDSA),
                ..CommonParameters::default()
            },
            algorithm: AlgorithmParameters::OctetKeyPair(OctetKeyPairParameters {
                key_type: OctetKeyPairType::OctetKeyPair,
                curve: EllipticCurve::Ed25519,
                x: URL_SAFE_NO_PAD.encode(key.verifying_key().as_bytes()),
            }),
        };
        // The RFC 7638 thumbprint names the key: the same key always has the same kid.
        let kid = public
            .thumbprint(ThumbprintHash::SHA256)
            .map_err(|error| format!("cannot name the key: {error}"))?;
        public.common.key_id = Some(kid.clone());
        Ok(Self {
            encoding,
            public,
            kid,
        })
    }

    /// The key id (`kid`) its tokens carry.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key as a JWKS document.
    pub fn jwks(&self) -> JwkSet {
        JwkSet {
            keys: vec![self.public.clone()],
        }
    }

    /// The issuer [`DEV_ISSUER`] with this key, for a verifier to trust.
    ///
    /// # Errors
    /// Never in practice (the key is well-formed); kept as a `Result` because the JWKS
    /// round trip is checked.
    pub fn trusted_issuer(&self) -> Result<TrustedIssuer, AuthError> {
        let jwks = serde_json::to_string(&self.jwks())
            .map_err(|error| AuthError::Key(error.to_string()))?;
        TrustedIssuer::jwks(DEV_ISSUER, &jwks)
    }

    /// Signs `claims` as they are (tests use it to make every kind of bad token).
    ///
    /// # Errors
    /// The signature cannot be made.
    pub fn sign(&self, claims: &impl serde::Serialize) -> Result<String, AuthError> {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding)
            .map_err(|error| AuthError::Key(error.to_string()))
    }

    /// A development token as `request` describes, valid from now.
    ///
    /// # Errors
    /// The signature cannot be made.
    pub fn issue(&self, request: &TokenRequest) -> Result<String, AuthError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_secs());
        let clinics = if request.every_clinic {
            vec![EVERY_CLINIC.to_owned()]
        } else {
            request.clinics.iter().map(ToString::to_string).collect()
        };
        self.sign(&Claims {
            iss: DEV_ISSUER.to_owned(),
            sub: request.subject.clone(),
            aud: Audience::One(request.audience.clone()),
            exp: now.saturating_add(request.ttl.as_secs()),
            nbf: Some(now),
            iat: Some(now),
            role: request.role.name().to_owned(),
            clinics,
        })
    }
}

/// The Ed25519 key in the PKCS#8 PEM file at `path`, created there first if there is none
/// (the directory 0700, the file 0600 and never overwritten: two processes starting at
/// once end up with the same key). Returns the key and whether it was created. Used for
/// every key spineledger keeps in a file: the development token key and the checkpoint
/// key.
///
/// # Errors
/// The file cannot be created or read, is a symbolic link or readable by others, or holds
/// no Ed25519 key.
pub fn load_or_create_key_file(path: &Path) -> Result<(SigningKey, bool), AuthError> {
    let failed = |reason: String| AuthError::KeyFile {
        path: path.to_owned(),
        reason,
    };
    match load_key_file(path) {
        Ok(key) => return Ok((key, false)),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(failed(error.to_string())),
    }
    if let Some(directory) = path.parent() {
        create_private_dir(directory).map_err(|error| failed(error.to_string()))?;
    }
    let key = DevKey::generate_signing_key();
    let pem = key
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|error| failed(error.to_string()))?;
    // Written whole to a private file of our own, then linked into place: the key file
    // appears complete or not at all, and a concurrent creator's link wins or ours.
    let staging = path.with_extension(format!("pem.{}.tmp", uuid::Uuid::new_v4().simple()));
    let written = create_private_file(&staging)
        .and_then(|mut file| {
            file.write_all(pem.as_bytes())
                .and_then(|()| file.sync_all())
        })
        .and_then(|()| std::fs::hard_link(&staging, path));
    let _ = std::fs::remove_file(&staging);
    match written {
        Ok(()) => Ok((key, true)),
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
            let key = load_key_file(path).map_err(|error| failed(error.to_string()))?;
            Ok((key, false))
        }
        Err(error) => Err(failed(error.to_string())),
    }
}

/// The key in `path`, which must be a regular file only its owner can read or write (a
/// key anyone else could replace would let them sign in our name).
pub fn load_key_file(path: &Path) -> std::io::Result<SigningKey> {
    let metadata = std::fs::symlink_metadata(path)?;
    let invalid = |reason: String| std::io::Error::new(std::io::ErrorKind::InvalidData, reason);
    if !metadata.is_file() {
        return Err(invalid(
            "not a regular file (a symbolic link is not accepted)".into(),
        ));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = metadata.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(invalid(format!(
                "its mode is {:o}: others may read or change it (chmod 600)",
                mode & 0o777
            )));
        }
    }
    let pem = std::fs::read_to_string(path)?;
    SigningKey::from_pkcs8_pem(&pem)
        .map_err(|error| invalid(format!("not an Ed25519 PKCS#8 PEM key: {error}")))
}

fn create_private_dir(directory: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(directory)
    }
    #[cfg(not(unix))]
    {
        std::fs::create_dir_all(directory)
    }
}

fn create_private_file(path: &Path) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)
}
