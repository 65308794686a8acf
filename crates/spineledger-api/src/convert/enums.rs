//! Every enum of the contract next to its domain (or read-model) counterpart, both
//! directions from one table: `<name>::from_proto` (incoming; `*_UNSPECIFIED` is `None`,
//! which a required field refuses and an optional one reads as "not recorded") and
//! `<name>::to_proto` (outgoing). Both matches are exhaustive, so a value added on either
//! side does not compile until it is mapped here.

use spineledger_domain::measures::{
    CodeSystem, Contraindication, DischargeReason, Finding, ForceUnit, Frequency, HomeCareKind,
    MissedReason, Recommendation, SciaticaSymptoms, SessionMode, Severity, Side, SpinalLevel,
    Tolerance,
};
use spineledger_domain::patient::Sex;
use spineledger_readmodels::casemix::Measure;
use spineledger_readmodels::funnel::Position;
use spineledger_readmodels::statistics::Dimension;
use spineledger_readmodels::{PlanPhase, ResponderStatus, ToleranceTrend};

use crate::v1;

/// One enum in both directions: `name: v1::Proto <-> Domain { ProtoVariant <-> DomainVariant, … }`.
/// The proto enum's `Unspecified` is left out of the table: it is `None` incoming and
/// never produced outgoing.
macro_rules! enum_map {
    ($(
        $(#[$doc:meta])*
        $name:ident: v1::$proto:ident <-> $domain:ident {
            $($proto_variant:ident <-> $domain_variant:ident),+ $(,)?
        }
    )+) => {$(
        $(#[$doc])*
        pub mod $name {
            use super::*;

            /// The domain value of a proto value; `None` for `*_UNSPECIFIED`.
            #[must_use]
            pub fn from_proto(raw: v1::$proto) -> Option<$domain> {
                match raw {
                    v1::$proto::Unspecified => None,
                    $(v1::$proto::$proto_variant => Some($domain::$domain_variant),)+
                }
            }

            /// The proto value of a domain value.
            #[must_use]
            pub fn to_proto(value: $domain) -> v1::$proto {
                match value {
                    $($domain::$domain_variant => v1::$proto::$proto_variant,)+
                }
            }
        }
    )+};
}

enum_map! {
    /// Units of a traction force.
    force_unit: v1::ForceUnit <-> ForceUnit {
        Newton <-> Newtons,
        KilogramForce <-> KilogramForce,
        PoundForce <-> PoundForce,
    }

    /// The side of a straight leg raise.
    side: v1::Side <-> Side {
        Left <-> Left,
        Right <-> Right,
    }

    /// Lumbar and sacral levels.
    spinal_level: v1::SpinalLevel <-> SpinalLevel {
        L1 <-> L1,
        L2 <-> L2,
        L3 <-> L3,
        L4 <-> L4,
        L5 <-> L5,
        S1 <-> S1,
    }

    /// The code system of a diagnosis.
    code_system: v1::CodeSystem <-> CodeSystem {
        Icd10 <-> Icd10,
        SnomedCt <-> SnomedCt,
    }

    /// The screened contraindications.
    contraindication: v1::Contraindication <-> Contraindication {
        Pregnancy <-> Pregnancy,
        VertebralFracture <-> VertebralFracture,
        AdvancedOsteoporosis <-> AdvancedOsteoporosis,
        SpinalFusionOrImplant <-> SpinalFusionOrImplant,
        SpinalInfection <-> SpinalInfection,
        SpinalTumour <-> SpinalTumour,
        CaudaEquinaSigns <-> CaudaEquinaSigns,
        AnticoagulantTherapy <-> AnticoagulantTherapy,
        PriorFailedBackSurgery <-> PriorFailedBackSurgery,
    }

    /// The finding of a screened contraindication.
    finding: v1::Finding <-> Finding {
        Present <-> Present,
        Absent <-> Absent,
        Unknown <-> Unknown,
    }

    /// A patient's sex (UNSPECIFIED: not recorded).
    sex: v1::Sex <-> Sex {
        Female <-> Female,
        Male <-> Male,
        Other <-> Other,
        Unknown <-> Unknown,
    }

    /// The traction mode of a session.
    session_mode: v1::SessionMode <-> SessionMode {
        Static <-> Static,
        Intermittent <-> Intermittent,
        Cyclic <-> Cyclic,
        Progressive <-> Progressive,
    }

    /// How a session was tolerated.
    tolerance: v1::Tolerance <-> Tolerance {
        Good <-> Good,
        Fair <-> Fair,
        Discomfort <-> Discomfort,
        StoppedEarly <-> StoppedEarly,
    }

    /// The severity of an adverse event.
    severity: v1::Severity <-> Severity {
        Mild <-> Mild,
        Moderate <-> Moderate,
        Severe <-> Severe,
    }

    /// Why a session was missed.
    missed_reason: v1::MissedReason <-> MissedReason {
        PatientCancelled <-> PatientCancelled,
        NoShow <-> NoShow,
        ClinicCancelled <-> ClinicCancelled,
        Illness <-> Illness,
        Other <-> Other,
    }

    /// Sciatica at outcome (UNSPECIFIED: not recorded).
    sciatica: v1::SciaticaSymptoms <-> SciaticaSymptoms {
        None <-> None,
        Improved <-> Improved,
        Unchanged <-> Unchanged,
        Worse <-> Worse,
    }

    /// The kind of a home-care instruction.
    home_care_kind: v1::HomeCareKind <-> HomeCareKind {
        Exercise <-> Exercise,
        Stretching <-> Stretching,
        Posture <-> Posture,
        IceHeat <-> IceHeat,
        ActivityModification <-> ActivityModification,
        Walking <-> Walking,
        Other <-> Other,
    }

    /// A reassessment's recommendation.
    recommendation: v1::Recommendation <-> Recommendation {
        ContinueCurrentPlan <-> ContinueCurrentPlan,
        ChangeFrequency <-> ChangeFrequency,
        Discharge <-> Discharge,
    }

    /// A plan's session frequency.
    frequency: v1::Frequency <-> Frequency {
        Intensive <-> Intensive,
        Tapering <-> Tapering,
        Maintenance <-> Maintenance,
        AsNeeded <-> AsNeeded,
    }

    /// Why an episode was discharged.
    discharge_reason: v1::DischargeReason <-> DischargeReason {
        GoalsMet <-> GoalsMet,
        Plateau <-> Plateau,
        SelfDischarge <-> SelfDischarge,
        Referred <-> Referred,
        AdverseEvent <-> AdverseEvent,
        LostToFollowUp <-> LostToFollowUp,
    }

    /// A treatment plan's phase (incoming: a listing's filter, UNSPECIFIED any phase).
    plan_phase: v1::PlanPhase <-> PlanPhase {
        AwaitingPlan <-> AwaitingPlan,
        Initial <-> Initial,
        Intensive <-> Intensive,
        Tapering <-> Tapering,
        Maintenance <-> Maintenance,
        AsNeeded <-> AsNeeded,
        Discharged <-> Discharged,
    }

    /// The trend of recent tolerances (outgoing only in the API).
    tolerance_trend: v1::ToleranceTrend <-> ToleranceTrend {
        Improving <-> Improving,
        Stable <-> Stable,
        Worsening <-> Worsening,
        Unknown <-> Unknown,
    }

    /// Whether an episode responded (outgoing only in the API).
    responder: v1::ResponderStatus <-> ResponderStatus {
        NotAssessed <-> NotAssessed,
        Responder <-> Responder,
        NonResponder <-> NonResponder,
    }

    /// A statistics grouping dimension.
    dimension: v1::StatisticsDimension <-> Dimension {
        Clinic <-> Clinic,
        Diagnosis <-> Diagnosis,
        InitialSessions <-> InitialSessions,
        FrequencyPhase <-> FrequencyPhase,
        AdherenceBand <-> AdherenceBand,
        AgeBand <-> AgeBand,
    }

    /// The outcome a case-mix comparison models (outgoing only in the API).
    case_mix_measure: v1::CaseMixMeasure <-> Measure {
        NrsResponder <-> NrsResponder,
        NrsChange <-> NrsChange,
        OdiChange <-> OdiChange,
    }

    /// Where a clinic lies in a funnel plot (outgoing only in the API).
    funnel_position: v1::FunnelPosition <-> Position {
        Below998 <-> BelowOuter,
        Below95 <-> BelowInner,
        Within <-> Within,
        Above95 <-> AboveInner,
        Above998 <-> AboveOuter,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every proto value but UNSPECIFIED maps to a domain value and back to itself.
    macro_rules! round_trips {
        ($($name:ident: $proto:ident),+ $(,)?) => {$(
            for number in 0..64 {
                let Ok(raw) = v1::$proto::try_from(number) else { continue };
                match $name::from_proto(raw) {
                    None => assert_eq!(raw, v1::$proto::Unspecified),
                    Some(value) => assert_eq!($name::to_proto(value), raw),
                }
            }
        )+};
    }

    #[test]
    fn both_directions_are_inverses() {
        round_trips!(
            force_unit: ForceUnit,
            side: Side,
            spinal_level: SpinalLevel,
            code_system: CodeSystem,
            contraindication: Contraindication,
            finding: Finding,
            sex: Sex,
            session_mode: SessionMode,
            tolerance: Tolerance,
            severity: Severity,
            missed_reason: MissedReason,
            sciatica: SciaticaSymptoms,
            home_care_kind: HomeCareKind,
            recommendation: Recommendation,
            frequency: Frequency,
            discharge_reason: DischargeReason,
            plan_phase: PlanPhase,
            tolerance_trend: ToleranceTrend,
            responder: ResponderStatus,
            dimension: StatisticsDimension,
            case_mix_measure: CaseMixMeasure,
            funnel_position: FunnelPosition,
        );
    }
}
