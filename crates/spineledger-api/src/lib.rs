//! The wire contract of spineledger: the generated `spineledger.v1` gRPC code, and the
//! edge validation that turns requests into domain commands. Invalid input is rejected
//! here, once, with field violations; the domain only ever sees valid types.

#![warn(missing_docs)]

/// Generated code for the `spineledger.v1` protobuf package. Generated code is not ours
/// to document or restyle, so lints about style and docs are off for it alone.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod v1 {
    tonic::include_proto!("spineledger.v1");
}

/// The encoded file descriptor set of `spineledger.v1`, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    tonic::include_file_descriptor_set!("spineledger_v1_descriptor");

pub mod client;
pub mod codec;
pub mod convert;
pub mod error;
pub mod views;
