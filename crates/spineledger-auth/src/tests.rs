//! Token verification against every way a token can be wrong.

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use p256::elliptic_curve::sec1::ToEncodedPoint;
use p256::pkcs8::EncodePrivateKey;
use rand::RngCore;

use super::*;
use crate::dev::{DEFAULT_AUDIENCE, DEV_ISSUER};

const CLINIC: &str = "0b6f1c9e-2d4a-4f8b-9c3e-5a7d1e2f3b4c";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

fn claims() -> Claims {
    Claims {
        iss: DEV_ISSUER.into(),
        sub: "svc-frontdesk".into(),
        aud: Audience::One(DEFAULT_AUDIENCE.into()),
        exp: now() + 600,
        nbf: Some(now()),
        iat: Some(now()),
        role: "integration".into(),
        clinics: vec![CLINIC.into()],
    }
}

fn dev() -> (DevKey, Verifier) {
    let key = DevKey::generate().expect("key");
    let verifier = Verifier::new(DEFAULT_AUDIENCE)
        .trust(key.trusted_issuer().expect("issuer"))
        .expect("one issuer");
    (key, verifier)
}

#[test]
fn a_good_token_names_its_principal() {
    let (key, verifier) = dev();
    let principal = verifier
        .verify(&key.sign(&claims()).expect("signed"))
        .expect("verified");
    assert_eq!(principal.subject, "svc-frontdesk");
    assert_eq!(principal.issuer, DEV_ISSUER);
    assert_eq!(principal.role, Role::Integration);
    assert!(principal.may_access(CLINIC.parse().expect("uuid")));
    let header = format!("Bearer {}", key.sign(&claims()).expect("signed"));
    assert!(
        verifier
            .verify_authorization(Some(header.as_bytes()))
            .is_ok()
    );
}

#[test]
fn every_kind_of_bad_token_is_refused_for_its_reason() {
    let (key, verifier) = dev();
    let refused = |claims: Claims| verifier.verify(&key.sign(&claims).expect("signed"));
    let expired = Claims {
        exp: now() - 3600,
        ..claims()
    };
    assert_eq!(refused(expired), Err(AuthError::Expired));
    let early = Claims {
        nbf: Some(now() + 3600),
        ..claims()
    };
    assert_eq!(refused(early), Err(AuthError::NotYetValid));
    let issuer = Claims {
        iss: "https://id.example".into(),
        ..claims()
    };
    assert_eq!(refused(issuer), Err(AuthError::WrongIssuer));
    let audience = Claims {
        aud: Audience::One("billing".into()),
        ..claims()
    };
    assert_eq!(refused(audience), Err(AuthError::WrongAudience));
    let role = Claims {
        role: "root".into(),
        ..claims()
    };
    assert!(matches!(refused(role), Err(AuthError::UnusableClaims(_))));
    // An identity provider's token without the role claim: verified, but grants nothing.
    let mut no_role = serde_json::to_value(claims()).expect("json");
    no_role.as_object_mut().expect("object").remove("role");
    assert!(matches!(
        verifier.verify(&key.sign(&no_role).expect("signed")),
        Err(AuthError::UnusableClaims(_))
    ));
    // Within the leeway is still valid.
    let skewed = Claims {
        exp: now() - 5,
        ..claims()
    };
    assert!(refused(skewed).is_ok());
    // An audience array naming the service is fine.
    let many = Claims {
        aud: Audience::Many(vec!["billing".into(), DEFAULT_AUDIENCE.into()]),
        ..claims()
    };
    assert!(refused(many).is_ok());
}

#[test]
fn signatures_of_other_keys_and_tampered_tokens_are_refused() {
    let (_, verifier) = dev();
    let stranger = DevKey::generate().expect("key");
    assert_eq!(
        verifier.verify(&stranger.sign(&claims()).expect("signed")),
        Err(AuthError::UnknownKey)
    );

    // The trusted kid, someone else's signature.
    let (key, verifier) = dev();
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(key.kid().to_owned());
    let forged = jsonwebtoken::encode(&header, &claims(), &ed25519_encoding_key()).expect("signed");
    assert_eq!(verifier.verify(&forged), Err(AuthError::BadSignature));

    // A genuine token whose claims were edited after signing.
    let genuine = key.sign(&claims()).expect("signed");
    let mut parts: Vec<String> = genuine.split('.').map(str::to_owned).collect();
    let widened = Claims {
        role: "analyst".into(),
        clinics: vec!["*".into()],
        ..claims()
    };
    parts[1] = base64::Engine::encode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        serde_json::to_vec(&widened).expect("json"),
    );
    assert_eq!(
        verifier.verify(&parts.join(".")),
        Err(AuthError::BadSignature)
    );
}

fn ed25519_encoding_key() -> EncodingKey {
    let mut seed = [0_u8; 32];
    rand::rng().fill_bytes(&mut seed);
    let der = ed25519_dalek::pkcs8::EncodePrivateKey::to_pkcs8_der(
        &ed25519_dalek::SigningKey::from_bytes(&seed),
    )
    .expect("der");
    EncodingKey::from_ed_der(der.as_bytes())
}

#[test]
fn unsigned_and_shared_secret_tokens_are_refused() {
    let (_, verifier) = dev();
    let hs = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims(),
        &EncodingKey::from_secret(b"shared"),
    )
    .expect("signed");
    assert!(matches!(
        verifier.verify(&hs),
        Err(AuthError::UnsupportedAlgorithm(_))
    ));
    let b64 = |bytes: &[u8]| {
        base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, bytes)
    };
    let none = format!(
        "{}.{}.",
        b64(br#"{"alg":"none","typ":"JWT"}"#),
        b64(&serde_json::to_vec(&claims()).expect("json"))
    );
    assert!(verifier.verify(&none).is_err());
    assert!(matches!(
        verifier.verify("not a token"),
        Err(AuthError::Malformed(_))
    ));
    assert_eq!(
        verifier.verify_authorization(None),
        Err(AuthError::MissingToken)
    );
    assert!(matches!(
        verifier.verify_authorization(Some(b"Basic dXNlcjpwYXNz")),
        Err(AuthError::Malformed(_))
    ));
    let symmetric = r#"{"keys":[{"kty":"oct","k":"c2hhcmVk","alg":"HS256","kid":"s"}]}"#;
    assert!(TrustedIssuer::jwks("https://id.example", symmetric).is_err());
}

/// An ES256 key as an identity provider would publish it: (signing key, JWK JSON).
fn es256(kid: &str) -> (EncodingKey, String) {
    let mut bytes = [0_u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let secret = p256::SecretKey::from_slice(&bytes).expect("a scalar");
    let der = secret.to_pkcs8_der().expect("der");
    let point = secret.public_key().to_encoded_point(false);
    let b64 = |bytes: &[u8]| {
        base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, bytes)
    };
    let jwk = serde_json::json!({
        "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": kid,
        "x": b64(point.x().expect("x")), "y": b64(point.y().expect("y")),
    });
    (EncodingKey::from_ec_der(der.as_bytes()), jwk.to_string())
}

fn es256_token(key: &EncodingKey, kid: &str, issuer: &str) -> String {
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(kid.into());
    jsonwebtoken::encode(
        &header,
        &Claims {
            iss: issuer.into(),
            ..claims()
        },
        key,
    )
    .expect("signed")
}

#[test]
fn a_jwks_file_rotates_keys_by_kid() {
    const IDP: &str = "https://id.example/realms/clinics";
    let (old, old_jwk) = es256("2026-10");
    let (new, new_jwk) = es256("2026-11");
    let directory = std::env::temp_dir().join(format!("spineledger-jwks-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&directory).expect("dir");
    let path = directory.join("jwks.json");
    std::fs::write(&path, format!(r#"{{"keys":[{old_jwk}]}}"#)).expect("write");
    let verifier = Verifier::new(DEFAULT_AUDIENCE)
        .trust(
            TrustedIssuer::jwks_file_rechecked(IDP, &path, std::time::Duration::ZERO)
                .expect("file"),
        )
        .expect("issuer");
    assert!(verifier.verify(&es256_token(&old, "2026-10", IDP)).is_ok());
    assert_eq!(
        verifier.verify(&es256_token(&new, "2026-11", IDP)),
        Err(AuthError::UnknownKey)
    );
    // The IdP's key for one issuer does not sign for another.
    assert_eq!(
        verifier.verify(&es256_token(&old, "2026-10", DEV_ISSUER)),
        Err(AuthError::WrongIssuer)
    );

    // Both keys during the rotation, then the new one only. The file's modification
    // time must change for the reload; set it explicitly so a coarse clock cannot hide it.
    let rewrite = |contents: String, age: u64| {
        std::fs::write(&path, contents).expect("write");
        let file = std::fs::File::options()
            .write(true)
            .open(&path)
            .expect("open");
        file.set_modified(SystemTime::now() - std::time::Duration::from_secs(age))
            .expect("mtime");
    };
    rewrite(format!(r#"{{"keys":[{old_jwk},{new_jwk}]}}"#), 100);
    assert!(verifier.verify(&es256_token(&new, "2026-11", IDP)).is_ok());
    assert!(verifier.verify(&es256_token(&old, "2026-10", IDP)).is_ok());
    rewrite(format!(r#"{{"keys":[{new_jwk}]}}"#), 50);
    assert_eq!(
        verifier.verify(&es256_token(&old, "2026-10", IDP)),
        Err(AuthError::UnknownKey)
    );
    assert!(verifier.verify(&es256_token(&new, "2026-11", IDP)).is_ok());
    // A broken replacement keeps the last good keys.
    rewrite("{not json".into(), 10);
    assert!(verifier.verify(&es256_token(&new, "2026-11", IDP)).is_ok());
    let _ = std::fs::remove_dir_all(&directory);
}

#[test]
fn the_dev_key_file_is_created_once_privately_and_reused() {
    let directory = std::env::temp_dir().join(format!("spineledger-dev-{}", uuid::Uuid::new_v4()));
    let path = directory.join("nested").join("dev-signing-key.pem");
    let (first, created) = DevKey::load_or_create(&path).expect("created");
    assert!(created);
    let (second, created) = DevKey::load_or_create(&path).expect("loaded");
    assert!(!created);
    assert_eq!(first.kid(), second.kid());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path)
            .expect("metadata")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let token = first
        .issue(&TokenRequest {
            role: Role::Analyst,
            clinics: Vec::new(),
            every_clinic: true,
            subject: "analyst-1".into(),
            ttl: std::time::Duration::from_secs(60),
            audience: DEFAULT_AUDIENCE.into(),
        })
        .expect("issued");
    let verifier = Verifier::new(DEFAULT_AUDIENCE)
        .trust(second.trusted_issuer().expect("issuer"))
        .expect("issuer");
    let principal = verifier.verify(&token).expect("verified");
    assert_eq!(principal.clinics, ClinicGrant::Every);

    // A key file others could read or replace is refused, not used.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        assert!(matches!(
            DevKey::load_or_create(&path),
            Err(AuthError::KeyFile { .. })
        ));
        let link = directory.join("linked.pem");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        std::os::unix::fs::symlink(&path, &link).expect("symlink");
        assert!(matches!(
            DevKey::load_or_create(&link),
            Err(AuthError::KeyFile { .. })
        ));
    }
    let _ = std::fs::remove_dir_all(&directory);
}
