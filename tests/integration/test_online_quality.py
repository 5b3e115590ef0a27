"""Online quality on the real stack: the scorer answers in both A/B arms (its prediction log on Kafka), the
horizon has passed in the streamed archive, and `run_quality` must report what a direct computation from
the answers the test received and the simulator's own events gives."""

from __future__ import annotations

import json
import math
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from activity_settings import Settings

pytestmark = pytest.mark.integration
CLASSES = ("decline", "stable", "growth")
START, DAYS, SEED = date(2026, 1, 1), 200, 11  # the `trained` fixture's population
LAST_DAY = START + timedelta(days=DAYS - 1)  # the archive's latest day: 2026-07-19
MATURED_DAY = date(2026, 6, 1)  # every sampled customer, at spread times of day
BOUNDARY_DAY = LAST_DAY - timedelta(days=30)  # 2026-06-19: its outcome window ends the day before LAST_DAY
UNRIPE_DAY = BOUNDARY_DAY + timedelta(days=1)  # would need LAST_DAY itself (treated as partial)


class Webhook(BaseHTTPRequestHandler):
    received: list[dict] = []

    def do_POST(self) -> None:  # http.server's naming
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Webhook.received.append(json.loads(body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture(scope="module")
def quality_stack(trained: Settings, first, tmp_path_factory: pytest.TempPathFactory
                  ) -> Iterator[tuple[Settings, list[dict]]]:
    """The trained stack with its own predictions topic, MLflow experiment and registered model (v1 champion,
    v2 challenger: both copies of the first run's model), half the customers on the challenger, and a
    webhook that records the alerts. Serves ~1,000 answers; yields the settings and the answers received."""
    from infra.topics import ensure_topics
    from model_contract import registry
    from serving.app import create_app
    from serving.auth import issue_token
    from serving.online import OnlineFeatures
    from serving.prediction_log import PredictionLog
    from serving.scoring import ModelHolder

    tag = uuid.uuid4().hex[:8]
    outcome, _ = first
    client = registry.client(trained)
    name = f"{trained.mlflow.registered_model}-quality-{tag}"
    for alias in ("champion", "challenger"):
        copy = client.copy_model_version(f"models:/{trained.mlflow.registered_model}/{outcome.version}", name)
        client.set_registered_model_alias(name, alias, copy.version)
    server = ThreadingHTTPServer(("127.0.0.1", 0), Webhook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    settings = trained.model_copy(update={
        "kafka": trained.kafka.model_copy(update={"topics": trained.kafka.topics.model_copy(
            update={"predictions": f"predictions-quality-{tag}"})}),
        "mlflow": trained.mlflow.model_copy(update={"registered_model": name,
                                                    "experiment": f"{trained.mlflow.experiment}-q{tag}"}),
        "serving": trained.serving.model_copy(update={"challenger_percent": 50.0, "shadow": True,
                                                      "online_timeout_ms": 20_000.0, "reload_interval_s": 3600.0}),
        "monitoring": trained.monitoring.model_copy(update={
            "webhook_url": f"http://127.0.0.1:{server.server_address[1]}/alerts", "quality_alert_f1_drop": 0.0,
            "quality_min_predictions": 30}),
    })
    ensure_topics(settings.kafka)
    holder = ModelHolder(settings, tmp_path_factory.mktemp("quality-models"))
    assert holder.startup().ok
    publisher = PredictionLog(settings)
    app = create_app(settings, holder, OnlineFeatures(settings), publisher)
    headers = {"Authorization": f"Bearer {issue_token(settings, 'quality', ['scores:read'])}"}
    customers = [f"c{i:07d}" for i in range(0, 3_000, 5)]  # 600
    requests = [(c, datetime.combine(MATURED_DAY, datetime.min.time(), UTC) + timedelta(minutes=37 * i % 1440))
                for i, c in enumerate(customers)]
    requests += [(c, datetime.combine(BOUNDARY_DAY, datetime.min.time(), UTC) + timedelta(hours=12))
                 for c in customers[:150]]
    requests += [(c, datetime.combine(UNRIPE_DAY, datetime.min.time(), UTC)) for c in customers[150:300]]
    requests += [(c, datetime.combine(MATURED_DAY, datetime.min.time(), UTC) + timedelta(hours=23, minutes=59))
                 for c in customers[:100]]  # the same day again, logged later: replaces the first answer
    answers: list[dict] = []
    try:
        with TestClient(app, raise_server_exceptions=False) as http:
            for start in range(0, len(requests), 200):
                batch = requests[start:start + 200]
                body = {"customers": [{"customer_id": c, "as_of": t.isoformat()} for c, t in batch]}
                response = http.post("/v1/activity:batch", json=body, headers=headers)
                assert response.status_code == 200, response.text
                answers += response.json()["results"]
        assert publisher.close(30.0) == 0
        yield settings, answers
    finally:
        server.shutdown()
        client.delete_registered_model(name)


def simulated_events() -> pd.DataFrame:
    """customer_id and epoch day of every simulated transaction (what the stream archived)."""
    import pyarrow as pa

    from streaming.simulator import make_population, simulate

    tables = [t.select(["customer_id", "event_time"]) for t in simulate(make_population(3_000, START, DAYS, SEED))]
    frame = pa.concat_tables(tables).to_pandas()
    frame["day"] = (frame["event_time"] - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(days=1)
    return frame[["customer_id", "day"]]


def direct(answers: list[dict], settings: Settings) -> pd.DataFrame:
    """The answers received, the latest per (customer, as_of day, version, arm), past their horizon, with
    outcomes counted straight from the simulated events."""
    epoch = date(1970, 1, 1)
    rows = pd.DataFrame([{
        "customer_id": a["customer_id"], "day": (datetime.fromisoformat(a["as_of"]).date() - epoch).days,
        "version": a["model"]["version"], "arm": a["model"]["arm"], "label": CLASSES.index(a["class"]),
        **{f"p_{c}": a["probabilities"][c] for c in CLASSES},
    } for a in answers])
    rows = rows.drop_duplicates(["customer_id", "day", "version", "arm"], keep="last")
    last = (LAST_DAY - date(1970, 1, 1)).days
    rows = rows[rows["day"] + 30 <= last].reset_index(drop=True)
    events = simulated_events()
    counts = events.groupby("customer_id")["day"].agg(list).to_dict()
    previous, upcoming, seen = [], [], []
    for customer, day in zip(rows["customer_id"], rows["day"], strict=True):
        days = np.asarray(counts.get(customer, []))
        previous.append(int(((days >= day - 30) & (days < day)).sum()))
        upcoming.append(int(((days >= day) & (days < day + 30)).sum()))
        seen.append(bool((days < day).any()))
    change = np.log1p(upcoming) - np.log1p(previous)
    t = settings.training
    rows["outcome"] = np.where(change <= t.decline_below, 0, np.where(change >= t.growth_above, 2, 1))
    return rows[np.asarray(seen)].reset_index(drop=True)


def sklearn_figures(rows: pd.DataFrame) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, precision_recall_fscore_support, roc_auc_score

    y, predicted = rows["outcome"].to_numpy(), rows["label"].to_numpy()
    p = rows[[f"p_{c}" for c in CLASSES]].to_numpy()
    precision, recall, f1, _ = precision_recall_fscore_support(y, predicted, labels=[0, 1, 2], zero_division=np.nan)

    def macro(values: np.ndarray) -> float:
        return math.nan if np.isnan(values).any() else float(values.mean())

    figures = {"accuracy": accuracy_score(y, predicted), "macro_precision": macro(precision),
               "macro_recall": macro(recall), "macro_f1": macro(f1),
               "roc_auc": roc_auc_score(y, p, multi_class="ovr", labels=[0, 1, 2]) if len(set(y)) == 3 else math.nan}
    figures |= {f"f1_{c}": float(f1[k]) for k, c in enumerate(CLASSES)}
    return figures


def test_online_quality_matches_a_direct_computation(quality_stack) -> None:
    from prometheus_client import REGISTRY
    from scipy.stats import mannwhitneyu, norm

    from model_contract import registry
    from monitoring.metrics import monitoring_experiment
    from monitoring.quality import metric_name, run_quality

    settings, answers = quality_stack
    assert not any(a["degraded"] for a in answers)
    arms = {a["model"]["arm"]: a["model"]["version"] for a in answers}
    assert arms == {"champion": "1", "challenger": "2"}

    report = run_quality(settings)

    expected = direct(answers, settings)
    champion_answers = sum(a["model"]["arm"] == "champion" for a in answers)
    assert report.funnel["records"] == len(answers) + champion_answers  # the shadow scored every champion answer
    assert (report.funnel["shadow"], report.funnel["fallback"], report.funnel["duplicates"]) == (champion_answers, 0,
                                                                                                 100)
    assert report.funnel["not_matured"] == 150 and report.matured == len(expected) > 500
    assert report.last_day == (LAST_DAY - date(1970, 1, 1)).days and report.matured_through == BOUNDARY_DAY
    assert set(expected["day"]) == {(d - date(1970, 1, 1)).days for d in (MATURED_DAY, BOUNDARY_DAY)}

    groups = {(g.version, g.arm): g for g in report.groups}
    assert set(groups) == {("1", "champion"), ("2", "challenger")}
    correct, losses = {}, {}
    measured = {}
    for (version, arm), group in groups.items():
        rows = expected[(expected["version"] == version) & (expected["arm"] == arm)]
        assert group.scored and group.n == len(rows)
        figures, values = sklearn_figures(rows), group.values()
        for name, value in figures.items():
            assert values[name] == pytest.approx(value, abs=1e-12, nan_ok=True), (version, arm, name)
        measured[arm] = {k: round(values[k], 4) for k in ("accuracy", "macro_precision", "macro_recall", "macro_f1",
                                                          "roc_auc")} | {"n": group.n}
        correct[arm] = int((rows["label"] == rows["outcome"]).sum())
        p = rows[[f"p_{c}" for c in CLASSES]].to_numpy()
        losses[arm] = -np.log(np.clip(p[np.arange(len(rows)), rows["outcome"].to_numpy()], 1e-15, 1.0))
        gauge = REGISTRY.get_sample_value("activity_monitor_online_quality",
                                          {"version": version, "arm": arm, "metric": "macro_f1"})
        assert gauge == pytest.approx(figures["macro_f1"], abs=1e-12)
        assert REGISTRY.get_sample_value("activity_monitor_online_quality_samples",
                                         {"version": version, "arm": arm}) == group.n
    print("\nonline quality:", json.dumps(measured), "A/B:", report.arm_test.summary())
    for key, estimated in report.estimated.items():  # the CBPE of the same answers, beside the realized figures
        print(f"estimated {key}: {json.dumps({k: round(v, 4) for k, v in estimated.items()})}")
    assert set(report.estimated) == {"1/champion", "2/challenger"}
    assert all(0.5 < e["estimated_roc_auc"] < 1 for e in report.estimated.values())
    assert "| estimated ROC-AUC | realized ROC-AUC |" in report.markdown()

    n1, n2 = groups[("1", "champion")].n, groups[("2", "challenger")].n
    pooled = (correct["champion"] + correct["challenger"]) / (n1 + n2)
    z = (correct["challenger"] / n2 - correct["champion"] / n1) / math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    test = report.arm_test
    assert (test.champion_version, test.challenger_version) == ("1", "2")
    assert test.z == pytest.approx(z, abs=1e-12) and test.p_value == pytest.approx(2 * norm.sf(abs(z)), abs=1e-12)
    u, u_p = mannwhitneyu(losses["challenger"], losses["champion"], alternative="two-sided")
    assert (test.mann_whitney_u, test.mann_whitney_p_value) == pytest.approx((u, u_p), abs=1e-12)
    assert REGISTRY.get_sample_value("activity_monitor_online_quality_arm_p_value") == pytest.approx(test.p_value)

    client = registry.client(settings)
    run = client.get_run(report.run_id)
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.name == monitoring_experiment(settings) and run.info.status == "FINISHED"
    assert run.data.params["horizon_days"] == "30" and "window" in run.data.params
    champion_f1 = groups[("1", "champion")].metrics.macro_f1
    assert run.data.metrics[metric_name("1", "champion", "macro_f1")] == pytest.approx(champion_f1, abs=1e-12)
    assert run.data.metrics["v2_challenger_n"] == n2
    artifacts = {a.path for a in client.list_artifacts(report.run_id, "quality")}
    assert {"quality/groups.csv", "quality/report.json", "quality/report.md"} <= artifacts
    table = pd.read_csv(Path(client.download_artifacts(report.run_id, "quality/groups.csv",
                                                       str(settings.home / f"quality-{report.run_id}"))))
    assert table.set_index("arm").loc["champion", "macro_f1"] == pytest.approx(champion_f1, abs=1e-9)

    test_f1 = client.get_run(first_run_id(settings)).data.metrics["macro_f1"]
    assert report.champion_test_macro_f1 == pytest.approx(test_f1)
    fired = test_f1 - champion_f1 > settings.monitoring.quality_alert_f1_drop
    print(f"champion test macro-F1 {test_f1:.4f}, online {champion_f1:.4f}: alert {'fired' if fired else 'not fired'}")
    assert [a.name for a in report.alerts] == (["ActivityOnlineQualityDrop"] if fired else [])
    posted = [alert for body in Webhook.received for alert in body["alerts"]]
    assert [a["labels"]["alertname"] for a in posted] == [a.name for a in report.alerts]
    assert report.alerts_delivered


def test_calibration_is_checked_on_matured_answers_and_each_versions_map_refit(quality_stack) -> None:
    from prometheus_client import REGISTRY

    from monitoring.calibration import load_map
    from monitoring.calibration_job import run_calibration
    from monitoring.estimate_job import calibration_dir

    settings, _ = quality_stack
    settings = settings.model_copy(update={"monitoring": settings.monitoring.model_copy(
        update={"calibration_min_rows": 50})})
    results = run_calibration(settings)
    assert {r.version for r in results} == {"1", "2"}
    for r in results:
        print(f"calibration v{r.version}: {json.dumps({k: round(v, 4) for k, v in r.check.values().items()})}; "
              f"{r.refit}")
        assert r.check.rows > 50 and 0 <= r.check.ece <= 1
        assert REGISTRY.get_sample_value("activity_monitor_calibration_ece",
                                         {"version": r.version, "probabilities": "raw"}) == pytest.approx(r.check.ece)
        if r.refit.startswith("refit"):
            assert load_map(calibration_dir(settings), r.version).rows == r.check.rows
    assert any(r.refit.startswith("refit") for r in results)


def first_run_id(settings: Settings) -> str:
    from model_contract import registry

    client = registry.client(settings)
    return client.get_model_version_by_alias(settings.mlflow.registered_model, "champion").run_id


def test_nothing_matured_is_a_clear_empty_report(quality_stack) -> None:
    from monitoring.quality import run_quality

    settings, _ = quality_stack
    report = run_quality(settings, since=datetime.now(UTC) + timedelta(days=1))
    assert report.groups == () and report.matured == 0 and report.arm_test is None and report.run_id
    assert report.funnel["records"] == 0 and "No prediction has matured yet" in report.markdown()


def test_the_cli_prints_the_report_and_writes_the_textfile(quality_stack) -> None:
    import subprocess
    import sys

    from tests.conftest import settings_env

    settings, _ = quality_stack
    done = subprocess.run([sys.executable, "-m", "activity", "monitor", "quality", "--markdown"],
                          env=settings_env(settings), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "| 1 | champion |" in done.stdout and "| 2 | challenger |" in done.stdout, done.stdout
    exported = (settings.home / "monitoring" / "quality.prom").read_text()
    assert 'activity_monitor_online_quality{arm="champion",metric="macro_f1",version="1"}' in exported
    assert "activity_monitor_drift" not in exported
