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
//! still ongoing.
//!
//! Clinics also enter data late and fix mistakes, and so does the simulator: now and then a
//! session, an outcome or a missed session is entered only after the next session
//! (`course`), a forgotten session is back-dated days before the one just recorded, and
//! every patient's record gets a correction at the end of its course (`corrections`): over
//! a cohort of 3 x 40 patients every correctable field of every event type is corrected at
//! least once, with values that keep every clinical rule. Late entries respect the rules
//! of time order: nothing before the plan start, nothing after discharge, a back-dated
//! session never raises the force over a poorly tolerated session that preceded it.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Duration, NaiveDate, Utc};
use futures::StreamExt;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use spineledger_api::client::BearerToken;
use spineledger_api::v1;
use spineledger_api::v1::clinical_records_service_client::ClinicalRecordsServiceClient;
use tokio::sync::Mutex;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// The write client, its token on every call.
type Client = ClinicalRecordsServiceClient<InterceptedService<Channel, BearerToken>>;
use uuid::Uuid;

/// Every simulated fact falls within this many days after the start date.
pub const WINDOW_DAYS: i64 = 200;

/// What to simulate.
#[derive(Debug, Clone)]
pub struct Cohort {
    /// The clinics to simulate (each gets `patients_per_clinic` patients); the token must
    /// grant them.
    pub clinics: Vec<Uuid>,
    /// Patients of each clinic.
    pub patients_per_clinic: usize,
    /// Everything derives from it: the same seed sends the same commands.
    pub seed: u64,
    /// The first day a patient may be registered.
    pub start_date: NaiveDate,
    /// Patients driven at once.
    pub concurrency: usize,
}

/// What the simulation did: commands accepted per RPC, and rejections by status/reason
/// (a correct run has none).
#[derive(Debug, Default, Clone)]
pub struct Report {
    /// Commands accepted, by RPC.
    pub accepted: BTreeMap<&'static str, u64>,
    /// Commands rejected, by status and reason.
    pub rejected: BTreeMap<String, u64>,
}

impl Report {
    /// Every accepted command.
    pub fn total_accepted(&self) -> u64 {
        self.accepted.values().sum()
    }

    /// Every rejected command.
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

/// Runs the cohort over `channel` (connected to the server), sending `token`.
pub async fn run(channel: Channel, token: &BearerToken, cohort: &Cohort) -> anyhow::Result<Report> {
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
    let client = ClinicalRecordsServiceClient::with_interceptor(channel, token.clone());

    // Seeds are drawn up front, in order, so each patient's story is the same whatever the
    // concurrency.
    let mut master = ChaCha8Rng::seed_from_u64(cohort.seed);
    let mut patients = Vec::with_capacity(cohort.clinics.len() * cohort.patients_per_clinic);
    for &clinic_id in &cohort.clinics {
        for _ in 0..cohort.patients_per_clinic {
            patients.push((clinic_id, master.random::<u64>()));
        }
    }
    let patients = patients.into_iter().enumerate();
    let report = Arc::new(Mutex::new(Report::default()));
    let results: Vec<anyhow::Result<()>> = futures::stream::iter(patients)
        .map(|(index, (clinic_id, seed))| {
            let mut writer = Writer::new(
                client.clone(),
                clinic_id,
                ChaCha8Rng::seed_from_u64(seed),
                report.clone(),
                index,
            );
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
    client: Client,
    clinic_id: Uuid,
    rng: ChaCha8Rng,
    report: Arc<Mutex<Report>>,
    /// The patient's place in the cohort: which fields its correction names.
    index: usize,
    /// The episode being recorded.
    episode_id: String,
    /// The W3C trace id of the current patient's course.
    trace_id: String,
    /// Every accepted fact, in the order entered: what corrections choose from.
    journal: Vec<corrections::Recorded>,
    /// The accepted sessions in the order entered: when, peak force (N, as sent), poor.
    sessions: Vec<(DateTime<Utc>, f64, bool)>,
    /// Facts held back to be entered after the next session (late entries).
    late: Vec<course::Late>,
    /// When the current treatment phase started (plan start, then the adjustment).
    phase_start: Option<DateTime<Utc>>,
}

/// Sends one request, counts it, and turns an unexpected rejection into a count (the
/// simulation goes on with the next patient step).
macro_rules! send {
    ($self:ident, $method:ident, $label:literal, $request:expr) => {{
        let mut request = tonic::Request::new($request);
        // W3C trace context: one trace per patient's course, a span per command.
        if let Ok(value) = $self.traceparent().parse() {
            request.metadata_mut().insert("traceparent", value);
        }
        let outcome = $self.client.$method(request).await;
        $self.count($label, outcome.map(|_| ())).await?
    }};
}

mod corrections;
mod course;

impl Writer {
    fn new(
        client: Client,
        clinic_id: Uuid,
        rng: ChaCha8Rng,
        report: Arc<Mutex<Report>>,
        index: usize,
    ) -> Self {
        Self {
            client,
            clinic_id,
            rng,
            report,
            index,
            episode_id: String::new(),
            trace_id: uuid::Uuid::new_v4().simple().to_string(),
            journal: Vec::new(),
            sessions: Vec::new(),
            late: Vec::new(),
            phase_start: None,
        }
    }

    /// A `traceparent` for the next command: the course's trace, a fresh span id. Drawn
    /// from the operating system's randomness, not the cohort's seeded generator, so the
    /// seeded cohort stays the same.
    fn traceparent(&self) -> String {
        format!(
            "00-{}-{:016x}-01",
            self.trace_id,
            rand::random::<u64>().max(1)
        )
    }

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
}
