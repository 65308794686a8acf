//! The query API over the read models: treatment plans for clinicians, outcome statistics
//! for analysts. Requests are validated at the edge like writes (the api crate's
//! `convert::reads`: a valid query type, or INVALID_ARGUMENT with the fields);
//! "at least position P" waits, bounded, for the projection, else UNAVAILABLE.

use std::collections::BTreeSet;
use std::time::Duration;

use spineledger_api::convert::{
    ComparisonQuery, PlanListQuery, PlanQuery, StatisticsQuery, page_token,
};
use spineledger_api::error::ApiError;
use spineledger_api::v1;
use spineledger_api::v1::outcome_statistics_service_server::OutcomeStatisticsService;
use spineledger_api::v1::treatment_plan_service_server::TreatmentPlanService;
use spineledger_api::views;
use spineledger_projections::as_of::{self, Cut};
use spineledger_projections::{Projection, queries};
use spineledger_readmodels::casemix::{self, Measure};
use spineledger_readmodels::statistics::{MinCell, groups};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::{App, access, auth};
use spineledger_auth::Principal;
use spineledger_store::{Access, Reader};

/// Settings of the query side.
#[derive(Debug, Clone)]
pub struct ReadSettings {
    /// Groups and means built on fewer values are suppressed (never below 3).
    pub min_cell: MinCell,
    /// How long a read-your-writes query waits for the projection.
    pub catch_up_timeout: Duration,
}

impl Default for ReadSettings {
    fn default() -> Self {
        Self {
            min_cell: MinCell::DEFAULT,
            catch_up_timeout: Duration::from_secs(5),
        }
    }
}

/// As-of statistics replayed at once by one server: a replay reads whole clinics' logs
/// on a pooled connection, so more of them would starve the other requests.
const CONCURRENT_REPLAYS: usize = 1;

/// The `TreatmentPlanService` and `OutcomeStatisticsService` implementations.
#[derive(Debug, Clone)]
pub struct ReadModels {
    app: App,
    replays: std::sync::Arc<tokio::sync::Semaphore>,
}

impl ReadModels {
    /// The query services over `app`.
    pub fn new(app: App) -> Self {
        Self {
            app,
            replays: std::sync::Arc::new(tokio::sync::Semaphore::new(CONCURRENT_REPLAYS)),
        }
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

#[tonic::async_trait]
impl TreatmentPlanService for ReadModels {
    async fn get_treatment_plan(
        &self,
        request: Request<v1::GetTreatmentPlanRequest>,
    ) -> Result<Response<v1::GetTreatmentPlanResponse>, Status> {
        let principal = auth::principal(&request)?;
        let reader = access::reader(&request, &principal);
        Ok(Response::new(
            self.plan(&principal, &reader, request.into_inner()).await?,
        ))
    }

    async fn list_treatment_plans(
        &self,
        request: Request<v1::ListTreatmentPlansRequest>,
    ) -> Result<Response<v1::ListTreatmentPlansResponse>, Status> {
        let principal = auth::principal(&request)?;
        let reader = access::reader(&request, &principal);
        Ok(Response::new(
            self.plans(&principal, &reader, request.into_inner())
                .await?,
        ))
    }
}

#[tonic::async_trait]
impl OutcomeStatisticsService for ReadModels {
    async fn get_outcome_statistics(
        &self,
        request: Request<v1::GetOutcomeStatisticsRequest>,
    ) -> Result<Response<v1::GetOutcomeStatisticsResponse>, Status> {
        let principal = auth::principal(&request)?;
        Ok(Response::new(
            self.statistics(&principal, request.into_inner()).await?,
        ))
    }

    async fn compare_clinics(
        &self,
        request: Request<v1::CompareClinicsRequest>,
    ) -> Result<Response<v1::CompareClinicsResponse>, Status> {
        let principal = auth::principal(&request)?;
        Ok(Response::new(
            self.comparison(&principal, request.into_inner()).await?,
        ))
    }
}

impl ReadModels {
    async fn plan(
        &self,
        principal: &Principal,
        reader: &Reader,
        request: v1::GetTreatmentPlanRequest,
    ) -> Result<v1::GetTreatmentPlanResponse, ApiError> {
        let query = PlanQuery::try_from(request)?;
        access::require_clinic(principal, "GetTreatmentPlan", query.clinic_id)?;
        self.catch_up(
            Projection::TreatmentPlans,
            &[query.clinic_id],
            query.min_position,
        )
        .await?;
        let view =
            queries::treatment_plan(self.app.store.pool(), query.clinic_id, query.episode_id)
                .await?;
        // Recorded before anything is shown, found or not.
        let shown = Access {
            clinic_id: query.clinic_id,
            rpc: "GetTreatmentPlan".into(),
            patient_id: view.as_ref().and_then(|view| view.patient_id),
            episode_id: Some(query.episode_id),
            shown_position: query.min_position,
            outcome: if view.is_some() { "OK" } else { "NOT_FOUND" }.into(),
        };
        access::record(&self.app, reader, &[shown]).await?;
        let view = view.ok_or(ApiError::PlanNotFound)?;
        Ok(v1::GetTreatmentPlanResponse {
            plan: Some(views::treatment_plan(&view, self.app.clock.now())),
        })
    }

    async fn plans(
        &self,
        principal: &Principal,
        reader: &Reader,
        request: v1::ListTreatmentPlansRequest,
    ) -> Result<v1::ListTreatmentPlansResponse, ApiError> {
        let query = PlanListQuery::try_from(request)?;
        access::require_clinic(principal, "ListTreatmentPlans", query.clinic_id)?;
        self.catch_up(
            Projection::TreatmentPlans,
            &[query.clinic_id],
            query.min_position,
        )
        .await?;
        let today = self.app.clock.now();
        let filter = queries::PlanFilter {
            phase: query.phase.map(|phase| phase.as_str().to_owned()),
            overdue: query
                .overdue
                .map(|overdue| queries::OverdueFilter { overdue, today }),
            reassessment_due: query.reassessment_due,
            patient_id: query.patient_id,
        };
        // One more than the page tells whether another page follows.
        let mut plans = queries::list_treatment_plans(
            self.app.store.pool(),
            query.clinic_id,
            &filter,
            query.after,
            i64::from(query.page_size) + 1,
        )
        .await?;
        let page = usize::from(query.page_size);
        let next_page_token = if plans.len() > page {
            plans.truncate(page);
            plans
                .last()
                .map(|plan| page_token::encode(&plan.cursor))
                .unwrap_or_default()
        } else {
            String::new()
        };
        // One access per plan shown; a listing that showed none is recorded too.
        let listed = |patient_id, episode_id| Access {
            clinic_id: query.clinic_id,
            rpc: "ListTreatmentPlans".into(),
            patient_id,
            episode_id,
            shown_position: query.min_position,
            outcome: "OK".into(),
        };
        let mut accesses: Vec<Access> = plans
            .iter()
            .map(|plan| listed(plan.view.patient_id, Some(plan.view.episode_id)))
            .collect();
        if accesses.is_empty() {
            accesses.push(listed(query.patient_id, None));
        }
        access::record(&self.app, reader, &accesses).await?;
        Ok(v1::ListTreatmentPlansResponse {
            plans: plans
                .iter()
                .map(|plan| views::treatment_plan(&plan.view, today))
                .collect(),
            next_page_token,
        })
    }

    /// The clinics an analyst's request answers for: those it names, each granted; with
    /// none named, every clinic the token grants (every known clinic for a token that
    /// grants them all: the database's wall needs them by name).
    async fn answered_clinics(
        &self,
        principal: &Principal,
        named: Vec<Uuid>,
    ) -> Result<Vec<Uuid>, ApiError> {
        match principal.granted_clinics() {
            Some(granted) if named.is_empty() => {
                // An empty grant must never widen to "every clinic" below.
                if granted.is_empty() {
                    return Err(ApiError::ClinicNotGranted {
                        field: "clinic_ids",
                    });
                }
                return Ok(granted.iter().copied().collect());
            }
            _ => {
                for clinic in &named {
                    auth::require_clinic(principal, *clinic, "clinic_ids")?;
                }
            }
        }
        if named.is_empty() {
            Ok(queries::known_clinics(self.app.store.pool()).await?)
        } else {
            Ok(named)
        }
    }

    /// The case-mix comparison: a model per measure fitted over the released
    /// clinic-months of every clinic (`spineledger_readmodels::casemix`), and the clinics
    /// asked about against it.
    async fn comparison(
        &self,
        principal: &Principal,
        request: v1::CompareClinicsRequest,
    ) -> Result<v1::CompareClinicsResponse, ApiError> {
        let query = ComparisonQuery::try_from(request)?;
        let compared = self.answered_clinics(principal, query.clinic_ids).await?;
        let pool = self.app.store.pool();
        let every_clinic = queries::known_clinics(pool).await?;
        let min_cell = self.app.reads.min_cell;
        // One heavy read at a time, like a replay: the cohort is every clinic's episodes.
        // The permit goes with the fit, which outlives a cancelled request.
        let heavy = tokio::time::timeout(
            self.app.reads.catch_up_timeout,
            std::sync::Arc::clone(&self.replays).acquire_owned(),
        )
        .await
        .map_err(|_| ApiError::ReplayBusy)?
        .map_err(|_| ApiError::ReplayBusy)?;
        let cohort =
            queries::cohort(pool, &every_clinic, &compared, query.window, min_cell).await?;
        let reflects = cohort
            .reflects
            .iter()
            .map(|(clinic, position)| v1::ClinicPosition {
                clinic_id: clinic.to_string(),
                position: *position,
            })
            .collect();
        let compared: BTreeSet<Uuid> = compared.into_iter().collect();
        let visible: Option<BTreeSet<Uuid>> = principal
            .granted_clinics()
            .map(|granted| granted.iter().copied().collect());
        // Fitting is CPU work: off the runtime's threads.
        let comparisons = tokio::task::spawn_blocking(move || {
            let _heavy = heavy;
            let subjects = casemix::screen(cohort.subjects, visible.as_ref());
            Measure::ALL.map(|measure| casemix::compare(measure, &subjects, &compared, min_cell))
        })
        .await
        .unwrap_or_else(|error| std::panic::resume_unwind(error.into_panic()));
        Ok(v1::CompareClinicsResponse {
            min_cell_size: i32::try_from(min_cell.get()).unwrap_or(i32::MAX),
            comparisons: comparisons.iter().map(views::case_mix_comparison).collect(),
            reflects,
        })
    }

    async fn statistics(
        &self,
        principal: &Principal,
        request: v1::GetOutcomeStatisticsRequest,
    ) -> Result<v1::GetOutcomeStatisticsResponse, ApiError> {
        let mut query = StatisticsQuery::try_from(request)?;
        // Positions given back from an earlier answer name its clinics: with no clinic
        // named, those are the clinics (not whatever the token grants by now).
        if let (true, Some(Cut::Positions(positions))) = (query.clinic_ids.is_empty(), &query.as_of)
        {
            query.clinic_ids = positions.keys().copied().collect();
        }
        let clinics = self
            .answered_clinics(principal, std::mem::take(&mut query.clinic_ids))
            .await?;
        let answer = match &query.as_of {
            None => {
                self.catch_up(Projection::OutcomeStatistics, &clinics, query.min_position)
                    .await?;
                queries::outcome_parts(
                    self.app.store.pool(),
                    &clinics,
                    query.window,
                    &query.group_by,
                )
                .await?
            }
            Some(cut) => {
                if let Cut::Positions(positions) = cut {
                    // A position may name only a clinic the token grants, and every
                    // clinic answered needs one.
                    for clinic in positions.keys() {
                        auth::require_clinic(principal, *clinic, "as_of_positions")?;
                    }
                    if clinics.iter().any(|clinic| !positions.contains_key(clinic)) {
                        return Err(ApiError::AsOfPositionsIncomplete);
                    }
                }
                // One replay at a time; a caller waits as long as read-your-writes does.
                let _replay =
                    tokio::time::timeout(self.app.reads.catch_up_timeout, self.replays.acquire())
                        .await
                        .map_err(|_| ApiError::ReplayBusy)?
                        .map_err(|_| ApiError::ReplayBusy)?;
                as_of::outcome_parts_as_of(
                    self.app.store.pool(),
                    &clinics,
                    cut,
                    query.window,
                    &query.group_by,
                )
                .await?
            }
        };
        let min_cell = self.app.reads.min_cell;
        let groups = groups(answer.parts.release(min_cell), &query.group_by, min_cell);
        Ok(v1::GetOutcomeStatisticsResponse {
            min_cell_size: i32::try_from(min_cell.get()).unwrap_or(i32::MAX),
            groups: groups.iter().map(views::outcome_group).collect(),
            reflects: answer
                .reflects
                .iter()
                .map(|(clinic, position)| v1::ClinicPosition {
                    clinic_id: clinic.to_string(),
                    position: *position,
                })
                .collect(),
        })
    }
}
