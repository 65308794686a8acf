//! The query API over the read models: treatment plans for clinicians, outcome statistics
//! for analysts. Requests are validated like writes (INVALID_ARGUMENT with the field);
//! "at least position P" waits, bounded, for the projection, else UNAVAILABLE.

use std::time::Duration;

use spineledger_api::error::{ApiError, FieldViolations};
use spineledger_api::v1;
use spineledger_api::v1::outcome_statistics_service_server::OutcomeStatisticsService;
use spineledger_api::v1::treatment_plan_service_server::TreatmentPlanService;
use spineledger_api::views;
use spineledger_projections::{Projection, queries};
use spineledger_readmodels::statistics::aggregate;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::App;

/// Settings of the query side.
#[derive(Debug, Clone)]
pub struct ReadSettings {
    /// Groups and means built on fewer values are suppressed.
    pub min_cell: usize,
    /// How long a read-your-writes query waits for the projection.
    pub catch_up_timeout: Duration,
    /// Most episodes one statistics query may aggregate (FAILED_PRECONDITION
    /// QUERY_TOO_BROAD beyond).
    pub max_statistics_episodes: usize,
}

impl Default for ReadSettings {
    fn default() -> Self {
        Self {
            min_cell: spineledger_readmodels::statistics::DEFAULT_MIN_CELL,
            catch_up_timeout: Duration::from_secs(5),
            max_statistics_episodes: spineledger_projections::queries::MAX_EPISODES_PER_QUERY,
        }
    }
}

const DEFAULT_PAGE_SIZE: i32 = 50;
const MAX_PAGE_SIZE: i32 = 500;
const MAX_CLINICS_PER_QUERY: usize = 1000;

#[derive(Debug, Clone)]
pub struct ReadModels {
    app: App,
}

impl ReadModels {
    pub fn new(app: App) -> Self {
        Self { app }
    }

    /// Waits until `projection` includes the event at `min_position` (if given).
    async fn catch_up(
        &self,
        projection: Projection,
        clinics: &[Uuid],
        min_position: Option<i64>,
    ) -> Result<(), ApiError> {
        let Some(position) = min_position else {
            return Ok(());
        };
        let reached = spineledger_projections::wait_for_position(
            &self.app.store,
            projection,
            clinics,
            position,
            self.app.reads.catch_up_timeout,
        )
        .await?;
        if reached {
            Ok(())
        } else {
            Err(ApiError::UnknownMinPosition)
        }
    }
}

fn uuid_field(violations: &mut FieldViolations, field: &str, value: &str) -> Option<Uuid> {
    match Uuid::parse_str(value) {
        Ok(id) if !id.is_nil() => Some(id),
        _ => {
            violations.add(field, "must be a UUID");
            None
        }
    }
}

fn min_position_field(violations: &mut FieldViolations, value: Option<i64>) {
    if value.is_some_and(|position| position < 1) {
        violations.add("min_position", "must be a positive global position");
    }
}

fn time_field(
    violations: &mut FieldViolations,
    field: &str,
    value: Option<prost_types::Timestamp>,
) -> Option<chrono::DateTime<chrono::Utc>> {
    let value = value?;
    let nanos = u32::try_from(value.nanos).ok();
    let time = nanos
        .and_then(|nanos| chrono::DateTime::from_timestamp(value.seconds, nanos))
        .filter(|time| (1900..=9999).contains(&chrono::Datelike::year(time)));
    if time.is_none() {
        violations.add(
            field,
            "is not a valid timestamp between the years 1900 and 9999",
        );
    }
    time
}

/// The page tokens of ListTreatmentPlans: where the next page starts, opaque to clients.
/// base64url (no padding) of version 1: the byte 1; the byte 0 (the plan has no due
/// date) or 1 followed by its due date as big-endian microseconds since the Unix epoch;
/// the episode id's 16 bytes. Anything else is not a token.
mod page_token {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use chrono::DateTime;
    use spineledger_projections::queries::PlanCursor;
    use uuid::Uuid;

    const VERSION: u8 = 1;

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

    pub fn decode(token: &str) -> Option<PlanCursor> {
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

#[tonic::async_trait]
impl TreatmentPlanService for ReadModels {
    async fn get_treatment_plan(
        &self,
        request: Request<v1::GetTreatmentPlanRequest>,
    ) -> Result<Response<v1::GetTreatmentPlanResponse>, Status> {
        Ok(Response::new(self.plan(request.into_inner()).await?))
    }

    async fn list_treatment_plans(
        &self,
        request: Request<v1::ListTreatmentPlansRequest>,
    ) -> Result<Response<v1::ListTreatmentPlansResponse>, Status> {
        Ok(Response::new(self.plans(request.into_inner()).await?))
    }
}

#[tonic::async_trait]
impl OutcomeStatisticsService for ReadModels {
    async fn get_outcome_statistics(
        &self,
        request: Request<v1::GetOutcomeStatisticsRequest>,
    ) -> Result<Response<v1::GetOutcomeStatisticsResponse>, Status> {
        Ok(Response::new(self.statistics(request.into_inner()).await?))
    }
}

impl ReadModels {
    async fn plan(
        &self,
        request: v1::GetTreatmentPlanRequest,
    ) -> Result<v1::GetTreatmentPlanResponse, ApiError> {
        let mut violations = FieldViolations::new();
        let clinic = uuid_field(&mut violations, "clinic_id", &request.clinic_id);
        let episode = uuid_field(&mut violations, "episode_id", &request.episode_id);
        min_position_field(&mut violations, request.min_position);
        let (Some(clinic), Some(episode)) = (clinic, episode) else {
            return Err(violations.into());
        };
        if !violations.is_empty() {
            return Err(violations.into());
        }
        self.catch_up(Projection::TreatmentPlans, &[clinic], request.min_position)
            .await?;
        let client = self.app.store.pool().get().await?;
        let view = queries::treatment_plan(&client, clinic, episode)
            .await?
            .ok_or(ApiError::PlanNotFound)?;
        Ok(v1::GetTreatmentPlanResponse {
            plan: Some(views::treatment_plan(&view, self.app.clock.now())),
        })
    }

    async fn plans(
        &self,
        request: v1::ListTreatmentPlansRequest,
    ) -> Result<v1::ListTreatmentPlansResponse, ApiError> {
        let mut violations = FieldViolations::new();
        let clinic = uuid_field(&mut violations, "clinic_id", &request.clinic_id);
        let phase = views::plan_phase_filter(request.phase);
        if phase.is_none() && request.phase != v1::PlanPhase::Unspecified as i32 {
            violations.add("phase", "is not a known plan phase");
        }
        if !(0..=MAX_PAGE_SIZE).contains(&request.page_size) {
            violations.add("page_size", format!("must be 0-{MAX_PAGE_SIZE}"));
        }
        let after = if request.page_token.is_empty() {
            None
        } else {
            let token = page_token::decode(&request.page_token);
            if token.is_none() {
                violations.add("page_token", "is not a token from a previous response");
            }
            token
        };
        let patient = request
            .patient_id
            .as_deref()
            .and_then(|id| uuid_field(&mut violations, "patient_id", id));
        min_position_field(&mut violations, request.min_position);
        let Some(clinic) = clinic else {
            return Err(violations.into());
        };
        if !violations.is_empty() {
            return Err(violations.into());
        }
        self.catch_up(Projection::TreatmentPlans, &[clinic], request.min_position)
            .await?;
        let today = self.app.clock.now();
        let filter = queries::PlanFilter {
            phase: phase.map(|phase| phase.as_str().to_owned()),
            overdue: request
                .overdue
                .map(|overdue| queries::OverdueFilter { overdue, today }),
            reassessment_due: request.reassessment_due,
            patient_id: patient,
        };
        let page_size = if request.page_size == 0 {
            DEFAULT_PAGE_SIZE
        } else {
            request.page_size
        };
        let client = self.app.store.pool().get().await?;
        // One more than the page tells whether another page follows.
        let mut plans = queries::list_treatment_plans(
            &client,
            clinic,
            &filter,
            after,
            i64::from(page_size) + 1,
        )
        .await?;
        let page = usize::try_from(page_size).unwrap_or(0);
        let next_page_token = if plans.len() > page {
            plans.truncate(page);
            plans
                .last()
                .map(|plan| page_token::encode(&plan.cursor))
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(v1::ListTreatmentPlansResponse {
            plans: plans
                .iter()
                .map(|plan| views::treatment_plan(&plan.view, today))
                .collect(),
            next_page_token,
        })
    }

    async fn statistics(
        &self,
        request: v1::GetOutcomeStatisticsRequest,
    ) -> Result<v1::GetOutcomeStatisticsResponse, ApiError> {
        let mut violations = FieldViolations::new();
        if request.clinic_ids.len() > MAX_CLINICS_PER_QUERY {
            violations.add(
                "clinic_ids",
                format!("at most {MAX_CLINICS_PER_QUERY} clinics"),
            );
        }
        let clinics: Vec<Uuid> = request
            .clinic_ids
            .iter()
            .take(MAX_CLINICS_PER_QUERY)
            .enumerate()
            .filter_map(|(index, id)| {
                uuid_field(&mut violations, &format!("clinic_ids[{index}]"), id)
            })
            .collect();
        let mut group_by = Vec::new();
        for (index, requested) in request.group_by.iter().enumerate() {
            match views::dimension_filter(*requested) {
                Some(dimension) if group_by.contains(&dimension) => {
                    violations.add(format!("group_by[{index}]"), "repeats a dimension");
                }
                Some(dimension) => group_by.push(dimension),
                None => violations.add(format!("group_by[{index}]"), "is not a known dimension"),
            }
        }
        let from = time_field(&mut violations, "evaluated_from", request.evaluated_from);
        let to = time_field(&mut violations, "evaluated_to", request.evaluated_to);
        if let (Some(from), Some(to)) = (from, to)
            && from >= to
        {
            violations.add("evaluated_to", "must be after evaluated_from");
        }
        min_position_field(&mut violations, request.min_position);
        if !violations.is_empty() {
            return Err(violations.into());
        }
        self.catch_up(
            Projection::OutcomeStatistics,
            &clinics,
            request.min_position,
        )
        .await?;
        let client = self.app.store.pool().get().await?;
        let max_episodes = self.app.reads.max_statistics_episodes;
        let episodes = queries::outcome_episodes(&client, &clinics, from, to, max_episodes).await?;
        drop(client);
        let min_cell = self.app.reads.min_cell;
        let groups = aggregate(&episodes, &group_by, min_cell);
        Ok(v1::GetOutcomeStatisticsResponse {
            min_cell_size: i32::try_from(min_cell).unwrap_or(i32::MAX),
            groups: groups.iter().map(views::outcome_group).collect(),
        })
    }
}
