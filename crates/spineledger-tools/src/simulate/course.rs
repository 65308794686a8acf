//! One patient's course of care as a clinic enters it: registration, evaluation, plan and
//! home care, the initial phase, reassessment, a personalised frequency, discharge.
//!
//! Now and then a fact is entered late: a session, an outcome or a missed session is held
//! back and entered after the next session (at most one fact is held at a time, so the
//! force of every session still follows the tolerance of the session clinically before
//! it); and a forgotten session is back-dated 2-4 days before the session just recorded
//! (never before the phase started). Held facts are entered before a reassessment, before
//! the discharge and when the record of an ongoing episode stops, so nothing is dated after
//! a discharge or before the plan it belongs to.

use chrono::{DateTime, Duration, Utc};
use rand::Rng;
use spineledger_api::v1;

use super::corrections::{Fact, Recorded};
use super::{DIAGNOSES, Writer, newtons, nrs, odi_now, odi_sections, timestamp, uuid_from};

/// How often a session is entered only after the next one.
const LATE_SESSION: f64 = 0.06;
/// How often an outcome is entered only after the next session.
const LATE_OUTCOME: f64 = 0.15;
/// How often a missed session is entered only after the next session.
const LATE_MISSED: f64 = 0.25;
/// How often a forgotten session is back-dated after a session is recorded.
const BACK_DATED: f64 = 0.04;

/// A fact held back to be entered late, with what the journal keeps of it.
pub(super) enum Late {
    Session(Box<v1::RecordSessionRequest>, Fact),
    Outcome(Box<v1::RecordOutcomeRequest>, Fact),
    Missed(v1::RecordMissedSessionRequest, Fact),
}

/// What the patient brings to the evaluation.
struct Baseline {
    back: f64,
    leg: f64,
    odi: f64,
    /// Whole kilograms, as recorded: the force ceiling derives from the recorded weight.
    weight: f64,
    /// Leg pain radiating below the knee.
    sciatica: bool,
    /// Weeks since the symptoms began.
    symptom_weeks: i32,
}

impl Baseline {
    /// The chance that this patient's pain responds: lower with sciatica and with
    /// longer-lasting symptoms, so that clinics with harder patients look worse before
    /// case-mix adjustment (about 0.6 over the simulated mix).
    fn response_chance(&self) -> f64 {
        let chronicity = match self.symptom_weeks {
            0..=5 => 0.0,
            6..=12 => 0.06,
            _ => 0.14,
        };
        let sciatica = if self.sciatica { 0.12 } else { 0.0 };
        0.76 - chronicity - sciatica
    }
}

/// The course of treatment as it goes.
struct Treatment {
    baseline: Baseline,
    initial_sessions: i32,
    spacing: Duration,
    force: f64,
    ceiling: f64,
    previous_poor: bool,
    pain: f64,
    responder: bool,
    adherence: f64,
    ongoing: bool,
    /// Sessions done.
    session: i32,
    /// Sessions after which the record of an ongoing episode stops.
    stop_after: i32,
}

fn command_id(header: Option<&v1::CommandHeader>) -> String {
    header.map(|h| h.command_id.clone()).unwrap_or_default()
}

impl Writer {
    pub(super) async fn patient_course(
        &mut self,
        window_start: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        let mut at = window_start
            + Duration::days(self.rng.random_range(0..40))
            + Duration::minutes(self.rng.random_range(0..600));
        if let Some(mut treatment) = self.admit(&mut at).await? {
            self.treat(&mut treatment, &mut at).await?;
        }
        self.enter_late().await?;
        self.correct_course().await
    }

    fn note(&mut self, event_id: String, at: DateTime<Utc>, fact: Fact) {
        self.journal.push(Recorded { event_id, at, fact });
    }

    /// Registration, evaluation, plan and home care; None when the patient is not treated
    /// (referred for an absolute contraindication, or a command was refused).
    async fn admit(&mut self, at: &mut DateTime<Utc>) -> anyhow::Result<Option<Treatment>> {
        let patient_id = uuid_from(&mut self.rng);
        self.episode_id = uuid_from(&mut self.rng).to_string();
        self.trace_id = uuid::Uuid::new_v4().simple().to_string();
        let age: i32 = self.rng.random_range(24..82);
        let birth_year = 2026 - age;
        if !self.register(patient_id, *at, birth_year).await? {
            return Ok(None);
        }
        *at += Duration::hours(1);
        let baseline = Baseline {
            back: self.normal(6.5, 1.5).clamp(2.0, 10.0),
            leg: self.normal(5.0, 2.0).clamp(0.0, 10.0),
            odi: self.normal(38.0, 12.0).clamp(8.0, 80.0),
            weight: self.normal(80.0, 14.0).clamp(48.0, 140.0).round(),
            sciatica: false,
            symptom_weeks: self.rng.random_range(1..=60),
        };
        let baseline = Baseline {
            sciatica: baseline.leg >= 4.0 && self.rng.random_bool(0.8),
            ..baseline
        };
        let blocked = self.rng.random_bool(0.03);
        let evaluated = self
            .evaluate(patient_id, *at, (age, birth_year), &baseline, blocked)
            .await?;
        if !evaluated {
            return Ok(None);
        }
        if blocked {
            // An absolute contraindication: referred, never treated.
            let discharged_at = *at + Duration::days(1);
            self.discharge(discharged_at, v1::DischargeReason::Referred)
                .await?;
            return Ok(None);
        }
        *at += Duration::days(self.rng.random_range(1..4));
        let Some(treatment) = self.start_plan(*at, baseline).await? else {
            return Ok(None);
        };
        self.instruct_home_care(*at).await?;
        Ok(Some(treatment))
    }

    async fn register(
        &mut self,
        patient_id: uuid::Uuid,
        at: DateTime<Utc>,
        birth_year: i32,
    ) -> anyhow::Result<bool> {
        let header = self.header();
        let sex = if self.rng.random_bool(0.5) {
            v1::Sex::Female
        } else {
            v1::Sex::Male
        };
        Ok(send!(
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
        ))
    }

    async fn evaluate(
        &mut self,
        patient_id: uuid::Uuid,
        at: DateTime<Utc>,
        (age, birth_year): (i32, i32),
        baseline: &Baseline,
        blocked: bool,
    ) -> anyhow::Result<bool> {
        let contraindications = self.screening(blocked);
        let diagnosis = self.rng.random_range(0..DIAGNOSES.len());
        let (system, code) = DIAGNOSES[diagnosis];
        let header = self.header();
        let event_id = command_id(header.as_ref());
        let odi = odi_sections(&mut self.rng, baseline.odi);
        let fact = Fact::Evaluation {
            age,
            birth_year,
            pain_back: nrs(baseline.back),
            pain_leg: nrs(baseline.leg),
            weight: baseline.weight,
            diagnosis,
            screening: contraindications
                .iter()
                .map(|item| (item.contraindication, item.finding))
                .collect(),
            sciatica: baseline.sciatica,
        };
        let evaluated = send!(
            self,
            record_evaluation,
            "EvaluationRecorded",
            v1::RecordEvaluationRequest {
                header,
                occurred_at: timestamp(at),
                episode_id: self.episode_id.clone(),
                patient_id: patient_id.to_string(),
                provider_id: "provider-1".into(),
                age_years: age,
                pain_back: nrs(baseline.back),
                pain_leg: nrs(baseline.leg),
                odi,
                rmdq: Some(((baseline.odi / 100.0) * 24.0).round().clamp(0.0, 24.0) as i32),
                straight_leg_raise: vec![v1::StraightLegRaise {
                    side: v1::Side::Left as i32,
                    angle_degrees: self.rng.random_range(30..80),
                    positive: baseline.leg >= 4.0,
                }],
                lumbar_flexion_cm: Some(
                    (self.normal(4.5, 1.0).clamp(1.0, 8.0) * 10.0).round() / 10.0
                ),
                sleep_quality: Some(self.rng.random_range(2..8)),
                posture_notes: None,
                overall_health: Some(self.rng.random_range(4..9)),
                body_weight_kg: Some(baseline.weight),
                diagnoses: vec![v1::Diagnosis {
                    system: system as i32,
                    code: code.into()
                }],
                contraindications,
                sciatica: Some(baseline.sciatica),
                symptom_duration_weeks: Some(baseline.symptom_weeks),
            }
        );
        if evaluated {
            self.note(event_id, at, fact);
        }
        Ok(evaluated)
    }

    /// Usually 4-6 sessions over 2-6 weeks; a few of 8 with a justification.
    async fn start_plan(
        &mut self,
        at: DateTime<Utc>,
        baseline: Baseline,
    ) -> anyhow::Result<Option<Treatment>> {
        let long_phase = self.rng.random_bool(0.05);
        let initial_sessions: i32 = if long_phase {
            8
        } else {
            self.rng.random_range(4..=6)
        };
        let span_weeks: i32 = self.rng.random_range(2..=6);
        // 1 % under the default ceiling (60 % of body weight), so rounding to 0.1 N never
        // crosses it.
        let ceiling = baseline.weight * 9.806_65 * 0.6 * 0.99;
        let force = (baseline.weight * 9.806_65 * self.rng.random_range(0.22..0.30)).min(ceiling);
        let header = self.header();
        let event_id = command_id(header.as_ref());
        let planned = send!(
            self,
            start_treatment_plan,
            "TreatmentPlanStarted",
            v1::StartTreatmentPlanRequest {
                header,
                occurred_at: timestamp(at),
                episode_id: self.episode_id.clone(),
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
            return Ok(None);
        }
        self.note(
            event_id,
            at,
            Fact::Plan {
                initial_sessions,
                span_weeks,
                force,
            },
        );
        self.phase_start = Some(at);
        let adherence = self.rng.random_range(20.0..100.0);
        let responder = self.rng.random_bool(baseline.response_chance());
        let ongoing = self.rng.random_bool(0.15);
        let stop_after = if ongoing {
            self.rng.random_range(1..initial_sessions + 3)
        } else {
            i32::MAX
        };
        Ok(Some(Treatment {
            pain: baseline.back,
            baseline,
            initial_sessions,
            spacing: Duration::hours(
                (f64::from(span_weeks) * 7.0 * 24.0 / f64::from(initial_sessions)) as i64,
            ),
            force,
            ceiling,
            previous_poor: false,
            responder,
            adherence,
            ongoing,
            session: 0,
            stop_after,
        }))
    }

    /// Home care from the start, with this patient's adherence propensity.
    async fn instruct_home_care(&mut self, at: DateTime<Utc>) -> anyhow::Result<()> {
        let header = self.header();
        let event_id = command_id(header.as_ref());
        let instructed = send!(
            self,
            give_home_care_instructions,
            "HomeCareInstructed",
            v1::GiveHomeCareInstructionsRequest {
                header,
                occurred_at: timestamp(at),
                episode_id: self.episode_id.clone(),
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
        if instructed {
            self.note(event_id, at, Fact::HomeCare);
        }
        Ok(())
    }

    /// The initial phase, reassessment, a personalised frequency (or discharge), and the
    /// discharge at the end; an ongoing episode's record stops part-way.
    async fn treat(&mut self, t: &mut Treatment, at: &mut DateTime<Utc>) -> anyhow::Result<()> {
        if !self.initial_phase(t, at).await? {
            return Ok(());
        }
        self.enter_late().await?;
        *at += Duration::days(2);
        let Some((step, extra_sessions)) = self.reassess_and_adjust(t, *at).await? else {
            return Ok(());
        };
        for _ in 0..extra_sessions {
            *at += step;
            self.treatment_session(t, *at).await?;
            if t.session >= t.stop_after {
                return Ok(());
            }
        }
        if t.ongoing {
            return Ok(());
        }
        self.outcome(t, *at + Duration::hours(1)).await?;
        let reason = if t.pain <= 2.0 || t.baseline.back - t.pain >= 3.0 {
            v1::DischargeReason::GoalsMet
        } else {
            [
                v1::DischargeReason::Plateau,
                v1::DischargeReason::SelfDischarge,
                v1::DischargeReason::LostToFollowUp,
            ][self.rng.random_range(0..3)]
        };
        self.enter_late().await?;
        self.discharge(*at + Duration::days(1), reason).await
    }

    /// The initial phase's sessions with missed sessions, outcomes after sessions 4 and 6
    /// and at its end, and adherence reports; false when the record stops (ongoing).
    async fn initial_phase(
        &mut self,
        t: &mut Treatment,
        at: &mut DateTime<Utc>,
    ) -> anyhow::Result<bool> {
        while t.session < t.initial_sessions {
            *at += t.spacing;
            if self.rng.random_bool(0.08) {
                self.missed_session(*at).await?;
                *at += Duration::days(2);
            }
            self.treatment_session(t, *at).await?;
            if t.session == 4 || t.session == 6 || t.session == t.initial_sessions {
                self.outcome(t, *at + Duration::minutes(30)).await?;
            }
            if t.session % 2 == 0 {
                // After the outcome, so only the late entries above are entered late.
                self.adherence_report(t, *at + Duration::minutes(45))
                    .await?;
            }
            if t.session >= t.stop_after {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Reassessment, then a personalised frequency (the interval between its sessions and
    /// how many follow) or discharge (None).
    async fn reassess_and_adjust(
        &mut self,
        t: &Treatment,
        at: DateTime<Utc>,
    ) -> anyhow::Result<Option<(Duration, i32)>> {
        let improved = t.baseline.back - t.pain >= 2.0 || t.pain <= 1.0;
        let recommendation = if improved || self.rng.random_bool(0.5) {
            v1::Recommendation::ChangeFrequency
        } else {
            v1::Recommendation::Discharge
        };
        self.reassessment(t, at, recommendation).await?;
        if recommendation == v1::Recommendation::Discharge {
            let reason = if self.rng.random_bool(0.5) {
                v1::DischargeReason::Plateau
            } else {
                v1::DischargeReason::Referred
            };
            self.discharge(at, reason).await?;
            return Ok(None);
        }
        use v1::adjust_treatment_plan_request::Cadence;
        let (frequency, cadence, extra_sessions) = if !improved {
            (v1::Frequency::Intensive, Cadence::SessionsPerWeek(3.0), 4)
        } else if self.rng.random_bool(0.5) {
            (v1::Frequency::Tapering, Cadence::SessionsPerWeek(1.0), 3)
        } else {
            (v1::Frequency::Maintenance, Cadence::IntervalDays(21), 2)
        };
        let header = self.header();
        let event_id = command_id(header.as_ref());
        let adjusted = send!(
            self,
            adjust_treatment_plan,
            "TreatmentPlanAdjusted",
            v1::AdjustTreatmentPlanRequest {
                header,
                occurred_at: timestamp(at),
                episode_id: self.episode_id.clone(),
                frequency: frequency as i32,
                reason: Some("reassessment after the initial phase".into()),
                cadence: Some(cadence),
            }
        );
        if adjusted {
            self.note(event_id, at, Fact::Adjusted { frequency });
            self.phase_start = Some(at);
        }
        let step = match cadence {
            Cadence::SessionsPerWeek(per_week) => Duration::hours((168.0 / per_week) as i64),
            Cadence::IntervalDays(days) => Duration::days(i64::from(days)),
        };
        Ok(Some((step, extra_sessions)))
    }

    async fn reassessment(
        &mut self,
        t: &Treatment,
        at: DateTime<Utc>,
        recommendation: v1::Recommendation,
    ) -> anyhow::Result<()> {
        let header = self.header();
        let event_id = command_id(header.as_ref());
        let odi = odi_sections(
            &mut self.rng,
            odi_now(t.baseline.odi, t.baseline.back, t.pain),
        );
        let pain_leg = nrs((t.baseline.leg - (t.baseline.back - t.pain)).max(0.0));
        let reassessed = send!(
            self,
            record_reassessment,
            "ReassessmentRecorded",
            v1::RecordReassessmentRequest {
                header,
                occurred_at: timestamp(at),
                episode_id: self.episode_id.clone(),
                pain_back: nrs(t.pain),
                pain_leg,
                odi,
                rmdq: None,
                recommendation: recommendation as i32,
                notes: None,
            }
        );
        if reassessed {
            let fact = Fact::Reassessment {
                pain_back: nrs(t.pain),
                pain_leg,
                recommendation,
            };
            self.note(event_id, at, fact);
        }
        Ok(())
    }

    /// The next session of the course: its force follows the tolerance of the session
    /// before it. Sometimes held back (entered after the next one); after one entered,
    /// held facts follow and sometimes a forgotten session is back-dated.
    async fn treatment_session(
        &mut self,
        t: &mut Treatment,
        at: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        t.session += 1;
        let (peak, poor) = self.next_force(&mut t.force, t.ceiling, t.previous_poor);
        t.previous_poor = poor;
        t.pain = self.pain_step(t.pain, t.responder);
        let (request, fact) = self.session_request(at, peak, t.pain, poor);
        if self.rng.random_bool(LATE_SESSION) && self.late.is_empty() {
            self.late.push(Late::Session(Box::new(request), fact));
            return Ok(());
        }
        self.enter_session(request, fact).await?;
        self.enter_late().await?;
        if self.rng.random_bool(BACK_DATED) {
            self.back_dated_session(at, t.pain).await?;
        }
        Ok(())
    }

    /// A session found on paper, dated 2-4 days before the session at `last` and after the
    /// start of the current phase. Its force repeats the session clinically before it (10 %
    /// less after poor tolerance), so the force rule holds wherever it lands.
    async fn back_dated_session(&mut self, last: DateTime<Utc>, pain: f64) -> anyhow::Result<()> {
        let at = last
            - Duration::days(self.rng.random_range(2..=4))
            - Duration::minutes(self.rng.random_range(0..240));
        if self
            .phase_start
            .is_none_or(|start| at <= start + Duration::hours(1))
        {
            return Ok(());
        }
        // The latest at or before `at`; among equal times the one entered last, as the
        // chart orders them.
        let before = self
            .sessions
            .iter()
            .filter(|(when, _, _)| *when <= at)
            .max_by_key(|(when, _, _)| *when)
            .copied();
        let Some((_, peak, poor)) = before else {
            return Ok(());
        };
        let peak = if poor { peak * 0.9 } else { peak };
        let (request, fact) = self.session_request(at, peak, pain, false);
        self.enter_session(request, fact).await
    }

    fn session_request(
        &mut self,
        at: DateTime<Utc>,
        peak: f64,
        pain: f64,
        poor: bool,
    ) -> (v1::RecordSessionRequest, Fact) {
        let header = self.header();
        let adverse = self.rng.random_bool(0.02);
        let angle = self.rng.random_range(5..20);
        let peak_force = newtons(peak);
        let rest_force = newtons(peak * 0.5);
        let fact = Fact::Session {
            peak: peak_force.as_ref().map_or(peak, |f| f.value),
            rest: rest_force.as_ref().map_or(peak * 0.5, |f| f.value),
            poor,
            pain_before: nrs(pain + 0.5),
            pain_after: nrs(pain - if poor { 0.0 } else { 1.0 }),
            angle,
            adverse,
        };
        let request = v1::RecordSessionRequest {
            header,
            occurred_at: timestamp(at),
            episode_id: self.episode_id.clone(),
            mode: v1::SessionMode::Intermittent as i32,
            peak_force,
            rest_force,
            hold_seconds: 60,
            relax_seconds: 30,
            cycles: 15,
            duration_minutes: 25,
            angle_degrees: angle,
            levels: vec![v1::SpinalLevel::L4 as i32, v1::SpinalLevel::L5 as i32],
            pain_before: nrs(pain + 0.5),
            pain_after: nrs(pain - if poor { 0.0 } else { 1.0 }),
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
        };
        (request, fact)
    }

    /// Sends a session; once accepted it is journaled, and now and then a mistyped pain
    /// score is corrected later the same day.
    async fn enter_session(
        &mut self,
        request: v1::RecordSessionRequest,
        fact: Fact,
    ) -> anyhow::Result<()> {
        let event_id = command_id(request.header.as_ref());
        let Some(at) = request
            .occurred_at
            .and_then(|t| DateTime::from_timestamp(t.seconds, 0))
        else {
            return Ok(());
        };
        let recorded = send!(self, record_session, "SessionRecorded", request);
        if !recorded {
            return Ok(());
        }
        let Fact::Session {
            peak,
            poor,
            pain_after,
            ..
        } = fact
        else {
            return Ok(());
        };
        self.sessions.push((at, peak, poor));
        self.note(event_id.clone(), at, fact);
        if self.rng.random_bool(0.02) {
            self.correct_pain_after(&event_id, at + Duration::hours(3), (pain_after + 1).min(10))
                .await?;
        }
        Ok(())
    }

    async fn outcome(&mut self, t: &Treatment, at: DateTime<Utc>) -> anyhow::Result<()> {
        let header = self.header();
        let odi = odi_sections(
            &mut self.rng,
            odi_now(t.baseline.odi, t.baseline.back, t.pain),
        );
        let pgic = if t.responder {
            self.rng.random_range(1..=3)
        } else {
            self.rng.random_range(3..=5)
        };
        let request = v1::RecordOutcomeRequest {
            header,
            occurred_at: timestamp(at),
            episode_id: self.episode_id.clone(),
            pain_back: nrs(t.pain),
            pain_leg: nrs(t.pain - 1.0),
            odi,
            rmdq: None,
            straight_leg_raise: Vec::new(),
            lumbar_flexion_cm: None,
            sleep_quality: Some(if t.responder { 7 } else { 4 }),
            pgic: Some(pgic),
            sciatica: if t.responder {
                v1::SciaticaSymptoms::Improved as i32
            } else {
                v1::SciaticaSymptoms::Unchanged as i32
            },
        };
        let fact = Fact::Outcome {
            pain_back: nrs(t.pain),
            pain_leg: nrs(t.pain - 1.0),
            pgic,
            responder: t.responder,
        };
        if self.rng.random_bool(LATE_OUTCOME) && self.late.is_empty() {
            self.late.push(Late::Outcome(Box::new(request), fact));
            return Ok(());
        }
        self.enter_outcome(request, fact).await
    }

    async fn enter_outcome(
        &mut self,
        request: v1::RecordOutcomeRequest,
        fact: Fact,
    ) -> anyhow::Result<()> {
        let event_id = command_id(request.header.as_ref());
        let at = request.occurred_at;
        if send!(self, record_outcome, "OutcomeRecorded", request) {
            self.note_at(event_id, at, fact);
        }
        Ok(())
    }

    async fn missed_session(&mut self, at: DateTime<Utc>) -> anyhow::Result<()> {
        let header = self.header();
        let reason = [
            v1::MissedReason::NoShow,
            v1::MissedReason::PatientCancelled,
            v1::MissedReason::Illness,
        ][self.rng.random_range(0..3)];
        let request = v1::RecordMissedSessionRequest {
            header,
            occurred_at: timestamp(at),
            episode_id: self.episode_id.clone(),
            reason: reason as i32,
        };
        let fact = Fact::Missed { reason };
        if self.rng.random_bool(LATE_MISSED) && self.late.is_empty() {
            self.late.push(Late::Missed(request, fact));
            return Ok(());
        }
        self.enter_missed(request, fact).await
    }

    async fn enter_missed(
        &mut self,
        request: v1::RecordMissedSessionRequest,
        fact: Fact,
    ) -> anyhow::Result<()> {
        let event_id = command_id(request.header.as_ref());
        let at = request.occurred_at;
        if send!(self, record_missed_session, "SessionMissed", request) {
            self.note_at(event_id, at, fact);
        }
        Ok(())
    }

    /// Journals a fact dated by its request's timestamp.
    fn note_at(&mut self, event_id: String, at: Option<prost_types::Timestamp>, fact: Fact) {
        if let Some(at) = at.and_then(|t| DateTime::from_timestamp(t.seconds, 0)) {
            self.note(event_id, at, fact);
        }
    }

    /// Enters the facts held back, in the order they were held.
    async fn enter_late(&mut self) -> anyhow::Result<()> {
        for late in std::mem::take(&mut self.late) {
            match late {
                Late::Session(request, fact) => self.enter_session(*request, fact).await?,
                Late::Outcome(request, fact) => self.enter_outcome(*request, fact).await?,
                Late::Missed(request, fact) => self.enter_missed(request, fact).await?,
            }
        }
        Ok(())
    }

    async fn adherence_report(&mut self, t: &Treatment, at: DateTime<Utc>) -> anyhow::Result<()> {
        let header = self.header();
        let event_id = command_id(header.as_ref());
        let percent = (t.adherence + self.normal(0.0, 8.0))
            .round()
            .clamp(0.0, 100.0) as i32;
        let reported = send!(
            self,
            report_home_care_adherence,
            "HomeCareAdherenceReported",
            v1::ReportHomeCareAdherenceRequest {
                header,
                occurred_at: timestamp(at),
                episode_id: self.episode_id.clone(),
                period_days: 14,
                adherence_percent: percent,
            }
        );
        if reported {
            self.note(event_id, at, Fact::Adherence { percent });
        }
        Ok(())
    }

    async fn discharge(
        &mut self,
        at: DateTime<Utc>,
        reason: v1::DischargeReason,
    ) -> anyhow::Result<()> {
        let header = self.header();
        let event_id = command_id(header.as_ref());
        let discharged = send!(
            self,
            discharge_episode,
            "EpisodeDischarged",
            v1::DischargeEpisodeRequest {
                header,
                occurred_at: timestamp(at),
                episode_id: self.episode_id.clone(),
                reason: reason as i32,
                notes: None,
            }
        );
        if discharged {
            self.note(event_id, at, Fact::Discharged { reason });
        }
        Ok(())
    }
}
