//! The patient's write request.

use chrono::{DateTime, Datelike, Utc};
use spineledger_domain::ids::PatientId;
use spineledger_domain::patient::RegisterPatient;

use super::enums::sex;
use super::*;
use crate::error::FieldViolations;
use crate::v1;

/// Validates a `RegisterPatientRequest`.
///
/// # Errors
/// Every field violation found.
pub fn register_patient(
    req: v1::RegisterPatientRequest,
    now: DateTime<Utc>,
) -> Result<ValidCommand<RegisterPatient>, FieldViolations> {
    let mut check = Check::new();
    let header = check.header(req.header);
    let occurred_at = check.occurred_at(req.occurred_at, now);
    let patient_id = check.uuid("patient_id", &req.patient_id).map(PatientId);
    let birth_year = match req.birth_year {
        None => Some(None),
        Some(year) if (EARLIEST_YEAR..=now.year()).contains(&year) => Some(Some(year)),
        Some(year) => {
            check.add(
                "birth_year",
                format!("{year} is not between {EARLIEST_YEAR} and this year"),
            );
            None
        }
    };
    let sex = check.optional_enumeration("sex", req.sex, sex::from_proto);
    let request = (|| {
        let occurred_at = occurred_at?;
        Some(ValidCommand {
            header: header?,
            occurred_at,
            command: RegisterPatient {
                occurred_at,
                patient_id: patient_id?,
                birth_year: birth_year?,
                sex: sex?,
            },
        })
    })();
    check.finish(request)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::convert::test_support::*;

    #[test]
    fn valid_register_patient_converts() {
        let valid = register_patient(
            v1::RegisterPatientRequest {
                header: header(),
                occurred_at: past(),
                patient_id: PATIENT.to_owned(),
                birth_year: Some(1974),
                sex: v1::Sex::Unspecified as i32,
            },
            now(),
        )
        .unwrap();
        assert_eq!(valid.command.birth_year, Some(1974));
        assert_eq!(valid.command.sex, None);
        assert_eq!(valid.header.expected_version, Some(3));
        assert_eq!(valid.header.correlation_id, None);
        assert!(valid.header.causation_id.is_some());
    }
}
