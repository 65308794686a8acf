//! Read requests become validated queries here, before a handler sees them, with the
//! write side's [`Check`]: the same field paths, the same rules for UUIDs (surrounding
//! whitespace ignored; empty, nil or malformed refused), timestamps, enums and lists, and
//! the same wording.

use chrono::NaiveDate;
use spineledger_projections::as_of::Cut;
use spineledger_projections::queries::PlanCursor;
use spineledger_readmodels::PlanPhase;
use spineledger_readmodels::release::{Months, month_starting_at};
use spineledger_readmodels::statistics::Dimension;
use uuid::Uuid;

use super::Check;
use super::enums::{dimension, plan_phase};
use crate::error::FieldViolations;
use crate::v1;

/// Plans per page when the request leaves `page_size` 0.
pub const DEFAULT_PAGE_SIZE: u16 = 50;
/// The largest `page_size` of a plan listing.
pub const MAX_PAGE_SIZE: u16 = 500;
/// The most clinics one statistics query may name.
pub const MAX_CLINICS_PER_QUERY: usize = 1000;

/// A valid `GetTreatmentPlanRequest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanQuery {
    /// The clinic.
    pub clinic_id: Uuid,
    /// The episode whose plan is asked for.
    pub episode_id: Uuid,
    /// Read-your-writes: a global position (at least 1) the view must include.
    pub min_position: Option<i64>,
}

/// A valid `ListTreatmentPlansRequest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanListQuery {
    /// The clinic.
    pub clinic_id: Uuid,
    /// Only plans in this phase; `None`: any.
    pub phase: Option<PlanPhase>,
    /// Only plans that are (or are not) overdue.
    pub overdue: Option<bool>,
    /// Only plans whose reassessment is (or is not) due.
    pub reassessment_due: Option<bool>,
    /// Only this patient's plans.
    pub patient_id: Option<Uuid>,
    /// Plans per page, 1-[`MAX_PAGE_SIZE`] (0 in the request is [`DEFAULT_PAGE_SIZE`]).
    pub page_size: u16,
    /// Where the page starts: after this plan (from the request's page token).
    pub after: Option<PlanCursor>,
    /// Read-your-writes: a global position (at least 1) the views must include.
    pub min_position: Option<i64>,
}

/// A valid `GetOutcomeStatisticsRequest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatisticsQuery {
    /// The clinics (at most [`MAX_CLINICS_PER_QUERY`]); empty: all.
    pub clinic_ids: Vec<Uuid>,
    /// The grouping, each dimension at most once.
    pub group_by: Vec<Dimension>,
    /// The whole UTC months of first evaluations counted.
    pub window: Months,
    /// Read-your-writes: a global position (at least 1) the statistics must include.
    pub min_position: Option<i64>,
    /// Replay to an earlier point of the log instead of reading the live cells.
    pub as_of: Option<Cut>,
}

/// A valid `CompareClinicsRequest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComparisonQuery {
    /// The clinics compared (at most [`MAX_CLINICS_PER_QUERY`]); empty: every clinic
    /// granted.
    pub clinic_ids: Vec<Uuid>,
    /// The whole UTC months of first evaluations the model and the comparison take.
    pub window: Months,
}

impl TryFrom<v1::CompareClinicsRequest> for ComparisonQuery {
    type Error = FieldViolations;

    fn try_from(req: v1::CompareClinicsRequest) -> Result<Self, FieldViolations> {
        let mut check = Check::new();
        let clinic_ids = check.clinic_ids(req.clinic_ids);
        let window = check.months(req.evaluated_from, req.evaluated_to);
        let query = (|| {
            Some(Self {
                clinic_ids: clinic_ids?,
                window: window?,
            })
        })();
        check.finish(query)
    }
}

impl Check {
    /// The clinics a statistics query names: UUIDs, at most [`MAX_CLINICS_PER_QUERY`].
    fn clinic_ids(&mut self, raw: Vec<String>) -> Option<Vec<Uuid>> {
        self.list_len("clinic_ids", &raw, 0, MAX_CLINICS_PER_QUERY)
            .and_then(|()| self.each("clinic_ids", raw, |check, path, raw| check.uuid(path, &raw)))
    }

    /// A window of whole UTC months: each bound, when given, at 00:00 UTC on the first of
    /// a month, and `to` after `from`.
    fn months(
        &mut self,
        from: Option<prost_types::Timestamp>,
        to: Option<prost_types::Timestamp>,
    ) -> Option<Months> {
        let from = self.optional_month_start("evaluated_from", from);
        let to = self.optional_month_start("evaluated_to", to);
        if let (Some(Some(from)), Some(Some(to))) = (from, to)
            && from >= to
        {
            self.add("evaluated_to", "must be after evaluated_from");
            return None;
        }
        Some(Months {
            from: from?,
            to: to?,
        })
    }

    /// The point of the log a statistics answer is replayed to: positions of at least 0
    /// (each clinic named once), or a time.
    fn as_of(
        &mut self,
        raw: Option<v1::get_outcome_statistics_request::AsOf>,
    ) -> Option<Option<Cut>> {
        use v1::get_outcome_statistics_request::AsOf;
        match raw {
            None => Some(None),
            Some(AsOf::AsOfPosition(position)) => {
                if position < 0 {
                    self.add("as_of_position", "must be a global position, at least 0");
                    return None;
                }
                Some(Some(Cut::Position(position)))
            }
            Some(AsOf::AsOfPositions(list)) => {
                // As many clinics as a query may name: they become its clinics when it
                // names none.
                self.list_len(
                    "as_of_positions.positions",
                    &list.positions,
                    0,
                    MAX_CLINICS_PER_QUERY,
                )?;
                let mut positions = std::collections::BTreeMap::new();
                let mut valid = true;
                for (index, entry) in list.positions.into_iter().enumerate() {
                    let path = format!("as_of_positions.positions[{index}]");
                    let clinic = self.uuid(&format!("{path}.clinic_id"), &entry.clinic_id);
                    if entry.position < 0 {
                        self.add(
                            &format!("{path}.position"),
                            "must be a global position, at least 0",
                        );
                        valid = false;
                    }
                    match clinic {
                        Some(clinic) if positions.insert(clinic, entry.position).is_some() => {
                            self.add(&format!("{path}.clinic_id"), "names a clinic twice");
                            valid = false;
                        }
                        Some(_) => {}
                        None => valid = false,
                    }
                }
                valid.then_some(Some(Cut::Positions(positions)))
            }
            Some(AsOf::AsOfRecordedAt(at)) => self
                .optional_timestamp("as_of_recorded_at", Some(at))
                .map(|at| at.map(Cut::RecordedAt)),
        }
    }

    /// An optional bound of a statistics window: the start of a UTC month (00:00:00 on the
    /// first), so that windows differ by whole months (see
    /// [`spineledger_readmodels::release`]).
    fn optional_month_start(
        &mut self,
        field: &str,
        raw: Option<prost_types::Timestamp>,
    ) -> Option<Option<NaiveDate>> {
        let at = self.optional_timestamp(field, raw)?;
        match at.map(month_starting_at) {
            None => Some(None),
            Some(Some(month)) => Some(Some(month)),
            Some(None) => {
                self.add(
                    field,
                    "must be the start of a UTC month (00:00:00 on the first): statistics \
                     count whole months",
                );
                None
            }
        }
    }

    /// `min_position`, when given, is a global position: at least 1.
    fn min_position(&mut self, raw: Option<i64>) -> Option<Option<i64>> {
        match raw {
            Some(position) if position < 1 => {
                self.add("min_position", "must be a positive global position");
                None
            }
            raw => Some(raw),
        }
    }
}

impl TryFrom<v1::GetTreatmentPlanRequest> for PlanQuery {
    type Error = FieldViolations;

    fn try_from(req: v1::GetTreatmentPlanRequest) -> Result<Self, FieldViolations> {
        let mut check = Check::new();
        let clinic_id = check.uuid("clinic_id", &req.clinic_id);
        let episode_id = check.uuid("episode_id", &req.episode_id);
        let min_position = check.min_position(req.min_position);
        let query = (|| {
            Some(Self {
                clinic_id: clinic_id?,
                episode_id: episode_id?,
                min_position: min_position?,
            })
        })();
        check.finish(query)
    }
}

impl TryFrom<v1::ListTreatmentPlansRequest> for PlanListQuery {
    type Error = FieldViolations;

    fn try_from(req: v1::ListTreatmentPlansRequest) -> Result<Self, FieldViolations> {
        let mut check = Check::new();
        let clinic_id = check.uuid("clinic_id", &req.clinic_id);
        let phase = check.optional_enumeration("phase", req.phase, plan_phase::from_proto);
        let page_size = match u16::try_from(req.page_size) {
            Ok(0) => Some(DEFAULT_PAGE_SIZE),
            Ok(size) if size <= MAX_PAGE_SIZE => Some(size),
            _ => {
                check.add("page_size", format!("must be 0-{MAX_PAGE_SIZE}"));
                None
            }
        };
        let after = if req.page_token.is_empty() {
            Some(None)
        } else {
            let cursor = page_token::decode(&req.page_token);
            if cursor.is_none() {
                check.add("page_token", "is not a token from a previous response");
            }
            cursor.map(Some)
        };
        // `optional` on the wire: absent is "no filter"; present must be a patient id
        // (an empty string sent on purpose is a mistake, not a wish for every patient).
        let patient_id = match req.patient_id {
            None => Some(None),
            Some(raw) => check.uuid("patient_id", &raw).map(Some),
        };
        let min_position = check.min_position(req.min_position);
        let query = (|| {
            Some(Self {
                clinic_id: clinic_id?,
                phase: phase?,
                overdue: req.overdue,
                reassessment_due: req.reassessment_due,
                patient_id: patient_id?,
                page_size: page_size?,
                after: after?,
                min_position: min_position?,
            })
        })();
        check.finish(query)
    }
}

impl TryFrom<v1::GetOutcomeStatisticsRequest> for StatisticsQuery {
    type Error = FieldViolations;

    fn try_from(req: v1::GetOutcomeStatisticsRequest) -> Result<Self, FieldViolations> {
        let mut check = Check::new();
        let clinic_ids = check.clinic_ids(req.clinic_ids);
        let group_by = check.each("group_by", req.group_by, |check, path, raw| {
            check.enumeration(path, raw, dimension::from_proto)
        });
        let group_by = group_by.and_then(|group_by| {
            let mut repeated = false;
            for (index, dimension) in group_by.iter().enumerate() {
                if group_by[..index].contains(dimension) {
                    check.add(&format!("group_by[{index}]"), "repeats a dimension");
                    repeated = true;
                }
            }
            let crossed = group_by
                .iter()
                .filter(|dimension| **dimension != Dimension::Clinic)
                .count()
                > 1;
            if crossed {
                check.add(
                    "group_by",
                    "groups by at most one dimension besides clinic: cross-tabulated \
                     statistics could disclose small groups by subtraction; ask for one \
                     dimension at a time",
                );
            }
            (!repeated && !crossed).then_some(group_by)
        });
        let window = check.months(req.evaluated_from, req.evaluated_to);
        let min_position = check.min_position(req.min_position);
        let as_of = check.as_of(req.as_of);
        if req.min_position.is_some() && matches!(as_of, Some(Some(_))) {
            check.add("min_position", "cannot be combined with as_of");
        }
        let query = (|| {
            Some(Self {
                clinic_ids: clinic_ids?,
                group_by: group_by?,
                window: window?,
                min_position: min_position?,
                as_of: as_of?,
            })
        })();
        check.finish(query)
    }
}

/// The page tokens of ListTreatmentPlans: where the next page starts, opaque to clients.
/// base64url (no padding) of version 1: the byte 1; the byte 0 (the plan has no due
/// date) or 1 followed by its due date as big-endian microseconds since the Unix epoch;
/// the episode id's 16 bytes. Anything else is not a token.
pub mod page_token {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use chrono::DateTime;
    use spineledger_projections::queries::PlanCursor;
    use uuid::Uuid;

    const VERSION: u8 = 1;

    /// The token of the page that starts after `cursor`.
    #[must_use]
    pub fn encode(cursor: &PlanCursor) -> String {
        let mut bytes = vec![VERSION];
        match cursor.next_session_due {
            None => bytes.push(0),
            Some(due) => {
                bytes.push(1);
                bytes.extend(due.timestamp_micros().to_be_bytes());
            }
        }
        bytes.extend(cursor.episode_id.as_bytes());
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// The cursor a token stands for; `None` if it is not one.
    pub(crate) fn decode(token: &str) -> Option<PlanCursor> {
        let bytes = URL_SAFE_NO_PAD.decode(token).ok()?;
        let (&version, rest) = bytes.split_first()?;
        if version != VERSION {
            return None;
        }
        let (next_session_due, episode) = match rest.split_first()? {
            (&0, episode) => (None, episode),
            (&1, rest) => {
                let (micros, episode) = rest.split_first_chunk::<8>()?;
                let due = DateTime::from_timestamp_micros(i64::from_be_bytes(*micros))?;
                (Some(due), episode)
            }
            _ => return None,
        };
        let episode_id = Uuid::from_slice(episode).ok().filter(|id| !id.is_nil())?;
        Some(PlanCursor {
            next_session_due,
            episode_id,
        })
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn tokens_round_trip_with_and_without_a_due_date() {
            let episode_id = Uuid::new_v4();
            let due = DateTime::from_timestamp_micros(1_767_225_600_123_456).expect("time");
            for next_session_due in [None, Some(due)] {
                let cursor = PlanCursor {
                    next_session_due,
                    episode_id,
                };
                assert_eq!(decode(&encode(&cursor)), Some(cursor));
            }
        }

        #[test]
        fn anything_else_is_not_a_token() {
            let token = encode(&PlanCursor {
                next_session_due: None,
                episode_id: Uuid::new_v4(),
            });
            let mut bytes = URL_SAFE_NO_PAD.decode(&token).expect("base64");
            bytes[1] = 2;
            for malformed in [
                "",
                "garbage!",
                &token[1..],
                &format!("{token}AA"),
                &URL_SAFE_NO_PAD.encode(&bytes),
                &URL_SAFE_NO_PAD.encode([VERSION, 0]),
                &URL_SAFE_NO_PAD.encode([VERSION + 1, 0]),
            ] {
                assert_eq!(decode(malformed), None, "{malformed}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLINIC: &str = "6f1c2b9e-8a41-4c52-9b0e-1d2f3a4b5c6d";
    const EPISODE: &str = "0b7e3c1a-2d4f-4e6a-8b9c-0d1e2f3a4b5c";

    fn fields(violations: &FieldViolations) -> Vec<&str> {
        violations
            .violations()
            .iter()
            .map(|(field, _)| field.as_str())
            .collect()
    }

    fn description<'v>(violations: &'v FieldViolations, field: &str) -> &'v str {
        violations
            .violations()
            .iter()
            .find(|(path, _)| path == field)
            .map(|(_, description)| description.as_str())
            .unwrap_or_default()
    }

    #[test]
    fn a_valid_plan_request_converts_with_ids_trimmed_like_writes() {
        let query = PlanQuery::try_from(v1::GetTreatmentPlanRequest {
            clinic_id: format!(" {CLINIC} "),
            episode_id: EPISODE.to_owned(),
            min_position: Some(1),
        })
        .unwrap();
        assert_eq!(query.clinic_id.to_string(), CLINIC);
        assert_eq!(query.min_position, Some(1));
    }

    #[test]
    fn uuids_are_worded_as_on_the_write_side() {
        let found = PlanQuery::try_from(v1::GetTreatmentPlanRequest {
            clinic_id: String::new(),
            episode_id: "00000000-0000-0000-0000-000000000000".to_owned(),
            min_position: Some(0),
        })
        .unwrap_err();
        assert_eq!(fields(&found), ["clinic_id", "episode_id", "min_position"]);
        assert_eq!(description(&found, "clinic_id"), "is required (a UUID)");
        assert_eq!(
            description(&found, "episode_id"),
            "must not be the nil UUID"
        );
    }

    #[test]
    fn a_listing_defaults_its_page_size_and_checks_every_field() {
        let query = PlanListQuery::try_from(v1::ListTreatmentPlansRequest {
            clinic_id: CLINIC.to_owned(),
            phase: v1::PlanPhase::Initial as i32,
            ..Default::default()
        })
        .unwrap();
        assert_eq!(query.page_size, DEFAULT_PAGE_SIZE);
        assert_eq!(query.phase, Some(PlanPhase::Initial));
        assert_eq!(query.after, None);

        let found = PlanListQuery::try_from(v1::ListTreatmentPlansRequest {
            clinic_id: "nope".to_owned(),
            phase: 99,
            page_size: 501,
            page_token: "garbage!".to_owned(),
            patient_id: Some(String::new()),
            min_position: Some(-4),
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(
            fields(&found),
            [
                "clinic_id",
                "phase",
                "page_size",
                "page_token",
                "patient_id",
                "min_position"
            ]
        );
        assert_eq!(description(&found, "phase"), "unknown value 99");
    }

    #[test]
    fn statistics_check_clinics_dimensions_and_the_date_range() {
        let at = |seconds| Some(prost_types::Timestamp { seconds, nanos: 0 });
        let query = StatisticsQuery::try_from(v1::GetOutcomeStatisticsRequest {
            clinic_ids: vec![CLINIC.to_owned()],
            group_by: vec![v1::StatisticsDimension::AgeBand as i32],
            evaluated_from: at(1_698_796_800), // 2023-11-01T00:00:00Z
            evaluated_to: at(1_798_761_600),   // 2027-01-01T00:00:00Z
            min_position: None,
            as_of: None,
        })
        .unwrap();
        assert_eq!(query.group_by, [Dimension::AgeBand]);
        assert_eq!(
            query.window,
            Months {
                from: NaiveDate::from_ymd_opt(2023, 11, 1),
                to: NaiveDate::from_ymd_opt(2027, 1, 1),
            }
        );

        // A bound inside a month (a second, or a nanosecond, past its start) is refused.
        let partial = StatisticsQuery::try_from(v1::GetOutcomeStatisticsRequest {
            evaluated_from: at(1_698_796_801),
            evaluated_to: Some(prost_types::Timestamp {
                seconds: 1_798_761_600,
                nanos: 1,
            }),
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(fields(&partial), ["evaluated_from", "evaluated_to"]);
        assert!(description(&partial, "evaluated_from").contains("start of a UTC month"));

        let found = StatisticsQuery::try_from(v1::GetOutcomeStatisticsRequest {
            clinic_ids: vec![CLINIC.to_owned(), "not-a-uuid".to_owned()],
            group_by: vec![
                v1::StatisticsDimension::Clinic as i32,
                v1::StatisticsDimension::Unspecified as i32,
                42,
            ],
            evaluated_from: at(1_798_761_600),
            evaluated_to: at(1_698_796_800),
            min_position: None,
            as_of: None,
        })
        .unwrap_err();
        assert_eq!(
            fields(&found),
            [
                "clinic_ids[1]",
                "group_by[1]",
                "group_by[2]",
                "evaluated_to"
            ]
        );
        assert_eq!(description(&found, "group_by[1]"), "must be specified");

        let repeated = StatisticsQuery::try_from(v1::GetOutcomeStatisticsRequest {
            group_by: vec![v1::StatisticsDimension::Clinic as i32; 2],
            clinic_ids: vec![CLINIC.to_owned(); MAX_CLINICS_PER_QUERY + 1],
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(fields(&repeated), ["clinic_ids", "group_by[1]"]);

        // The clinic and one dimension, yes; two dimensions besides the clinic, no.
        let by = |dimensions: &[v1::StatisticsDimension]| {
            StatisticsQuery::try_from(v1::GetOutcomeStatisticsRequest {
                group_by: dimensions.iter().map(|d| *d as i32).collect(),
                ..Default::default()
            })
        };
        use v1::StatisticsDimension as D;
        assert!(by(&[D::AgeBand, D::Clinic]).is_ok());

        // As-of positions: no more clinics than a query may name, none negative.
        let positions = |count: usize, position: i64| {
            StatisticsQuery::try_from(v1::GetOutcomeStatisticsRequest {
                as_of: Some(v1::get_outcome_statistics_request::AsOf::AsOfPositions(
                    v1::ClinicPositions {
                        positions: (0..count)
                            .map(|n| v1::ClinicPosition {
                                clinic_id: Uuid::from_u128(n as u128 + 1).to_string(),
                                position,
                            })
                            .collect(),
                    },
                )),
                ..Default::default()
            })
        };
        assert!(positions(MAX_CLINICS_PER_QUERY, 7).is_ok());
        let too_many = positions(MAX_CLINICS_PER_QUERY + 1, 7).unwrap_err();
        assert_eq!(fields(&too_many), ["as_of_positions.positions"]);
        let negative = positions(1, -1).unwrap_err();
        assert_eq!(fields(&negative), ["as_of_positions.positions[0].position"]);
        let crossed = by(&[D::Clinic, D::Diagnosis, D::AgeBand]).unwrap_err();
        assert_eq!(fields(&crossed), ["group_by"]);
        assert!(description(&crossed, "group_by").contains("at most one dimension"));
    }

    #[test]
    fn read_timestamps_use_the_write_side_parser() {
        let found = StatisticsQuery::try_from(v1::GetOutcomeStatisticsRequest {
            evaluated_from: Some(prost_types::Timestamp {
                seconds: 0,
                nanos: -1,
            }),
            evaluated_to: Some(prost_types::Timestamp {
                seconds: -2_300_000_000,
                nanos: 0,
            }),
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(
            description(&found, "evaluated_from"),
            "is not a valid timestamp"
        );
        assert_eq!(
            description(&found, "evaluated_to"),
            "must not be before 1900"
        );
    }
}
