//! What a client of the API needs beyond the generated stubs: its bearer token on every
//! call.

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::{Request, Status};

/// Adds `authorization: Bearer <token>` to every call of a client built with it
/// (`FooServiceClient::with_interceptor(channel, token)`). Its `Debug` never shows the
/// token: a token is a credential.
#[derive(Clone)]
pub struct BearerToken(MetadataValue<Ascii>);

impl BearerToken {
    /// The token as given (surrounding whitespace trimmed, as a shell may leave it).
    ///
    /// # Errors
    /// The token cannot be sent as a header (it is not visible ASCII).
    pub fn new(token: &str) -> Result<Self, tonic::metadata::errors::InvalidMetadataValue> {
        MetadataValue::try_from(format!("Bearer {}", token.trim())).map(Self)
    }
}

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BearerToken(…)")
    }
}

impl Interceptor for BearerToken {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}
