"""The embedded Triton Inference Server: the ``tritonserver`` binary of the ``nvidia-pytriton`` wheel.

The wheel (pinned in requirements.lock) ships Triton 2.51 for CPU with its Python backend and the
shared libraries it needs; no GPU, container or download is involved. It has no ONNX Runtime
backend, so the model repository's versions are Python-backend models that run ONNX Runtime
(``model_contract/triton_python_model.py``).

What ``start_triton`` does beyond running the binary:

- a backend folder under ``<data_dir>/triton/backends``: the wheel's Python backend plus the
  backend stub built for this interpreter's Python version (the wheel ships one per version);
- ``LD_LIBRARY_PATH`` with this interpreter's ``libpython`` folder (the stub links against it) and
  ``PYTHONPATH`` with this environment's site-packages (where the stub's model finds numpy and
  onnxruntime, see ``model_contract/triton_python_model.py``);
- explicit model control (the scorer loads versions through the repository API), HTTP only
  (KServe v2) on 127.0.0.1, metrics on ``serving.triton_metrics_port`` for Prometheus.

Everything it owns lives under ``<data_dir>/triton``: the backends, the log and a pid file naming
exactly the process it started (``infra/processes.py``).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import site
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from activity_settings import ActivityError, Settings
from infra.processes import alive, port_taken, proc_start_time, stop_group, tail
from model_contract.triton_repository import repository_dir

WHEEL = "nvidia-pytriton"
HOST = "127.0.0.1"


class TritonError(ActivityError, RuntimeError):
    """The embedded Triton could not be started; the message says why and what to do."""


@dataclass(frozen=True)
class TritonPaths:
    root: Path

    @classmethod
    def under(cls, home: Path) -> TritonPaths:
        return cls(root=home / "triton")

    @property
    def backends(self) -> Path:
        return self.root / "backends"

    @property
    def log(self) -> Path:
        return self.root / "tritonserver.log"

    @property
    def pid_file(self) -> Path:
        return self.root / "tritonserver.pid"


@dataclass(frozen=True)
class TritonProcess:
    pid: int
    started_at: str  # /proc start time, so a recycled pid is never mistaken for ours
    port: int
    metrics_port: int

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"


@dataclass(frozen=True)
class TritonDistribution:
    """Where the wheel put the server, its backends and its libraries."""

    root: Path  # site-packages/pytriton/tritonserver

    @property
    def binary(self) -> Path:
        return self.root / "bin" / "tritonserver"

    @property
    def python_backend(self) -> Path:
        return self.root / "backends" / "python"

    @property
    def caches(self) -> Path:
        return self.root / "caches"

    @property
    def libraries(self) -> Path:
        return self.root.parent.parent / "nvidia_pytriton.libs"

    def stub(self, python_version: str) -> Path:
        return self.root / "python_backend_stubs" / python_version / "triton_python_backend_stub"


def distribution() -> TritonDistribution:
    """The installed wheel's server, or an error naming the package to install."""
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise TritonError(f"no Triton server: the Python package `{WHEEL}` is not installed "
                          "(`./run install` installs it from requirements.lock)")
    found = TritonDistribution(Path(next(iter(spec.submodule_search_locations))) / "tritonserver")
    if not os.access(found.binary, os.X_OK):
        raise TritonError(f"{found.binary} is missing or not executable; reinstall `{WHEEL}` (`./run install`)")
    return found


def prepare_backends(dist: TritonDistribution, paths: TritonPaths) -> Path:
    """``<data_dir>/triton/backends/python``: the wheel's Python backend and the stub for this Python."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = dist.stub(version)
    if not stub.is_file():
        raise TritonError(f"the `{WHEEL}` wheel has no Python-backend stub for Python {version} ({stub})")
    target = paths.backends / "python"
    target.mkdir(parents=True, exist_ok=True)
    for source in (*dist.python_backend.iterdir(), stub):
        destination = target / source.name
        if not destination.is_file() or destination.stat().st_size != source.stat().st_size:
            shutil.copy2(source, destination)
    (target / stub.name).chmod(0o755)
    return paths.backends


def server_environment(dist: TritonDistribution) -> dict[str, str]:
    """The server's environment: the wheel's libraries, this Python's libpython, this environment's packages."""
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    libraries = [str(dist.libraries), libdir, os.environ.get("LD_LIBRARY_PATH", "")]
    packages = site.getsitepackages()
    return {**os.environ, "LD_LIBRARY_PATH": os.pathsep.join(p for p in libraries if p),
            "PYTHONPATH": os.pathsep.join(packages)}


def command(settings: Settings, dist: TritonDistribution, backends: Path, host: str = HOST,
            grpc_port: int | None = None) -> list[str]:
    """The server's command line; KServe v2 over gRPC only with ``grpc_port`` (the scorer speaks HTTP)."""
    serving = settings.serving
    grpc = ["--allow-grpc=false"] if grpc_port is None else \
        ["--allow-grpc=true", f"--grpc-address={host}", f"--grpc-port={grpc_port}"]
    return [str(dist.binary), f"--model-repository={repository_dir(settings)}",
            f"--backend-directory={backends}", f"--cache-directory={dist.caches}",
            "--model-control-mode=explicit", "--disable-auto-complete-config", "--strict-readiness=false",
            *grpc,
            f"--http-address={host}", f"--http-port={serving.triton_port}",
            "--allow-metrics=true", "--allow-gpu-metrics=false", f"--metrics-address={host}",
            f"--metrics-port={serving.triton_metrics_port}", "--exit-timeout-secs=10", "--log-verbose=0"]


def running_triton(paths: TritonPaths) -> TritonProcess | None:
    """The Triton this data directory started, if it is still alive."""
    try:
        pid_text, started_at, port_text, metrics_text = paths.pid_file.read_text().split()
        process = TritonProcess(int(pid_text), started_at, int(port_text), int(metrics_text))
    except (OSError, ValueError):
        return None
    return process if alive(process.pid, process.started_at) else None


def is_ready(url: str, timeout_s: float = 1.0) -> bool:
    """True when the server at ``url`` answers KServe v2's ``/v2/health/ready`` with 200."""
    try:
        with urllib.request.urlopen(f"{url}/v2/health/ready", timeout=timeout_s) as response:
            return response.status == 200
    except (OSError, urllib.error.URLError):
        return False


def start_triton(settings: Settings, report: Callable[[str], None] = lambda _: None,
                 timeout_s: float = 60.0, grpc_port: int | None = None) -> TritonProcess:
    """Start the embedded Triton (or find it running); return once it answers ready.

    ``grpc_port``: also serve KServe v2 over gRPC there (``bench.triton_protocol`` compares the two).
    """
    paths = TritonPaths.under(settings.home)
    existing = running_triton(paths)
    if existing is not None:
        report(f"triton already running (pid {existing.pid}, {existing.url})")
        _wait_ready(paths, existing, timeout_s)
        return existing
    serving = settings.serving
    for name, port in (("serving.triton_port", serving.triton_port),
                       ("serving.triton_metrics_port", serving.triton_metrics_port)):
        if port_taken(HOST, port):
            raise TritonError(f"port {HOST}:{port} is taken by another process; free it or choose another "
                              f"(setting {name})")
    dist = distribution()
    backends = prepare_backends(dist, paths)
    repository_dir(settings).mkdir(parents=True, exist_ok=True)
    report(f"starting triton on {HOST}:{serving.triton_port} (repository {repository_dir(settings)})")
    with paths.log.open("ab") as log:
        proc = subprocess.Popen(command(settings, dist, backends, grpc_port=grpc_port), stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=paths.root,
                                env=server_environment(dist), start_new_session=True)
    started_at = None
    for _ in range(100):
        started_at = proc_start_time(proc.pid)
        if started_at:
            break
        time.sleep(0.01)
    process = TritonProcess(proc.pid, started_at or "?", serving.triton_port, serving.triton_metrics_port)
    paths.pid_file.write_text(f"{process.pid} {process.started_at} {process.port} {process.metrics_port}\n")
    _wait_ready(paths, process, timeout_s)
    return process


def stop_triton(home: Path, timeout_s: float = 30.0) -> int | None:
    """Stop the Triton this data directory started (SIGTERM, then SIGKILL); return its pid."""
    paths = TritonPaths.under(home)
    process = running_triton(paths)
    paths.pid_file.unlink(missing_ok=True)
    if process is None:
        return None
    stop_group(process.pid, process.started_at, timeout_s)
    return process.pid


def _wait_ready(paths: TritonPaths, process: TritonProcess, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not alive(process.pid, process.started_at):
            paths.pid_file.unlink(missing_ok=True)
            raise TritonError(f"triton exited during start; last lines of {paths.log}:\n{tail(paths.log)}")
        if is_ready(process.url):
            return
        time.sleep(0.2)
    raise TritonError(f"triton did not answer {process.url}/v2/health/ready within {timeout_s:.0f}s; "
                      f"see {paths.log}:\n{tail(paths.log)}")


def main() -> None:
    """``python -m infra.triton [--host 0.0.0.0]``: the server in the foreground, as a container runs it."""
    import argparse

    from activity_settings import load_settings

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--host", default=HOST, help="Listen address of HTTP and /metrics (0.0.0.0 in a container).")
    args = parser.parse_args()
    settings = load_settings()
    dist = distribution()
    backends = prepare_backends(dist, TritonPaths.under(settings.home))
    repository_dir(settings).mkdir(parents=True, exist_ok=True)
    argv = command(settings, dist, backends, args.host)
    os.execve(argv[0], argv, server_environment(dist))


if __name__ == "__main__":
    main()
