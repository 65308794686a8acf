//! deploy/'s telemetry pipeline, read the way its tools would: the compose file runs a
//! collector, Prometheus and Grafana wired to each other; the collector's pipelines use
//! only what it defines; every alert rule and dashboard query is valid PromQL and asks
//! for a metric the service exports, under the name the collector's Prometheus exporter
//! gives it.

use std::collections::BTreeSet;
use std::path::PathBuf;

use yaml_rust2::{Yaml, YamlLoader};

fn deploy(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(path)
}

fn yaml(path: &str) -> Yaml {
    let text = std::fs::read_to_string(deploy(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut documents = YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
    assert_eq!(documents.len(), 1, "{path}: one document");
    documents.remove(0)
}

fn keys(map: &Yaml) -> BTreeSet<String> {
    map.as_hash()
        .map(|hash| {
            hash.keys()
                .filter_map(|key| key.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn strings(list: &Yaml) -> Vec<String> {
    list.as_vec()
        .map(|items| {
            items
                .iter()
                .filter_map(|item| item.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The metric families the service exports, as Prometheus names them (dots to
/// underscores, the unit's suffix, `_total` for counters, `_bucket`/`_sum`/`_count` for
/// histograms).
const FAMILIES: [&str; 11] = [
    "rpc_server_call_duration_seconds",
    "spineledger_events_appended_total",
    "db_client_connection_count",
    "db_client_connection_pending_requests",
    "db_client_connection_max",
    "spineledger_projector_lag_seconds",
    "spineledger_projector_events_behind",
    "spineledger_projector_batch_events",
    "spineledger_projector_batch_duration_seconds",
    "spineledger_projector_commit_lag_seconds",
    "spineledger_rebuild_events_total",
];

/// The metric names a PromQL expression selects.
fn selected_metrics(expr: &str) -> Vec<String> {
    let parsed = promql_parser::parser::parse(expr).unwrap_or_else(|e| panic!("{expr}: {e}"));
    let mut names = Vec::new();
    collect(&parsed, &mut names);
    names
}

fn collect(expr: &promql_parser::parser::Expr, names: &mut Vec<String>) {
    use promql_parser::parser::Expr;
    match expr {
        Expr::VectorSelector(selector) => names.extend(selector.name.clone()),
        Expr::MatrixSelector(matrix) => names.extend(matrix.vs.name.clone()),
        Expr::Aggregate(aggregate) => {
            collect(&aggregate.expr, names);
            if let Some(param) = &aggregate.param {
                collect(param, names);
            }
        }
        Expr::Unary(unary) => collect(&unary.expr, names),
        Expr::Binary(binary) => {
            collect(&binary.lhs, names);
            collect(&binary.rhs, names);
        }
        Expr::Paren(paren) => collect(&paren.expr, names),
        Expr::Subquery(subquery) => collect(&subquery.expr, names),
        Expr::Call(call) => {
            for arg in &call.args.args {
                collect(arg, names);
            }
        }
        _ => {}
    }
}

fn assert_exported(expr: &str) {
    let names = selected_metrics(expr);
    assert!(!names.is_empty(), "{expr} selects no metric");
    for name in names {
        assert!(
            FAMILIES.iter().any(|family| name == *family
                || ["_bucket", "_sum", "_count"]
                    .iter()
                    .any(|suffix| name == format!("{family}{suffix}"))),
            "{name} (in {expr}) is not a metric the service exports"
        );
    }
}

#[test]
fn the_alert_rules_are_valid_and_ask_for_exported_metrics() {
    let rules = yaml("prometheus/alerts.yaml");
    let groups = rules["groups"].as_vec().expect("groups");
    let mut alerts = BTreeSet::new();
    for group in groups {
        for rule in group["rules"].as_vec().expect("rules") {
            let name = rule["alert"].as_str().expect("every rule is an alert");
            alerts.insert(name.to_owned());
            assert_exported(rule["expr"].as_str().expect("expr"));
            assert!(rule["for"].as_str().is_some(), "{name}: for");
            assert!(
                rule["labels"]["severity"].as_str().is_some(),
                "{name}: severity"
            );
            assert!(
                rule["annotations"]["summary"].as_str().is_some(),
                "{name}: summary"
            );
        }
    }
    for required in [
        "SpineledgerServerErrors",
        "SpineledgerSlowRpcs",
        "SpineledgerProjectorBehind",
        "SpineledgerProjectorStalled",
    ] {
        assert!(alerts.contains(required), "no {required} in {alerts:?}");
    }
}

#[test]
fn the_dashboard_is_valid_and_every_panel_asks_for_exported_metrics() {
    let text =
        std::fs::read_to_string(deploy("grafana/dashboards/spineledger.json")).expect("read");
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(panels.len() >= 8);
    let mut ids = BTreeSet::new();
    for panel in panels {
        assert!(
            ids.insert(panel["id"].as_i64().expect("id")),
            "ids are unique"
        );
        assert_eq!(panel["datasource"]["uid"], "prometheus");
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{}", panel["title"]);
        for target in targets {
            // Grafana's variables, as Grafana substitutes them before querying.
            let expr = target["expr"]
                .as_str()
                .expect("expr")
                .replace("$__rate_interval", "1m")
                .replace("$job", ".*");
            assert_exported(&expr);
        }
    }
    // The datasource it names is the one Grafana is given.
    let datasources = yaml("grafana/provisioning/datasources/prometheus.yaml");
    let datasource = &datasources["datasources"][0];
    assert_eq!(datasource["uid"].as_str(), Some("prometheus"));
    assert_eq!(datasource["url"].as_str(), Some("http://prometheus:9090"));
}

#[test]
fn the_collector_and_compose_file_wire_the_pipeline() {
    let collector = yaml("otel-collector.yaml");
    let receivers = keys(&collector["receivers"]);
    let exporters = keys(&collector["exporters"]);
    let processors = keys(&collector["processors"]);
    let pipelines = &collector["service"]["pipelines"];
    for signal in ["traces", "metrics"] {
        let pipeline = &pipelines[signal];
        assert!(!pipeline.is_badvalue(), "no {signal} pipeline");
        for receiver in strings(&pipeline["receivers"]) {
            assert!(receivers.contains(&receiver), "{signal}: {receiver}");
        }
        for exporter in strings(&pipeline["exporters"]) {
            assert!(exporters.contains(&exporter), "{signal}: {exporter}");
        }
        for processor in strings(&pipeline["processors"]) {
            assert!(processors.contains(&processor), "{signal}: {processor}");
        }
    }
    assert!(strings(&pipelines["metrics"]["exporters"]).contains(&"prometheus".to_owned()));
    // Prometheus scrapes what the collector's exporter serves, and loads the alerts.
    let metrics_endpoint = collector["exporters"]["prometheus"]["endpoint"]
        .as_str()
        .expect("endpoint");
    let port = metrics_endpoint.rsplit(':').next().expect("port");
    let prometheus = yaml("prometheus/prometheus.yaml");
    let targets = strings(&prometheus["scrape_configs"][0]["static_configs"][0]["targets"]);
    assert_eq!(targets, [format!("otel-collector:{port}")]);
    assert_eq!(
        strings(&prometheus["rule_files"]),
        ["/etc/prometheus/alerts.yaml"]
    );

    let compose = yaml("compose.yaml");
    let services = keys(&compose["services"]);
    for service in [
        "spineledger",
        "otel-collector",
        "jaeger",
        "prometheus",
        "grafana",
    ] {
        assert!(services.contains(service), "no {service} in compose");
    }
    let environment = &compose["services"]["spineledger"]["environment"];
    assert_eq!(
        environment["OTEL_EXPORTER_OTLP_ENDPOINT"].as_str(),
        Some("http://otel-collector:4317")
    );
    let mounts = strings(&compose["services"]["prometheus"]["volumes"]);
    assert!(
        mounts
            .iter()
            .any(|m| m.starts_with("./prometheus/alerts.yaml:/etc/prometheus/alerts.yaml")),
        "{mounts:?}"
    );
    // Every file the compose file mounts exists.
    for service in &services {
        for mount in strings(&compose["services"][service.as_str()]["volumes"]) {
            if let Some(local) = mount.strip_prefix("./") {
                let local = local.split(':').next().expect("path");
                assert!(deploy(local).exists(), "{service} mounts missing {local}");
            }
        }
    }
}
