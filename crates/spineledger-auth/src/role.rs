//! The roles a token can carry and the one table saying which roles may call which RPC.
//!
//! The table is deny by default: an RPC path that is not listed is refused to every role,
//! so a new RPC stays closed until someone decides who may call it (a test checks that
//! every RPC the API declares has a row). Health checks and server reflection are public:
//! orchestrators and grpcurl need them before they hold a token, and they carry no
//! clinical data.

use std::fmt;
use std::str::FromStr;

use crate::AuthError;

/// What a caller is, as its token says (claim `role`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// A clinician using clinic software that forwards the clinician's own token: writes
    /// and reads its clinics' records, always as itself (the recorded actor is the token's
    /// subject).
    Clinician,
    /// Clinic software authenticating as a service account (OAuth2 client credentials):
    /// writes and reads its clinics' records on behalf of the users it names as actor.
    Integration,
    /// Outcome statistics of the granted clinics, small cells always suppressed; never an
    /// episode's row.
    Analyst,
    /// History, verification and the access log of the granted clinics (the audit RPCs);
    /// no clinical writes.
    Auditor,
    /// Operations (rebuilds, projector control); no clinical data.
    Admin,
}

impl Role {
    /// Every role, in the order the README's table lists them.
    pub const ALL: [Self; 5] = [
        Self::Clinician,
        Self::Integration,
        Self::Analyst,
        Self::Auditor,
        Self::Admin,
    ];

    /// The claim value.
    pub fn name(self) -> &'static str {
        match self {
            Self::Clinician => "clinician",
            Self::Integration => "integration",
            Self::Analyst => "analyst",
            Self::Auditor => "auditor",
            Self::Admin => "admin",
        }
    }

    /// Whether a caller of this role may record facts on behalf of another user (the
    /// request's `actor`); a clinician records as itself only.
    pub fn may_act_for_others(self) -> bool {
        matches!(self, Self::Integration)
    }

    /// Whether a token of this role may be granted every clinic (`"clinics": ["*"]`):
    /// only roles that never see an individual episode's record through it.
    pub fn may_be_granted_every_clinic(self) -> bool {
        matches!(self, Self::Analyst | Self::Auditor)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Role {
    type Err = AuthError;

    /// The role named `name`; a name that is none is [`AuthError::UnusableClaims`].
    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|role| role.name() == name)
            .ok_or_else(|| {
                AuthError::UnusableClaims(format!(
                    "unknown role {:?}: expected clinician, integration, analyst, auditor or \
                     admin",
                    name.chars().take(40).collect::<String>()
                ))
            })
    }
}

/// Who may call an RPC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No token needed (health checks, reflection).
    Public,
    /// A verified token of one of these roles.
    Roles(&'static [Role]),
}

impl Access {
    /// Whether `role` may call.
    pub fn admits(self, role: Role) -> bool {
        match self {
            Self::Public => true,
            Self::Roles(roles) => roles.contains(&role),
        }
    }
}

/// Those who write and read a clinic's records.
const RECORD_KEEPERS: &[Role] = &[Role::Clinician, Role::Integration];
/// Those who read the history and replay the record.
const AUDITORS: &[Role] = &[Role::Auditor];
/// Those who read outcome statistics: analysts, and the clinics' own staff and software
/// for their own clinics.
const STATISTICS_READERS: &[Role] = &[Role::Analyst, Role::Clinician, Role::Integration];
/// Those who check the clinic's signed log: auditors, and the clinic's software, which
/// keeps the hashes its writes returned and may prove them included. Proofs and
/// checkpoints carry hashes only, no clinical data.
const LOG_VERIFIERS: &[Role] = &[Role::Auditor, Role::Integration];

/// The role table: every RPC of the spineledger.v1 API and who may call it.
pub const RPC_ACCESS: &[(&str, Access)] = &[
    (
        "/spineledger.v1.ClinicalRecordsService/RegisterPatient",
        Access::Roles(RECORD_KEEPERS),
    ),
    (
        "/spineledger.v1.ClinicalRecordsService/RecordEvaluation",
        Access::Roles(RECORD_KEEPERS),
    ),
    (
        "/spineledger.v1.ClinicalRecordsService/StartTreatmentPlan",
        Access::Roles(RECORD_KEEPERS),
    ),
    (
        "/spineledger.v1.ClinicalRecordsService/RecordSession",
        Access::Roles(RECORD_KEEPERS),
    ),
    (
        "/spineledger.v1.ClinicalRecordsService/RecordMissedSession",
        Access::Roles(RECORD_KEEPERS),
    ),
    (
        "/spineledger.v1.ClinicalRecordsService/RecordOutcome",
        Access::Roles(RECORD_KEEPERS),
    ),
    (
        "/spineledger.v1.ClinicalRecordsService/GiveHomeCareInstructions",
        Access::Roles(RECORD_KEEPERS),
    ),
    (
        "/spineledger.v1.ClinicalRecordsService/ReportHomeCareAdherence",
        Access::Roles(RECORD_KEEPERS),
    ),
    (
        "/spineledger.v1.ClinicalRecordsService/RecordReassessment",
        Access::Roles(RECORD_KEEPERS),
    ),
    (
        "/spineledger.v1.ClinicalRecordsService/AdjustTreatmentPlan",
        Access::Roles(RECORD_KEEPERS),
    ),
    (
        "/spineledger.v1.ClinicalRecordsService/DischargeEpisode",
        Access::Roles(RECORD_KEEPERS),
    ),
    (
        "/spineledger.v1.ClinicalRecordsService/RecordCorrection",
        Access::Roles(RECORD_KEEPERS),
    ),
    (
        "/spineledger.v1.TreatmentPlanService/GetTreatmentPlan",
        Access::Roles(RECORD_KEEPERS),
    ),
    (
        "/spineledger.v1.TreatmentPlanService/ListTreatmentPlans",
        Access::Roles(RECORD_KEEPERS),
    ),
    (
        "/spineledger.v1.OutcomeStatisticsService/GetOutcomeStatistics",
        Access::Roles(STATISTICS_READERS),
    ),
    (
        "/spineledger.v1.OutcomeStatisticsService/CompareClinics",
        Access::Roles(STATISTICS_READERS),
    ),
    (
        "/spineledger.v1.AuditService/ListStreamEvents",
        Access::Roles(AUDITORS),
    ),
    (
        "/spineledger.v1.AuditService/GetTreatmentPlanAsOf",
        Access::Roles(AUDITORS),
    ),
    (
        "/spineledger.v1.AuditService/ListClinicChanges",
        Access::Roles(AUDITORS),
    ),
    (
        "/spineledger.v1.AuditService/ListAccessLog",
        Access::Roles(AUDITORS),
    ),
    (
        "/spineledger.v1.AuditService/GetCheckpoint",
        Access::Roles(LOG_VERIFIERS),
    ),
    (
        "/spineledger.v1.AuditService/SignCheckpoint",
        Access::Roles(AUDITORS),
    ),
    (
        "/spineledger.v1.AuditService/GetInclusionProof",
        Access::Roles(LOG_VERIFIERS),
    ),
    (
        "/spineledger.v1.AuditService/GetConsistencyProof",
        Access::Roles(LOG_VERIFIERS),
    ),
];

/// Services anyone may call (by path prefix).
const PUBLIC_PREFIXES: &[&str] = &[
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1.ServerReflection/",
    "/grpc.reflection.v1alpha.ServerReflection/",
];

/// Who may call the RPC at `path` (`/package.Service/Method`); `None` for a path the table
/// does not list, which no one may call.
pub fn access(path: &str) -> Option<Access> {
    if PUBLIC_PREFIXES
        .iter()
        .any(|prefix| path.starts_with(prefix))
    {
        return Some(Access::Public);
    }
    RPC_ACCESS
        .iter()
        .find(|(listed, _)| *listed == path)
        .map(|(_, access)| *access)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_names_round_trip() {
        for role in Role::ALL {
            assert_eq!(role.name().parse::<Role>(), Ok(role));
        }
        assert!("Clinician".parse::<Role>().is_err());
        assert!("".parse::<Role>().is_err());
    }

    #[test]
    fn unlisted_paths_are_closed_and_health_is_open() {
        assert_eq!(access("/spineledger.v1.ClinicalRecordsService/Nope"), None);
        assert_eq!(access("/grpc.health.v1.Health/Check"), Some(Access::Public));
        let statistics = access("/spineledger.v1.OutcomeStatisticsService/GetOutcomeStatistics");
        assert!(statistics.is_some_and(|access| access.admits(Role::Analyst)));
        let plans = access("/spineledger.v1.TreatmentPlanService/GetTreatmentPlan");
        assert!(plans.is_some_and(|access| !access.admits(Role::Analyst)));
        assert!(plans.is_some_and(|access| !access.admits(Role::Admin)));
    }
}
