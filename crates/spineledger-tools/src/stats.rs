//! `spineledger stats`: outcome statistics fetched through the gRPC API and printed as a
//! table (for a person), CSV (for a spreadsheet) or JSON (for a program).

use std::fmt::Write as _;

use spineledger_api::client::BearerToken;
use spineledger_api::v1;
use spineledger_api::v1::get_outcome_statistics_request::AsOf;
use spineledger_api::v1::outcome_statistics_service_client::OutcomeStatisticsServiceClient;
use spineledger_readmodels::statistics::Dimension;
use uuid::Uuid;

/// Which statistics to ask for.
#[derive(Debug, Clone, Default)]
pub struct StatsQuery {
    /// Empty: every clinic the token grants.
    pub clinics: Vec<Uuid>,
    /// The dimensions to group by; empty: one group.
    pub group_by: Vec<Dimension>,
    /// The first month counted (the first of a month).
    pub from_month: Option<chrono::NaiveDate>,
    /// The first month no longer counted.
    pub to_month: Option<chrono::NaiveDate>,
    /// As of this global position.
    pub as_of_position: Option<i64>,
    /// As of these positions, clinic by clinic.
    pub as_of_clinic_positions: Vec<(Uuid, i64)>,
    /// As of this time (events recorded at or before).
    pub as_of: Option<chrono::DateTime<chrono::Utc>>,
}

/// Midnight UTC of `month`'s date, as a request timestamp (the server checks it is the
/// first of a month).
pub(crate) fn month_start(month: Option<chrono::NaiveDate>) -> Option<prost_types::Timestamp> {
    let at = month?.and_hms_opt(0, 0, 0)?.and_utc();
    Some(prost_types::Timestamp {
        seconds: at.timestamp(),
        nanos: 0,
    })
}

/// How to print them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Aligned columns for a terminal.
    Table,
    /// Comma-separated values for a spreadsheet.
    Csv,
    /// JSON for a program.
    Json,
}

/// Asks the server over `channel` for the statistics and renders them.
///
/// # Errors
/// No connection, or the server's refusal (its code and message).
pub async fn fetch_and_render(
    channel: tonic::transport::Channel,
    token: &BearerToken,
    query: &StatsQuery,
    format: Format,
) -> anyhow::Result<String> {
    let mut client = OutcomeStatisticsServiceClient::with_interceptor(channel, token.clone());
    Ok(render(&fetch(&mut client, query).await?, format))
}

/// A statistics client with a bearer token.
pub type StatisticsClient = OutcomeStatisticsServiceClient<
    tonic::service::interceptor::InterceptedService<tonic::transport::Channel, BearerToken>,
>;

/// Asks the server for the statistics `query` describes.
///
/// # Errors
/// The server's refusal (its code and message), or no connection.
pub async fn fetch(
    client: &mut StatisticsClient,
    query: &StatsQuery,
) -> anyhow::Result<v1::GetOutcomeStatisticsResponse> {
    let request = v1::GetOutcomeStatisticsRequest {
        clinic_ids: query.clinics.iter().map(Uuid::to_string).collect(),
        group_by: query
            .group_by
            .iter()
            .map(|dimension| {
                spineledger_api::convert::enums::dimension::to_proto(*dimension) as i32
            })
            .collect(),
        evaluated_from: month_start(query.from_month),
        evaluated_to: month_start(query.to_month),
        min_position: None,
        as_of: match (query.as_of_position, query.as_of) {
            (Some(position), _) => Some(AsOf::AsOfPosition(position)),
            (None, Some(at)) => Some(AsOf::AsOfRecordedAt(prost_types::Timestamp {
                seconds: at.timestamp(),
                nanos: i32::try_from(at.timestamp_subsec_nanos()).unwrap_or(0),
            })),
            (None, None) if !query.as_of_clinic_positions.is_empty() => {
                Some(AsOf::AsOfPositions(v1::ClinicPositions {
                    positions: query
                        .as_of_clinic_positions
                        .iter()
                        .map(|(clinic, position)| v1::ClinicPosition {
                            clinic_id: clinic.to_string(),
                            position: *position,
                        })
                        .collect(),
                }))
            }
            (None, None) => None,
        },
    };
    Ok(client
        .get_outcome_statistics(request)
        .await
        .map_err(|status| anyhow::anyhow!("{:?}: {}", status.code(), status.message()))?
        .into_inner())
}

/// Renders a statistics response.
pub fn render(response: &v1::GetOutcomeStatisticsResponse, format: Format) -> String {
    match format {
        Format::Table => table(response),
        Format::Csv => csv(response),
        Format::Json => json(response).to_string() + "\n",
    }
}

fn group_label(group: &v1::OutcomeGroup) -> String {
    if group.key.is_empty() {
        return "all episodes".into();
    }
    group
        .key
        .iter()
        .map(|key| {
            let dimension = v1::StatisticsDimension::try_from(key.dimension)
                .map_or("unknown", |d| d.as_str_name());
            let dimension = dimension
                .trim_start_matches("STATISTICS_DIMENSION_")
                .to_ascii_lowercase();
            format!("{dimension}={}", key.value)
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn mean(value: Option<&v1::Mean>) -> String {
    value.map_or_else(
        || "suppressed".into(),
        |m| format!("{:.2} (n={})", m.mean, m.n),
    )
}

fn rate(value: Option<&v1::Rate>) -> String {
    value.map_or_else(
        || "suppressed".into(),
        |r| format!("{:.1} % ({}/{})", r.rate * 100.0, r.count, r.denominator),
    )
}

/// The log the figures reflect, clinic by clinic: `clinic=position;…`.
fn reflects(response: &v1::GetOutcomeStatisticsResponse) -> String {
    response
        .reflects
        .iter()
        .map(|r| format!("{}={}", r.clinic_id, r.position))
        .collect::<Vec<_>>()
        .join(";")
}

fn table(response: &v1::GetOutcomeStatisticsResponse) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Outcome statistics — groups and means built on fewer than {} values are suppressed.\n\
         Change = follow-up minus baseline (negative is improvement). Responders: NRS >= 2 \
         points or >= 30 %, ODI >= 10 points or >= 30 % (Ostelo et al. 2008).\n\
         Reflects the log up to (clinic=global position): {}",
        response.min_cell_size,
        reflects(response)
    );
    for group in &response.groups {
        let _ = writeln!(out, "\n== {}", group_label(group));
        let Some(stats) = &group.statistics else {
            let _ = writeln!(
                out,
                "   suppressed (no clinic-month of at least {} episodes could be shown)",
                response.min_cell_size
            );
            continue;
        };
        let rows: Vec<(&str, String)> = vec![
            ("episodes", stats.episodes.to_string()),
            (
                "initial phase completed",
                stats.initial_phase_completed.to_string(),
            ),
            ("baseline NRS", mean(stats.baseline_nrs.as_ref())),
            ("baseline ODI", mean(stats.baseline_odi.as_ref())),
            (
                "NRS change at session 4",
                mean(stats.nrs_change_session_4.as_ref()),
            ),
            (
                "NRS change at session 6",
                mean(stats.nrs_change_session_6.as_ref()),
            ),
            (
                "NRS change at discharge",
                mean(stats.nrs_change_discharge.as_ref()),
            ),
            (
                "ODI change at session 4",
                mean(stats.odi_change_session_4.as_ref()),
            ),
            (
                "ODI change at session 6",
                mean(stats.odi_change_session_6.as_ref()),
            ),
            (
                "ODI change at discharge",
                mean(stats.odi_change_discharge.as_ref()),
            ),
            ("NRS responders", rate(stats.nrs_responders.as_ref())),
            ("ODI responders", rate(stats.odi_responders.as_ref())),
            (
                "median sessions to NRS response",
                stats
                    .median_sessions_to_nrs_response
                    .map_or_else(|| "suppressed".into(), |m| format!("{m:.1}")),
            ),
            ("missed sessions", stats.missed_sessions.to_string()),
            (
                "adverse events",
                format!(
                    "{} (in {} episodes)",
                    stats.adverse_events, stats.episodes_with_adverse_events
                ),
            ),
            ("ongoing", stats.ongoing.to_string()),
            ("drop-out", stats.drop_out.to_string()),
            (
                "episodes with corrected scores",
                stats.episodes_with_corrected_scores.to_string(),
            ),
        ];
        for (name, value) in rows {
            let _ = writeln!(out, "   {name:<34} {value}");
        }
        let discharges: Vec<String> = stats
            .discharges_by_reason
            .iter()
            .map(|c| format!("{} {}", c.value, c.count))
            .collect();
        let _ = writeln!(
            out,
            "   {:<34} {}",
            "discharges by reason",
            discharges.join(", ")
        );
        let bands: Vec<String> = stats
            .adherence_bands
            .iter()
            .map(|c| format!("{} {}", c.value, c.count))
            .collect();
        // The server leaves them out of groups (a cross-tabulation); a server of an
        // older version may still send them.
        if !bands.is_empty() {
            let _ = writeln!(out, "   {:<34} {}", "adherence bands", bands.join(", "));
        }
        let trajectory: Vec<String> = stats
            .pain_trajectory
            .iter()
            .map(|point| {
                point.pain_before.as_ref().map_or_else(
                    || format!("{}:-", point.session_number),
                    |m| format!("{}:{:.1}", point.session_number, m.mean),
                )
            })
            .collect();
        let _ = writeln!(
            out,
            "   {:<34} {}",
            "mean NRS by session",
            trajectory.join(" ")
        );
    }
    out
}

const CSV_HEADER: &str = "group,suppressed,episodes,initial_phase_completed,\
baseline_nrs_mean,baseline_nrs_n,baseline_odi_mean,baseline_odi_n,\
nrs_change_s4_mean,nrs_change_s4_n,nrs_change_s6_mean,nrs_change_s6_n,\
nrs_change_discharge_mean,nrs_change_discharge_n,odi_change_s4_mean,odi_change_s4_n,\
odi_change_s6_mean,odi_change_s6_n,odi_change_discharge_mean,odi_change_discharge_n,\
nrs_responders,nrs_responder_denominator,odi_responders,odi_responder_denominator,\
median_sessions_to_nrs_response,missed_sessions,adverse_events,episodes_with_adverse_events,\
ongoing,drop_out,episodes_with_corrected_scores";

fn csv_quote(value: &str) -> String {
    if value.contains([',', '"', '\n']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value.to_owned()
    }
}

/// The columns after [`CSV_HEADER`], named by what the response holds (the API lists every
/// discharge reason, adherence band and trajectory session, in a fixed order): a count
/// per discharge reason and per adherence band, then the mean pre-session NRS and its n
/// per session number.
struct ListColumns {
    discharges: Vec<String>,
    bands: Vec<String>,
    sessions: Vec<i32>,
}

impl ListColumns {
    fn of(response: &v1::GetOutcomeStatisticsResponse) -> Self {
        fn add<T: PartialEq + Clone>(seen: &mut Vec<T>, value: &T) {
            if !seen.contains(value) {
                seen.push(value.clone());
            }
        }
        let mut columns = Self {
            discharges: Vec::new(),
            bands: Vec::new(),
            sessions: Vec::new(),
        };
        for stats in response.groups.iter().filter_map(|g| g.statistics.as_ref()) {
            for count in &stats.discharges_by_reason {
                add(&mut columns.discharges, &count.value);
            }
            for count in &stats.adherence_bands {
                add(&mut columns.bands, &count.value);
            }
            for point in &stats.pain_trajectory {
                add(&mut columns.sessions, &point.session_number);
            }
        }
        columns
    }

    fn header(&self) -> String {
        let mut names: Vec<String> = Vec::new();
        names.extend(self.discharges.iter().map(|v| format!("discharges_{v}")));
        names.extend(self.bands.iter().map(|v| format!("adherence_{v}")));
        for session in &self.sessions {
            names.push(format!("nrs_before_session_{session}_mean"));
            names.push(format!("nrs_before_session_{session}_n"));
        }
        names
            .iter()
            .map(|name| format!(",{}", csv_quote(name)))
            .collect()
    }

    fn cells(&self, stats: &v1::OutcomeStatistics) -> Vec<String> {
        let count_of = |counts: &[v1::Count], value: &str| {
            counts
                .iter()
                .find(|count| count.value == value)
                .map_or_else(String::new, |count| count.count.to_string())
        };
        let mut cells: Vec<String> = Vec::new();
        cells.extend(
            self.discharges
                .iter()
                .map(|v| count_of(&stats.discharges_by_reason, v)),
        );
        cells.extend(
            self.bands
                .iter()
                .map(|v| count_of(&stats.adherence_bands, v)),
        );
        for session in &self.sessions {
            let mean = stats
                .pain_trajectory
                .iter()
                .find(|point| point.session_number == *session)
                .and_then(|point| point.pain_before.as_ref());
            // Blank where suppressed (fewer than the minimum cell of sessions).
            cells.push(mean.map_or_else(String::new, |m| format!("{:.4}", m.mean)));
            cells.push(mean.map_or_else(String::new, |m| m.n.to_string()));
        }
        cells
    }
}

fn csv(response: &v1::GetOutcomeStatisticsResponse) -> String {
    let lists = ListColumns::of(response);
    let mut out = String::from(CSV_HEADER);
    out.push_str(&lists.header());
    out.push_str(",reflects\n");
    // The columns before `reflects`.
    let width = out.trim_end().split(',').count() - 1;
    let reflects = csv_quote(&reflects(response));
    for group in &response.groups {
        let mut cells = vec![csv_quote(&group_label(group))];
        match &group.statistics {
            None => {
                cells.push("true".into());
                cells.resize(width, String::new());
            }
            Some(stats) => {
                let mean_cells = |m: Option<&v1::Mean>| {
                    m.map_or_else(
                        || [String::new(), String::new()],
                        |m| [format!("{:.4}", m.mean), m.n.to_string()],
                    )
                };
                let rate_cells = |r: Option<&v1::Rate>| {
                    r.map_or_else(
                        || [String::new(), String::new()],
                        |r| [r.count.to_string(), r.denominator.to_string()],
                    )
                };
                cells.push("false".into());
                cells.push(stats.episodes.to_string());
                cells.push(stats.initial_phase_completed.to_string());
                for m in [
                    &stats.baseline_nrs,
                    &stats.baseline_odi,
                    &stats.nrs_change_session_4,
                    &stats.nrs_change_session_6,
                    &stats.nrs_change_discharge,
                    &stats.odi_change_session_4,
                    &stats.odi_change_session_6,
                    &stats.odi_change_discharge,
                ] {
                    cells.extend(mean_cells(m.as_ref()));
                }
                cells.extend(rate_cells(stats.nrs_responders.as_ref()));
                cells.extend(rate_cells(stats.odi_responders.as_ref()));
                cells.push(
                    stats
                        .median_sessions_to_nrs_response
                        .map_or_else(String::new, |m| format!("{m}")),
                );
                cells.push(stats.missed_sessions.to_string());
                cells.push(stats.adverse_events.to_string());
                cells.push(stats.episodes_with_adverse_events.to_string());
                cells.push(stats.ongoing.to_string());
                cells.push(stats.drop_out.to_string());
                cells.push(stats.episodes_with_corrected_scores.to_string());
                cells.extend(lists.cells(stats));
            }
        }
        cells.resize(width, String::new());
        cells.push(reflects.clone());
        out.push_str(&cells.join(","));
        out.push('\n');
    }
    out
}

fn json_mean(value: Option<&v1::Mean>) -> serde_json::Value {
    value.map_or(
        serde_json::Value::Null,
        |m| serde_json::json!({ "n": m.n, "mean": m.mean }),
    )
}

fn json_rate(value: Option<&v1::Rate>) -> serde_json::Value {
    value.map_or(
        serde_json::Value::Null,
        |r| serde_json::json!({ "count": r.count, "denominator": r.denominator, "rate": r.rate }),
    )
}

fn json_counts(counts: &[v1::Count]) -> serde_json::Value {
    counts
        .iter()
        .map(|c| (c.value.clone(), serde_json::Value::from(c.count)))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

fn json(response: &v1::GetOutcomeStatisticsResponse) -> serde_json::Value {
    let groups: Vec<serde_json::Value> = response
        .groups
        .iter()
        .map(|group| {
            let statistics = group
                .statistics
                .as_ref()
                .map_or(serde_json::Value::Null, |s| {
                    serde_json::json!({
                        "episodes": s.episodes,
                        "initial_phase_completed": s.initial_phase_completed,
                        "baseline_nrs": json_mean(s.baseline_nrs.as_ref()),
                        "baseline_odi": json_mean(s.baseline_odi.as_ref()),
                        "nrs_change_session_4": json_mean(s.nrs_change_session_4.as_ref()),
                        "nrs_change_session_6": json_mean(s.nrs_change_session_6.as_ref()),
                        "nrs_change_discharge": json_mean(s.nrs_change_discharge.as_ref()),
                        "odi_change_session_4": json_mean(s.odi_change_session_4.as_ref()),
                        "odi_change_session_6": json_mean(s.odi_change_session_6.as_ref()),
                        "odi_change_discharge": json_mean(s.odi_change_discharge.as_ref()),
                        "nrs_responders": json_rate(s.nrs_responders.as_ref()),
                        "odi_responders": json_rate(s.odi_responders.as_ref()),
                        "median_sessions_to_nrs_response": s.median_sessions_to_nrs_response,
                        "pain_trajectory": s.pain_trajectory.iter().map(|p| serde_json::json!({
                            "session_number": p.session_number,
                            "pain_before": json_mean(p.pain_before.as_ref()),
                        })).collect::<Vec<_>>(),
                        "adherence_bands": json_counts(&s.adherence_bands),
                        "missed_sessions": s.missed_sessions,
                        "adverse_events": s.adverse_events,
                        "episodes_with_adverse_events": s.episodes_with_adverse_events,
                        "discharges_by_reason": json_counts(&s.discharges_by_reason),
                        "ongoing": s.ongoing,
                        "drop_out": s.drop_out,
                        "episodes_with_corrected_scores": s.episodes_with_corrected_scores,
                    })
                });
            serde_json::json!({
                "group": group_label(group),
                "suppressed": group.suppressed,
                "statistics": statistics,
            })
        })
        .collect();
    let reflects: serde_json::Map<String, serde_json::Value> = response
        .reflects
        .iter()
        .map(|r| (r.clinic_id.clone(), serde_json::Value::from(r.position)))
        .collect();
    serde_json::json!({
        "min_cell_size": response.min_cell_size,
        "reflects": reflects,
        "groups": groups,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response() -> v1::GetOutcomeStatisticsResponse {
        v1::GetOutcomeStatisticsResponse {
            min_cell_size: 8,
            groups: vec![
                v1::OutcomeGroup {
                    key: vec![v1::GroupKey {
                        dimension: v1::StatisticsDimension::Diagnosis as i32,
                        value: "ICD10:M51.2".into(),
                    }],
                    episodes: Some(20),
                    suppressed: false,
                    statistics: Some(v1::OutcomeStatistics {
                        episodes: 20,
                        baseline_nrs: Some(v1::Mean { n: 20, mean: 6.5 }),
                        discharges_by_reason: vec![
                            v1::Count {
                                value: "goals_met".into(),
                                count: 11,
                            },
                            v1::Count {
                                value: "plateau".into(),
                                count: 3,
                            },
                        ],
                        adherence_bands: vec![v1::Count {
                            value: "high".into(),
                            count: 9,
                        }],
                        pain_trajectory: vec![
                            v1::TrajectoryPoint {
                                session_number: 1,
                                pain_before: Some(v1::Mean { n: 20, mean: 6.25 }),
                            },
                            v1::TrajectoryPoint {
                                session_number: 2,
                                pain_before: None,
                            },
                        ],
                        ..Default::default()
                    }),
                },
                v1::OutcomeGroup {
                    key: vec![v1::GroupKey {
                        dimension: v1::StatisticsDimension::Diagnosis as i32,
                        value: "SNOMED:23056005".into(),
                    }],
                    episodes: None,
                    suppressed: true,
                    statistics: None,
                },
            ],
            reflects: vec![v1::ClinicPosition {
                clinic_id: "3f1c2d9e-0000-4000-8000-000000000001".into(),
                position: 4021,
            }],
        }
    }

    #[test]
    fn the_table_shows_numbers_of_shown_groups_and_only_the_key_of_suppressed_ones() {
        let table = render(&response(), Format::Table);
        assert!(table.contains("== diagnosis=ICD10:M51.2"));
        assert!(table.contains("6.50 (n=20)"));
        assert!(table.contains("== diagnosis=SNOMED:23056005\n   suppressed"));
    }

    #[test]
    fn every_csv_row_has_as_many_cells_as_the_header() {
        let csv = render(&response(), Format::Csv);
        let columns = csv
            .lines()
            .next()
            .map_or(0, |header| header.split(',').count());
        // The fixed columns, 2 discharge reasons, 1 adherence band, 2 x 2 trajectory
        // columns, and where the figures stand in the log.
        assert_eq!(columns, CSV_HEADER.split(',').count() + 2 + 1 + 4 + 1);
        assert!(
            csv.lines()
                .nth(1)
                .is_some_and(|row| { row.ends_with(",3f1c2d9e-0000-4000-8000-000000000001=4021") })
        );
        for line in csv.lines() {
            assert_eq!(line.split(',').count(), columns, "{line}");
        }
        assert!(
            csv.lines()
                .nth(2)
                .is_some_and(|row| row.starts_with("diagnosis=SNOMED:23056005,true,"))
        );
    }

    #[test]
    fn the_csv_holds_the_discharges_adherence_and_trajectory_the_table_shows() {
        let csv = render(&response(), Format::Csv);
        let mut lines = csv.lines();
        let header: Vec<&str> = lines.next().expect("header").split(',').collect();
        let row: Vec<&str> = lines.next().expect("a shown group").split(',').collect();
        let cell = |name: &str| {
            header
                .iter()
                .position(|column| *column == name)
                .map(|index| row[index])
        };
        assert_eq!(cell("discharges_goals_met"), Some("11"));
        assert_eq!(cell("discharges_plateau"), Some("3"));
        assert_eq!(cell("adherence_high"), Some("9"));
        assert_eq!(cell("nrs_before_session_1_mean"), Some("6.2500"));
        assert_eq!(cell("nrs_before_session_1_n"), Some("20"));
        assert_eq!(
            cell("nrs_before_session_2_mean"),
            Some(""),
            "suppressed: blank"
        );
        let table = render(&response(), Format::Table);
        assert!(table.contains("goals_met 11, plateau 3"), "{table}");
        assert!(table.contains("high 9"), "{table}");
        assert!(table.contains("1:6.2 2:-"), "{table}");
    }

    #[test]
    fn json_marks_suppressed_groups_without_statistics() {
        let json = json(&response());
        assert_eq!(json["groups"][1]["suppressed"], true);
        assert!(json["groups"][1]["statistics"].is_null());
        assert_eq!(json["groups"][0]["statistics"]["baseline_nrs"]["mean"], 6.5);
    }
}
