//! `spineledger report`: the outcome statistics and the case-mix comparison, fetched
//! through the API with an analyst's token, written as one self-contained HTML file.
//!
//! The charts are SVG drawn by `plotters` (its SVG backend, no font files: text is left to
//! the browser) and inlined, with the styles, into the page: it opens with no network, no
//! script and nothing beside it. Every chart states its definition and the log position
//! (per clinic) its figures reflect; every figure is what the API released (suppression
//! included), so the report shows nothing an analyst could not ask for.

use std::fmt::Write as _;

use anyhow::Context as _;
use chrono::{DateTime, NaiveDate, Utc};
use plotters::coord::Shift;
use plotters::prelude::*;
use spineledger_api::client::BearerToken;
use spineledger_api::v1;
use spineledger_api::v1::outcome_statistics_service_client::OutcomeStatisticsServiceClient;
use spineledger_readmodels::funnel;
use spineledger_readmodels::statistics::Dimension;
use uuid::Uuid;

use crate::stats::{self, StatsQuery};

/// What the report covers.
#[derive(Debug, Clone, Default)]
pub struct ReportQuery {
    /// Empty: every clinic the token grants.
    pub clinics: Vec<Uuid>,
    /// The first month counted (the first of a month).
    pub from_month: Option<NaiveDate>,
    /// The first month no longer counted.
    pub to_month: Option<NaiveDate>,
}

/// The answers a report is drawn from.
#[derive(Debug, Clone)]
pub struct ReportData {
    /// Every episode as one group.
    pub total: v1::GetOutcomeStatisticsResponse,
    /// Grouped by clinic.
    pub by_clinic: v1::GetOutcomeStatisticsResponse,
    /// Grouped by adherence band.
    pub by_adherence: v1::GetOutcomeStatisticsResponse,
    /// The case-mix comparison.
    pub comparison: v1::CompareClinicsResponse,
}

/// Fetches what the report shows, over `channel` with `token`.
///
/// # Errors
/// No connection, or a refusal of the server (code and message).
pub async fn fetch(
    channel: tonic::transport::Channel,
    token: &BearerToken,
    query: &ReportQuery,
) -> anyhow::Result<ReportData> {
    let mut client = OutcomeStatisticsServiceClient::with_interceptor(channel, token.clone());
    let grouped = |group_by: Vec<Dimension>| StatsQuery {
        clinics: query.clinics.clone(),
        group_by,
        from_month: query.from_month,
        to_month: query.to_month,
        ..StatsQuery::default()
    };
    let total = stats::fetch(&mut client, &grouped(Vec::new())).await?;
    let by_clinic = stats::fetch(&mut client, &grouped(vec![Dimension::Clinic])).await?;
    let by_adherence = stats::fetch(&mut client, &grouped(vec![Dimension::AdherenceBand])).await?;
    let comparison = client
        .compare_clinics(v1::CompareClinicsRequest {
            clinic_ids: query.clinics.iter().map(Uuid::to_string).collect(),
            evaluated_from: stats::month_start(query.from_month),
            evaluated_to: stats::month_start(query.to_month),
        })
        .await
        .map_err(|status| anyhow::anyhow!("{:?}: {}", status.code(), status.message()))?
        .into_inner();
    Ok(ReportData {
        total,
        by_clinic,
        by_adherence,
        comparison,
    })
}

/// Chart size in pixels.
const WIDTH: u32 = 760;
const HEIGHT: u32 = 360;
/// The z of a 95 % interval.
const Z_95: f64 = 1.959_963_984_540_054;

const INK: RGBColor = RGBColor(33, 37, 41);
const BLUE: RGBColor = RGBColor(31, 101, 170);
const ORANGE: RGBColor = RGBColor(214, 110, 20);
const GREY: RGBColor = RGBColor(120, 120, 120);
const LIGHT: RGBColor = RGBColor(170, 190, 215);

/// Renders the report as one HTML document.
///
/// # Errors
/// A chart that could not be drawn.
pub fn render(
    data: &ReportData,
    query: &ReportQuery,
    generated_at: DateTime<Utc>,
) -> anyhow::Result<String> {
    let total = data
        .total
        .groups
        .first()
        .and_then(|group| group.statistics.as_ref());
    let mut page = String::new();
    page.push_str(HEAD);
    let window = match (query.from_month, query.to_month) {
        (None, None) => "every month".to_owned(),
        (from, to) => format!(
            "first evaluated from {} to before {}",
            from.map_or_else(|| "the start".to_owned(), |d| d.to_string()),
            to.map_or_else(|| "now".to_owned(), |d| d.to_string())
        ),
    };
    let _ = write!(
        page,
        "<header><h1>Outcome report</h1>\n<p>Generated {generated} from the spineledger API. \
         Episodes {window}; {episodes} episodes in the released parts. A part (one clinic's \
         episodes first evaluated in one month) of fewer than {k} episodes is withheld from \
         every figure, and means of fewer than {k} values are not shown.</p>\n\
         <p class=\"caveat\">These figures describe what the clinics recorded. They compare \
         clinics with each other and with what their patients could be expected to show; \
         they are not evidence that spinal decompression works or does not.</p></header>\n",
        generated = escape(&generated_at.format("%Y-%m-%d %H:%M UTC").to_string()),
        window = escape(&window),
        episodes = total.map_or(0, |t| t.episodes),
        k = data.total.min_cell_size,
    );
    let reflects_total = reflects(&data.total.reflects);
    section(
        &mut page,
        "pain-trajectory",
        "Pain before each session",
        &pain_trajectory(total)?,
        "Mean back-pain NRS (0-10) recorded before each session, by the session's number in \
         the order care happened (sessions 1-12). A session's mean is shown only when at \
         least k episodes had that session.",
        &reflects_total,
    );
    section(
        &mut page,
        "change",
        "Change in pain and disability",
        &changes(total)?,
        "Mean change, follow-up minus baseline (negative is improvement), of back-pain NRS \
         (0-10) and the Oswestry Disability Index (0-100), at the follow-up after exactly 4 \
         and 6 sessions and at discharge. Each mean is over the episodes with that \
         follow-up; bars are missing where fewer than k had one.",
        &reflects_total,
    );
    section(
        &mut page,
        "responders",
        "Responders by clinic, with 95 % confidence intervals",
        &responders(&data.by_clinic)?,
        "Share of each clinic's assessed episodes whose latest follow-up improved by a \
         clinically meaningful amount (Ostelo et al., Spine 2008;33:90-94): NRS by at \
         least 2 points or 30 %, ODI by at least 10 points or 30 %. Intervals are Wilson \
         score intervals. Crude rates: not adjusted for case mix (see the funnel plots).",
        &reflects(&data.by_clinic.reflects),
    );
    for comparison in &data.comparison.comparisons {
        let (title, definition) = funnel_text(comparison);
        let body = match &comparison.model {
            Some(model) => funnel_plot(comparison, model)? + &model_table(comparison, model),
            None => format!(
                "<p class=\"empty\">No model: {}.</p>",
                escape(&comparison.not_fitted_reason)
            ),
        };
        section(
            &mut page,
            &format!("funnel-{}", measure_name(comparison.measure)),
            &title,
            &body,
            &definition,
            &reflects(&data.comparison.reflects),
        );
    }
    section(
        &mut page,
        "discharges",
        "Discharge reasons",
        &discharges(total)?,
        "Episodes discharged, by the reason recorded at discharge. Self-discharge and loss \
         to follow-up together are the drop-out.",
        &reflects_total,
    );
    section(
        &mut page,
        "adherence",
        "Home-care adherence",
        &adherence(&data.by_adherence)?,
        "Episodes by the mean of their home-care adherence reports: low under 50 %, \
         moderate 50-79 %, high 80 % and above; none reported without a report. Bands \
         with nothing released are not shown.",
        &reflects(&data.by_adherence.reflects),
    );
    page.push_str("</body>\n</html>\n");
    Ok(page)
}

const HEAD: &str = "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\"/>\n\
<title>spineledger outcome report</title>\n<style>\n\
body { font-family: system-ui, sans-serif; color: #212529; max-width: 820px; margin: 2em auto; \
padding: 0 1em; line-height: 1.45; }\n\
h1 { font-size: 1.6em; } h2 { font-size: 1.2em; margin-top: 2em; }\n\
section { border-top: 1px solid #dee2e6; }\n\
figure { margin: 0.5em 0; } svg { max-width: 100%; height: auto; }\n\
.definition { font-size: 0.92em; } .reflects { font-size: 0.8em; color: #6c757d; }\n\
.caveat { background: #fff3cd; padding: 0.6em 0.8em; border-radius: 4px; }\n\
.empty { color: #6c757d; font-style: italic; }\n\
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0; }\n\
td, th { border: 1px solid #dee2e6; padding: 2px 6px; text-align: right; }\n\
th:first-child, td:first-child { text-align: left; }\n\
</style>\n</head>\n<body>\n";

fn section(page: &mut String, id: &str, title: &str, body: &str, definition: &str, reflects: &str) {
    let _ = write!(
        page,
        "<section id=\"{id}\">\n<h2>{title}</h2>\n{body}\n<p class=\"definition\">{definition}</p>\n\
         <p class=\"reflects\">Reflects the log up to (clinic: global position): {reflects}</p>\n\
         </section>\n",
        id = escape(id),
        title = escape(title),
        definition = escape(definition),
        reflects = escape(reflects),
    );
}

/// `clinic: position, …`, clinics by the first 8 characters of their id.
fn reflects(positions: &[v1::ClinicPosition]) -> String {
    if positions.is_empty() {
        return "no clinic".to_owned();
    }
    positions
        .iter()
        .map(|p| format!("{}: {}", short(&p.clinic_id), p.position))
        .collect::<Vec<_>>()
        .join(", ")
}

fn short(clinic_id: &str) -> String {
    clinic_id.chars().take(8).collect()
}

/// Escapes text for HTML (and XML) content and attributes.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for ch in text.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(ch),
        }
    }
    out
}

fn empty(note: &str) -> String {
    format!("<p class=\"empty\">{}</p>", escape(note))
}

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;

/// Draws one chart into an inline SVG figure.
fn figure(
    label: &str,
    draw: impl FnOnce(&Area<'_>) -> Result<(), Box<dyn std::error::Error>>,
) -> anyhow::Result<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE)
            .map_err(|e| anyhow::anyhow!("{e}"))
            .context("chart background")?;
        draw(&root).map_err(|e| anyhow::anyhow!("{label}: {e}"))?;
        root.present()
            .map_err(|e| anyhow::anyhow!("{label}: {e}"))?;
    }
    // The backend writes a bare <svg>: name the chart for assistive technology.
    let svg = svg.replacen(
        "<svg ",
        &format!("<svg role=\"img\" aria-label=\"{}\" ", escape(label)),
        1,
    );
    Ok(format!("<figure>{svg}</figure>"))
}

fn pain_trajectory(total: Option<&v1::OutcomeStatistics>) -> anyhow::Result<String> {
    let points: Vec<(f64, f64)> = total
        .map(|t| {
            t.pain_trajectory
                .iter()
                .filter_map(|p| {
                    p.pain_before
                        .as_ref()
                        .map(|m| (f64::from(p.session_number), m.mean))
                })
                .collect()
        })
        .unwrap_or_default();
    if points.is_empty() {
        return Ok(empty("No session has enough episodes to show."));
    }
    figure("Mean pain before each session", |root| {
        let mut chart = ChartBuilder::on(root)
            .margin(16)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(0.5f64..12.5f64, 0f64..10f64)?;
        chart
            .configure_mesh()
            .x_labels(12)
            .x_label_formatter(&|x| format!("{x:.0}"))
            .x_desc("session number")
            .y_desc("mean NRS before the session")
            .light_line_style(WHITE)
            .draw()?;
        chart.draw_series(LineSeries::new(
            points.iter().copied(),
            BLUE.stroke_width(2),
        ))?;
        chart.draw_series(points.iter().map(|p| Circle::new(*p, 4, BLUE.filled())))?;
        Ok(())
    })
}

fn changes(total: Option<&v1::OutcomeStatistics>) -> anyhow::Result<String> {
    let Some(total) = total else {
        return Ok(empty("Nothing released."));
    };
    let points = ["after 4 sessions", "after 6 sessions", "at discharge"];
    let nrs = [
        &total.nrs_change_session_4,
        &total.nrs_change_session_6,
        &total.nrs_change_discharge,
    ];
    let odi = [
        &total.odi_change_session_4,
        &total.odi_change_session_6,
        &total.odi_change_discharge,
    ];
    if nrs.iter().chain(&odi).all(|m| m.is_none()) {
        return Ok(empty("No follow-up has enough episodes to show."));
    }
    figure("Mean change in NRS and ODI", |root| {
        let (left, right) = root.split_horizontally(WIDTH / 2);
        for (area, means, name, colour) in [
            (&left, nrs, "NRS change (0-10 scale)", BLUE),
            (&right, odi, "ODI change (0-100 scale)", ORANGE),
        ] {
            // From the lowest mean (or 0) to the highest (or 0), with a margin.
            let (low, high) = means
                .iter()
                .filter_map(|m| m.as_ref().map(|m| m.mean))
                .fold((0f64, 0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
            let pad = ((high - low) * 0.15).max(0.5);
            let range = (low - pad)..(high + pad);
            let mut chart = ChartBuilder::on(area)
                .margin(14)
                .caption(name, ("sans-serif", 15))
                .x_label_area_size(36)
                .y_label_area_size(44)
                .build_cartesian_2d(categories(3), range)?;
            chart
                .configure_mesh()
                .disable_x_mesh()
                .x_label_formatter(&|v| match v {
                    SegmentValue::CenterOf(i) => points
                        .get(*i as usize)
                        .map_or_else(String::new, |s| (*s).to_owned()),
                    _ => String::new(),
                })
                .y_desc("mean change")
                .light_line_style(WHITE)
                .draw()?;
            chart.draw_series(means.iter().enumerate().filter_map(|(i, mean)| {
                let mean = mean.as_ref()?;
                let i = u32::try_from(i).ok()?;
                Some(bar(i, mean.mean, colour))
            }))?;
        }
        Ok(())
    })
}

/// The Wilson score interval of `count` of `n` at 95 %.
fn wilson(count: i64, n: i64) -> Option<(f64, f64)> {
    if n <= 0 {
        return None;
    }
    let n = n as f64;
    let p = count as f64 / n;
    let z2 = Z_95 * Z_95;
    let centre = (p + z2 / (2.0 * n)) / (1.0 + z2 / n);
    let half = Z_95 / (1.0 + z2 / n) * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    Some(((centre - half).max(0.0), (centre + half).min(1.0)))
}

fn clinic_of(group: &v1::OutcomeGroup) -> String {
    group
        .key
        .iter()
        .find(|k| k.dimension == v1::StatisticsDimension::Clinic as i32)
        .map_or_else(|| "all".to_owned(), |k| short(&k.value))
}

fn responders(by_clinic: &v1::GetOutcomeStatisticsResponse) -> anyhow::Result<String> {
    let rows: Vec<(String, Option<v1::Rate>, Option<v1::Rate>)> = by_clinic
        .groups
        .iter()
        .filter_map(|g| {
            let s = g.statistics.as_ref()?;
            Some((clinic_of(g), s.nrs_responders, s.odi_responders))
        })
        .collect();
    if rows.is_empty() {
        return Ok(empty("No clinic has released figures."));
    }
    let n = u32::try_from(rows.len()).unwrap_or(u32::MAX);
    let mut out = figure("Responder rates by clinic", |root| {
        let mut chart = ChartBuilder::on(root)
            .margin(16)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(0f64..f64::from(n), 0f64..1f64)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(0)
            .y_desc("share of assessed episodes")
            .y_label_formatter(&|y| format!("{:.0} %", y * 100.0))
            .light_line_style(WHITE)
            .draw()?;
        for (offset, colour, pick) in [(0.35, BLUE, 0usize), (0.65, ORANGE, 1usize)] {
            chart
                .draw_series(rows.iter().enumerate().filter_map(|(i, row)| {
                    let rate = if pick == 0 { row.1 } else { row.2 }?;
                    let (low, high) = wilson(rate.count, rate.denominator)?;
                    let x = i as f64 + offset;
                    Some(ErrorBar::new_vertical(
                        x,
                        low,
                        rate.rate,
                        high,
                        colour.filled(),
                        10,
                    ))
                }))?
                .label(if pick == 0 {
                    "NRS responders"
                } else {
                    "ODI responders"
                })
                .legend(move |(x, y)| Circle::new((x, y), 4, colour.filled()));
        }
        chart.draw_series(rows.iter().enumerate().map(|(i, row)| {
            Text::new(
                row.0.clone(),
                (i as f64 + 0.3, 0.04),
                ("sans-serif", 12).into_font().color(&INK),
            )
        }))?;
        chart
            .configure_series_labels()
            .border_style(GREY)
            .background_style(WHITE.mix(0.9))
            .position(SeriesLabelPosition::UpperRight)
            .draw()?;
        Ok(())
    })?;
    out.push_str("<table><tr><th>clinic</th><th>NRS responders</th><th>95 % CI</th><th>ODI responders</th><th>95 % CI</th></tr>");
    for (clinic, nrs, odi) in &rows {
        let _ = write!(out, "<tr><td>{}</td>", escape(clinic));
        for rate in [nrs, odi] {
            match rate.and_then(|r| Some((r, wilson(r.count, r.denominator)?))) {
                Some((r, (low, high))) => {
                    let _ = write!(
                        out,
                        "<td>{}/{} ({:.1} %)</td><td>{:.1}-{:.1} %</td>",
                        r.count,
                        r.denominator,
                        r.rate * 100.0,
                        low * 100.0,
                        high * 100.0
                    );
                }
                None => out.push_str("<td>none assessed</td><td></td>"),
            }
        }
        out.push_str("</tr>");
    }
    out.push_str("</table>");
    Ok(out)
}

fn measure_name(measure: i32) -> &'static str {
    match v1::CaseMixMeasure::try_from(measure) {
        Ok(v1::CaseMixMeasure::NrsResponder) => "nrs-responder",
        Ok(v1::CaseMixMeasure::NrsChange) => "nrs-change",
        Ok(v1::CaseMixMeasure::OdiChange) => "odi-change",
        _ => "unknown",
    }
}

fn is_rate(comparison: &v1::CaseMixComparison) -> bool {
    comparison.measure == v1::CaseMixMeasure::NrsResponder as i32
}

fn funnel_text(comparison: &v1::CaseMixComparison) -> (String, String) {
    let common = " Each clinic's figure is set against what a model fitted over every \
                  clinic the token grants expects of its own patients (baseline NRS and ODI, age \
                  band, sciatica, symptom duration, diagnosis). The lines are the funnel's \
                  control limits (Spiegelhalter, Statistics in Medicine 2005;24:1185-1202) \
                  around the overall figure: 95 % (inner) and 99.8 % (outer). A clinic \
                  outside them differs from the others by more than chance would usually \
                  explain; inside, any difference may be noise. Clinics with fewer than k \
                  episodes in the model are not shown.";
    match v1::CaseMixMeasure::try_from(comparison.measure) {
        Ok(v1::CaseMixMeasure::NrsResponder) => (
            "Case-mix adjusted NRS responder rate (funnel plot)".to_owned(),
            format!(
                "Risk-adjusted responder rate: the overall rate times observed / expected \
                 responders. A clinic sits at its precision: the episodes a clinic of \
                 average case mix would need for a rate as precise (the variance of its \
                 rate comes from each episode's predicted probability, so harder patients \
                 mean a less precise rate).{common}"
            ),
        ),
        Ok(v1::CaseMixMeasure::NrsChange) => (
            "Case-mix adjusted NRS change (funnel plot)".to_owned(),
            format!(
                "Risk-adjusted mean NRS change: the overall mean plus the clinic's observed \
                 minus expected mean, against its episodes; normal limits from the model's \
                 residual standard deviation. Negative is improvement.{common}"
            ),
        ),
        _ => (
            "Case-mix adjusted ODI change (funnel plot)".to_owned(),
            format!("Risk-adjusted mean ODI change, as for NRS; negative is improvement.{common}"),
        ),
    }
}

fn funnel_plot(
    comparison: &v1::CaseMixComparison,
    model: &v1::CaseMixModel,
) -> anyhow::Result<String> {
    let target = model.mean_outcome;
    let rate = is_rate(comparison);
    let sd = model.residual_sd.unwrap_or(0.0);
    let limits_at = |n: f64| {
        if rate {
            funnel::proportion_limits(target, n)
        } else {
            funnel::mean_limits(target, sd, n)
        }
    };
    let precisions = comparison
        .clinics
        .iter()
        .map(|c| c.precision)
        .filter(|p| p.is_finite() && *p > 0.0);
    let largest = precisions.clone().fold(50.0, f64::max);
    // The funnel from a little before the least precise clinic (at most 8 episodes) on.
    let start = precisions.fold(8.0, f64::min) * 0.8;
    let x_max = (largest * 1.15).ceil();
    // Two hundred points, denser where the funnel bends.
    let curve: Vec<(f64, funnel::Limits)> = (0..=200)
        .map(|i| start * (x_max / start).powf(f64::from(i) / 200.0))
        .filter_map(|n| Some((n, limits_at(n)?)))
        .collect();
    // The y-axis holds the points and the limits where the funnel starts.
    let values = comparison.clinics.iter().map(|c| c.adjusted).chain(
        curve
            .first()
            .into_iter()
            .flat_map(|(_, l)| [l.lower_outer, l.upper_outer]),
    );
    let (low, high) = values.fold((target, target), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let pad = ((high - low) * 0.08).max(0.01);
    let (y_low, y_high) = if rate {
        ((low - pad).max(0.0), high + pad)
    } else {
        (low - pad, high + pad)
    };
    let label = funnel_text(comparison).0;
    figure(&label, |root| {
        let mut chart = ChartBuilder::on(root)
            .margin(16)
            .x_label_area_size(40)
            .y_label_area_size(56)
            .build_cartesian_2d(0f64..x_max, y_low..y_high)?;
        chart
            .configure_mesh()
            .x_desc(if rate {
                "precision: episodes of a clinic of average case mix"
            } else {
                "episodes in the model"
            })
            .y_desc(if rate {
                "risk-adjusted responder rate"
            } else {
                "risk-adjusted mean change"
            })
            .light_line_style(WHITE)
            .draw()?;
        chart.draw_series(LineSeries::new(
            [(0.0, target), (x_max, target)],
            GREY.stroke_width(1),
        ))?;
        for (pick, colour, width) in [
            (0usize, LIGHT, 2u32),
            (1usize, LIGHT, 2u32),
            (2usize, GREY, 1u32),
            (3usize, GREY, 1u32),
        ] {
            chart.draw_series(LineSeries::new(
                curve.iter().map(|(n, l)| {
                    let y = match pick {
                        0 => l.lower_inner,
                        1 => l.upper_inner,
                        2 => l.lower_outer,
                        _ => l.upper_outer,
                    };
                    (*n, y.clamp(y_low, y_high))
                }),
                colour.stroke_width(width),
            ))?;
        }
        chart.draw_series(comparison.clinics.iter().map(|c| {
            let within = c.position == v1::FunnelPosition::Within as i32;
            let colour = if within { BLUE } else { ORANGE };
            Circle::new((c.precision, c.adjusted), 5, colour.filled())
        }))?;
        chart.draw_series(comparison.clinics.iter().map(|c| {
            Text::new(
                short(&c.clinic_id),
                (c.precision, c.adjusted),
                ("sans-serif", 11).into_font().color(&INK),
            )
        }))?;
        Ok(())
    })
}

fn position_text(position: i32) -> &'static str {
    match v1::FunnelPosition::try_from(position) {
        Ok(v1::FunnelPosition::Below998) => "below 99.8 % limit",
        Ok(v1::FunnelPosition::Below95) => "below 95 % limit",
        Ok(v1::FunnelPosition::Within) => "within limits",
        Ok(v1::FunnelPosition::Above95) => "above 95 % limit",
        Ok(v1::FunnelPosition::Above998) => "above 99.8 % limit",
        _ => "unknown",
    }
}

fn model_table(comparison: &v1::CaseMixComparison, model: &v1::CaseMixModel) -> String {
    let rate = is_rate(comparison);
    let mut out = String::from(
        "<table><tr><th>clinic</th><th>episodes</th><th>observed</th><th>expected</th>\
         <th>risk-adjusted</th><th>z</th><th>funnel</th></tr>",
    );
    for c in &comparison.clinics {
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{:.2}</td><td>{:.2}</td><td>{:.3}</td><td>{:.2}</td><td>{}</td></tr>",
            escape(&short(&c.clinic_id)),
            c.episodes,
            c.observed,
            c.expected,
            c.adjusted,
            c.z_score,
            position_text(c.position)
        );
    }
    out.push_str("</table>");
    let fit = if rate {
        format!(
            "logistic regression; c-statistic {:.3}, McFadden pseudo-R² {:.3}, Brier score \
             {:.3}, deviance {:.1} (null {:.1})",
            model.c_statistic.unwrap_or(f64::NAN),
            model.pseudo_r_squared.unwrap_or(f64::NAN),
            model.brier_score.unwrap_or(f64::NAN),
            model.deviance.unwrap_or(f64::NAN),
            model.null_deviance.unwrap_or(f64::NAN),
        )
    } else {
        format!(
            "linear regression; R² {:.3} (adjusted {:.3}), residual SD {:.2}",
            model.r_squared.unwrap_or(f64::NAN),
            model.adjusted_r_squared.unwrap_or(f64::NAN),
            model.residual_sd.unwrap_or(f64::NAN),
        )
    };
    let references = model
        .references
        .iter()
        .map(|r| format!("{} = {}", r.factor, r.level))
        .collect::<Vec<_>>()
        .join(", ");
    let _ = write!(
        out,
        "<p class=\"definition\">Model: {fit}; {episodes} episodes of the clinics the token grants, overall \
         {overall}. Overdispersion φ {phi}. Reference levels: {references}.{aliased}</p>",
        fit = escape(&fit),
        episodes = model.episodes,
        overall = if rate {
            format!("{:.1} % responders", model.mean_outcome * 100.0)
        } else {
            format!("mean change {:.2}", model.mean_outcome)
        },
        phi = comparison.overdispersion.map_or_else(
            || "not estimated (fewer than 10 clinics)".to_owned(),
            |p| format!("{p:.2}")
        ),
        references = escape(&references),
        aliased = if model.aliased_terms.is_empty() {
            String::new()
        } else {
            escape(&format!(
                " Left out as combinations of earlier terms: {}.",
                model.aliased_terms.join(", ")
            ))
        },
    );
    out.push_str("<table><tr><th>term</th><th>estimate</th><th>standard error</th></tr>");
    for c in &model.coefficients {
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{:.3}</td><td>{:.3}</td></tr>",
            escape(&c.term),
            c.estimate,
            c.standard_error
        );
    }
    out.push_str("</table>");
    out
}

fn bars(
    label: &str,
    y_desc: &str,
    rows: &[(String, i64)],
    colour: RGBColor,
) -> anyhow::Result<String> {
    let n = u32::try_from(rows.len()).unwrap_or(u32::MAX);
    let top = rows.iter().map(|r| r.1).max().unwrap_or(1).max(1);
    figure(label, |root| {
        let mut chart = ChartBuilder::on(root)
            .margin(16)
            .x_label_area_size(48)
            .y_label_area_size(50)
            .build_cartesian_2d(categories(n), 0f64..(top as f64 * 1.15))?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_label_formatter(&|v| match v {
                SegmentValue::CenterOf(i) => rows
                    .get(*i as usize)
                    .map_or_else(String::new, |r| r.0.replace('_', " ")),
                _ => String::new(),
            })
            .y_desc(y_desc)
            .light_line_style(WHITE)
            .draw()?;
        chart.draw_series(rows.iter().enumerate().filter_map(|(i, row)| {
            let i = u32::try_from(i).ok()?;
            Some(bar(i, row.1 as f64, colour))
        }))?;
        Ok(())
    })
}

/// `n` categories on an axis, each a segment labelled at its centre (a segmented range
/// holds both its ends, so `n` categories are the values `0..=n - 1`).
fn categories(
    n: u32,
) -> plotters::coord::ranged1d::SegmentedCoord<plotters::coord::types::RangedCoordu32> {
    // A segmented range holds both its ends: `n` categories are `0..=n - 1`, and one
    // category gets an empty second segment (a range of one value has no width).
    (0..n.max(2) - 1).into_segmented()
}

/// A bar over category `i` from 0 to `value`, with a gap on either side.
fn bar(i: u32, value: f64, colour: RGBColor) -> Rectangle<(SegmentValue<u32>, f64)> {
    let mut bar = Rectangle::new(
        [
            (SegmentValue::Exact(i), 0.0),
            (SegmentValue::Exact(i + 1), value),
        ],
        colour.filled(),
    );
    bar.set_margin(0, 0, 14, 14);
    bar
}

fn discharges(total: Option<&v1::OutcomeStatistics>) -> anyhow::Result<String> {
    let rows: Vec<(String, i64)> = total
        .map(|t| {
            t.discharges_by_reason
                .iter()
                .map(|c| (c.value.clone(), c.count))
                .collect()
        })
        .unwrap_or_default();
    if rows.iter().all(|r| r.1 == 0) {
        return Ok(empty("No discharge released."));
    }
    let mut out = bars("Discharges by reason", "episodes", &rows, BLUE)?;
    if let Some(t) = total {
        let _ = write!(
            out,
            "<p>{} ongoing, {} drop-out (self-discharge and lost to follow-up).</p>",
            t.ongoing, t.drop_out
        );
    }
    Ok(out)
}

fn adherence(by_adherence: &v1::GetOutcomeStatisticsResponse) -> anyhow::Result<String> {
    const ORDER: [&str; 4] = ["none_reported", "low", "moderate", "high"];
    let mut rows: Vec<(String, i64)> = by_adherence
        .groups
        .iter()
        .filter_map(|g| Some((g.key.first()?.value.clone(), g.episodes?)))
        .collect();
    rows.sort_by_key(|r| ORDER.iter().position(|o| *o == r.0).unwrap_or(ORDER.len()));
    if rows.is_empty() {
        return Ok(empty("No adherence band released."));
    }
    bars("Episodes by adherence band", "episodes", &rows, ORANGE)
}

#[cfg(test)]
mod tests;
