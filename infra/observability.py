"""Prometheus around the platform: which metric names PromQL uses and our services export, and a local server.

``infra/prometheus`` holds the scrape config and the alert rules, ``infra/grafana`` the dashboards.
``start_prometheus`` runs Debian's ``prometheus`` binary on a copy of the scrape config rendered with
the ports from the settings. Everything it owns lives under ``<data_dir>/prometheus``: that config, a
copy of the rules, the TSDB, its log and a pid file that records exactly which process it started.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import yaml

from activity_settings import ActivityError, Settings
from infra.processes import alive, port_taken, proc_start_time, stop_group, tail

PROMETHEUS_DIR = Path(__file__).parent / "prometheus"
GRAFANA_DIR = Path(__file__).parent / "grafana"
CONFIG = PROMETHEUS_DIR / "prometheus.yml"
RULES = PROMETHEUS_DIR / "rules.yml"
PROMETHEUS_BIN = "/usr/bin/prometheus"
DEBIAN_PACKAGE = "prometheus"
DEFAULT_PORT = 9090
SERVICE_MODULES = ("streaming.metrics", "serving.metrics", "monitoring.metrics")
# Series Prometheus itself adds to every scrape or rule evaluation: rules may use them too.
PROMETHEUS_SERIES = frozenset({
    "up", "scrape_duration_seconds", "scrape_samples_scraped", "scrape_samples_post_metric_relabeling",
    "scrape_series_added", "ALERTS", "ALERTS_FOR_STATE",
})

# ------------------------------------------------------------------------------- metric names

PROMQL_WORDS = frozenset({
    # aggregations
    "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk", "topk",
    "quantile", "limitk", "limit_ratio",
    # keywords and set operators
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset", "and", "or", "unless",
    "atan2", "inf", "nan", "start", "end",
    # functions (also caught by the "followed by (" rule; listed for `rate (x)` with a space)
    "abs", "absent", "absent_over_time", "ceil", "changes", "clamp", "clamp_max", "clamp_min", "day_of_month",
    "day_of_week", "day_of_year", "days_in_month", "delta", "deriv", "exp", "floor", "histogram_avg",
    "histogram_count", "histogram_fraction", "histogram_quantile", "histogram_stddev", "histogram_stdvar",
    "histogram_sum", "holt_winters", "double_exponential_smoothing", "hour", "idelta", "increase", "irate",
    "label_join", "label_replace", "ln", "log2", "log10", "minute", "month", "predict_linear", "rate", "resets",
    "round", "scalar", "sgn", "sort", "sort_desc", "sort_by_label", "sort_by_label_desc", "sqrt", "time",
    "timestamp", "vector", "year", "avg_over_time", "min_over_time", "max_over_time", "sum_over_time",
    "count_over_time", "quantile_over_time", "stddev_over_time", "stdvar_over_time", "last_over_time",
    "present_over_time", "mad_over_time", "acos", "acosh", "asin", "asinh", "atan", "atanh", "cos", "cosh", "sin",
    "sinh", "tan", "tanh", "deg", "rad", "pi",
})
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"' r"|'(?:[^'\\]|\\.)*'" r"|`[^`]*`")
_VARIABLE = re.compile(r"\$\{[^}]*\}|\$\w+")  # Grafana variables: ${datasource}, $__rate_interval
_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_LABEL_LIST = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENTIFIER = re.compile(r"(?<![\w.:])([A-Za-z_:][\w:]*)(?![\w:])(?!\s*\()")
_COMMENT = re.compile(r"#[^\n]*")


def promql_metric_names(expr: str) -> set[str]:
    """The metric names an expression selects (tokenizer-level; good for the expressions we write).

    Strings, comments, Grafana variables, label matchers, ranges and label lists are removed first;
    what is left is an identifier that is no function call and no PromQL keyword.
    """
    text = _STRING.sub('""', expr)
    text = _COMMENT.sub(" ", text)
    text = _VARIABLE.sub("1", text)
    text = _MATCHERS.sub("{}", text)
    text = _RANGE.sub("[]", text)
    text = _LABEL_LIST.sub(" ", text)
    return {name for name in _IDENTIFIER.findall(text) if name not in PROMQL_WORDS}


# Sample names prometheus_client exports per metric type (the family name has no `_total`).
_SUFFIXES: dict[str, tuple[str, ...]] = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "gaugehistogram": ("_bucket", "_gcount", "_gsum"),
    "summary": ("", "_count", "_sum", "_created"),
    "info": ("_info",),
    "stateset": ("",),
    "unknown": ("",),
}


def exported_metric_names(modules: Iterable[str] = SERVICE_MODULES) -> set[str]:
    """Every sample name the default registry exports once ``modules`` are imported.

    A family's samples where it has some (the process and platform collectors' too), else the names
    its type will export (a labelled metric with no child yet): ``_total``/``_created`` for a counter,
    ``_bucket``/``_count``/``_sum``/``_created`` for a histogram.
    """
    import importlib

    from prometheus_client import REGISTRY

    for module in modules:
        importlib.import_module(module)
    names: set[str] = set()
    for family in REGISTRY.collect():
        if family.samples:
            names.update(sample.name for sample in family.samples)
        else:  # a labelled metric without children yet: what it will export
            names.update(family.name + suffix for suffix in _SUFFIXES.get(family.type, ("",)))
    return names


def rule_exprs(rules_file: Path = RULES) -> dict[str, str]:
    """``alert or record name -> expr`` of a Prometheus rules file."""
    groups = yaml.safe_load(rules_file.read_text())["groups"]
    return {rule.get("alert") or rule["record"]: rule["expr"] for group in groups for rule in group["rules"]}


def recorded_names(rules_file: Path = RULES) -> set[str]:
    groups = yaml.safe_load(rules_file.read_text())["groups"]
    return {rule["record"] for group in groups for rule in group["rules"] if "record" in rule}


def unknown_metric_names(exprs: dict[str, str], known: set[str]) -> dict[str, set[str]]:
    """``where -> names`` for every expression that uses a name outside ``known``."""
    unknown = {where: promql_metric_names(expr) - known for where, expr in exprs.items()}
    return {where: names for where, names in unknown.items() if names}


# ------------------------------------------------------------------------------- local Prometheus


class PrometheusError(ActivityError, RuntimeError):
    """The local Prometheus could not be started; the message says why and where."""


@dataclass(frozen=True)
class PrometheusPaths:
    root: Path

    @classmethod
    def under(cls, home: Path) -> PrometheusPaths:
        return cls(root=home / "prometheus")

    @property
    def config(self) -> Path:
        return self.root / "prometheus.yml"

    @property
    def rules(self) -> Path:
        return self.root / "rules.yml"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def log(self) -> Path:
        return self.root / "prometheus.log"

    @property
    def pid_file(self) -> Path:
        return self.root / "prometheus.pid"


@dataclass(frozen=True)
class PrometheusProcess:
    pid: int
    started_at: str  # /proc start time, so a recycled pid is never mistaken for ours
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def scrape_targets(settings: Settings) -> dict[str, str | None]:
    """``job name -> host:port`` from the settings; None where the service serves no metrics (port 0)."""
    serving_host = settings.serving.host if settings.serving.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
    return {
        "activity-scorer": f"{serving_host}:{settings.serving.port}",
        "activity-streaming": f"127.0.0.1:{p}" if (p := settings.streaming.metrics_port) else None,
        "activity-monitoring": f"127.0.0.1:{p}" if (p := settings.monitoring.metrics_port) else None,
        "activity-triton": f"127.0.0.1:{settings.serving.triton_metrics_port}"
                           if settings.serving.model_server == "triton" and settings.serving.triton_url is None
                           else None,
    }


def render_config(settings: Settings, directory: Path) -> Path:
    """Write ``prometheus.yml`` (targets from the settings) and ``rules.yml`` into ``directory``."""
    config = yaml.safe_load(CONFIG.read_text())
    targets = scrape_targets(settings)
    jobs = []
    for job in config["scrape_configs"]:
        target = targets.get(job["job_name"], "keep")
        if target is None:
            continue  # the service's metrics are off
        if target != "keep":
            job["static_configs"] = [{"targets": [target]}]
        jobs.append(job)
    config["scrape_configs"] = jobs
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(RULES, directory / RULES.name)
    path = directory / CONFIG.name
    path.write_text("# Rendered from infra/prometheus/prometheus.yml by infra/observability.py.\n"
                    + yaml.safe_dump(config, sort_keys=False))
    return path


def prometheus_binary() -> str:
    """Debian's ``/usr/bin/prometheus`` (or one on PATH), else a clear error naming the package."""
    found = PROMETHEUS_BIN if os.access(PROMETHEUS_BIN, os.X_OK) else shutil.which("prometheus")
    if found is None:
        raise PrometheusError(
            f"no Prometheus server: {PROMETHEUS_BIN} is missing; install the Debian package "
            f"`{DEBIAN_PACKAGE}` (`apt-get install --no-install-recommends {DEBIAN_PACKAGE}`, or `./run install`)"
        )
    return found


def running_prometheus(paths: PrometheusPaths) -> PrometheusProcess | None:
    """The Prometheus this data directory started, if it is still alive."""
    try:
        pid_text, started_at, port_text = paths.pid_file.read_text().split()
        pid, port = int(pid_text), int(port_text)
    except (OSError, ValueError):
        return None
    if proc_start_time(pid) != started_at:
        return None
    return PrometheusProcess(pid=pid, started_at=started_at, port=port)


def start_prometheus(
    settings: Settings,
    report: Callable[[str], None] = lambda _: None,
    port: int = DEFAULT_PORT,
    timeout_s: float = 30.0,
) -> PrometheusProcess:
    """Start a local Prometheus scraping our services (or find it running); return once it is ready."""
    paths = PrometheusPaths.under(settings.home)
    existing = running_prometheus(paths)
    if existing is not None:
        report(f"prometheus already running (pid {existing.pid}, {existing.url})")
        _wait_ready(paths, existing, timeout_s)
        return existing
    binary = prometheus_binary()
    if port_taken("127.0.0.1", port):
        raise PrometheusError(f"port 127.0.0.1:{port} is taken by another process; free it or choose another "
                              "(`activity stack up --with-prometheus --prometheus-port N`)")
    render_config(settings, paths.root)
    paths.data.mkdir(parents=True, exist_ok=True)
    report(f"starting prometheus on 127.0.0.1:{port} (config {paths.config})")
    with paths.log.open("ab") as log:
        proc = subprocess.Popen(
            [binary, f"--config.file={paths.config}", f"--storage.tsdb.path={paths.data}",
             f"--web.listen-address=127.0.0.1:{port}", "--web.enable-lifecycle", "--log.level=info"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=paths.root,
            start_new_session=True,
        )
    started_at = None
    for _ in range(50):
        started_at = proc_start_time(proc.pid)
        if started_at:
            break
        time.sleep(0.01)
    process = PrometheusProcess(pid=proc.pid, started_at=started_at or "?", port=port)
    paths.pid_file.write_text(f"{process.pid} {process.started_at} {port}\n")
    _wait_ready(paths, process, timeout_s)
    return process


def is_ready(url: str, timeout_s: float = 1.0) -> bool:
    """True when the Prometheus at ``url`` answers ``/-/ready`` with 200."""
    try:
        with urllib.request.urlopen(f"{url}/-/ready", timeout=timeout_s) as response:
            return response.status == 200
    except (OSError, urllib.error.URLError):
        return False


def _wait_ready(paths: PrometheusPaths, process: PrometheusProcess, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not alive(process.pid, process.started_at):
            paths.pid_file.unlink(missing_ok=True)
            raise PrometheusError(f"prometheus exited during start; last lines of {paths.log}:\n{tail(paths.log)}")
        if is_ready(process.url):
            return
        time.sleep(0.2)
    raise PrometheusError(f"prometheus did not answer {process.url}/-/ready within {timeout_s:.0f}s; "
                          f"see {paths.log}:\n{tail(paths.log)}")


def stop_prometheus(settings: Settings, timeout_s: float = 30.0) -> int | None:
    """Stop the Prometheus this data directory started (SIGTERM, then SIGKILL); return its pid."""
    paths = PrometheusPaths.under(settings.home)
    process = running_prometheus(paths)
    if process is None:
        paths.pid_file.unlink(missing_ok=True)
        return None
    stop_group(process.pid, process.started_at, timeout_s)
    paths.pid_file.unlink(missing_ok=True)
    return process.pid

