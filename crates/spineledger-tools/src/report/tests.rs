//! The report is one well-formed, self-contained document whose every chart has its
//! marks, definition and positions; and (where a browser is installed, always in CI) a
//! headless Chromium renders it to a picture with the charts' colours in it.

use std::collections::BTreeMap;

use chrono::TimeZone as _;

use super::*;

fn mean(n: i64, mean: f64) -> Option<v1::Mean> {
    Some(v1::Mean { n, mean })
}

fn rate(count: i64, denominator: i64) -> Option<v1::Rate> {
    Some(v1::Rate {
        count,
        denominator,
        rate: count as f64 / denominator as f64,
    })
}

const CLINICS: [&str; 3] = [
    "11111111-0000-4000-8000-000000000001",
    "22222222-0000-4000-8000-000000000002",
    "33333333-0000-4000-8000-000000000003",
];

fn positions() -> Vec<v1::ClinicPosition> {
    CLINICS
        .iter()
        .enumerate()
        .map(|(i, clinic)| v1::ClinicPosition {
            clinic_id: (*clinic).to_owned(),
            position: 100 * (i as i64 + 1),
        })
        .collect()
}

fn statistics(episodes: i64) -> v1::OutcomeStatistics {
    v1::OutcomeStatistics {
        episodes,
        baseline_nrs: mean(episodes, 6.4),
        nrs_change_session_4: mean(40, -1.8),
        nrs_change_session_6: mean(30, -2.4),
        nrs_change_discharge: mean(50, -2.9),
        odi_change_session_4: mean(40, -7.5),
        odi_change_session_6: None,
        odi_change_discharge: mean(50, -12.0),
        nrs_responders: rate(episodes * 6 / 10, episodes * 9 / 10),
        odi_responders: rate(episodes / 2, episodes * 9 / 10),
        pain_trajectory: (1..=12)
            .map(|session| v1::TrajectoryPoint {
                session_number: session,
                pain_before: mean(60 - i64::from(session), 6.5 - 0.3 * f64::from(session)),
            })
            .collect(),
        discharges_by_reason: [("goals_met", 30), ("plateau", 9), ("self_discharge", 8)]
            .into_iter()
            .map(|(value, count)| v1::Count {
                value: value.to_owned(),
                count,
            })
            .collect(),
        ongoing: 12,
        drop_out: 8,
        ..Default::default()
    }
}

fn group(dimension: v1::StatisticsDimension, value: &str, episodes: i64) -> v1::OutcomeGroup {
    v1::OutcomeGroup {
        key: vec![v1::GroupKey {
            dimension: dimension as i32,
            value: value.to_owned(),
        }],
        episodes: Some(episodes),
        suppressed: false,
        statistics: Some(statistics(episodes)),
    }
}

fn response(groups: Vec<v1::OutcomeGroup>) -> v1::GetOutcomeStatisticsResponse {
    v1::GetOutcomeStatisticsResponse {
        min_cell_size: 8,
        groups,
        reflects: positions(),
    }
}

fn fixture() -> ReportData {
    let total = v1::OutcomeGroup {
        key: Vec::new(),
        episodes: Some(180),
        suppressed: false,
        statistics: Some(statistics(180)),
    };
    let by_clinic = CLINICS
        .iter()
        .map(|c| group(v1::StatisticsDimension::Clinic, c, 60))
        .collect();
    let by_adherence = [("high", 70), ("low", 40), ("moderate", 50)]
        .into_iter()
        .map(|(band, n)| group(v1::StatisticsDimension::AdherenceBand, band, n))
        .collect();
    let funnel_clinic = |(i, clinic): (usize, &&str)| {
        let adjusted = [0.55, 0.62, 0.85][i];
        let limits = funnel::proportion_limits(0.6, 60.0).expect("limits");
        v1::ClinicComparison {
            clinic_id: (*clinic).to_owned(),
            episodes: 60,
            observed: adjusted * 60.0,
            expected: 36.0,
            adjusted,
            limits: Some(v1::FunnelLimits {
                lower_99_8: limits.lower_outer,
                lower_95: limits.lower_inner,
                upper_95: limits.upper_inner,
                upper_99_8: limits.upper_outer,
            }),
            position: match limits.position(adjusted) {
                funnel::Position::Within => v1::FunnelPosition::Within,
                _ => v1::FunnelPosition::Above998,
            } as i32,
            z_score: (adjusted - 0.6) / (0.24f64 / 60.0).sqrt(),
            precision: 60.0,
        }
    };
    let responder = v1::CaseMixComparison {
        measure: v1::CaseMixMeasure::NrsResponder as i32,
        model: Some(v1::CaseMixModel {
            episodes: 900,
            mean_outcome: 0.6,
            coefficients: vec![
                v1::CaseMixCoefficient {
                    term: "intercept".into(),
                    estimate: 0.41,
                    standard_error: 0.07,
                },
                v1::CaseMixCoefficient {
                    term: "sciatica=no".into(),
                    estimate: 0.52,
                    standard_error: 0.15,
                },
            ],
            references: vec![v1::CaseMixReference {
                factor: "sciatica".into(),
                level: "yes".into(),
            }],
            c_statistic: Some(0.66),
            pseudo_r_squared: Some(0.05),
            brier_score: Some(0.22),
            deviance: Some(1150.0),
            null_deviance: Some(1210.0),
            ..Default::default()
        }),
        not_fitted_reason: String::new(),
        clinics: CLINICS.iter().enumerate().map(funnel_clinic).collect(),
        overdispersion: None,
    };
    let odi = v1::CaseMixComparison {
        measure: v1::CaseMixMeasure::OdiChange as i32,
        model: None,
        not_fitted_reason: "40 episodes where 150 are needed: ten per term".into(),
        ..Default::default()
    };
    ReportData {
        total: response(vec![total]),
        by_clinic: response(by_clinic),
        by_adherence: response(by_adherence),
        comparison: v1::CompareClinicsResponse {
            min_cell_size: 8,
            comparisons: vec![responder, odi],
            reflects: positions(),
        },
    }
}

fn rendered() -> String {
    let at = Utc
        .with_ymd_and_hms(2026, 11, 28, 12, 0, 0)
        .single()
        .expect("time");
    render(&fixture(), &ReportQuery::default(), at).expect("render")
}

/// Every element below `node` named `name`.
fn named<'a>(node: roxmltree::Node<'a, 'a>, name: &str) -> Vec<roxmltree::Node<'a, 'a>> {
    node.descendants()
        .filter(|n| n.is_element() && n.tag_name().name() == name)
        .collect()
}

#[test]
fn every_chart_has_its_marks_definition_and_positions() {
    let html = rendered();
    // Well-formed XML (XHTML-style): a browser's lenient parser is not needed to read it.
    let body = html
        .strip_prefix("<!DOCTYPE html>\n")
        .expect("an HTML5 document");
    let document = roxmltree::Document::parse(body).expect("well-formed");
    let sections: BTreeMap<String, roxmltree::Node<'_, '_>> = named(document.root(), "section")
        .into_iter()
        .filter_map(|s| Some((s.attribute("id")?.to_owned(), s)))
        .collect();
    let expected = [
        ("pain-trajectory", "circle", 12),
        ("change", "rect", 5),
        ("responders", "line", 6),
        ("funnel-nrs-responder", "circle", 3),
        ("discharges", "rect", 3),
        ("adherence", "rect", 3),
    ];
    for (id, mark, at_least) in expected {
        let section = sections
            .get(id)
            .unwrap_or_else(|| panic!("no section {id}"));
        let svgs = named(*section, "svg");
        assert_eq!(svgs.len(), 1, "{id}: one chart");
        assert_eq!(svgs[0].attribute("role"), Some("img"));
        let marks = named(svgs[0], mark).len();
        assert!(marks >= at_least, "{id}: {marks} {mark} elements");
        let paragraphs: Vec<String> = named(*section, "p")
            .iter()
            .filter_map(|p| Some(format!("{}:{}", p.attribute("class")?, p.text()?)))
            .collect();
        assert!(
            paragraphs.iter().any(|p| p.starts_with("definition:")),
            "{id}: {paragraphs:?}"
        );
        assert!(
            paragraphs
                .iter()
                .any(|p| p.starts_with("reflects:") && p.contains("11111111: 100")),
            "{id}: {paragraphs:?}"
        );
    }
    // The funnel's lines: target, two 95 % and two 99.8 % limits.
    let funnel = named(sections["funnel-nrs-responder"], "polyline").len();
    assert!(funnel >= 5, "{funnel} lines in the funnel");
    // A measure without a model says why, and draws nothing.
    let odi = sections["funnel-odi-change"];
    assert!(named(odi, "svg").is_empty());
    assert!(
        odi_text(odi).contains("150 are needed"),
        "{}",
        odi_text(odi)
    );
}

fn odi_text(node: roxmltree::Node<'_, '_>) -> String {
    node.descendants().filter_map(|n| n.text()).collect()
}

#[test]
fn the_report_needs_nothing_beside_it() {
    let html = rendered();
    let body = html.strip_prefix("<!DOCTYPE html>\n").expect("html");
    let document = roxmltree::Document::parse(body).expect("well-formed");
    for node in document.descendants().filter(roxmltree::Node::is_element) {
        let name = node.tag_name().name();
        assert!(
            ![
                "script", "link", "img", "iframe", "object", "embed", "image", "use"
            ]
            .contains(&name),
            "a <{name}> element"
        );
        for attribute in node.attributes() {
            assert!(
                !["src", "href"].contains(&attribute.name()),
                "<{name} {}>",
                attribute.name()
            );
        }
    }
    // The only address is SVG's namespace name, which is never fetched.
    let addresses = html.matches("http").count();
    let namespaces = html.matches("http://www.w3.org/2000/svg").count();
    assert_eq!(addresses, namespaces);
    assert!(html.contains("not evidence that spinal decompression works"));
}

#[test]
fn text_is_escaped() {
    assert_eq!(escape("<a & \"b\">"), "&lt;a &amp; &quot;b&quot;&gt;");
}

#[test]
fn wilson_intervals_match_their_textbook_values() {
    // 81 of 263 (Newcombe, Statistics in Medicine 1998;17:857-872, example):
    // 0.2553 to 0.3662.
    let (low, high) = wilson(81, 263).expect("interval");
    assert!((low - 0.2553).abs() < 5e-5, "{low}");
    assert!((high - 0.3662).abs() < 5e-5, "{high}");
    assert_eq!(wilson(0, 0), None);
}

/// Headless Chromium, when installed (CI installs it: `.ci/run`).
fn chromium() -> Option<std::path::PathBuf> {
    [
        "/usr/bin/chromium",
        "/usr/bin/chromium-browser",
        "/usr/bin/google-chrome",
    ]
    .iter()
    .map(std::path::PathBuf::from)
    .find(|path| path.exists())
}

#[test]
fn a_browser_draws_the_charts() {
    let Some(browser) = chromium() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must have Chromium for the rendering check (.ci/run installs it)"
        );
        eprintln!("NOT CHECKED: no Chromium here, so the report was not rendered in a browser");
        return;
    };
    let directory = std::env::temp_dir().join(format!("spineledger-report-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&directory).expect("directory");
    let page = directory.join("report.html");
    let picture = directory.join("report.png");
    std::fs::write(&page, rendered()).expect("write");
    let output = std::process::Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--window-size=900,4200",
        ])
        .arg(format!("--screenshot={}", picture.display()))
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("chromium runs");
    assert!(picture.exists(), "no screenshot: {output:?}");
    let decoder = png::Decoder::new(std::io::BufReader::new(
        std::fs::File::open(&picture).expect("png"),
    ));
    let mut reader = decoder.read_info().expect("png header");
    let mut pixels = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut pixels).expect("png frame");
    let channels = info.color_type.samples();
    let near = |p: &[u8], c: RGBColor| {
        p[0].abs_diff(c.0) < 24 && p[1].abs_diff(c.1) < 24 && p[2].abs_diff(c.2) < 24
    };
    let (mut blue, mut orange, mut ink) = (0usize, 0usize, 0usize);
    for p in pixels[..info.buffer_size()].chunks(channels) {
        blue += usize::from(near(p, BLUE));
        orange += usize::from(near(p, ORANGE));
        ink += usize::from(p[0] < 100 && p[1] < 100 && p[2] < 100);
    }
    // Bars, points and lines in both series colours, and a page of text.
    assert!(blue > 5_000, "{blue} blue pixels");
    assert!(orange > 5_000, "{orange} orange pixels");
    assert!(ink > 20_000, "{ink} dark pixels");
    let _ = std::fs::remove_dir_all(&directory);
}
