//! The auditor's requests become validated queries here, with the same [`Check`] as the
//! rest of the edge.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use spineledger_store::{AccessCursor, AccessQuery, AccessSort};

use super::Check;
use crate::error::FieldViolations;
use crate::v1;

/// Events per history page when the request leaves `page_size` 0.
pub const DEFAULT_HISTORY_PAGE: u16 = 100;
/// The largest history page.
pub const MAX_HISTORY_PAGE: u16 = 500;

/// A valid `ListStreamEventsRequest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamEventsQuery {
    /// The clinic.
    pub clinic_id: Uuid,
    /// The stream, in canonical form (`patient-{uuid}` or `episode-{uuid}`).
    pub stream_id: String,
    /// The page starts after this version.
    pub after_version: u64,
    /// Events per page, 1-[`MAX_HISTORY_PAGE`].
    pub page_size: u16,
}

/// A valid `ListClinicChangesRequest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClinicChangesQuery {
    /// The clinic.
    pub clinic_id: Uuid,
    /// Recorded at or after.
    pub from: DateTime<Utc>,
    /// Recorded before (after `from`).
    pub to: DateTime<Utc>,
    /// The page starts after this global position.
    pub after_position: i64,
    /// Events per page, 1-[`MAX_HISTORY_PAGE`].
    pub page_size: u16,
}

impl Check {
    /// A history page size: 0 is the default, at most [`MAX_HISTORY_PAGE`].
    fn history_page(&mut self, raw: i32) -> Option<u16> {
        match u16::try_from(raw) {
            Ok(0) => Some(DEFAULT_HISTORY_PAGE),
            Ok(size) if size <= MAX_HISTORY_PAGE => Some(size),
            _ => {
                self.add("page_size", format!("must be 0-{MAX_HISTORY_PAGE}"));
                None
            }
        }
    }
}

impl TryFrom<v1::ListClinicChangesRequest> for ClinicChangesQuery {
    type Error = FieldViolations;

    fn try_from(req: v1::ListClinicChangesRequest) -> Result<Self, FieldViolations> {
        let mut check = Check::new();
        let clinic_id = check.uuid("clinic_id", &req.clinic_id);
        let time = |check: &mut Check, field: &str, raw: Option<prost_types::Timestamp>| match raw {
            Some(raw) => check.timestamp(field, raw),
            None => {
                check.add(field, "is required");
                None
            }
        };
        let from = time(&mut check, "recorded_from", req.recorded_from);
        let to = time(&mut check, "recorded_to", req.recorded_to);
        if let (Some(from), Some(to)) = (from, to)
            && to <= from
        {
            check.add("recorded_to", "must be after recorded_from");
        }
        let after_position = if req.after_global_position < 0 {
            check.add("after_global_position", "must not be negative");
            None
        } else {
            Some(req.after_global_position)
        };
        let page_size = check.history_page(req.page_size);
        let query = (|| {
            Some(Self {
                clinic_id: clinic_id?,
                from: from?,
                to: to?,
                after_position: after_position?,
                page_size: page_size?,
            })
        })();
        check.finish(query)
    }
}

/// A valid `ListAccessLogRequest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessLogQuery {
    /// The store's query: filters, order, where the page starts, and a limit of one more
    /// entry than the page (which tells whether another page follows).
    pub access: AccessQuery,
    /// Entries per page.
    pub page_size: u16,
}

/// The page token of the page after `last`: opaque to clients, it names the order too, so
/// a token is refused with any other order.
pub fn access_page_token(sort: AccessSort, descending: bool, last: &AccessCursor) -> String {
    let text = format!(
        "{}:{}:{}:{}",
        sort_code(sort),
        u8::from(descending),
        last.position,
        last.key
    );
    URL_SAFE_NO_PAD.encode(text)
}

fn sort_code(sort: AccessSort) -> i32 {
    use v1::AccessLogSort as Wire;
    let wire = match sort {
        AccessSort::Position => Wire::Position,
        AccessSort::AccessedAt => Wire::AccessedAt,
        AccessSort::Patient => Wire::Patient,
        AccessSort::Episode => Wire::Episode,
        AccessSort::Principal => Wire::Principal,
        AccessSort::Role => Wire::Role,
        AccessSort::Actor => Wire::Actor,
        AccessSort::Rpc => Wire::Rpc,
        AccessSort::Purpose => Wire::Purpose,
        AccessSort::BreakGlass => Wire::BreakGlass,
        AccessSort::Outcome => Wire::Outcome,
    };
    wire as i32
}

fn access_sort(code: i32) -> Option<AccessSort> {
    use v1::AccessLogSort as Wire;
    Some(match Wire::try_from(code).ok()? {
        Wire::Unspecified | Wire::Position => AccessSort::Position,
        Wire::AccessedAt => AccessSort::AccessedAt,
        Wire::Patient => AccessSort::Patient,
        Wire::Episode => AccessSort::Episode,
        Wire::Principal => AccessSort::Principal,
        Wire::Role => AccessSort::Role,
        Wire::Actor => AccessSort::Actor,
        Wire::Rpc => AccessSort::Rpc,
        Wire::Purpose => AccessSort::Purpose,
        Wire::BreakGlass => AccessSort::BreakGlass,
        Wire::Outcome => AccessSort::Outcome,
    })
}

/// The cursor a page token names, if it is one of this order's.
fn access_page_cursor(token: &str, sort: AccessSort, descending: bool) -> Option<AccessCursor> {
    let text = String::from_utf8(URL_SAFE_NO_PAD.decode(token.trim()).ok()?).ok()?;
    let mut parts = text.splitn(4, ':');
    let (code, down, position, key) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if code.parse::<i32>().ok()? != sort_code(sort) || down != u8::from(descending).to_string() {
        return None;
    }
    let position: i64 = position.parse().ok().filter(|position| *position >= 0)?;
    // Keys are what the store wrote: text without control characters (PostgreSQL refuses
    // a NUL outright, which would otherwise surface as an internal error).
    if key.chars().any(char::is_control) {
        return None;
    }
    Some(AccessCursor {
        key: key.to_owned(),
        position,
    })
}

impl TryFrom<v1::ListAccessLogRequest> for AccessLogQuery {
    type Error = FieldViolations;

    fn try_from(req: v1::ListAccessLogRequest) -> Result<Self, FieldViolations> {
        let mut check = Check::new();
        let clinic_id = check.uuid("clinic_id", &req.clinic_id);
        let patient_id = check.optional_uuid("patient_id", &req.patient_id);
        let who = req.who.trim();
        let who = if who.chars().count() > 200 || who.chars().any(char::is_control) {
            check.add("who", "must be at most 200 printable characters");
            None
        } else {
            Some((!who.is_empty()).then(|| who.to_owned()))
        };
        let from = req
            .accessed_from
            .map(|raw| check.timestamp("accessed_from", raw));
        let to = req
            .accessed_to
            .map(|raw| check.timestamp("accessed_to", raw));
        if let (Some(Some(from)), Some(Some(to))) = (from, to)
            && to <= from
        {
            check.add("accessed_to", "must be after accessed_from");
        }
        let sort = access_sort(req.sort_by);
        if sort.is_none() {
            check.add("sort_by", format!("unknown value {}", req.sort_by));
        }
        let descending = req.descending || req.newest_first;
        let after = match (sort, req.page_token.is_empty(), req.after_position) {
            (_, true, 0) => Some(None),
            (Some(sort), false, 0) => match access_page_cursor(&req.page_token, sort, descending) {
                Some(cursor) => Some(Some(cursor)),
                None => {
                    check.add(
                        "page_token",
                        "is not a token of this listing's order (take next_page_token as given)",
                    );
                    None
                }
            },
            (Some(AccessSort::Position), true, position) if position > 0 => {
                Some(Some(AccessCursor {
                    key: format!("{position:020}"),
                    position,
                }))
            }
            (_, true, position) if position < 0 => {
                check.add("after_position", "must not be negative");
                None
            }
            (_, true, _) => {
                check.add(
                    "after_position",
                    "pages only the position order: use page_token",
                );
                None
            }
            (_, false, _) => {
                check.add("page_token", "give page_token or after_position, not both");
                None
            }
        };
        let page_size = check.history_page(req.page_size);
        let query = (|| {
            Some(Self {
                access: AccessQuery {
                    clinic_id: clinic_id?,
                    patient_id: patient_id?,
                    who: who?,
                    from: from.map_or(Some(None), |from| from.map(Some))?,
                    to: to.map_or(Some(None), |to| to.map(Some))?,
                    sort: sort?,
                    descending,
                    after: after?,
                    limit: usize::from(page_size?) + 1,
                },
                page_size: page_size?,
            })
        })();
        check.finish(query)
    }
}

/// Up to when an as-of view folds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AsOf {
    /// Events recorded at or before this time.
    RecordedAt(DateTime<Utc>),
    /// Events at or before this global position.
    Position(i64),
}

/// A valid `GetTreatmentPlanAsOfRequest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanAsOfQuery {
    /// The clinic.
    pub clinic_id: Uuid,
    /// The episode.
    pub episode_id: Uuid,
    /// Up to when.
    pub as_of: AsOf,
}

/// `patient-{uuid}` or `episode-{uuid}`, written canonically.
fn stream_id(check: &mut Check, raw: &str) -> Option<String> {
    let parsed = raw
        .trim()
        .split_once('-')
        .filter(|(kind, _)| matches!(*kind, "patient" | "episode"))
        .and_then(|(kind, id)| Uuid::parse_str(id).ok().map(|id| (kind, id)))
        .filter(|(_, id)| !id.is_nil());
    match parsed {
        Some((kind, id)) => Some(format!("{kind}-{id}")),
        None => {
            check.add("stream_id", "must be patient-{uuid} or episode-{uuid}");
            None
        }
    }
}

impl TryFrom<v1::ListStreamEventsRequest> for StreamEventsQuery {
    type Error = FieldViolations;

    fn try_from(req: v1::ListStreamEventsRequest) -> Result<Self, FieldViolations> {
        let mut check = Check::new();
        let clinic_id = check.uuid("clinic_id", &req.clinic_id);
        let stream_id = stream_id(&mut check, &req.stream_id);
        let after_version = u64::try_from(req.after_version).ok().or_else(|| {
            check.add("after_version", "must not be negative");
            None
        });
        let page_size = check.history_page(req.page_size);
        let query = (|| {
            Some(Self {
                clinic_id: clinic_id?,
                stream_id: stream_id?,
                after_version: after_version?,
                page_size: page_size?,
            })
        })();
        check.finish(query)
    }
}

impl TryFrom<v1::GetTreatmentPlanAsOfRequest> for PlanAsOfQuery {
    type Error = FieldViolations;

    fn try_from(req: v1::GetTreatmentPlanAsOfRequest) -> Result<Self, FieldViolations> {
        use v1::get_treatment_plan_as_of_request::AsOf as Raw;
        let mut check = Check::new();
        let clinic_id = check.uuid("clinic_id", &req.clinic_id);
        let episode_id = check.uuid("episode_id", &req.episode_id);
        let as_of = match req.as_of {
            Some(Raw::RecordedAt(at)) => check.timestamp("recorded_at", at).map(AsOf::RecordedAt),
            Some(Raw::GlobalPosition(position)) if position >= 1 => Some(AsOf::Position(position)),
            Some(Raw::GlobalPosition(_)) => {
                check.add("global_position", "must be a positive global position");
                None
            }
            None => {
                check.add("as_of", "name recorded_at or global_position");
                None
            }
        };
        let query = (|| {
            Some(Self {
                clinic_id: clinic_id?,
                episode_id: episode_id?,
                as_of: as_of?,
            })
        })();
        check.finish(query)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_ids_are_patient_or_episode_uuids_in_canonical_form() {
        let mut check = Check::new();
        let id = "3C2B1A09-8F7E-4D6C-B5A4-9E8D7C6B5A41";
        assert_eq!(
            stream_id(&mut check, &format!(" episode-{id} ")),
            Some("episode-3c2b1a09-8f7e-4d6c-b5a4-9e8d7c6b5a41".to_owned())
        );
        for bad in [
            "",
            "episode-",
            "clinic-3c2b1a09-8f7e-4d6c-b5a4-9e8d7c6b5a41",
            "episode-x",
        ] {
            assert_eq!(stream_id(&mut check, bad), None, "{bad}");
        }
    }

    #[test]
    fn an_as_of_needs_a_time_or_a_positive_position() {
        let request = |as_of| v1::GetTreatmentPlanAsOfRequest {
            clinic_id: "7d8e4a52-3b1f-4c7a-9a43-1f2d5c6b7e80".into(),
            episode_id: "5f0c8a8e-1b2d-4c3e-9f4a-6b7c8d9e0f1a".into(),
            as_of,
        };
        use v1::get_treatment_plan_as_of_request::AsOf as Raw;
        assert!(PlanAsOfQuery::try_from(request(None)).is_err());
        assert!(PlanAsOfQuery::try_from(request(Some(Raw::GlobalPosition(0)))).is_err());
        assert_eq!(
            PlanAsOfQuery::try_from(request(Some(Raw::GlobalPosition(7)))).map(|q| q.as_of),
            Ok(AsOf::Position(7))
        );
    }
}

/// A record of a clinic's signed log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogRecord {
    /// An event, by global position.
    Event(i64),
    /// An access-log entry, by its position in the access log.
    Access(i64),
}

/// A valid `GetCheckpointRequest`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointQuery {
    /// The clinic.
    pub clinic_id: Uuid,
    /// At most this size; `None`: the latest.
    pub tree_size: Option<u64>,
}

/// A valid `GetInclusionProofRequest`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InclusionQuery {
    /// The clinic.
    pub clinic_id: Uuid,
    /// The record to prove.
    pub record: LogRecord,
    /// The tree to prove it in; `None`: the latest checkpoint's.
    pub tree_size: Option<u64>,
}

/// A valid `GetConsistencyProofRequest`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsistencyQuery {
    /// The clinic.
    pub clinic_id: Uuid,
    /// The older tree, at least 1.
    pub first_size: u64,
    /// The newer tree, at least `first_size`; `None`: the latest checkpoint's.
    pub second_size: Option<u64>,
}

impl Check {
    /// A tree size: 0 means "not given".
    fn tree_size(&mut self, field: &str, raw: i64) -> Option<Option<u64>> {
        match u64::try_from(raw) {
            Ok(0) => Some(None),
            Ok(size) => Some(Some(size)),
            Err(_) => {
                self.add(field, "must not be negative");
                None
            }
        }
    }
}

impl TryFrom<v1::GetCheckpointRequest> for CheckpointQuery {
    type Error = FieldViolations;

    fn try_from(req: v1::GetCheckpointRequest) -> Result<Self, FieldViolations> {
        let mut check = Check::new();
        let clinic_id = check.uuid("clinic_id", &req.clinic_id);
        let tree_size = check.tree_size("tree_size", req.tree_size);
        let query = (|| {
            Some(Self {
                clinic_id: clinic_id?,
                tree_size: tree_size?,
            })
        })();
        check.finish(query)
    }
}

impl TryFrom<v1::SignCheckpointRequest> for CheckpointQuery {
    type Error = FieldViolations;

    fn try_from(req: v1::SignCheckpointRequest) -> Result<Self, FieldViolations> {
        let mut check = Check::new();
        let clinic_id = check.uuid("clinic_id", &req.clinic_id);
        let query = clinic_id.map(|clinic_id| Self {
            clinic_id,
            tree_size: None,
        });
        check.finish(query)
    }
}

impl TryFrom<v1::GetInclusionProofRequest> for InclusionQuery {
    type Error = FieldViolations;

    fn try_from(req: v1::GetInclusionProofRequest) -> Result<Self, FieldViolations> {
        use v1::get_inclusion_proof_request::Record;
        let mut check = Check::new();
        let clinic_id = check.uuid("clinic_id", &req.clinic_id);
        let record = match req.record {
            Some(Record::GlobalPosition(position)) if position > 0 => {
                Some(LogRecord::Event(position))
            }
            Some(Record::AccessPosition(position)) if position > 0 => {
                Some(LogRecord::Access(position))
            }
            Some(Record::GlobalPosition(_)) => {
                check.add("global_position", "must be positive");
                None
            }
            Some(Record::AccessPosition(_)) => {
                check.add("access_position", "must be positive");
                None
            }
            None => {
                check.add("record", "name a global_position or an access_position");
                None
            }
        };
        let tree_size = check.tree_size("tree_size", req.tree_size);
        let query = (|| {
            Some(Self {
                clinic_id: clinic_id?,
                record: record?,
                tree_size: tree_size?,
            })
        })();
        check.finish(query)
    }
}

impl TryFrom<v1::GetConsistencyProofRequest> for ConsistencyQuery {
    type Error = FieldViolations;

    fn try_from(req: v1::GetConsistencyProofRequest) -> Result<Self, FieldViolations> {
        let mut check = Check::new();
        let clinic_id = check.uuid("clinic_id", &req.clinic_id);
        let first_size = match check.tree_size("first_size", req.first_size) {
            Some(Some(size)) => Some(size),
            Some(None) => {
                check.add("first_size", "must be at least 1");
                None
            }
            None => None,
        };
        let second_size = check.tree_size("second_size", req.second_size);
        if let (Some(first), Some(Some(second))) = (first_size, second_size)
            && second < first
        {
            check.add("second_size", "must not be smaller than first_size");
        }
        let query = (|| {
            Some(Self {
                clinic_id: clinic_id?,
                first_size: first_size?,
                second_size: second_size?,
            })
        })();
        check.finish(query)
    }
}
