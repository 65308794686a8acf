//! The claims a spineledger token carries and the principal a verified token names.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::AuthError;
use crate::role::Role;

/// The value of `clinics` that grants every clinic (analysts and auditors only).
pub const EVERY_CLINIC: &str = "*";

/// The most clinics one token may name; a token is a request header, and a grant wider
/// than this is what [`EVERY_CLINIC`] is for.
pub const MAX_CLINICS_PER_TOKEN: usize = 100;

/// The claims of a spineledger access token: the registered JWT claims (RFC 7519) the
/// service checks, and two of its own, `role` and `clinics`, which an identity provider
/// adds to the tokens it issues to clinic software (a claim mapper in Keycloak, an Action
/// in Auth0, a claims-mapping policy in Entra ID).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Issuer: who signed the token.
    pub iss: String,
    /// Subject: the service account or user the token was issued to.
    pub sub: String,
    /// Audience: the service the token is meant for (one, or several as some identity
    /// providers send it).
    pub aud: Audience,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
    /// Not before, seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Issued at, seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    /// The spineledger role (see [`Role`]); a token without one grants nothing.
    #[serde(default)]
    pub role: String,
    /// The clinics (UUIDs) the token grants, or [`EVERY_CLINIC`].
    #[serde(default)]
    pub clinics: Vec<String>,
}

/// The `aud` claim: a string or an array of strings (RFC 7519 allows both).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    /// One audience.
    One(String),
    /// Several audiences.
    Many(Vec<String>),
}

/// Which clinics a principal may act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClinicGrant {
    /// These clinics only.
    Clinics(BTreeSet<Uuid>),
    /// Every clinic (analysts and auditors only).
    Every,
}

/// A verified caller: who (subject at issuer), as what (role), over which clinics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The token's subject.
    pub subject: String,
    /// The token's issuer.
    pub issuer: String,
    /// The token's role.
    pub role: Role,
    /// The clinics the token grants.
    pub clinics: ClinicGrant,
}

/// The longest subject or issuer accepted: they are stored with every event.
const MAX_NAME_CHARS: usize = 200;

impl Principal {
    /// The principal of verified `claims`, refused when the spineledger claims are not
    /// usable (unknown role, a clinic that is not a UUID, a grant the role may not hold).
    pub fn from_claims(claims: Claims) -> Result<Self, AuthError> {
        let role: Role = claims.role.parse()?;
        for (name, value) in [("sub", &claims.sub), ("iss", &claims.iss)] {
            if value.is_empty()
                || value.chars().count() > MAX_NAME_CHARS
                || value.chars().any(char::is_control)
            {
                return Err(AuthError::UnusableClaims(format!(
                    "claim {name} must be 1 to {MAX_NAME_CHARS} printable characters"
                )));
            }
        }
        let clinics = if claims.clinics.iter().any(|clinic| clinic == EVERY_CLINIC) {
            if !role.may_be_granted_every_clinic() || claims.clinics.len() != 1 {
                return Err(AuthError::UnusableClaims(format!(
                    "only an analyst or auditor token may grant every clinic, and then \
                     \"clinics\" must be [\"{EVERY_CLINIC}\"]"
                )));
            }
            ClinicGrant::Every
        } else {
            if claims.clinics.is_empty() || claims.clinics.len() > MAX_CLINICS_PER_TOKEN {
                return Err(AuthError::UnusableClaims(format!(
                    "claim clinics must name 1 to {MAX_CLINICS_PER_TOKEN} clinics"
                )));
            }
            let ids = claims
                .clinics
                .iter()
                .map(|clinic| Uuid::parse_str(clinic))
                .collect::<Result<BTreeSet<_>, _>>()
                .map_err(|_| {
                    AuthError::UnusableClaims("claim clinics must hold clinic UUIDs".into())
                })?;
            ClinicGrant::Clinics(ids)
        };
        Ok(Self {
            subject: claims.sub,
            issuer: claims.iss,
            role,
            clinics,
        })
    }

    /// Whether the token grants `clinic`.
    pub fn may_access(&self, clinic: Uuid) -> bool {
        match &self.clinics {
            ClinicGrant::Every => true,
            ClinicGrant::Clinics(clinics) => clinics.contains(&clinic),
        }
    }

    /// The granted clinics, or `None` for every clinic.
    pub fn granted_clinics(&self) -> Option<&BTreeSet<Uuid>> {
        match &self.clinics {
            ClinicGrant::Every => None,
            ClinicGrant::Clinics(clinics) => Some(clinics),
        }
    }
}

/// The clinics a token claims, read WITHOUT verifying it: for a client deciding what to
/// send with its own token (the server verifies). `None` for a token that does not parse
/// or claims every clinic.
pub fn claimed_clinics(token: &str) -> Option<Vec<Uuid>> {
    let claims: Claims = jsonwebtoken::dangerous::insecure_decode_claims(token.trim()).ok()?;
    claims
        .clinics
        .iter()
        .map(|clinic| Uuid::parse_str(clinic).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(role: &str, clinics: &[&str]) -> Claims {
        Claims {
            iss: "https://id.example".into(),
            sub: "svc-frontdesk".into(),
            aud: Audience::One("spineledger".into()),
            exp: 4_000_000_000,
            nbf: None,
            iat: None,
            role: role.into(),
            clinics: clinics.iter().map(|clinic| (*clinic).to_owned()).collect(),
        }
    }

    const CLINIC: &str = "0b6f1c9e-2d4a-4f8b-9c3e-5a7d1e2f3b4c";

    #[test]
    fn a_clinic_token_grants_its_clinics_only() {
        let principal = Principal::from_claims(claims("integration", &[CLINIC])).expect("usable");
        assert!(principal.may_access(Uuid::parse_str(CLINIC).expect("uuid")));
        assert!(!principal.may_access(Uuid::nil()));
        assert!(principal.role.may_act_for_others());
    }

    #[test]
    fn every_clinic_is_for_analysts_and_auditors_only() {
        assert!(
            Principal::from_claims(claims("analyst", &["*"]))
                .is_ok_and(|p| p.may_access(Uuid::nil()))
        );
        assert!(Principal::from_claims(claims("clinician", &["*"])).is_err());
        assert!(Principal::from_claims(claims("analyst", &["*", CLINIC])).is_err());
    }

    #[test]
    fn unusable_claims_are_refused() {
        assert!(Principal::from_claims(claims("superuser", &[CLINIC])).is_err());
        assert!(Principal::from_claims(claims("clinician", &[])).is_err());
        assert!(Principal::from_claims(claims("clinician", &["clinic-7"])).is_err());
        let mut bad_subject = claims("clinician", &[CLINIC]);
        bad_subject.sub = String::new();
        assert!(Principal::from_claims(bad_subject).is_err());
    }
}
