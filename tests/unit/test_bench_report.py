"""`activity bench`'s report: targets judged from the figures, failed benchmarks reported, plots written.

No benchmark runs here: the results are canned JSON lines and sample files with small synthetic numbers
(and, for the process plumbing, a stand-in `bench` package of two tiny scripts).
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from activity import bench_report
from activity.bench_report import Benchmark, BenchResult, checks, parse_figures, result_of, select, write_report

FIGURES = {
    "produce": {"events_per_s": 250_000, "reference_events_per_s": 400_000, "ratio": 0.625},
    "ingest": {"tx_per_s": 120_000, "freshness_p50_s": 2.0, "freshness_p99_s": 7.5, "reference_read_per_s": 600_000,
               "ratio": 0.2, "peer_tx_per_s": 60_000, "ratio_vs_peer": 2.0, "driver_rss_mb_small": 800,
               "driver_rss_mb_large": 4_400, "customers_small": 100_000, "customers_large": 1_000_000},
    "serve": {"p50_ms": 1.5, "p99_ms": 4.0, "max_rps_at_p99_20ms": 800.0, "ceiling_rps": 2000.0, "naive_rps": 100.0,
              "ratio_vs_ceiling": 0.4, "ratio_vs_naive": 8.0},
    "model_quality": {"ensemble_auc": 0.80, "ensemble_macro_f1": 0.50, "oracle_auc": 0.85, "best_baseline_auc": 0.70,
                      "best_baseline_macro_f1": 0.55, "best_single_auc": 0.79, "best_single_macro_f1": 0.49},
    "train": {"rows": 1_000_015, "build_s": 100.0, "fit_s": 150.0, "total_s": 250.0},
    "backtest": {"runs": [
        {"dataset": "cdnow", "target": "change", "horizon_days": 90, "customers": 23_570, "rows": 117_510,
         "model_auc": 0.82, "model_macro_f1": 0.65, "bgnbd_auc": 0.856, "bgnbd_macro_f1": 0.668,
         "best_baseline": "bg_nbd", "best_baseline_auc": 0.856, "best_baseline_macro_f1": 0.668,
         "model_beats_all": False},
        {"dataset": "simulator", "target": "change", "horizon_days": 90, "customers": 5_000, "rows": 40_000,
         "model_auc": 0.74, "model_macro_f1": 0.54, "bgnbd_auc": 0.72, "bgnbd_macro_f1": 0.53,
         "best_baseline": "bg_nbd", "best_baseline_auc": 0.72, "best_baseline_macro_f1": 0.53,
         "model_beats_all": True}], "model_wins": 1, "runs_total": 2},
}

SAMPLES = {
    "ingest": {
        "sustained": {"tx_per_s": 120_000, "events": 60_000,
                      "batches": [{"t_s": 0.2 * i + 0.2, "events": 6_000, "duration_s": 0.05} for i in range(10)]},
        "freshness": {"steady_rate": 10_000, "sent_per_s": 9_990, "p50_s": 2.0, "p99_s": 7.5, "p99_method": "max",
                      "batches": [{"t_s": float(i), "events": 10_000 + 100 * i, "duration_s": 0.8,
                                   "freshness_p50_s": 1.5 + 0.1 * i, "freshness_p99_s": 3.0 + 0.5 * i}
                                  for i in range(10)]},
        "reference_read_per_s": 600_000, "peer_tx_per_s": 60_000, "peer_error": None,
    },
    "serve": {"p99_budget_ms": 20.0, "seconds_per_rate": 2.0, "servers": {
        name: {"max_rps_at_p99_20ms": best, "max_sustained_rps": best,
               "steps": [{"rate": r, "sent": 2 * r, "ok": 2 * r, "errors": 0, "p50_ms": 1 + r / scale,
                          "p99_ms": 2 + 4 * r / scale, "achieved_rps": min(r, 1.1 * best)} for r in (50, 200, 800)]}
        for name, best, scale in (("scorer", 800.0, 200), ("ceiling", 2000.0, 800), ("naive", 100.0, 5))}},
    "model_quality": {"test_rows": 1_000, "skipped_baselines": {}, "models": {
        "persistence": {"kind": "baseline", "roc_auc": 0.6, "macro_f1": 0.4},
        "bg_nbd": {"kind": "baseline", "roc_auc": 0.7, "macro_f1": 0.55},
        "random_forest": {"kind": "single", "roc_auc": 0.79, "macro_f1": 0.49},
        "xgboost": {"kind": "single", "roc_auc": 0.78, "macro_f1": 0.48},
        "ensemble": {"kind": "ensemble", "roc_auc": 0.80, "macro_f1": 0.50},
        "oracle": {"kind": "oracle", "roc_auc": 0.85, "macro_f1": 0.6},
    }},
    "train": {"backend": "local", "preparation": {"events": 1e6, "simulate_s": 3.0, "backfill_s": 40.0},
              "sizes": [{"rows": 10_004, "build_s": 5.0, "retrieval_s": 4.0, "fit_s": 6.0, "total_s": 11.0},
                        {"rows": 1_000_015, "build_s": 100.0, "retrieval_s": 99.0, "fit_s": 150.0, "total_s": 250.0}]},
}


def canned(tmp_path: Path, name: str, *, returncode: int = 0, samples: bool = True) -> BenchResult:
    """A finished run as `run_benchmark` records it: its log, its samples file, its stdout ending in the JSON line."""
    log = tmp_path / f"{name}.log"
    stdout = [f"# {name} figures", "some table", json.dumps(FIGURES[name])]
    log.write_text("\n".join(["[12:00:00] starting", *stdout]) + "\n")
    samples_path = None
    if samples and name in SAMPLES:
        samples_path = tmp_path / f"{name}.json"
        samples_path.write_text(json.dumps(SAMPLES[name]))
    return result_of(name, ["python", "-m", f"bench.{name}"], returncode, 12.0, stdout, log,
                     log.read_text().splitlines(), samples_path)


def row(markdown: str, label: str) -> list[str]:
    """The cells of the table row starting with ``label``."""
    for line in markdown.splitlines():
        if line.startswith(f"| {label} |"):
            return [cell.strip() for cell in line.strip("|").split("|")]
    raise AssertionError(f"no row {label!r} in:\n{markdown}")


def section(markdown: str, name: str) -> str:
    return re.search(rf"^## {name}\n(.*?)(?=^## |\Z)", markdown, re.S | re.M)[1]


def test_targets_are_judged_from_the_figures() -> None:
    verdicts = {name: {c.label: c.met for c in checks(name, figures, SAMPLES.get(name))}
                for name, figures in FIGURES.items()}
    assert verdicts["ingest"] == {"sustained Kafka -> Feast online (tx/s)": True,
                                  "freshness p99 at 10,000 tx/s (s)": False,
                                  "ours / bare consumer's read rate": False,
                                  "ours / Feast's SparkKafkaProcessor": True,
                                  "stream driver RSS, 1,000,000 / 100,000 customers": False}  # 5.5x
    assert list(verdicts["serve"].values()) == [False, True]  # 0.4 of the ceiling; 8x the naive composition
    assert list(verdicts["model_quality"].values()) == [True, False, True, True, True]  # F1 below BG/NBD's
    assert list(verdicts["train"].values()) == [True]
    assert list(verdicts["produce"].values()) == [True]
    assert list(verdicts["backtest"].values()) == [False]  # 1 of 2 runs
    assert checks("backtest", {"runs": [], "model_wins": 0, "runs_total": 0})[0].met is None


def test_targets_not_measurable_are_neither_met_nor_missed() -> None:
    small_train = checks("train", {"rows": 20_000, "build_s": 1.0, "fit_s": 1.0, "total_s": 2.0})
    assert [c.met for c in small_train] == [None]  # the target is set for 1M rows
    no_peer = checks("ingest", FIGURES["ingest"] | {"peer_tx_per_s": None, "ratio_vs_peer": None})
    assert no_peer[3].met is None and "did not finish" in no_peer[3].measured
    no_memory = {key: value for key, value in FIGURES["ingest"].items() if not key.startswith("driver_rss")}
    assert checks("ingest", no_memory)[4].met is None
    other_rate = checks("ingest", FIGURES["ingest"] | {"freshness_p99_s": 1.0},
                        {"freshness": {"steady_rate": 2_000}})
    assert other_rate[1].met is None  # the target is for 10,000 tx/s
    nan_ratio = checks("serve", FIGURES["serve"] | {"ratio_vs_ceiling": float("nan")})
    assert nan_ratio[0].met is None
    ceiling_at_top = checks("serve", FIGURES["serve"] | {"ceiling_rps": 800.0, "ratio_vs_ceiling": 1.0},
                            SAMPLES["serve"])  # 800 req/s is the highest rate offered: the ceiling's limit is unknown
    assert ceiling_at_top[0].met is None and "highest rate offered" in ceiling_at_top[0].measured


def test_the_figures_are_the_last_stdout_line() -> None:
    assert parse_figures(["table", '{"a": 1}', ""]) == {"a": 1}
    assert parse_figures(['{"a": 1}', "Traceback ..."]) is None
    assert parse_figures([]) is None


def test_report_marks_targets_and_reports_a_failed_benchmark(tmp_path: Path) -> None:
    failed_log = tmp_path / "produce.log"
    failed_log.write_text("[12:00:00] starting a broker\nTraceback (most recent call last):\nBrokerError: no port\n")
    results = [result_of("produce", ["python", "-m", "bench.produce"], 3, 42.0, ["half a table"], failed_log,
                         failed_log.read_text().splitlines(), None)]
    results += [canned(tmp_path, name) for name in ("ingest", "model_quality", "train", "serve")]
    started = datetime(2026, 5, 4, 4, 0, tzinfo=UTC)

    markdown = write_report(results, tmp_path, quick=True, started=started).read_text()

    assert markdown.startswith("# Benchmark report (quick run)")
    assert "**Quick run**" in markdown and "2026-05-04 04:00" in markdown and "cores, Python" in markdown
    assert row(markdown, "ingest")[1:] == ["ok", "12 s", "2 of 5"]
    assert row(markdown, "produce")[1:] == ["**failed** (exit code 3)", "42 s", "-"]
    ingest = section(markdown, "ingest")
    assert row(ingest, "sustained Kafka -> Feast online (tx/s)")[1:] == ["120,000", ">= 100,000", "met"]
    assert row(ingest, "freshness p99 at 10,000 tx/s (s)")[1:] == ["7.5", "<= 3 at 10,000 tx/s", "**missed**"]
    assert row(ingest, "freshness p50 at the steady rate (s)")[1] == "2"  # a figure without a target
    quality = section(markdown, "model_quality")
    assert row(quality, "ensemble macro-F1 vs best baseline")[1:] == ["0.5 vs 0.55", "higher", "**missed**"]
    assert row(quality, "ensemble ROC-AUC / oracle's")[3] == "met"  # 0.80 / 0.85 = 0.94
    assert row(section(markdown, "train"), "1M labelled rows end to end")[3] == "met"
    assert row(section(markdown, "serve"), "scorer / naive composition")[1:] == ["8x (800 / 100)", ">= 5x", "met"]
    produce = section(markdown, "produce")
    assert "**Failed**: exit code 3" in produce and "BrokerError: no port" in produce
    assert "| figure |" not in produce  # no figures from a failed run
    for plot in ("throughput", "freshness", "latency", "model_quality"):
        path = tmp_path / f"{plot}.png"
        assert path.is_file() and path.stat().st_size > 5_000, plot
        assert path.read_bytes().startswith(b"\x89PNG")
        assert f"![{plot}]({plot}.png)" in markdown


def test_backtest_runs_are_a_table_of_their_own(tmp_path: Path) -> None:
    markdown = write_report([canned(tmp_path, "backtest")], tmp_path, quick=False,
                            started=datetime.now(UTC)).read_text()
    backtest = section(markdown, "backtest")
    assert row(backtest, "runs where the model (the hybrid) beats every baseline on ROC-AUC and macro-F1")[1:] == [
        "1 of 2", "all", "**missed**"]
    assert row(backtest, "cdnow")[1:] == ["change", "90", "23,570", "0.82 / 0.65", "0.856 / 0.668",
                                          "bg_nbd 0.856 / 0.668", "**missed**"]
    assert row(backtest, "simulator")[-1] == "met"
    assert "{'dataset'" not in backtest  # the list is not dumped into a figure cell


def test_report_without_samples_still_plots_the_figures(tmp_path: Path) -> None:
    results = [canned(tmp_path, name, samples=False) for name in ("ingest", "model_quality")]
    markdown = write_report(results, tmp_path, quick=False, started=datetime.now(UTC)).read_text()
    assert "quick" not in markdown.lower()
    written = sorted(p.name for p in tmp_path.glob("*.png"))
    assert written == ["freshness.png", "model_quality.png", "throughput.png"]  # no serve samples: no latency plot
    assert all(p.stat().st_size > 5_000 for p in tmp_path.glob("*.png"))


def test_select_names_benchmarks_and_rejects_unknown_ones() -> None:
    assert select(None) == list(bench_report.BENCHMARKS)
    assert select("serve, model-quality") == ["model_quality", "serve"]  # the report's order
    with pytest.raises(ValueError, match="unknown benchmark 'speed'; choose from produce, ingest"):
        select("ingest,speed")


def test_a_run_streams_its_output_to_the_log_and_a_failure_does_not_stop_the_others(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "repo" / "bench"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "good.py").write_text(
        "import json, sys\n"
        "path = sys.argv[sys.argv.index('--samples') + 1]\n"
        "open(path, 'w').write(json.dumps({'args': sys.argv[1:]}))\n"
        "print('progress', file=sys.stderr)\n"
        "print(json.dumps({'tx_per_s': 5}))\n")
    (fake / "bad.py").write_text("import sys\nprint('half a table')\nsys.exit('it broke')\n")
    monkeypatch.setattr(bench_report, "REPO", tmp_path / "repo")
    monkeypatch.setattr(bench_report, "BENCHMARKS", {"bad": Benchmark("bad", "Bad", ("--small",)),
                                                     "good": Benchmark("good", "Good", ("--small",))})
    out = tmp_path / "report"
    lines: list[str] = []

    report, results = bench_report.run_report(["bad", "good"], out, quick=True, progress=lines.append)

    bad, good = results
    assert bad.returncode == 1 and not bad.ok and "it broke" in bad.tail  # stdout and stderr, in either order
    assert good.ok and good.figures == {"tx_per_s": 5}
    assert good.samples == {"args": ["--small", "--samples", str(out / "good.json")]}
    assert "progress" in (out / "good.log").read_text() and any("good" in line for line in lines)
    markdown = report.read_text()
    assert "**Failed**: exit code 1" in markdown and "it broke" in markdown


def test_a_benchmark_that_died_is_named_with_its_signal_before_everything_else(tmp_path: Path) -> None:
    log = tmp_path / "model_quality.log"
    log.write_text("[12:00:00] building the training set\nFatal Python error: Segmentation fault\n")
    results = [canned(tmp_path, "ingest"),
               result_of("model_quality", ["python", "-m", "bench.model_quality"], -11, 300.0, ["building"], log,
                         log.read_text().splitlines(), None),
               canned(tmp_path, "serve")]

    markdown = write_report(results, tmp_path, quick=False, started=datetime(2026, 5, 4, tzinfo=UTC)).read_text()

    first_lines = markdown.split("\n- date:")[0]
    assert "1 of 3 benchmarks failed" in first_lines and "model_quality (died: SIGSEGV (signal 11))" in first_lines
    assert row(markdown, "model_quality")[1] == "**failed** (died: SIGSEGV (signal 11))"
    sections = re.findall(r"^## (\w+)$", markdown, flags=re.MULTILINE)
    assert sections[:3] == ["model_quality", "ingest", "serve"]  # the failure's section first
    assert "Segmentation fault" in section(markdown, "model_quality")
