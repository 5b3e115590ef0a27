"""The Prometheus config, alert rules and Grafana dashboards: valid, tested, and using only names we export."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from activity_settings import load_settings
from infra import observability
from infra.observability import (
    CONFIG,
    GRAFANA_DIR,
    PROMETHEUS_DIR,
    PROMETHEUS_SERIES,
    RULES,
    PrometheusError,
    exported_metric_names,
    promql_metric_names,
    recorded_names,
    render_config,
    rule_exprs,
    scrape_targets,
    start_prometheus,
    unknown_metric_names,
)

DASHBOARDS = sorted((GRAFANA_DIR / "dashboards").glob("*.json"))
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool is missing: install the Debian package `prometheus` (`./run install` does)"
)


def promtool(*args: str, cwd: Path = PROMETHEUS_DIR) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False)


def known_names() -> set[str]:
    return exported_metric_names() | PROMETHEUS_SERIES | recorded_names()


def dashboard_exprs(path: Path) -> dict[str, str]:
    board = json.loads(path.read_text())
    return {f"{path.name} panel {panel['id']} ({panel['title']}) {target['refId']}": target["expr"]
            for panel in board["panels"] for target in panel.get("targets", [])}


# ------------------------------------------------------------------------------- promtool


@needs_promtool
def test_rules_pass_promtool_check() -> None:
    result = promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_rule_unit_tests_pass() -> None:
    tests = yaml.safe_load((PROMETHEUS_DIR / "rules_test.yml").read_text())["tests"]
    alerts = {case["alertname"] for test in tests for case in test.get("alert_rule_test", [])}
    assert {"DatasetDrift", "ScorerErrorRateHigh"} <= alerts
    result = promtool("test", "rules", "rules_test.yml")
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_source_and_rendered_configs_pass_promtool_check(clean_env: None, tmp_path: Path) -> None:
    source = promtool("check", "config", str(CONFIG))
    assert source.returncode == 0, source.stdout + source.stderr

    settings = load_settings(data_dir=tmp_path / "data", serving={"port": 28080},
                             streaming={"metrics_port": 0}, monitoring={"metrics_port": 29103})
    rendered = render_config(settings, tmp_path / "prometheus")
    result = promtool("check", "config", str(rendered), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr

    config = yaml.safe_load(rendered.read_text())
    targets = {job["job_name"]: job["static_configs"][0]["targets"] for job in config["scrape_configs"]}
    assert targets == {"activity-scorer": ["127.0.0.1:28080"], "activity-monitoring": ["127.0.0.1:29103"]}
    assert config["rule_files"] == ["rules.yml"] and (rendered.parent / "rules.yml").is_file()


def test_default_targets_follow_the_settings_defaults(clean_env: None, tmp_path: Path) -> None:
    config = yaml.safe_load(CONFIG.read_text())
    in_file = {job["job_name"]: job["static_configs"][0]["targets"][0] for job in config["scrape_configs"]}
    assert in_file == scrape_targets(load_settings(data_dir=tmp_path, serving={"model_server": "triton"}))
    assert scrape_targets(load_settings(data_dir=tmp_path))["activity-triton"] is None  # no Triton to scrape
    assert config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == ["127.0.0.1:9093"]


# ------------------------------------------------------------------------------- rules and dashboards


def test_alert_rules_are_labelled_and_annotated() -> None:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    alerts = [rule for group in groups for rule in group["rules"] if "alert" in rule]
    assert len({rule["alert"] for rule in alerts}) == len(alerts) >= 15
    for rule in alerts:
        assert rule["labels"]["severity"] in {"info", "warning", "critical"}, rule["alert"]
        assert "for" in rule, rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]


def test_dashboards_parse_with_unique_ids_and_a_datasource_variable() -> None:
    assert {path.stem for path in DASHBOARDS} == {"streaming", "serving", "model-quality", "drift"}
    uids = []
    for path in DASHBOARDS:
        board = json.loads(path.read_text())
        uids.append(board["uid"])
        assert board["title"] and board["schemaVersion"] >= 36
        variables = {v["name"]: v for v in board["templating"]["list"]}
        assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
        ids = [panel["id"] for panel in board["panels"]]
        assert len(ids) == len(set(ids)) > 0, path.name
        for panel in board["panels"]:
            assert panel["datasource"]["uid"] == "${datasource}", (path.name, panel["title"])
            assert panel["targets"] and all(t["expr"].strip() for t in panel["targets"]), (path.name, panel["title"])
    assert len(uids) == len(set(uids))


def test_grafana_provisioning_points_at_prometheus_and_the_dashboards() -> None:
    provisioning = GRAFANA_DIR / "provisioning"
    (source,) = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())["datasources"]
    assert source["type"] == "prometheus" and source["url"].endswith(":9090")
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "activity.yml").read_text())["providers"]
    assert provider["type"] == "file" and provider["options"]["path"]


def test_every_expression_uses_only_exported_metric_names() -> None:
    exprs = rule_exprs()
    for path in DASHBOARDS:
        exprs |= dashboard_exprs(path)
    assert len(exprs) > 80
    assert unknown_metric_names(exprs, known_names()) == {}


def test_the_checker_catches_an_unknown_metric_name(tmp_path: Path) -> None:
    board = json.loads(DASHBOARDS[0].read_text())
    board["panels"][0]["targets"][0]["expr"] = 'sum(rate(activity_scorer_requests_total{route="/v1/model"}[5m]))'
    broken = tmp_path / DASHBOARDS[0].name
    broken.write_text(json.dumps(board))
    unknown = unknown_metric_names(dashboard_exprs(broken), known_names())
    assert list(unknown.values()) == [{"activity_scorer_requests_total"}]

    rules = yaml.safe_load(RULES.read_text())
    rules["groups"][0]["rules"][0]["expr"] = "activity_monitor_drift_ratio > 0.3"
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(rules))
    unknown = unknown_metric_names(rule_exprs(tmp_path / "rules.yml"), known_names())
    assert list(unknown.values()) == [{"activity_monitor_drift_ratio"}]


@pytest.mark.parametrize(("expr", "names"), [
    ('sum by (job, route) (rate(activity_scorer_responses_total{status=~"5..", route="a{b}"}[5m]))',
     {"activity_scorer_responses_total"}),
    ("histogram_quantile(0.99, sum(rate(x_bucket[$__rate_interval])) by (le))", {"x_bucket"}),
    ("time() - (a > 0 or b{job=\"j\"}) > 2 * 3600", {"a", "b"}),
    ("a offset 5m and on (job, instance) (b == 1) unless ignoring (le) c", {"a", "b", "c"}),
    ("rate (c_total[1h:5m]) * 1e3 + job:rec:rate5m", {"c_total", "job:rec:rate5m"}),
    ('label_replace(up, "dst", "$1", "src", "(.*)") # comment with name_in_comment', {"up"}),
    ("max by (alias) (m) > bool 0", {"m"}),
])
def test_promql_metric_names(expr: str, names: set[str]) -> None:
    assert promql_metric_names(expr) == names


def test_exported_names_carry_prometheus_client_suffixes() -> None:
    names = exported_metric_names()
    assert {"activity_scorer_responses_total", "activity_scorer_responses_created",  # labelled, no child yet
            "activity_scorer_request_seconds_bucket", "activity_scorer_request_seconds_sum",
            "activity_scorer_request_seconds_count", "activity_scorer_micro_batch_size_bucket",
            "activity_stream_batches_total",
            "activity_monitor_drift_share", "process_start_time_seconds"} <= names
    assert "activity_scorer_responses" not in names


# ------------------------------------------------------------------------------- local Prometheus


def test_missing_binary_is_a_clear_error_naming_the_package(
    clean_env: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(observability, "PROMETHEUS_BIN", str(tmp_path / "no-such-prometheus"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(PrometheusError, match="Debian package `prometheus`"):
        start_prometheus(load_settings(data_dir=tmp_path / "data"), port=1)
