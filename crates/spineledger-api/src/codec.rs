//! The gRPC codec of the `spineledger.v1` services: prost's, except that a message that
//! does not decode is INVALID_ARGUMENT with a `BadRequest` field violation, not INTERNAL.
//!
//! `tonic_prost::ProstCodec` answers every prost `DecodeError` with INTERNAL (what the
//! gRPC status code table suggests for a library that cannot tell whose fault it is).
//! Here it is the caller's: the bytes it sent are not a valid encoding of the request —
//! most often a `string` field that is not UTF-8 — so it gets INVALID_ARGUMENT naming the
//! field, like every other invalid input (AIP-193), and nothing reaches a handler.
//!
//! The field path comes from prost's error, which names each level as
//! `Message.field` (innermost first): `CommandHeader.actor` inside
//! `RecordEvaluationRequest.header` becomes `header.actor`. Prost does not record the
//! index of a repeated field, so `goals[2]` is reported as `goals`; a `oneof` is named by
//! its Rust field (`odi.input`, `corrected_value.kind`).
//!
//! Generated clients use the same codec (tonic-prost-build has one codec path for both
//! sides), so a client would also see INVALID_ARGUMENT for a response it cannot decode;
//! the server never sends one.

use std::marker::PhantomData;

use prost::Message;
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder};
use tonic_prost::ProstEncoder;

use crate::error::{ApiError, FieldViolations};

/// [`tonic_prost::ProstCodec`] with request decode errors as INVALID_ARGUMENT.
#[derive(Debug, Clone)]
pub struct EdgeCodec<T, U> {
    _types: PhantomData<(T, U)>,
}

impl<T, U> Default for EdgeCodec<T, U> {
    fn default() -> Self {
        Self {
            _types: PhantomData,
        }
    }
}

impl<T, U> Codec for EdgeCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = EdgeDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::default()
    }

    fn decoder(&mut self) -> Self::Decoder {
        EdgeDecoder { _type: PhantomData }
    }
}

/// Decodes `U` with prost; a failure is [`decode_error_status`].
#[derive(Debug, Clone)]
pub struct EdgeDecoder<U> {
    _type: PhantomData<U>,
}

impl<U: Message + Default> Decoder for EdgeDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        U::decode(buf)
            .map(Some)
            .map_err(|error| decode_error_status(&error))
    }
}

/// INVALID_ARGUMENT for a message that does not decode, with one field violation naming
/// the field where decoding failed (empty when prost names none: the framing of the
/// message itself is broken).
#[must_use]
pub fn decode_error_status(error: &prost::DecodeError) -> Status {
    let message = error.to_string();
    let (field, cause) = field_path_and_cause(&message);
    let description = if cause == INVALID_UTF8 {
        "must be valid UTF-8".to_owned()
    } else {
        format!("is not a valid protobuf encoding ({cause})")
    };
    let mut violations = FieldViolations::new();
    violations.add(field, description);
    ApiError::from(violations).into()
}

/// prost's description of a `string` field whose bytes are not UTF-8.
const INVALID_UTF8: &str = "invalid string value: data is not UTF-8 encoded";

/// Splits prost's `failed to decode Protobuf message: Inner.field: Outer.field: cause`
/// into the request path (`field.field`, outermost first) and the cause.
fn field_path_and_cause(message: &str) -> (String, &str) {
    let mut rest = message
        .strip_prefix("failed to decode Protobuf message: ")
        .unwrap_or(message);
    let mut fields = Vec::new();
    while let Some((location, tail)) = rest.split_once(": ") {
        let Some((message_name, field)) = location.split_once('.') else {
            break;
        };
        if !is_identifier(message_name) || !is_identifier(field) {
            break;
        }
        fields.push(field.strip_prefix("r#").unwrap_or(field));
        rest = tail;
    }
    fields.reverse();
    (fields.join("."), rest)
}

fn is_identifier(name: &str) -> bool {
    let name = name.strip_prefix("r#").unwrap_or(name);
    !name.is_empty()
        && name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1;
    use tonic::Code;
    use tonic_types::StatusExt;

    /// Replaces the first occurrence of `marker` in `bytes` with the same number of bytes,
    /// the first of which is 0xFF (never valid in UTF-8).
    fn break_utf8(mut bytes: Vec<u8>, marker: &str) -> Vec<u8> {
        let at = bytes
            .windows(marker.len())
            .position(|window| window == marker.as_bytes())
            .expect("marker in the encoding");
        bytes[at] = 0xFF;
        bytes
    }

    fn violation(status: &Status) -> (String, String) {
        let details = status.get_details_bad_request().expect("BadRequest");
        let [violation] = details.field_violations.as_slice() else {
            panic!("one violation expected: {details:?}");
        };
        (violation.field.clone(), violation.description.clone())
    }

    fn evaluation() -> v1::RecordEvaluationRequest {
        v1::RecordEvaluationRequest {
            header: Some(v1::CommandHeader {
                actor: "ACTOR-MARK".to_owned(),
                ..Default::default()
            }),
            provider_id: "PROVIDER-MARK".to_owned(),
            ..Default::default()
        }
    }

    fn decode_status(bytes: &[u8]) -> Status {
        let error = v1::RecordEvaluationRequest::decode(bytes).expect_err("undecodable");
        decode_error_status(&error)
    }

    #[test]
    fn a_top_level_string_that_is_not_utf8_is_invalid_argument_naming_it() {
        let bytes = break_utf8(evaluation().encode_to_vec(), "PROVIDER-MARK");
        let status = decode_status(&bytes);
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(
            violation(&status),
            ("provider_id".to_owned(), "must be valid UTF-8".to_owned())
        );
    }

    #[test]
    fn a_nested_string_that_is_not_utf8_is_named_by_its_request_path() {
        let bytes = break_utf8(evaluation().encode_to_vec(), "ACTOR-MARK");
        let status = decode_status(&bytes);
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(violation(&status).0, "header.actor");
    }

    #[test]
    fn broken_framing_is_invalid_argument_too() {
        let mut bytes = evaluation().encode_to_vec();
        bytes.truncate(bytes.len() - 3);
        let status = decode_status(&bytes);
        assert_eq!(status.code(), Code::InvalidArgument);
        let (_, description) = violation(&status);
        assert!(
            description.starts_with("is not a valid protobuf encoding"),
            "{description}"
        );
    }

    #[test]
    fn the_path_is_read_outermost_first() {
        assert_eq!(
            field_path_and_cause(
                "failed to decode Protobuf message: Value.kind: FieldCorrection.corrected_value: \
                 RecordCorrectionRequest.corrections: invalid string value: data is not UTF-8 encoded"
            ),
            ("corrections.corrected_value.kind".to_owned(), INVALID_UTF8)
        );
        assert_eq!(
            field_path_and_cause("failed to decode Protobuf message: buffer underflow"),
            (String::new(), "buffer underflow")
        );
    }
}
