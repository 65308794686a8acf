//! Who is calling spineledger, and what they may do.
//!
//! Every RPC but health and reflection carries `authorization: Bearer <JWT>`. The token is
//! verified against the keys of a trusted issuer ([`Verifier`]); the [`Principal`] it
//! names (subject, issuer, [`Role`], clinics) decides which RPCs the caller may use (the
//! role table, [`role::RPC_ACCESS`]) and which clinics' records it may touch. The
//! development key ([`DevKey`]) signs local tokens for `spineledger token issue`.

#![warn(missing_docs)]

pub mod dev;
mod error;
pub mod principal;
pub mod role;
pub mod verify;

pub use dev::{DevKey, TokenRequest};
pub use error::AuthError;
pub use principal::{Audience, Claims, ClinicGrant, Principal};
pub use role::{Access, Role};
pub use verify::{TrustedIssuer, Verifier};

#[cfg(test)]
mod tests;
