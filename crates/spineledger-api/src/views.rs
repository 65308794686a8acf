//! Outgoing: read models as `spineledger.v1` messages. (Incoming validation is in
//! [`crate::convert`], the enum maps of both directions in [`crate::convert::enums`].) Nothing here can fail: every read-model value has a wire form.

use chrono::{DateTime, Utc};
use spineledger_readmodels::casemix::{ClinicComparison, Comparison, Fit, Model};
use spineledger_readmodels::statistics::{Group, GroupStatistics, Mean, Median, Proportion};
use spineledger_readmodels::{PlanPhase, TreatmentPlanView};

use crate::convert::enums::{
    case_mix_measure, dimension, discharge_reason, funnel_position, plan_phase, responder,
    session_mode, spinal_level, tolerance, tolerance_trend,
};
use crate::v1;

/// A time on the wire.
pub fn timestamp(at: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.timestamp(),
        nanos: i32::try_from(at.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

/// A time from the wire; `None` for nanoseconds out of range or a time chrono cannot hold.
pub fn instant(at: &prost_types::Timestamp) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(at.seconds, u32::try_from(at.nanos).ok()?)
}

fn small(value: u32) -> i32 {
    i32::try_from(value).unwrap_or(i32::MAX)
}

fn count(value: usize) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// A treatment plan as of `today` (for due dates, pacing and flags).
pub fn treatment_plan(view: &TreatmentPlanView, today: DateTime<Utc>) -> v1::TreatmentPlan {
    let status = view.status_at(today);
    let planned_in_phase = match view.phase {
        PlanPhase::Initial => view.initial_sessions.map(i32::from),
        _ => None,
    };
    v1::TreatmentPlan {
        clinic_id: view.clinic_id.to_string(),
        episode_id: view.episode_id.to_string(),
        patient_id: view.patient_id.map(|id| id.to_string()).unwrap_or_default(),
        phase: plan_phase::to_proto(view.phase) as i32,
        sessions_total: small(view.sessions_total),
        sessions_in_phase: small(view.sessions_in_phase),
        sessions_planned_in_phase: planned_in_phase,
        phase_started_at: view.phase_started_at.map(timestamp),
        next_session_due: status.next_session_due.map(timestamp),
        last_session_at: view.last_session_at.map(timestamp),
        // Absent without a schedule (awaiting plan, as needed, discharged): 0 is on pace.
        expected_sessions_by_today: status.expected_sessions_by_today.map(small),
        pacing: status.pacing.map(|pacing| {
            i32::try_from(pacing).unwrap_or(if pacing < 0 { i32::MIN } else { i32::MAX })
        }),
        last_settings: view
            .last_settings
            .as_ref()
            .map(|settings| v1::SessionSettings {
                mode: session_mode::to_proto(settings.mode) as i32,
                peak_force_newtons: settings.peak_force_newtons,
                rest_force_newtons: settings.rest_force_newtons,
                hold_seconds: i32::from(settings.hold_seconds),
                relax_seconds: i32::from(settings.relax_seconds),
                cycles: i32::from(settings.cycles),
                duration_minutes: i32::from(settings.duration_minutes),
                angle_degrees: i32::from(settings.angle_degrees),
                levels: settings
                    .levels
                    .iter()
                    .map(|level| spinal_level::to_proto(*level) as i32)
                    .collect(),
            }),
        recent_tolerances: view
            .recent_tolerances
            .iter()
            .map(|t| tolerance::to_proto(*t) as i32)
            .collect(),
        tolerance_trend: tolerance_trend::to_proto(view.tolerance_trend()) as i32,
        last_adherence_percent: view.adherence_last_percent.map(i32::from),
        recent_adherence_percent: view.adherence_mean_recent,
        baseline_pain_back: view.baseline.as_ref().map(|b| i32::from(b.pain_back)),
        latest_pain_back: view.latest_nrs.as_ref().map(|l| i32::from(l.pain_back)),
        baseline_pain_leg: view.baseline.as_ref().map(|b| i32::from(b.pain_leg)),
        latest_pain_leg: view.latest_nrs.as_ref().map(|l| i32::from(l.pain_leg)),
        baseline_odi: view.baseline.as_ref().and_then(|b| b.odi),
        latest_odi: view.latest_odi.as_ref().map(|l| l.odi),
        nrs_responder: responder::to_proto(view.nrs_response) as i32,
        odi_responder: responder::to_proto(view.odi_response) as i32,
        missed_sessions: small(view.missed_sessions),
        adverse_events: small(view.adverse_events),
        flags: Some(v1::PlanFlags {
            overdue: status.flags.overdue,
            under_scheduled: status.flags.under_scheduled,
            reassessment_due: status.flags.reassessment_due,
            adverse_event: status.flags.adverse_event,
            missed_sessions: status.flags.missed_sessions,
        }),
        discharge_reason: view
            .discharge_reason
            .map_or(v1::DischargeReason::Unspecified, discharge_reason::to_proto)
            as i32,
        discharged_at: view.discharged_at.map(timestamp),
        as_of: Some(timestamp(today)),
        corrected_fields: view.corrected_fields.iter().cloned().collect(),
    }
}

fn mean(value: Option<Mean>) -> Option<v1::Mean> {
    value.map(|m| v1::Mean {
        n: count(m.n),
        mean: m.mean,
    })
}

fn rate(value: Option<Proportion>) -> Option<v1::Rate> {
    value.map(|p| v1::Rate {
        count: count(p.count),
        denominator: count(p.n),
        rate: p.rate,
    })
}

fn median(value: Option<Median>) -> Option<f64> {
    value.map(|m| m.median)
}

fn counts(pairs: &[(&str, usize)]) -> Vec<v1::Count> {
    pairs
        .iter()
        .map(|(value, n)| v1::Count {
            value: (*value).to_owned(),
            count: count(*n),
        })
        .collect()
}

fn statistics(stats: &GroupStatistics) -> v1::OutcomeStatistics {
    let discharges = &stats.discharges;
    v1::OutcomeStatistics {
        episodes: count(stats.episodes),
        initial_phase_completed: count(stats.initial_phase_completed),
        baseline_nrs: mean(stats.baseline_nrs),
        baseline_odi: mean(stats.baseline_odi),
        nrs_change_session_4: mean(stats.nrs_change_session_4),
        nrs_change_session_6: mean(stats.nrs_change_session_6),
        nrs_change_discharge: mean(stats.nrs_change_discharge),
        odi_change_session_4: mean(stats.odi_change_session_4),
        odi_change_session_6: mean(stats.odi_change_session_6),
        odi_change_discharge: mean(stats.odi_change_discharge),
        nrs_responders: rate(stats.nrs_responders),
        odi_responders: rate(stats.odi_responders),
        median_sessions_to_nrs_response: median(stats.sessions_to_first_nrs_response),
        pain_trajectory: stats
            .pain_trajectory
            .iter()
            .map(|point| v1::TrajectoryPoint {
                session_number: small(point.session_number),
                pain_before: mean(point.mean_pain_before),
            })
            .collect(),
        // Left out: inside a group of another dimension these counts would be a
        // cross-tabulation, and in the total they would give the size of an adherence
        // band's withheld parts. Grouping by adherence band releases them.
        adherence_bands: Vec::new(),
        missed_sessions: i64::try_from(stats.missed_sessions).unwrap_or(i64::MAX),
        adverse_events: i64::try_from(stats.adverse_events).unwrap_or(i64::MAX),
        episodes_with_adverse_events: count(stats.episodes_with_adverse_events),
        discharges_by_reason: counts(&[
            ("goals_met", discharges.goals_met),
            ("plateau", discharges.plateau),
            ("self_discharge", discharges.self_discharge),
            ("referred", discharges.referred),
            ("adverse_event", discharges.adverse_event),
            ("lost_to_follow_up", discharges.lost_to_follow_up),
        ]),
        ongoing: count(discharges.ongoing),
        drop_out: count(stats.drop_outs),
        episodes_with_corrected_scores: count(stats.scores_corrected),
    }
}

/// A group; a suppressed one carries its key and `suppressed` only (no episode count, no
/// statistics).
pub fn outcome_group(group: &Group) -> v1::OutcomeGroup {
    v1::OutcomeGroup {
        key: group
            .key
            .iter()
            .map(|(dim, value)| v1::GroupKey {
                dimension: dimension::to_proto(*dim) as i32,
                value: value.clone(),
            })
            .collect(),
        episodes: group.episodes.map(count),
        suppressed: group.statistics.is_none(),
        statistics: group.statistics.as_ref().map(statistics),
    }
}

/// A case-mix comparison of one measure as a message.
#[must_use]
pub fn case_mix_comparison(comparison: &Comparison) -> v1::CaseMixComparison {
    let (model, not_fitted_reason) = match &comparison.model {
        Ok(model) => (Some(case_mix_model(model)), String::new()),
        Err(reason) => (None, reason.to_string()),
    };
    v1::CaseMixComparison {
        measure: case_mix_measure::to_proto(comparison.measure) as i32,
        model,
        not_fitted_reason,
        clinics: comparison.clinics.iter().map(clinic_comparison).collect(),
        overdispersion: comparison.overdispersion,
    }
}

fn case_mix_model(model: &Model) -> v1::CaseMixModel {
    let mut message = v1::CaseMixModel {
        episodes: i64::try_from(model.episodes).unwrap_or(i64::MAX),
        mean_outcome: model.mean_outcome,
        coefficients: model
            .coefficients
            .iter()
            .map(|c| v1::CaseMixCoefficient {
                term: c.term.clone(),
                estimate: c.estimate,
                standard_error: c.standard_error,
            })
            .collect(),
        references: model
            .references
            .iter()
            .map(|(factor, level)| v1::CaseMixReference {
                factor: factor.clone(),
                level: level.clone(),
            })
            .collect(),
        aliased_terms: model.aliased.clone(),
        ..Default::default()
    };
    match model.fit {
        Fit::Linear {
            r_squared,
            adjusted_r_squared,
            residual_sd,
        } => {
            message.r_squared = Some(r_squared);
            message.adjusted_r_squared = Some(adjusted_r_squared);
            message.residual_sd = Some(residual_sd);
        }
        Fit::Logistic {
            deviance,
            null_deviance,
            pseudo_r_squared,
            c_statistic,
            brier_score,
            iterations: _,
        } => {
            message.deviance = Some(deviance);
            message.null_deviance = Some(null_deviance);
            message.pseudo_r_squared = Some(pseudo_r_squared);
            message.c_statistic = Some(c_statistic);
            message.brier_score = Some(brier_score);
        }
    }
    message
}

fn clinic_comparison(clinic: &ClinicComparison) -> v1::ClinicComparison {
    v1::ClinicComparison {
        clinic_id: clinic.clinic_id.to_string(),
        episodes: i64::try_from(clinic.episodes).unwrap_or(i64::MAX),
        observed: clinic.observed,
        expected: clinic.expected,
        adjusted: clinic.adjusted,
        limits: Some(v1::FunnelLimits {
            lower_99_8: clinic.limits.lower_outer,
            lower_95: clinic.limits.lower_inner,
            upper_95: clinic.limits.upper_inner,
            upper_99_8: clinic.limits.upper_outer,
        }),
        position: funnel_position::to_proto(clinic.position) as i32,
        z_score: clinic.z_score,
        precision: clinic.precision,
    }
}
