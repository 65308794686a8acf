//! The session-append phase: `RecordSession` on existing episodes, the write a clinic
//! makes most. Each append reads and decides against an episode with history (a
//! registered patient, an evaluation, a plan and earlier sessions), unlike the
//! `RegisterPatient` phase, which always creates a new stream.
//!
//! Before the clock starts, each client opens `episodes` episodes of its own clinic
//! (register, evaluate, start a plan); during the phase it records sessions on them in
//! turn, so an episode holds about as many sessions as a real course (the phase's
//! sessions spread over all of them).

use std::time::{Duration, Instant};

use spineledger_api::v1;
use spineledger_api::v1::clinical_records_service_client::ClinicalRecordsServiceClient;
use tonic::transport::Channel;
use uuid::Uuid;

use super::{CpuSample, Phase, Server, header, hours_ago, phase_of};

fn force(newtons: f64) -> Option<v1::Force> {
    Some(v1::Force {
        value: newtons,
        unit: v1::ForceUnit::Newton as i32,
    })
}

/// Registers a patient and opens an episode with an evaluation and a treatment plan;
/// returns the episode id.
async fn open_episode(
    client: &mut ClinicalRecordsServiceClient<
        tonic::service::interceptor::InterceptedService<
            Channel,
            spineledger_api::client::BearerToken,
        >,
    >,
    clinic: Uuid,
) -> Result<String, tonic::Status> {
    let patient = Uuid::new_v4().to_string();
    let episode = Uuid::new_v4().to_string();
    client
        .register_patient(v1::RegisterPatientRequest {
            header: header(clinic),
            occurred_at: hours_ago(3),
            patient_id: patient.clone(),
            birth_year: Some(1971),
            sex: v1::Sex::Female as i32,
        })
        .await?;
    client
        .record_evaluation(v1::RecordEvaluationRequest {
            header: header(clinic),
            occurred_at: hours_ago(2),
            episode_id: episode.clone(),
            patient_id: patient,
            provider_id: "provider-1".into(),
            age_years: 55,
            pain_back: 7,
            pain_leg: 5,
            odi: Some(v1::OswestryDisabilityIndex {
                input: Some(v1::oswestry_disability_index::Input::Sections(
                    v1::OdiSections {
                        answers: vec![3, 2, 2, 3, 2, 2, 1, 2, 2, 1],
                    },
                )),
            }),
            rmdq: Some(12),
            straight_leg_raise: vec![v1::StraightLegRaise {
                side: v1::Side::Left as i32,
                angle_degrees: 45,
                positive: true,
            }],
            lumbar_flexion_cm: Some(4.5),
            sleep_quality: Some(5),
            posture_notes: None,
            overall_health: Some(6),
            body_weight_kg: Some(80.0),
            diagnoses: vec![v1::Diagnosis {
                system: v1::CodeSystem::Icd10 as i32,
                code: "M54.4".into(),
            }],
            contraindications: (1..=9)
                .map(|item| v1::ContraindicationFinding {
                    contraindication: item,
                    finding: v1::Finding::Absent as i32,
                })
                .collect(),
            sciatica: None,
            symptom_duration_weeks: None,
        })
        .await?;
    client
        .start_treatment_plan(v1::StartTreatmentPlanRequest {
            header: header(clinic),
            occurred_at: hours_ago(1),
            episode_id: episode.clone(),
            initial_sessions: 6,
            initial_span_weeks: 4,
            target_levels: vec![v1::SpinalLevel::L4 as i32, v1::SpinalLevel::L5 as i32],
            starting_force: force(200.0),
            goals: vec!["walk 30 minutes without leg pain".into()],
            justification: None,
        })
        .await?;
    Ok(episode)
}

fn session(clinic: Uuid, episode: &str) -> v1::RecordSessionRequest {
    v1::RecordSessionRequest {
        header: header(clinic),
        occurred_at: Some(spineledger_api::views::timestamp(
            chrono::Utc::now() - chrono::TimeDelta::minutes(1),
        )),
        episode_id: episode.to_owned(),
        mode: v1::SessionMode::Intermittent as i32,
        peak_force: force(200.0),
        rest_force: force(100.0),
        hold_seconds: 60,
        relax_seconds: 30,
        cycles: 15,
        duration_minutes: 25,
        angle_degrees: 10,
        levels: vec![v1::SpinalLevel::L4 as i32, v1::SpinalLevel::L5 as i32],
        pain_before: 6,
        pain_after: 5,
        tolerance: v1::Tolerance::Good as i32,
        adverse_event: None,
        provider_id: "provider-1".into(),
    }
}

/// Opens `episodes` episodes per client (not timed), then records sessions from
/// `clients` concurrent clients for `seconds`.
pub(super) async fn record_sessions(
    server: &Server,
    clients: usize,
    episodes: usize,
    seconds: u64,
) -> anyhow::Result<Phase> {
    let channels = server.connections(clients).await?;
    let mut prepared = Vec::with_capacity(clients);
    let setup: Vec<_> = channels
        .into_iter()
        .map(|channel| {
            let clinic = Uuid::new_v4();
            let mut client =
                ClinicalRecordsServiceClient::with_interceptor(channel, server.token(&[clinic])?);
            Ok(tokio::spawn(async move {
                let mut opened = Vec::with_capacity(episodes);
                for _ in 0..episodes.max(1) {
                    opened.push(open_episode(&mut client, clinic).await?);
                }
                Ok::<_, tonic::Status>((client, clinic, opened))
            }))
        })
        .collect::<anyhow::Result<_>>()?;
    for task in setup {
        prepared.push(
            task.await?
                .map_err(|status| anyhow::anyhow!("opening an episode failed: {status}"))?,
        );
    }

    let before = CpuSample::now(server.child.id());
    let started = Instant::now();
    let until = started + Duration::from_secs(seconds);
    let tasks: Vec<_> = prepared
        .into_iter()
        .map(|(mut client, clinic, episodes)| {
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                for episode in episodes.iter().cycle() {
                    if Instant::now() >= until {
                        break;
                    }
                    let sent = Instant::now();
                    client.record_session(session(clinic, episode)).await?;
                    latencies.push(sent.elapsed().as_secs_f64() * 1e6);
                }
                Ok::<_, tonic::Status>(latencies)
            })
        })
        .collect();
    phase_of(server, tasks, "a session append", before, started).await
}
