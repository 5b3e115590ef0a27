"""`activity bench`: run the benchmarks under ``bench/`` and write a report folder: Markdown plus PNG plots.

Each benchmark runs in its own process (``python -m bench.<name> ... --samples <out>/<name>.json``, from the
source tree), its stdout and stderr streamed to ``<out>/<name>.log``. Its last stdout line is its JSON
figures; ``--samples`` makes it also write the series behind them. ``<out>/report.md`` then holds, per
benchmark, the figures against the targets of its issue (met / missed, computed from the figures) and
the plots: ``throughput.png``, ``freshness.png``, ``latency.png``, ``model_quality.png``. A failed
benchmark (an exit code, or killed by a signal: a crash, the OOM killer) is reported first, with its log's
tail; the others still run. Without ``--quick`` every benchmark runs at its full size.
"""

from __future__ import annotations

import json
import math
import os
import platform
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import StrMethodFormatter

REPO = Path(__file__).resolve().parents[1]  # `bench` is not installed: the benchmarks run from the source tree
TAIL_LINES = 40
DPI = 110


@dataclass(frozen=True)
class Benchmark:
    name: str
    title: str
    quick: tuple[str, ...]  # arguments of a quick (smoke) run; a full run uses the module's defaults
    samples: bool = True  # takes --samples PATH


BENCHMARKS = {b.name: b for b in (
    Benchmark("produce", "Simulator producer throughput", ("--events", "200000", "--customers", "20000"),
              samples=False),
    Benchmark("ingest", "Kafka -> Feast online ingest and freshness", ("--quick",)),
    Benchmark("keyed_state", "Per-customer state on Spark's executors against the driver's fold", ("--quick",),
              samples=False),
    Benchmark("model_quality", "Model quality on the held-out window", ("--customers", "1500", "--days", "180")),
    Benchmark("train", "Training at scale", ("--sizes", "5000,20000", "--customers", "1500", "--days", "180")),
    Benchmark("serve", "Scoring latency and throughput",
              ("--customers", "1500", "--days", "180", "--seconds", "2", "--rates", "50,200,800,1600,3200")),
    Benchmark("estimate", "Estimated (CBPE) against realized quality under known shifts", ("--quick",), samples=False),
    Benchmark("triton_protocol", "Triton over HTTP and gRPC, by rows per call", ("--requests", "300", "--rows", "2000"),
              samples=False),
    Benchmark("backtest", "The model against the classic models on real ledgers and the simulator",
              ("--datasets", "simulator", "--horizons", "30", "--customers", "800", "--days", "200"), samples=False),
)}


def select(only: str | None) -> list[str]:
    """The benchmarks named in ``only`` (comma-separated; ``-`` or ``_``), in the report's order; all by default."""
    if not only:
        return list(BENCHMARKS)
    wanted = [name.strip().replace("-", "_") for name in only.split(",") if name.strip()]
    unknown = [name for name in wanted if name not in BENCHMARKS]
    if unknown or not wanted:
        raise ValueError(f"unknown benchmark {', '.join(map(repr, unknown)) or repr(only)}; "
                         f"choose from {', '.join(BENCHMARKS)}")
    return [name for name in BENCHMARKS if name in wanted]


# ------------------------------------------------------------------------------------------ running


@dataclass
class BenchResult:
    name: str
    command: list[str]
    returncode: int | None  # None: not started (interrupted before it)
    seconds: float
    figures: dict[str, Any] | None  # the final JSON line
    samples: dict[str, Any] | None  # the --samples file
    log: Path
    tail: list[str]
    error: str | None = None  # why there are no figures

    @property
    def ok(self) -> bool:
        return self.error is None and self.figures is not None


def parse_figures(stdout_lines: Sequence[str]) -> dict[str, Any] | None:
    """The benchmark's figures: its last non-empty stdout line, when that is a JSON object."""
    for line in reversed(stdout_lines):
        if line.strip():
            try:
                figures = json.loads(line)
            except ValueError:
                return None
            return figures if isinstance(figures, dict) else None
    return None


def read_samples(path: Path) -> dict[str, Any] | None:
    try:
        samples = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return samples if isinstance(samples, dict) else None


def result_of(name: str, command: list[str], returncode: int | None, seconds: float, stdout_lines: Sequence[str],
              log: Path, tail: Sequence[str], samples_path: Path | None) -> BenchResult:
    """What a finished benchmark run left: figures, samples and, when it failed, why."""
    figures = parse_figures(stdout_lines)
    error = None
    if returncode is None:
        error = "interrupted"
    elif returncode < 0:
        error = f"died: {_signal_name(-returncode)}"
    elif returncode != 0:
        error = f"exit code {returncode}"
    elif figures is None:
        error = "exit code 0, but its last line is not its JSON figures"
    samples = read_samples(samples_path) if samples_path is not None and samples_path.is_file() else None
    return BenchResult(name, command, returncode, seconds, figures if error is None else None, samples, log,
                       list(tail), error)


def _signal_name(number: int) -> str:
    """``SIGSEGV (signal 11)``: how a process the kernel or a crash ended is named in the report."""
    try:
        return f"{signal.Signals(number).name} (signal {number})"
    except ValueError:
        return f"signal {number}"


def run_benchmark(name: str, out: Path, *, quick: bool, env: dict[str, str] | None = None,
                  progress: Callable[[str], None] | None = None) -> BenchResult:
    """Run ``bench.<name>`` to its end, its output streamed to ``<out>/<name>.log``; Ctrl-C stops it and re-raises."""
    bench = BENCHMARKS[name]
    log_path, samples_path = out / f"{name}.log", out / f"{name}.json"
    samples_path.unlink(missing_ok=True)
    command = [sys.executable, "-m", f"bench.{name}", *(bench.quick if quick else ()),
               *(("--samples", str(samples_path)) if bench.samples else ())]
    stdout_lines: deque[str] = deque(maxlen=200)
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    lock = threading.Lock()
    started = time.monotonic()
    with log_path.open("w", encoding="utf-8") as log:
        log.write(f"$ {shlex.join(command)}\n")
        log.flush()
        process = subprocess.Popen(command, cwd=REPO, env={**(env or os.environ), "PYTHONUNBUFFERED": "1"},
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors="replace")

        def pump(stream: Iterable[str], keep: deque[str] | None) -> None:
            for line in stream:
                with lock:
                    log.write(line)
                    log.flush()
                    tail.append(line.rstrip("\n"))
                if keep is not None:
                    keep.append(line.rstrip("\n"))
                if progress is not None and line.strip():
                    progress(f"{name} ({_duration(time.monotonic() - started)}): {line.strip()[:110]}")

        pumps = [threading.Thread(target=pump, args=(process.stdout, stdout_lines), daemon=True),
                 threading.Thread(target=pump, args=(process.stderr, None), daemon=True)]
        for thread in pumps:
            thread.start()
        try:
            returncode = process.wait()
        except KeyboardInterrupt:  # the child got the same SIGINT: give it time to stop what it started
            _stop(process)
            for thread in pumps:
                thread.join(5)
            raise
        for thread in pumps:
            thread.join()
    return result_of(name, command, returncode, time.monotonic() - started, list(stdout_lines), log_path,
                     list(tail), samples_path if bench.samples else None)


def _stop(process: subprocess.Popen) -> None:
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def run_report(names: Sequence[str], out: Path, *, quick: bool, env: dict[str, str] | None = None,
               progress: Callable[[str], None] | None = None,
               report: Callable[[str], None] | None = None) -> tuple[Path, list[BenchResult]]:
    """Run the benchmarks one after another and write the report; on Ctrl-C the report covers those run so far."""
    out.mkdir(parents=True, exist_ok=True)
    started = datetime.now(UTC)
    results: list[BenchResult] = []
    try:
        for i, name in enumerate(names, 1):
            if progress is not None:
                progress(f"{name} ({i}/{len(names)}): starting")
            result = run_benchmark(name, out, quick=quick, env=env, progress=progress)
            results.append(result)
            if report is not None:
                state = "done" if result.ok else f"FAILED ({result.error})"
                report(f"{name}: {state} in {_duration(result.seconds)}; log {result.log}")
    except KeyboardInterrupt:
        done = {r.name for r in results}
        interrupted = next((name for name in names if name not in done), None)
        if interrupted is not None:
            log = out / f"{interrupted}.log"
            tail = log.read_text(errors="replace").splitlines()[-TAIL_LINES:] if log.is_file() else []
            results.append(BenchResult(interrupted, [], None, 0.0, None, None, log, tail, "interrupted"))
        write_report(results, out, quick=quick, started=started)
        raise
    return write_report(results, out, quick=quick, started=started), results


# ------------------------------------------------------------------------------------------ targets


@dataclass(frozen=True)
class Check:
    label: str
    measured: str
    target: str
    met: bool | None  # None: the figures cannot tell (missing, or not the size the target is set for)
    uses: tuple[str, ...]  # the JSON figures it is computed from


def _num(figures: dict[str, Any], key: str) -> float | None:
    value = figures.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        return None
    return float(value)


def _cmp(value: float | None, ok: Callable[[float], bool]) -> bool | None:
    return None if value is None else ok(value)


def checks(name: str, figures: dict[str, Any], samples: dict[str, Any] | None = None) -> list[Check]:
    """The targets of the benchmark's issue, judged from its figures."""
    f = lambda key: _num(figures, key)  # noqa: E731
    samples = samples or {}
    if name == "produce":
        rate = f("events_per_s")
        return [Check("simulator -> Kafka (events/s)", _fmt(rate), ">= 200,000", _cmp(rate, lambda v: v >= 200_000),
                      ("events_per_s",))]
    if name == "ingest":
        tx, p99, ratio, vs_peer = f("tx_per_s"), f("freshness_p99_s"), f("ratio"), f("ratio_vs_peer")
        steady = (samples.get("freshness") or {}).get("steady_rate")
        at_target_rate = steady is None or steady == 10_000  # the benchmark's default steady rate
        small, large = f("driver_rss_mb_small"), f("driver_rss_mb_large")
        rss = large / small if small and large is not None else None
        return [
            Check("sustained Kafka -> Feast online (tx/s)", _fmt(tx), ">= 100,000", _cmp(tx, lambda v: v >= 100_000),
                  ("tx_per_s",)),
            Check(f"freshness p99 at {_fmt(steady if steady is not None else 10_000)} tx/s (s)", _fmt(p99),
                  "<= 3 at 10,000 tx/s", _cmp(p99, lambda v: v <= 3) if at_target_rate else None,
                  ("freshness_p99_s",)),
            Check("ours / bare consumer's read rate", f"{_fmt(ratio)} ({_fmt(tx)} / {_fmt(f('reference_read_per_s'))})",
                  ">= 0.5", _cmp(ratio, lambda v: v >= 0.5), ("ratio", "reference_read_per_s")),
            Check("ours / Feast's SparkKafkaProcessor",
                  f"{_fmt(vs_peer)} ({_fmt(tx)} / {_fmt(f('peer_tx_per_s'))})" if vs_peer is not None
                  else "n/a (the peer did not finish)", "> 1", _cmp(vs_peer, lambda v: v > 1),
                  ("ratio_vs_peer", "peer_tx_per_s")),
            Check(f"stream driver RSS, {_fmt(f('customers_large'))} / {_fmt(f('customers_small'))} customers",
                  f"{_fmt(rss)} ({_fmt(large)} MB / {_fmt(small)} MB)", "<= 1.2", _cmp(rss, lambda v: v <= 1.2),
                  ("driver_rss_mb_large", "driver_rss_mb_small", "customers_large", "customers_small")),
        ]
    if name == "serve":
        ours, ceiling, naive = f("max_rps_at_p99_20ms"), f("ceiling_rps"), f("naive_rps")
        vs_ceiling, vs_naive = f("ratio_vs_ceiling"), f("ratio_vs_naive")
        offered = [step["rate"] for step in ((samples.get("servers") or {}).get("ceiling") or {}).get("steps") or []]
        unbounded = bool(offered) and ceiling == max(offered)  # the ceiling's limit lies above the rates offered
        return [
            Check("scorer / ceiling, max req/s at p99 <= 20 ms", f"{_fmt(vs_ceiling)} ({_fmt(ours)} / {_fmt(ceiling)})"
                  + (": the ceiling met the budget at the highest rate offered" if unbounded else ""),
                  ">= 0.5", None if unbounded else _cmp(vs_ceiling, lambda v: v >= 0.5),
                  ("ratio_vs_ceiling", "max_rps_at_p99_20ms", "ceiling_rps")),
            Check("scorer / naive composition", f"{_fmt(vs_naive)}x ({_fmt(ours)} / {_fmt(naive)})", ">= 5x",
                  _cmp(vs_naive, lambda v: v >= 5), ("ratio_vs_naive", "naive_rps")),
        ]
    if name == "train":
        rows, total = f("rows"), f("total_s")
        full = rows is not None and rows >= 950_000  # max_rows samples customers: ~1M, not exactly
        return [Check("1M labelled rows end to end", f"{_fmt(total)} s for {_fmt(rows)} rows", "< 600 s",
                      _cmp(total, lambda v: v < 600) if full else None, ("rows", "total_s"))]
    if name == "model_quality":
        auc, f1, oracle = f("ensemble_auc"), f("ensemble_macro_f1"), f("oracle_auc")
        out = []
        for other, what in (("best_baseline", "best baseline"), ("best_single", "best single model")):
            for metric, mine, label in (("auc", auc, "ROC-AUC"), ("macro_f1", f1, "macro-F1")):
                theirs = f(f"{other}_{metric}")
                out.append(Check(f"ensemble {label} vs {what}", f"{_fmt(mine)} vs {_fmt(theirs)}", "higher",
                                 None if mine is None or theirs is None else mine > theirs,
                                 (f"ensemble_{metric}", f"{other}_{metric}")))
        share = None if auc is None or not oracle else auc / oracle
        out.append(Check("ensemble ROC-AUC / oracle's", f"{_fmt(share)} ({_fmt(auc)} / {_fmt(oracle)})", ">= 0.9",
                         _cmp(share, lambda v: v >= 0.9), ("ensemble_auc", "oracle_auc")))
        return out
    if name == "backtest":
        wins, total = f("model_wins"), f("runs_total")
        return [Check("runs where the model (the hybrid) beats every baseline on ROC-AUC and macro-F1",
                      f"{_fmt(wins)} of {_fmt(total)}", "all",
                      None if wins is None or not total else wins == total, ("model_wins", "runs_total"))]
    if name == "estimate":
        error, days, realized, alarms = (f("estimated_auc_abs_error"), f("days_to_detect_estimated"),
                                         f("days_to_detect_realized"), f("false_alarms"))
        return [
            Check("|estimated - realized| ROC-AUC once matured", _fmt(error), "<= 0.03",
                  _cmp(error, lambda v: v <= 0.03), ("estimated_auc_abs_error",)),
            Check("harmful shift detected by the estimate (days)", f"{_fmt(days)} (realized: {_fmt(realized)})",
                  "<= 1", _cmp(days, lambda v: v <= 1), ("days_to_detect_estimated", "days_to_detect_realized")),
            Check("alerts for the harmless shift and for no shift", _fmt(alarms), "0", _cmp(alarms, lambda v: v == 0),
                  ("false_alarms",)),
        ]
    return []


# ------------------------------------------------------------------------------------------ markdown


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if float(value).is_integer() and abs(value) >= 1:
        return f"{value:,.0f}"
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"


def _duration(seconds: float) -> str:
    minutes, rest = divmod(int(round(seconds)), 60)
    return f"{minutes} min {rest} s" if minutes else f"{rest} s"


def _verdict(met: bool | None) -> str:
    return "not measured" if met is None else "met" if met else "**missed**"


def _commit() -> str | None:
    try:
        result = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                                timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if result.returncode != 0:
        return None
    return result.stdout.strip() or None


def machine() -> str:
    """As ``bench.common.machine`` (``bench`` is not importable from an installed ``activity``)."""
    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def write_report(results: Sequence[BenchResult], out: Path, *, quick: bool, started: datetime,
                 finished: datetime | None = None) -> Path:
    """``<out>/report.md`` and the plots the results allow; returns the Markdown's path."""
    out.mkdir(parents=True, exist_ok=True)
    finished = finished or datetime.now(UTC)
    by_name = {r.name: r for r in results}
    plots = write_plots(by_name, out)
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    commit = _commit()
    lines = ["# Benchmark report" + (" (quick run)" if quick else ""), ""]
    failed = [r for r in results if not r.ok]
    if failed:  # before anything else: a benchmark that died has no figures to read further down
        lines += [f"> **{len(failed)} of {len(results)} benchmark{'s' if len(results) != 1 else ''} failed**: "
                  + "; ".join(f"{r.name} ({r.error})" for r in failed) + ". Their sections come first.", ""]
    if quick:
        lines += ["> **Quick run**: every benchmark ran at small sizes (a smoke run). Its figures show the "
                  "benchmarks work, not what the platform does at the sizes the targets are set for; the "
                  "met / missed marks below are computed from these small runs.", ""]
    lines += [
        f"- date: {started:%Y-%m-%d %H:%M} - {finished:%H:%M} UTC",
        f"- machine: {machine()}" + (f"; load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} "
                                     "(1 / 5 / 15 min, at the end)" if load else ""),
        *([f"- commit: {commit} (plus any local changes)"] if commit else []),
        "- each benchmark ran alone, one after another, in its own process; its log and samples are beside "
        "this file",
        "",
        "| benchmark | status | time | targets met |",
        "| --- | --- | --- | --- |",
    ]
    for r in results:
        judged = ([c for c in checks(r.name, r.figures, r.samples) if c.met is not None]
                  if r.ok and r.figures is not None else [])
        status = "ok" if r.ok else f"**failed** ({r.error})"
        targets = f"{sum(1 for c in judged if c.met)} of {len(judged)}" if judged else "-"
        lines.append(f"| {r.name} | {status} | {_duration(r.seconds)} | {targets} |")
    lines.append("")
    for r in [*failed, *(r for r in results if r.ok)]:
        lines += _section(r, quick)
    if plots:
        lines += ["## Plots", ""]
        for name, path in plots.items():
            lines += [f"### {name}", "", PLOT_CAPTIONS[name], "", f"![{name}]({path.name})", ""]
    (out / "report.md").write_text("\n".join(lines))
    return out / "report.md"


PLOT_CAPTIONS = {
    "throughput": "Ingest: our streaming job's sustained rate against the bare consumer and Feast's processor "
                  "(and per micro-batch over the drain); scoring: the highest rate within p99 <= 20 ms of the "
                  "scorer, the ceiling and the naive composition; the producer against the bare producer.",
    "freshness": "Freshness (event time -> Feast online write) at the steady rate: the job records each micro-batch's "
                 "median and oldest-1 % event freshness, so these are per-batch percentiles over time and their "
                 "distribution weighted by batch size, not each event's freshness.",
    "latency": "Scoring: p50 and p99 latency (from each request's scheduled send time, open loop) and achieved "
               "req/s at each offered rate, for the scorer, the ceiling and the naive composition.",
    "model_quality": "ROC-AUC and macro-F1 on the test window of every baseline, each single model, the ensemble "
                     "and the oracle (the generator's own model: the ceiling).",
    "estimate": "ROC-AUC estimated from the calibrated probabilities (CBPE) against the realized figure once the "
                "labels matured, for no shift, a harmful and a harmless shift of the scored customers.",
}


def _section(r: BenchResult, quick: bool) -> list[str]:
    bench = BENCHMARKS.get(r.name)
    title = bench.title if bench else r.name
    lines = [f"## {r.name}", "", f"{title}{' (quick run)' if quick else ''}."
             + (f" `{shlex.join(['python', *r.command[1:]])}`" if r.command else ""), ""]
    if not r.ok:
        where = f"after {_duration(r.seconds)}; " if r.returncode is not None else ""
        lines += [f"**Failed**: {r.error} ({where}log: [{r.log.name}]({r.log.name})). Last lines of the log:", "",
                  "```text", *r.tail, "```", ""]
        return lines
    assert r.figures is not None
    found = checks(r.name, r.figures, r.samples)
    used = {key for c in found for key in c.uses}
    lines += ["| figure | measured | target | result |", "| --- | --- | --- | --- |"]
    lines += [f"| {c.label} | {c.measured} | {c.target} | {_verdict(c.met)} |" for c in found]
    lines += [f"| {FIGURE_LABELS.get(key, key)} | {_fmt(value)} | | |" for key, value in r.figures.items()
              if key not in used and not isinstance(value, list | dict)]
    lines.append("")
    if r.name == "backtest" and isinstance(r.figures.get("runs"), list):
        lines += ["| data set | target | horizon (days) | customers | model ROC-AUC / macro-F1 | BG/NBD | "
                  "best baseline | beats all |", "| --- | --- | ---: | ---: | --- | --- | --- | --- |"]
        lines += [f"| {run.get('dataset')} | {run.get('target')} | {_fmt(run.get('horizon_days'))} | "
                  f"{_fmt(run.get('customers'))} | {_fmt(run.get('model_auc'))} / {_fmt(run.get('model_macro_f1'))} | "
                  f"{_fmt(run.get('bgnbd_auc'))} / {_fmt(run.get('bgnbd_macro_f1'))} | {run.get('best_baseline')} "
                  f"{_fmt(run.get('best_baseline_auc'))} / {_fmt(run.get('best_baseline_macro_f1'))} | "
                  f"{_verdict(run.get('model_beats_all'))} |" for run in r.figures["runs"] if isinstance(run, dict)]
        lines.append("")
    unjudged = [c.label for c in found if c.met is None]
    if r.name == "train" and unjudged:
        lines += ["The training target is set for 1M rows; this run's largest size is smaller, so it is not judged.",
                  ""]
    if r.name == "train" and r.samples and r.samples.get("sizes"):
        lines += ["| rows | build s | Feast retrieval s | fit s | total s |", "| --- | --- | --- | --- | --- |"]
        lines += [f"| {_fmt(s.get('rows'))} | {_fmt(s.get('build_s'))} | {_fmt(s.get('retrieval_s'))} | "
                  f"{_fmt(s.get('fit_s'))} | {_fmt(s.get('total_s'))} |" for s in r.samples["sizes"]]
        lines.append("")
    if r.name == "ingest" and r.samples and r.samples.get("peer_error"):
        lines += [f"The peer failed: {r.samples['peer_error']}", ""]
    files = [f"log: [{r.log.name}]({r.log.name})"]
    if r.samples is not None:
        files.append(f"samples: [{r.name}.json]({r.name}.json)")
    lines += [f"Run time {_duration(r.seconds)}; " + ", ".join(files) + ".", ""]
    return lines


FIGURE_LABELS = {
    "reference_events_per_s": "bare confluent-kafka producer (events/s)", "ratio": "ours / reference",
    "freshness_p50_s": "freshness p50 at the steady rate (s)", "p50_ms": "scorer p50 at its best rate (ms)",
    "p99_ms": "scorer p99 at its best rate (ms)", "build_s": "training-set build (s)", "fit_s": "fit (s)",
}


# ------------------------------------------------------------------------------------------ plots


def _figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _figures_of(results: dict[str, BenchResult], name: str) -> dict[str, Any] | None:
    result = results.get(name)
    return result.figures if result is not None and result.ok else None


def _samples_of(results: dict[str, BenchResult], name: str) -> dict[str, Any] | None:
    result = results.get(name)
    return result.samples if result is not None and result.ok else None


def write_plots(results: dict[str, BenchResult], out: Path) -> dict[str, Path]:
    """Each plot the successful results have data for, as ``<out>/<plot>.png``."""
    builders = {"throughput": _throughput, "freshness": _freshness, "latency": _latency,
                "model_quality": _model_quality}
    written = {}
    for name, build in builders.items():
        figure = build(results)
        if figure is None:
            continue
        path = out / f"{name}.png"
        figure.savefig(path)
        figure.clear()
        written[name] = path
    return written


def _bars(axes: Any, labels: Sequence[str], values: Sequence[float | None], title: str, unit: str,
          target: float | None = None, target_label: str = "") -> None:
    heights = [0.0 if v is None else v for v in values]
    colors = ["tab:blue", *["tab:gray"] * (len(labels) - 1)]
    bars = axes.bar(labels, heights, color=colors)
    for bar, value in zip(bars, values, strict=True):
        axes.annotate("failed / n/a" if value is None else f"{value:,.0f}", (bar.get_x() + bar.get_width() / 2,
                      bar.get_height()), ha="center", va="bottom", fontsize=8)
    if target is not None:
        axes.axhline(target, linestyle="--", color="tab:red", label=target_label)
        axes.legend(loc="upper left", fontsize=8)
    top = max([*heights, target or 0.0])
    axes.set(title=title, ylabel=unit, ylim=(0, 1.3 * top if top > 0 else 1.0))
    axes.yaxis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))
    axes.tick_params(axis="x", labelsize=8)


def _throughput(results: dict[str, BenchResult]) -> Figure | None:
    ingest, serve, produce = (_figures_of(results, n) or {} for n in ("ingest", "serve", "produce"))
    timeline = ((_samples_of(results, "ingest") or {}).get("sustained") or {}).get("batches") or []
    panels = [p for p, present in (("ingest", ingest), ("timeline", timeline), ("serve", serve),
                                   ("produce", produce)) if present]
    if not panels:
        return None
    figure = _figure(4.6 * len(panels), 4.2)
    for axes, panel in zip(np.atleast_1d(figure.subplots(1, len(panels))), panels, strict=True):
        if panel == "ingest":
            _bars(axes, ["ours\n(streaming job)", "bare consumer\n(reference)", "Feast processor\n(peer)"],
                  [ingest.get("tx_per_s"), ingest.get("reference_read_per_s"), ingest.get("peer_tx_per_s")],
                  "Kafka -> Feast online", "events/s", 100_000, "target 100,000 tx/s")
        elif panel == "timeline":
            t = [b["t_s"] for b in timeline]
            rates = [b["events"] / b["duration_s"] if b.get("duration_s") else np.nan for b in timeline]
            axes.plot(t, rates, drawstyle="steps-pre", marker="o", color="tab:blue", label="per micro-batch")
            rate = (_samples_of(results, "ingest") or {}).get("sustained", {}).get("tx_per_s")
            if rate:
                axes.axhline(rate, linestyle=":", color="tab:blue", label=f"sustained {rate:,.0f} tx/s")
            axes.set(title="Our job draining the preloaded topic", xlabel="s after the first batch started",
                     ylabel="events/s (batch events / batch duration)")
            axes.set_ylim(0, 1.3 * max([rate or 0.0, *(r for r in rates if r == r)], default=0.0) or 1.0)
            axes.yaxis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))
            axes.legend(loc="upper left", fontsize=8)
        elif panel == "serve":
            _bars(axes, ["scorer", "ceiling\n(trivial endpoint)", "naive\n(Feast + pyfunc)"],
                  [serve.get("max_rps_at_p99_20ms"), serve.get("ceiling_rps"), serve.get("naive_rps")],
                  "Scoring: max req/s at p99 <= 20 ms", "requests/s")
        else:
            _bars(axes, ["simulator\n(ours)", "bare producer\n(reference)"],
                  [produce.get("events_per_s"), produce.get("reference_events_per_s")],
                  "Producer", "events/s", 200_000, "target 200,000 events/s")
    return figure


def _weighted_cdf(values: Sequence[float], weights: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(values)
    cumulative = np.cumsum(np.asarray(weights, dtype=float)[order])
    return np.asarray(values, dtype=float)[order], cumulative / cumulative[-1]


def _freshness(results: dict[str, BenchResult]) -> Figure | None:
    figures = _figures_of(results, "ingest")
    if figures is None:
        return None
    fresh = (_samples_of(results, "ingest") or {}).get("freshness") or {}
    batches = [b for b in fresh.get("batches") or [] if b.get("freshness_p99_s") is not None and b.get("events")]
    if not batches:  # only the JSON figures: the two percentiles against the target
        figure = _figure(5, 4)
        _bars(figure.add_subplot(), ["p50", "p99"], [figures.get("freshness_p50_s"), figures.get("freshness_p99_s")],
              "Freshness at the steady rate", "seconds", 5, "target p99 5 s")
        return figure
    rate = fresh.get("steady_rate")
    figure = _figure(11, 4.2)
    over_time, cdf = figure.subplots(1, 2)
    t = [b["t_s"] for b in batches]
    for key, label, color in (("freshness_p50_s", "batch p50", "tab:blue"), ("freshness_p99_s", "batch p99",
                                                                             "tab:orange")):
        over_time.plot(t, [b[key] for b in batches], marker=".", color=color, label=label)
        x, y = _weighted_cdf([b[key] for b in batches], [b["events"] for b in batches])
        cdf.step(x, y, where="post", color=color, label=f"{label} (weighted by batch events)")
    over_time.axhline(5, linestyle="--", color="tab:red", label="target p99 5 s")
    cdf.axvline(5, linestyle="--", color="tab:red", label="target p99 5 s")
    over_time.set(title=f"Per micro-batch at {_fmt(rate)} tx/s", xlabel="s after the first measured batch",
                  ylabel="freshness (s)", ylim=(0, None))
    cdf.set(title="Distribution over events", xlabel="freshness (s)", ylabel="share of events", ylim=(0, 1.01),
            xlim=(0, None))
    over_time.legend(fontsize=8)
    cdf.legend(fontsize=8, loc="lower right")
    return figure


SERVER_COLORS = {"scorer": "tab:blue", "ceiling": "tab:gray", "naive": "tab:orange"}


def _latency(results: dict[str, BenchResult]) -> Figure | None:
    samples = _samples_of(results, "serve") or {}
    servers = {name: s for name, s in (samples.get("servers") or {}).items() if s.get("steps")}
    if not servers:
        return None
    budget = samples.get("p99_budget_ms", 20.0)
    figure = _figure(11, 4.2)
    latency, achieved = figure.subplots(1, 2)
    top = 0.0
    for name, server in servers.items():
        steps = server["steps"]
        color = SERVER_COLORS.get(name)
        rates = [s["rate"] for s in steps]
        latency.plot(rates, [s["p99_ms"] for s in steps], marker="o", color=color, label=f"{name} p99")
        latency.plot(rates, [s["p50_ms"] for s in steps], marker=".", linestyle=":", color=color,
                     label=f"{name} p50")
        achieved.plot(rates, [s["achieved_rps"] for s in steps], marker="o", color=color, label=name)
        top = max(top, *rates)
    latency.axhline(budget, linestyle="--", color="tab:red", label=f"p99 budget {budget:.0f} ms")
    latency.set(title="Latency per offered rate (open loop)", xlabel="offered req/s", ylabel="ms", yscale="log")
    achieved.plot([0, top], [0, top], linestyle=":", color="grey", label="achieved = offered")
    achieved.set(title="Throughput per offered rate", xlabel="offered req/s", ylabel="achieved req/s (200 OK)")
    latency.legend(fontsize=7, ncol=2)
    achieved.legend(fontsize=8)
    return figure


KIND_COLORS = {"baseline": "tab:gray", "single": "tab:cyan", "ensemble": "tab:blue", "oracle": "tab:green"}
KIND_ORDER = ("baseline", "single", "ensemble", "oracle")


def _model_quality(results: dict[str, BenchResult]) -> Figure | None:
    figures = _figures_of(results, "model_quality")
    if figures is None:
        return None
    models = ((_samples_of(results, "model_quality") or {}).get("models") or {})
    if not models:  # only the JSON figures: the best of each kind
        models = {f"best {kind}": {"kind": kind, "roc_auc": figures.get(f"best_{kind}_auc"),
                                   "macro_f1": figures.get(f"best_{kind}_macro_f1")} for kind in ("baseline", "single")}
        models |= {"ensemble": {"kind": "ensemble", "roc_auc": figures.get("ensemble_auc"),
                                "macro_f1": figures.get("ensemble_macro_f1")},
                   "oracle": {"kind": "oracle", "roc_auc": figures.get("oracle_auc"), "macro_f1": None}}
    names = sorted(models, key=lambda n: (KIND_ORDER.index(models[n]["kind"]) if models[n]["kind"] in KIND_ORDER
                                          else len(KIND_ORDER), n))
    figure = _figure(11, max(3.0, 0.38 * len(names) + 1.4))
    for axes, metric, label in zip(figure.subplots(1, 2, sharey=True), ("roc_auc", "macro_f1"),
                                   ("ROC-AUC (macro, one vs rest)", "macro-F1"), strict=True):
        values = [_num(models[n], metric) for n in names]
        # ROC-AUC from chance (0.5) when every value is above it: the differences that matter stay visible
        left = 0.5 if metric == "roc_auc" and all(v is not None and v >= 0.5 for v in values) else 0.0
        bars = axes.barh(names, [0.0 if v is None else v - left for v in values], left=left,
                         color=[KIND_COLORS.get(models[n]["kind"], "tab:purple") for n in names])
        for bar, value in zip(bars, values, strict=True):
            axes.annotate("n/a" if value is None else f"{value:.3f}", (bar.get_x() + bar.get_width(),
                          bar.get_y() + bar.get_height() / 2), va="center", fontsize=8, xytext=(2, 0),
                          textcoords="offset points")
        oracle = next((models[n].get(metric) for n in names if models[n]["kind"] == "oracle"), None)
        if metric == "roc_auc" and oracle:
            axes.axvline(0.9 * oracle, linestyle="--", color="tab:red", label="0.9 of the oracle")
            axes.legend(loc="lower right", fontsize=8)
        axes.set(title=label + ("; the axis starts at chance, 0.5" if left else ""), xlim=(left, 1.04))
    kinds = [k for k in KIND_COLORS if any(models[n]["kind"] == k for n in names)]
    figure.legend([Patch(color=KIND_COLORS[k]) for k in kinds], kinds, loc="outside lower center", ncol=len(kinds),
                  fontsize=8)
    return figure
