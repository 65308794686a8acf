//! Hostile input through the real decoding and validation path: random bytes, valid
//! requests with bytes flipped, cut or repeated, extreme numbers and odd strings. Whatever
//! arrives, the edge answers with a value or with INVALID_ARGUMENT — never a panic, never
//! another code. Over 100,000 generated requests per run (the cases below add up).

use proptest::prelude::*;
use prost::Message;
use tonic::Code;

use super::test_support::{evaluation, now, session};
use crate::codec::decode_error_status;
use crate::error::{ApiError, FieldViolations};
use crate::v1;

/// What the edge answered, as the client would see it.
fn code_of<T>(result: Result<T, FieldViolations>) -> Option<Code> {
    result
        .err()
        .map(|violations| tonic::Status::from(ApiError::from(violations)).code())
}

/// Decodes `bytes` as `M` and, if that works, converts it with `convert`: the status code
/// the client would get (None: accepted).
fn through_the_edge<M, T>(
    bytes: &[u8],
    convert: impl FnOnce(M) -> Result<T, FieldViolations>,
) -> Option<Code>
where
    M: Message + Default,
{
    match M::decode(bytes) {
        Err(error) => Some(decode_error_status(&error).code()),
        Ok(message) => code_of(convert(message)),
    }
}

/// Every write and read request type, fed the same bytes.
fn every_request(bytes: &[u8]) -> Vec<Option<Code>> {
    let at = now();
    let mut codes = vec![
        through_the_edge(bytes, |m| super::register_patient(m, at)),
        through_the_edge(bytes, |m| super::record_evaluation(m, at)),
        through_the_edge(bytes, |m| super::start_treatment_plan(m, at)),
        through_the_edge(bytes, |m| super::record_session(m, at)),
        through_the_edge(bytes, |m| super::record_missed_session(m, at)),
        through_the_edge(bytes, |m| super::record_outcome(m, at)),
        through_the_edge(bytes, |m| super::give_home_care_instructions(m, at)),
        through_the_edge(bytes, |m| super::report_home_care_adherence(m, at)),
        through_the_edge(bytes, |m| super::record_reassessment(m, at)),
        through_the_edge(bytes, |m| super::adjust_treatment_plan(m, at)),
        through_the_edge(bytes, |m| super::discharge_episode(m, at)),
        through_the_edge(bytes, |m: v1::GetTreatmentPlanRequest| {
            super::PlanQuery::try_from(m)
        }),
        through_the_edge(bytes, |m: v1::ListTreatmentPlansRequest| {
            super::PlanListQuery::try_from(m)
        }),
        through_the_edge(bytes, |m: v1::GetOutcomeStatisticsRequest| {
            super::StatisticsQuery::try_from(m)
        }),
    ];
    // A correction, resolved against every event type it could name.
    codes.push(through_the_edge(bytes, |m: v1::RecordCorrectionRequest| {
        let (_, valid) = super::record_correction(m, at)?;
        let spineledger_domain::EpisodeCommand::RecordCorrection(requested) = valid.command else {
            return Ok(());
        };
        for event_type in spineledger_domain::events::EPISODE_EVENT_TYPES {
            super::correction::resolve(event_type, &requested)?;
        }
        Ok(())
    }));
    codes
}

fn assert_only_invalid_argument(codes: &[Option<Code>]) -> Result<(), TestCaseError> {
    for code in codes.iter().flatten() {
        prop_assert_eq!(*code, Code::InvalidArgument);
    }
    Ok(())
}

/// Valid requests of several types, encoded: the seeds the mutations start from.
fn seeds() -> Vec<Vec<u8>> {
    vec![
        evaluation().encode_to_vec(),
        session().encode_to_vec(),
        v1::RecordCorrectionRequest {
            header: super::test_support::header(),
            occurred_at: super::test_support::past(),
            episode_id: "0b7e3c1a-2d4f-4e6a-8b9c-0d1e2f3a4b5c".to_owned(),
            corrected_event_id: "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d".to_owned(),
            corrections: vec![v1::FieldCorrection {
                field: "peak_force".to_owned(),
                corrected_value: Some(prost_types::Value {
                    kind: Some(prost_types::value::Kind::StructValue(prost_types::Struct {
                        fields: [(
                            "value".to_owned(),
                            prost_types::Value {
                                kind: Some(prost_types::value::Kind::NumberValue(40.0)),
                            },
                        )]
                        .into_iter()
                        .collect(),
                    })),
                }),
            }],
            reason: "typo".to_owned(),
        }
        .encode_to_vec(),
    ]
}

/// A valid request with some of its bytes replaced, cut short, or a slice repeated.
fn mutated() -> impl Strategy<Value = Vec<u8>> {
    let seeds = seeds();
    (
        0..seeds.len(),
        prop::collection::vec((any::<usize>(), any::<u8>()), 0..8),
        any::<usize>(),
        any::<(usize, usize, u8)>(),
    )
        .prop_map(move |(seed, flips, cut, (from, len, times))| {
            let mut bytes = seeds[seed].clone();
            for (at, byte) in flips {
                if !bytes.is_empty() {
                    let at = at % bytes.len();
                    bytes[at] = byte;
                }
            }
            if !bytes.is_empty() && cut % 4 == 0 {
                bytes.truncate(cut % bytes.len());
            }
            if !bytes.is_empty() && times % 3 == 0 {
                let from = from % bytes.len();
                let end = (from + len % 16).min(bytes.len());
                let slice = bytes[from..end].to_vec();
                for _ in 0..times % 8 {
                    bytes.extend_from_slice(&slice);
                }
            }
            bytes
        })
}

/// A string that is long, empty, control-laden, SQL-looking or far outside ASCII.
fn odd_string() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("'; DROP TABLE events; --".to_owned()),
        Just("\u{0}".to_owned()),
        Just("a".repeat(5000)),
        "\\PC{0,64}",
        ".{0,32}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40_000, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_are_answered_with_a_value_or_invalid_argument(
        bytes in prop::collection::vec(any::<u8>(), 0..256),
    ) {
        assert_only_invalid_argument(&every_request(&bytes))?;
    }

    #[test]
    fn damaged_valid_requests_are_answered_with_a_value_or_invalid_argument(
        bytes in mutated(),
    ) {
        assert_only_invalid_argument(&every_request(&bytes))?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 25_000, ..ProptestConfig::default() })]

    #[test]
    fn extreme_values_in_well_formed_requests_are_refused_clearly(
        numbers in prop::collection::vec(any::<i32>(), 8),
        float in prop_oneof![any::<f64>(), Just(f64::NAN), Just(f64::INFINITY), Just(-0.0)],
        text in odd_string(),
        seconds in any::<i64>(),
        nanos in any::<i32>(),
    ) {
        let mut request = session();
        request.hold_seconds = numbers[0];
        request.relax_seconds = numbers[1];
        request.cycles = numbers[2];
        request.duration_minutes = numbers[3];
        request.pain_before = numbers[4];
        request.tolerance = numbers[5];
        request.levels = vec![numbers[6], numbers[7]];
        request.peak_force = Some(v1::Force { value: float, unit: numbers[0] });
        request.provider_id = text.clone();
        request.occurred_at = Some(prost_types::Timestamp { seconds, nanos });
        if let Some(header) = request.header.as_mut() {
            header.actor = text;
        }
        let code = code_of(super::record_session(request, now()));
        if let Some(code) = code {
            prop_assert_eq!(code, Code::InvalidArgument);
        }
    }
}
