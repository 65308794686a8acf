//! `spineledger simulate`: realistic synthetic cohorts driven through the gRPC API — the
//! demo, the test-data generator and the load generator.
//!
//! Everything derives from the seed: clinic, patient and episode ids, command ids, clinical
//! values and the dates of every fact (which fall in a fixed window after `--start-date`).
//! Running twice with the same seed therefore sends the same commands with the same ids,
//! and the second run appends nothing new (every command is recognised as a retry).
//!
//! The cohort: baseline back pain NRS ~ 6.5 ± 1.5 and ODI ~ 38 ± 12 %; diagnoses from the
//! common lumbar codes; 9-item contraindication screening (about 3 % with an absolute
//! contraindication, who are referred instead of treated); initial phases of 4-6 sessions
//! over 2-6 weeks (a few of 8 with a justification); peak force starting near 25-30 % of
//! body weight and rising with good tolerance, reduced after a poor-tolerance session;
//! missed sessions; home care with varied adherence; responders (~60 %) whose pain falls
//! and non-responders whose pain does not; a reassessment that moves responders to a
//! tapering or maintenance frequency; discharges with explicit reasons; some episodes
//! still ongoing; a few corrections of mistyped pain scores.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Duration, NaiveDate, Utc};
use futures::StreamExt;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use spineledger_api::v1;
use spineledger_api::v1::clinical_records_service_client::ClinicalRecordsServiceClient;
use tokio::sync::Mutex;
use tonic::transport::Channel;
use uuid::Uuid;

/// Every simulated fact falls within this many days after the start date.
pub const WINDOW_DAYS: i64 = 200;

/// What to simulate.
#[derive(Debug, Clone)]
pub struct Cohort {
    pub clinics: usize,
    pub patients_per_clinic: usize,
    pub seed: u64,
    pub start_date: NaiveDate,
    /// Patients driven at once.
    pub concurrency: usize,
}

/// What the simulation did: commands accepted per RPC, and rejections by status/reason
/// (a correct run has none).
#[derive(Debug, Default, Clone)]
pub struct Report {
    pub accepted: BTreeMap<&'static str, u64>,
    pub rejected: BTreeMap<String, u64>,
}

impl Report {
    pub fn total_accepted(&self) -> u64 {
        self.accepted.values().sum()
    }

    pub fn total_rejected(&self) -> u64 {
        self.rejected.values().sum()
    }

    /// A table a person reads.
    pub fn render(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let _ = writeln!(out, "{:<28} {:>10}", "event type", "count");
        for (name, count) in &self.accepted {
            let _ = writeln!(out, "{name:<28} {count:>10}");
        }
        let _ = writeln!(out, "{:<28} {:>10}", "total", self.total_accepted());
        if !self.rejected.is_empty() {
            let _ = writeln!(out, "\nrejected:");
            for (reason, count) in &self.rejected {
                let _ = writeln!(out, "{reason:<40} {count:>10}");
            }
        }
        out
    }
}

/// Runs the cohort against `target` (e.g. `http://127.0.0.1:50051`).
pub async fn run(target: &str, cohort: &Cohort) -> anyhow::Result<Report> {
    let start = cohort
        .start_date
        .and_hms_opt(8, 0, 0)
        .map(|naive| naive.and_utc())
        .ok_or_else(|| anyhow::anyhow!("invalid start date"))?;
    let window_end = start + Duration::days(WINDOW_DAYS);
    anyhow::ensure!(
        window_end <= Utc::now(),
        "--start-date {} is too recent: every simulated fact must lie in the past, so the \
         start date must be at least {WINDOW_DAYS} days ago",
        cohort.start_date
    );
    let channel = Channel::from_shared(target.to_owned())?
        .connect()
        .await
        .map_err(|error| anyhow::anyhow!("cannot connect to {target}: {error}"))?;
    let client = ClinicalRecordsServiceClient::new(channel);

    // Seeds are drawn up front, in order, so each patient's story is the same whatever the
    // concurrency.
    let mut master = ChaCha8Rng::seed_from_u64(cohort.seed);
    let mut patients = Vec::with_capacity(cohort.clinics * cohort.patients_per_clinic);
    for _ in 0..cohort.clinics {
        let clinic_id = uuid_from(&mut master);
        for _ in 0..cohort.patients_per_clinic {
            patients.push((clinic_id, master.random::<u64>()));
        }
    }
    let report = Arc::new(Mutex::new(Report::default()));
    let results: Vec<anyhow::Result<()>> = futures::stream::iter(patients)
        .map(|(clinic_id, seed)| {
            let mut writer = Writer {
                client: client.clone(),
                clinic_id,
                rng: ChaCha8Rng::seed_from_u64(seed),
                report: report.clone(),
            };
            async move { writer.patient_course(start).await }
        })
        .buffer_unordered(cohort.concurrency.max(1))
        .collect()
        .await;
    for result in results {
        result?;
    }
    let report = report.lock().await.clone();
    Ok(report)
}

fn uuid_from(rng: &mut ChaCha8Rng) -> Uuid {
    uuid::Builder::from_random_bytes(rng.random()).into_uuid()
}

fn timestamp(at: DateTime<Utc>) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp {
        seconds: at.timestamp(),
        nanos: 0,
    })
}

fn newtons(value: f64) -> Option<v1::Force> {
    Some(v1::Force {
        value: (value * 10.0).round() / 10.0,
        unit: v1::ForceUnit::Newton as i32,
    })
}

/// ODI section answers whose index is close to `target` percent.
fn odi_sections(rng: &mut ChaCha8Rng, target: f64) -> Option<v1::OswestryDisabilityIndex> {
    let total = (target / 100.0 * 50.0).round().clamp(0.0, 50.0) as i32;
    let mut answers = vec![0_i32; 10];
    let mut left = total;
    while left > 0 {
        let section = rng.random_range(0..10);
        if answers[section] < 5 {
            answers[section] += 1;
            left -= 1;
        }
    }
    Some(v1::OswestryDisabilityIndex {
        input: Some(v1::oswestry_disability_index::Input::Sections(
            v1::OdiSections { answers },
        )),
    })
}

/// Disability follows pain relief, damped: ODI falls by 80 % of the relative NRS change.
fn odi_now(baseline_odi: f64, baseline_back: f64, pain: f64) -> f64 {
    let relief = if baseline_back > 0.0 {
        (baseline_back - pain) / baseline_back
    } else {
        0.0
    };
    (baseline_odi * (1.0 - relief * 0.8)).clamp(0.0, 100.0)
}

fn nrs(value: f64) -> i32 {
    value.round().clamp(0.0, 10.0) as i32
}

const DIAGNOSES: &[(v1::CodeSystem, &str)] = &[
    (v1::CodeSystem::Icd10, "M51.2"), // other intervertebral disc displacement
    (v1::CodeSystem::Icd10, "M54.4"), // lumbago with sciatica
    (v1::CodeSystem::Icd10, "M54.16"), // radiculopathy, lumbar region
    (v1::CodeSystem::Icd10, "M51.16"), // disc disorder with radiculopathy, lumbar
    (v1::CodeSystem::Icd10, "M48.06"), // spinal stenosis, lumbar region
    (v1::CodeSystem::SnomedCt, "279039007"), // low back pain
    (v1::CodeSystem::SnomedCt, "23056005"), // sciatica
];

/// Drives one patient's course through the API, recording what was accepted.
struct Writer {
    client: ClinicalRecordsServiceClient<Channel>,
    clinic_id: Uuid,
    rng: ChaCha8Rng,
    report: Arc<Mutex<Report>>,
}

/// Sends one request, counts it, and turns an unexpected rejection into a count (the
/// simulation goes on with the next patient step).
macro_rules! send {
    ($self:ident, $method:ident, $label:literal, $request:expr) => {{
        let request = $request;
        let outcome = $self.client.$method(request).await;
        $self.count($label, outcome.map(|_| ())).await?
    }};
}

impl Writer {
    fn header(&mut self) -> Option<v1::CommandHeader> {
        Some(v1::CommandHeader {
            clinic_id: self.clinic_id.to_string(),
            command_id: uuid_from(&mut self.rng).to_string(),
            expected_version: None,
            correlation_id: String::new(),
            causation_id: String::new(),
            actor: "simulator".into(),
        })
    }

    /// Counts an accepted command; returns whether it was accepted. Transport failures
    /// abort the run; rejections are counted by reason.
    async fn count(
        &self,
        label: &'static str,
        outcome: Result<(), tonic::Status>,
    ) -> anyhow::Result<bool> {
        let mut report = self.report.lock().await;
        match outcome {
            Ok(()) => {
                *report.accepted.entry(label).or_default() += 1;
                Ok(true)
            }
            Err(status)
                if matches!(
                    status.code(),
                    tonic::Code::Unavailable | tonic::Code::Unknown
                ) =>
            {
                Err(anyhow::anyhow!("{label} failed: {}", status.message()))
            }
            Err(status) => {
                let key = format!("{label} {:?}: {}", status.code(), status.message());
                *report.rejected.entry(key).or_default() += 1;
                Ok(false)
            }
        }
    }

    #[allow(clippy::too_many_lines)]
    async fn patient_course(&mut self, window_start: DateTime<Utc>) -> anyhow::Result<()> {
        let patient_id = uuid_from(&mut self.rng);
        let episode_id = uuid_from(&mut self.rng).to_string();
        let mut at = window_start
            + Duration::days(self.rng.random_range(0..40))
            + Duration::minutes(self.rng.random_range(0..600));
        let age: i32 = self.rng.random_range(24..82);
        let birth_year = 2026 - age;

        let header = self.header();
        let sex = if self.rng.random_bool(0.5) {
            v1::Sex::Female
        } else {
            v1::Sex::Male
        };
        let registered = send!(
            self,
            register_patient,
            "PatientRegistered",
            v1::RegisterPatientRequest {
                header,
                occurred_at: timestamp(at),
                patient_id: patient_id.to_string(),
                birth_year: Some(birth_year),
                sex: sex as i32,
            }
        );
        if !registered {
            return Ok(());
        }

        // Evaluation.
        at += Duration::hours(1);
        let baseline_back = self.normal(6.5, 1.5).clamp(2.0, 10.0);
        let baseline_leg = self.normal(5.0, 2.0).clamp(0.0, 10.0);
        let baseline_odi = self.normal(38.0, 12.0).clamp(8.0, 80.0);
        // Whole kilograms, as recorded: the force ceiling derives from the recorded weight.
        let body_weight = self.normal(80.0, 14.0).clamp(48.0, 140.0).round();
        let blocked = self.rng.random_bool(0.03);
        let contraindications = self.screening(blocked);
        let (system, code) = DIAGNOSES[self.rng.random_range(0..DIAGNOSES.len())];
        let header = self.header();
        let odi = odi_sections(&mut self.rng, baseline_odi);
        let evaluated = send!(
            self,
            record_evaluation,
            "EvaluationRecorded",
            v1::RecordEvaluationRequest {
                header,
                occurred_at: timestamp(at),
                episode_id: episode_id.clone(),
                patient_id: patient_id.to_string(),
                provider_id: "provider-1".into(),
                age_years: age,
                pain_back: nrs(baseline_back),
                pain_leg: nrs(baseline_leg),
                odi,
                rmdq: Some(((baseline_odi / 100.0) * 24.0).round().clamp(0.0, 24.0) as i32),
                straight_leg_raise: vec![v1::StraightLegRaise {
                    side: v1::Side::Left as i32,
                    angle_degrees: self.rng.random_range(30..80),
                    positive: baseline_leg >= 4.0,
                }],
                lumbar_flexion_cm: Some(
                    (self.normal(4.5, 1.0).clamp(1.0, 8.0) * 10.0).round() / 10.0
                ),
                sleep_quality: Some(self.rng.random_range(2..8)),
                posture_notes: None,
                overall_health: Some(self.rng.random_range(4..9)),
                body_weight_kg: Some(body_weight),
                diagnoses: vec![v1::Diagnosis {
                    system: system as i32,
                    code: code.into()
                }],
                contraindications,
            }
        );
        if !evaluated {
            return Ok(());
        }
        if blocked {
            // An absolute contraindication: referred, never treated.
            return self
                .discharge(
                    &episode_id,
                    at + Duration::days(1),
                    v1::DischargeReason::Referred,
                )
                .await;
        }

        // Plan: usually 4-6 sessions over 2-6 weeks.
        at += Duration::days(self.rng.random_range(1..4));
        let long_phase = self.rng.random_bool(0.05);
        let initial_sessions: i32 = if long_phase {
            8
        } else {
            self.rng.random_range(4..=6)
        };
        let span_weeks: i32 = self.rng.random_range(2..=6);
        // 1 % under the default ceiling (60 % of body weight), so rounding to 0.1 N never
        // crosses it.
        let ceiling = body_weight * 9.806_65 * 0.6 * 0.99;
        let mut force = (body_weight * 9.806_65 * self.rng.random_range(0.22..0.30)).min(ceiling);
        let header = self.header();
        let planned = send!(
            self,
            start_treatment_plan,
            "TreatmentPlanStarted",
            v1::StartTreatmentPlanRequest {
                header,
                occurred_at: timestamp(at),
                episode_id: episode_id.clone(),
                initial_sessions,
                initial_span_weeks: span_weeks,
                target_levels: vec![v1::SpinalLevel::L4 as i32, v1::SpinalLevel::L5 as i32],
                starting_force: newtons(force),
                goals: vec![
                    "walk 30 minutes without leg pain".into(),
                    "sleep through the night".into()
                ],
                justification: long_phase
                    .then(|| "severe baseline disability; longer initial phase agreed".into()),
            }
        );
        if !planned {
            return Ok(());
        }

        // Home care from the start, with this patient's adherence propensity.
        let header = self.header();
        send!(
            self,
            give_home_care_instructions,
            "HomeCareInstructed",
            v1::GiveHomeCareInstructionsRequest {
                header,
                occurred_at: timestamp(at),
                episode_id: episode_id.clone(),
                instructions: vec![
                    v1::HomeCareInstruction {
                        kind: v1::HomeCareKind::Exercise as i32,
                        description: "core stabilisation exercises".into(),
                        times_per_week: Some(5),
                    },
                    v1::HomeCareInstruction {
                        kind: v1::HomeCareKind::Walking as i32,
                        description: "walk 20 minutes on level ground".into(),
                        times_per_week: Some(7),
                    },
                ],
            }
        );
        let adherence: f64 = self.rng.random_range(20.0..100.0);
        let responder = self.rng.random_bool(0.6);
        let ongoing = self.rng.random_bool(0.15);
        let mut pain = baseline_back;
        let mut previous_poor = false;
        let spacing_hours =
            (f64::from(span_weeks) * 7.0 * 24.0 / f64::from(initial_sessions)) as i64;
        let mut session = 0;
        let stop_after = if ongoing {
            self.rng.random_range(1..initial_sessions + 3)
        } else {
            i32::MAX
        };

        // Initial phase.
        while session < initial_sessions {
            at += Duration::hours(spacing_hours);
            if self.rng.random_bool(0.08) {
                let header = self.header();
                let reason = [
                    v1::MissedReason::NoShow,
                    v1::MissedReason::PatientCancelled,
                    v1::MissedReason::Illness,
                ][self.rng.random_range(0..3)];
                send!(
                    self,
                    record_missed_session,
                    "SessionMissed",
                    v1::RecordMissedSessionRequest {
                        header,
                        occurred_at: timestamp(at),
                        episode_id: episode_id.clone(),
                        reason: reason as i32,
                    }
                );
                at += Duration::days(2);
            }
            session += 1;
            let (peak, poor) = self.next_force(&mut force, ceiling, previous_poor);
            previous_poor = poor;
            pain = self.pain_step(pain, responder);
            self.session(&episode_id, at, peak, pain, poor).await?;
            if session == 4 || session == 6 || session == initial_sessions {
                self.outcome(
                    &episode_id,
                    at + Duration::minutes(30),
                    pain,
                    baseline_odi,
                    baseline_back,
                    responder,
                )
                .await?;
            }
            if session % 2 == 0 {
                let header = self.header();
                let reported = (adherence + self.normal(0.0, 8.0))
                    .round()
                    .clamp(0.0, 100.0) as i32;
                send!(
                    self,
                    report_home_care_adherence,
                    "HomeCareAdherenceReported",
                    v1::ReportHomeCareAdherenceRequest {
                        header,
                        occurred_at: timestamp(at),
                        episode_id: episode_id.clone(),
                        period_days: 14,
                        adherence_percent: reported,
                    }
                );
            }
            if session >= stop_after {
                return Ok(());
            }
        }

        // Reassessment, then a personalised frequency or discharge.
        at += Duration::days(2);
        let improved = baseline_back - pain >= 2.0 || pain <= 1.0;
        let header = self.header();
        let odi_target = odi_now(baseline_odi, baseline_back, pain);
        let odi = odi_sections(&mut self.rng, odi_target);
        let recommendation = if improved {
            v1::Recommendation::ChangeFrequency
        } else if self.rng.random_bool(0.5) {
            v1::Recommendation::Discharge
        } else {
            v1::Recommendation::ChangeFrequency
        };
        send!(
            self,
            record_reassessment,
            "ReassessmentRecorded",
            v1::RecordReassessmentRequest {
                header,
                occurred_at: timestamp(at),
                episode_id: episode_id.clone(),
                pain_back: nrs(pain),
                pain_leg: nrs((baseline_leg - (baseline_back - pain)).max(0.0)),
                odi,
                rmdq: None,
                recommendation: recommendation as i32,
                notes: None,
            }
        );
        if recommendation == v1::Recommendation::Discharge {
            let reason = if self.rng.random_bool(0.5) {
                v1::DischargeReason::Plateau
            } else {
                v1::DischargeReason::Referred
            };
            return self.discharge(&episode_id, at, reason).await;
        }
        let (frequency, cadence, extra_sessions) = if improved {
            if self.rng.random_bool(0.5) {
                (
                    v1::Frequency::Tapering,
                    v1::adjust_treatment_plan_request::Cadence::SessionsPerWeek(1.0),
                    3,
                )
            } else {
                (
                    v1::Frequency::Maintenance,
                    v1::adjust_treatment_plan_request::Cadence::IntervalDays(21),
                    2,
                )
            }
        } else {
            (
                v1::Frequency::Intensive,
                v1::adjust_treatment_plan_request::Cadence::SessionsPerWeek(3.0),
                4,
            )
        };
        let header = self.header();
        send!(
            self,
            adjust_treatment_plan,
            "TreatmentPlanAdjusted",
            v1::AdjustTreatmentPlanRequest {
                header,
                occurred_at: timestamp(at),
                episode_id: episode_id.clone(),
                frequency: frequency as i32,
                reason: Some("reassessment after the initial phase".into()),
                cadence: Some(cadence),
            }
        );
        let step = match cadence {
            v1::adjust_treatment_plan_request::Cadence::SessionsPerWeek(per_week) => {
                Duration::hours((168.0 / per_week) as i64)
            }
            v1::adjust_treatment_plan_request::Cadence::IntervalDays(days) => {
                Duration::days(i64::from(days))
            }
        };
        for _ in 0..extra_sessions {
            at += step;
            session += 1;
            let (peak, poor) = self.next_force(&mut force, ceiling, previous_poor);
            previous_poor = poor;
            pain = self.pain_step(pain, responder);
            self.session(&episode_id, at, peak, pain, poor).await?;
            if session >= stop_after {
                return Ok(());
            }
        }
        if ongoing {
            return Ok(());
        }
        self.outcome(
            &episode_id,
            at + Duration::hours(1),
            pain,
            baseline_odi,
            baseline_back,
            responder,
        )
        .await?;
        let reason = if pain <= 2.0 || baseline_back - pain >= 3.0 {
            v1::DischargeReason::GoalsMet
        } else {
            [
                v1::DischargeReason::Plateau,
                v1::DischargeReason::SelfDischarge,
                v1::DischargeReason::LostToFollowUp,
            ][self.rng.random_range(0..3)]
        };
        self.discharge(&episode_id, at + Duration::days(1), reason)
            .await
    }

    /// The 9-item screening; `blocked` marks one absolute contraindication present.
    fn screening(&mut self, blocked: bool) -> Vec<v1::ContraindicationFinding> {
        let blocking = self.rng.random_range(1..=7);
        (1..=9)
            .map(|item| {
                // Items 8 and 9 are relative: recorded, never blocking.
                let relative_present = item >= 8 && self.rng.random_bool(0.1);
                let present = (blocked && item == blocking) || relative_present;
                let finding = if present {
                    v1::Finding::Present
                } else {
                    v1::Finding::Absent
                };
                v1::ContraindicationFinding {
                    contraindication: item,
                    finding: finding as i32,
                }
            })
            .collect()
    }

    fn normal(&mut self, mean: f64, sd: f64) -> f64 {
        // Irwin-Hall approximation: enough for synthetic cohorts, no extra crate.
        let sum: f64 = (0..12).map(|_| self.rng.random::<f64>()).sum();
        mean + (sum - 6.0) * sd
    }

    /// Next peak force: up 5-10 % after good tolerance, down 10 % after poor tolerance.
    /// Returns the force and whether this session's tolerance is poor.
    fn next_force(&mut self, force: &mut f64, ceiling: f64, previous_poor: bool) -> (f64, bool) {
        if previous_poor {
            *force *= 0.9;
        } else {
            *force = (*force * self.rng.random_range(1.05..1.10)).min(ceiling);
        }
        (*force, self.rng.random_bool(0.1))
    }

    fn pain_step(&mut self, pain: f64, responder: bool) -> f64 {
        let change = if responder {
            self.normal(-0.7, 0.4)
        } else {
            self.normal(0.0, 0.5)
        };
        (pain + change).clamp(0.0, 10.0)
    }

    async fn session(
        &mut self,
        episode_id: &str,
        at: DateTime<Utc>,
        peak: f64,
        pain: f64,
        poor: bool,
    ) -> anyhow::Result<()> {
        let header = self.header();
        let command_id = header
            .as_ref()
            .map(|h| h.command_id.clone())
            .unwrap_or_default();
        let adverse = self.rng.random_bool(0.02);
        let pain_before = nrs(pain + 0.5);
        let pain_after = nrs(pain - if poor { 0.0 } else { 1.0 });
        let recorded = send!(
            self,
            record_session,
            "SessionRecorded",
            v1::RecordSessionRequest {
                header,
                occurred_at: timestamp(at),
                episode_id: episode_id.to_owned(),
                mode: v1::SessionMode::Intermittent as i32,
                peak_force: newtons(peak),
                rest_force: newtons(peak * 0.5),
                hold_seconds: 60,
                relax_seconds: 30,
                cycles: 15,
                duration_minutes: 25,
                angle_degrees: self.rng.random_range(5..20),
                levels: vec![v1::SpinalLevel::L4 as i32, v1::SpinalLevel::L5 as i32],
                pain_before,
                pain_after,
                tolerance: if poor {
                    v1::Tolerance::Discomfort as i32
                } else {
                    v1::Tolerance::Good as i32
                },
                adverse_event: adverse.then(|| v1::AdverseEvent {
                    severity: v1::Severity::Mild as i32,
                    description: "transient muscle soreness after the session".into(),
                }),
                provider_id: "provider-1".into(),
            }
        );
        if recorded && self.rng.random_bool(0.02) {
            // A mistyped pain score, corrected later the same day.
            let header = self.header();
            send!(
                self,
                record_correction,
                "RecordCorrected",
                v1::RecordCorrectionRequest {
                    header,
                    occurred_at: timestamp(at + Duration::hours(3)),
                    episode_id: episode_id.to_owned(),
                    corrected_event_id: command_id,
                    corrections: vec![v1::FieldCorrection {
                        field: "pain_after".into(),
                        corrected_value: Some(prost_types::Value {
                            kind: Some(prost_types::value::Kind::NumberValue(f64::from(
                                (pain_after + 1).min(10)
                            ))),
                        }),
                    }],
                    reason: "pain score mistyped at entry".into(),
                }
            );
        }
        Ok(())
    }

    async fn outcome(
        &mut self,
        episode_id: &str,
        at: DateTime<Utc>,
        pain: f64,
        baseline_odi: f64,
        baseline_back: f64,
        responder: bool,
    ) -> anyhow::Result<()> {
        let header = self.header();
        let odi_target = odi_now(baseline_odi, baseline_back, pain);
        let odi = odi_sections(&mut self.rng, odi_target);
        let pgic = if responder {
            self.rng.random_range(1..=3)
        } else {
            self.rng.random_range(3..=5)
        };
        send!(
            self,
            record_outcome,
            "OutcomeRecorded",
            v1::RecordOutcomeRequest {
                header,
                occurred_at: timestamp(at),
                episode_id: episode_id.to_owned(),
                pain_back: nrs(pain),
                pain_leg: nrs(pain - 1.0),
                odi,
                rmdq: None,
                straight_leg_raise: Vec::new(),
                lumbar_flexion_cm: None,
                sleep_quality: Some(if responder { 7 } else { 4 }),
                pgic: Some(pgic),
                sciatica: if responder {
                    v1::SciaticaSymptoms::Improved as i32
                } else {
                    v1::SciaticaSymptoms::Unchanged as i32
                },
            }
        );
        Ok(())
    }

    async fn discharge(
        &mut self,
        episode_id: &str,
        at: DateTime<Utc>,
        reason: v1::DischargeReason,
    ) -> anyhow::Result<()> {
        let header = self.header();
        send!(
            self,
            discharge_episode,
            "EpisodeDischarged",
            v1::DischargeEpisodeRequest {
                header,
                occurred_at: timestamp(at),
                episode_id: episode_id.to_owned(),
                reason: reason as i32,
                notes: None,
            }
        );
        Ok(())
    }
}
