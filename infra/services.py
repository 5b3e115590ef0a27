"""Throwaway Redis, PostgreSQL and Spark standalone servers for the cluster profile's tests (and local trials).

Both run from the Debian packages' binaries (``redis-server``; ``postgresql``, i.e. PostgreSQL 15 on
bookworm), bound to 127.0.0.1 on the given ports, with everything they own in the given directory, and
persist nothing beyond it: Redis without snapshots or append-only file, PostgreSQL with ``fsync=off``.
They are for tests, never for data that matters.

PostgreSQL refuses to run as root (``initdb``, ``pg_ctl`` and ``postgres`` all check the effective uid).
When this process is root, the server's directory is chowned to the ``postgres`` system user (created
by the Debian package) and ``initdb``/``pg_ctl`` run as that user through ``runuser -u postgres --``.
That user must be able to reach the directory: pytest's ``tmp_path`` lives under a 0700 root directory
(``/tmp/pytest-of-root``), so pass a directory such as ``tempfile.mkdtemp()`` under ``/tmp`` instead; a
directory it cannot reach fails at start with a message saying so. Clients (``createdb``, psycopg2)
run as anyone: the cluster trusts every local TCP connection (``--auth=trust``).

The Spark standalone cluster (one master, one worker) runs from the ``pyspark`` wheel's own launcher
(``pyspark/bin/spark-class``): the same Spark the platform's jobs link against, no separate download.
"""

from __future__ import annotations

import glob
import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from activity_settings import ActivityError
from infra.processes import proc_start_time, stop_group, tail

HOST = "127.0.0.1"
POSTGRES_USER = "postgres"  # the cluster's superuser, and the system user that runs it when we are root
POSTGRES_BIN_GLOB = "/usr/lib/postgresql/*/bin"


class ServiceError(ActivityError, RuntimeError):
    """A throwaway service could not be found, started or reached; the message says why and what to install."""


# -- Redis --------------------------------------------------------------------------------------------------------


@dataclass
class RedisServer:
    directory: Path
    port: int
    process: subprocess.Popen[bytes]

    @property
    def connection_string(self) -> str:
        """Feast's redis ``connection_string`` (``host:port``) of this server."""
        return f"{HOST}:{self.port}"

    @property
    def log(self) -> Path:
        return self.directory / "redis.log"


def redis_binary() -> str:
    found = shutil.which("redis-server") or _executable("/usr/bin/redis-server")
    if found is None:
        raise ServiceError("redis-server is not on PATH: install the Debian package `redis-server` "
                           "(`apt-get install --no-install-recommends redis-server`, or `./run install`)")
    return found


def start_redis(directory: Path, port: int, timeout_s: float = 15.0) -> RedisServer:
    """Start ``redis-server`` on 127.0.0.1:``port`` (no persistence) and return once it answers PING."""
    binary = redis_binary()
    directory.mkdir(parents=True, exist_ok=True)
    _require_free(port, "redis")
    log = (directory / "redis.log").open("ab")
    try:
        process = subprocess.Popen(
            [binary, "--port", str(port), "--bind", HOST, "--save", "", "--appendonly", "no",
             "--daemonize", "no", "--dir", str(directory)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=directory, start_new_session=True)
    finally:
        log.close()
    server = RedisServer(directory, port, process)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServiceError(f"redis-server exited with {process.returncode} during start; "
                               f"last lines of {server.log}:\n{tail(server.log)}")
        if redis_ping(port):
            return server
        time.sleep(0.05)
    stop_redis(server)
    raise ServiceError(f"redis-server on {HOST}:{port} did not answer PING within {timeout_s:.0f}s; "
                       f"see {server.log}:\n{tail(server.log)}")


def redis_ping(port: int, timeout_s: float = 1.0) -> bool:
    """True when a Redis on 127.0.0.1:``port`` answers PING with PONG (plain RESP, no client library)."""
    try:
        with socket.create_connection((HOST, port), timeout=timeout_s) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def stop_redis(server: RedisServer, timeout_s: float = 15.0) -> None:
    """SIGTERM, then SIGKILL after ``timeout_s`` (idempotent)."""
    if server.process.poll() is None:
        server.process.terminate()
        try:
            server.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait()


@contextmanager
def redis_server(directory: Path, port: int) -> Iterator[RedisServer]:
    server = start_redis(directory, port)
    try:
        yield server
    finally:
        stop_redis(server)


# -- PostgreSQL ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PostgresServer:
    directory: Path  # owned by the server's user: data/ (the cluster), postgres.log, the unix socket
    port: int
    bin_dir: Path
    run_as: str | None  # the system user the server runs as (``postgres`` when we are root), None = us

    @property
    def data(self) -> Path:
        return self.directory / "data"

    @property
    def log(self) -> Path:
        return self.directory / "postgres.log"

    def url(self, database: str = "mlflow") -> str:
        """SQLAlchemy / MLflow URL (``postgresql://`` = the psycopg2 driver) of ``database`` on this server."""
        return f"postgresql://{POSTGRES_USER}@{HOST}:{self.port}/{database}"


def postgres_bin_dir() -> Path:
    """The directory holding ``initdb`` and ``pg_ctl``: the one ``initdb`` on PATH resolves to, else the newest
    ``/usr/lib/postgresql/<version>/bin`` (Debian keeps the server binaries off PATH)."""
    candidates: list[Path] = []
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    candidates += sorted((Path(p) for p in glob.glob(POSTGRES_BIN_GLOB)),
                         key=lambda p: _version_key(p.parent.name), reverse=True)
    for candidate in candidates:
        if all(_executable(str(candidate / name)) for name in ("initdb", "pg_ctl", "postgres")):
            return candidate
    raise ServiceError("PostgreSQL's server binaries (initdb, pg_ctl) are neither on PATH nor in "
                       f"{POSTGRES_BIN_GLOB}: install the Debian package `postgresql` "
                       "(`apt-get install --no-install-recommends postgresql`, or `./run install`)")


def start_postgres(directory: Path, port: int, databases: Sequence[str] = ("mlflow",),
                   timeout_s: float = 60.0) -> PostgresServer:
    """``initdb`` a new cluster in ``directory``/data (superuser ``postgres``, trust auth), start it on
    127.0.0.1:``port`` with its socket in ``directory``, create ``databases``; return once they exist."""
    bin_dir = postgres_bin_dir()
    run_as = _server_user()
    directory.mkdir(parents=True, exist_ok=True)
    server = PostgresServer(directory, port, bin_dir, run_as)
    if server.data.exists():
        raise ServiceError(f"{server.data} exists: a throwaway cluster needs a new directory")
    _require_free(port, "postgresql")
    if run_as is not None:
        user = pwd.getpwnam(run_as)
        os.chown(directory, user.pw_uid, user.pw_gid)
        if _as(run_as, ["test", "-w", str(directory), "-a", "-x", str(directory)]).returncode != 0:
            raise ServiceError(
                f"the {run_as} user cannot write {directory}: one of its parent directories is private "
                "(pytest's tmp_path is under a 0700 directory); use a directory under /tmp, e.g. tempfile.mkdtemp()")
    _checked(server, [str(bin_dir / "initdb"), "-D", str(server.data), "-U", POSTGRES_USER, "--auth=trust",
                      "--no-locale", "--encoding=UTF8", "--no-sync"], "initdb", timeout_s)
    options = f"-p {port} -k {directory} -c listen_addresses={HOST} -c fsync=off -c full_page_writes=off"
    _checked(server, [str(bin_dir / "pg_ctl"), "-D", str(server.data), "-o", options, "-l", str(server.log),
                      "-w", "-t", str(int(timeout_s)), "start"], "pg_ctl start", timeout_s + 10)
    try:
        for database in databases:
            # a client: runs as anyone, over TCP (trust)
            created = subprocess.run([str(bin_dir / "createdb"), "-h", HOST, "-p", str(port), "-U", POSTGRES_USER,
                                      database], capture_output=True, text=True, timeout=timeout_s)
            if created.returncode != 0:
                raise ServiceError(f"createdb {database} failed: {created.stderr.strip()}")
    except BaseException:
        stop_postgres(server)
        raise
    return server


def stop_postgres(server: PostgresServer, timeout_s: float = 60.0) -> None:
    """``pg_ctl -m fast stop`` (``-m immediate`` if that fails); nothing to do when it is not running."""
    if not (server.data / "postmaster.pid").exists():
        return
    pg_ctl = str(server.bin_dir / "pg_ctl")
    for mode in ("fast", "immediate"):
        stopped = _run(server, [pg_ctl, "-D", str(server.data), "-m", mode, "-w", "-t", str(int(timeout_s)), "stop"],
                       timeout_s + 10)
        if stopped.returncode == 0 or not (server.data / "postmaster.pid").exists():
            return
    raise ServiceError(f"pg_ctl stop failed for {server.data}: {stopped.stderr.strip()}")


@contextmanager
def postgres_server(directory: Path, port: int, databases: Sequence[str] = ("mlflow",)) -> Iterator[PostgresServer]:
    server = start_postgres(directory, port, databases)
    try:
        yield server
    finally:
        stop_postgres(server)


def _server_user() -> str | None:
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(POSTGRES_USER)
    except KeyError:
        raise ServiceError(f"PostgreSQL does not run as root and there is no `{POSTGRES_USER}` system user to run "
                           "it as: install the Debian package `postgresql` (it creates the user)") from None
    if shutil.which("runuser") is None:
        raise ServiceError("running PostgreSQL as the postgres user needs `runuser` (Debian package util-linux)")
    return POSTGRES_USER


def _as(user: str | None, command: list[str], timeout_s: float = 60.0,
        cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    prefix = ["runuser", "-u", user, "--"] if user else []
    # cwd: the server's user may not be allowed into ours (initdb and pg_ctl warn, or fail, otherwise)
    return subprocess.run([*prefix, *command], capture_output=True, text=True, timeout=timeout_s,
                          cwd=cwd or "/", stdin=subprocess.DEVNULL)


def _run(server: PostgresServer, command: list[str], timeout_s: float) -> subprocess.CompletedProcess[str]:
    return _as(server.run_as, command, timeout_s, cwd=server.directory)


def _checked(server: PostgresServer, command: list[str], what: str, timeout_s: float) -> None:
    result = _run(server, command, timeout_s)
    if result.returncode != 0:
        log = f"\nlast lines of {server.log}:\n{tail(server.log)}" if server.log.exists() else ""
        raise ServiceError(f"{what} failed ({result.returncode}): {(result.stderr or result.stdout).strip()}{log}")


# -- Spark standalone ---------------------------------------------------------------------------------------------


@dataclass
class SparkStandalone:
    directory: Path  # logs, the worker's application directories
    port: int
    web_port: int
    processes: list[subprocess.Popen[bytes]]

    @property
    def master_url(self) -> str:
        """``spark.master`` of this cluster."""
        return f"spark://{HOST}:{self.port}"

    @property
    def logs(self) -> list[Path]:
        return [self.directory / "master.log", self.directory / "worker.log"]

    def alive_workers(self, timeout_s: float = 2.0) -> int:
        """Workers the master reports ALIVE (its web UI's JSON), 0 when it does not answer."""
        try:
            with urllib.request.urlopen(f"http://{HOST}:{self.web_port}/json/", timeout=timeout_s) as response:
                status = json.load(response)
        except (OSError, ValueError):
            return 0
        return sum(1 for worker in status.get("workers", []) if worker.get("state") == "ALIVE")

    def applications(self, timeout_s: float = 2.0) -> list[str]:
        """Names of the applications the master has run or runs (completed first)."""
        with urllib.request.urlopen(f"http://{HOST}:{self.web_port}/json/", timeout=timeout_s) as response:
            status = json.load(response)
        return [app["name"] for key in ("completedapps", "activeapps") for app in status.get(key, [])]


def spark_class() -> Path:
    """``spark-class`` of the installed pyspark (it starts a master or a worker on this JVM)."""
    import pyspark

    launcher = Path(pyspark.__file__).parent / "bin" / "spark-class"
    if not launcher.exists():
        raise ServiceError(f"{launcher} is missing: reinstall pyspark (`./run install`)")
    return launcher


def start_spark_standalone(directory: Path, port: int, cores: int = 2, memory: str = "4g",
                           timeout_s: float = 90.0) -> SparkStandalone:
    """A Spark standalone master on 127.0.0.1:``port`` and one worker with ``cores``/``memory``; returns once
    the master reports the worker alive."""
    launcher = spark_class()
    directory.mkdir(parents=True, exist_ok=True)
    _require_free(port, "the Spark master")
    web_port, worker_web_port = free_port(), free_port()
    env = os.environ | {
        "SPARK_HOME": str(launcher.parent.parent), "SPARK_LOCAL_IP": HOST, "SPARK_LOCAL_HOSTNAME": HOST,
        "SPARK_WORKER_DIR": str(directory / "work"), "SPARK_LOG_DIR": str(directory),
        # the worker's executors run this environment's Python (the platform's code and pyarrow)
        "PYSPARK_PYTHON": os.environ.get("PYSPARK_PYTHON", sys.executable),
    }
    cluster = SparkStandalone(directory, port, web_port, [])
    commands = [
        ("master.log", ["org.apache.spark.deploy.master.Master", "--host", HOST, "--port", str(port),
                        "--webui-port", str(web_port)]),
        ("worker.log", ["org.apache.spark.deploy.worker.Worker", cluster.master_url, "--host", HOST,
                        "--cores", str(cores), "--memory", memory, "--webui-port", str(worker_web_port),
                        "--work-dir", str(directory / "work")]),
    ]
    try:
        for log_name, arguments in commands:
            with (directory / log_name).open("ab") as log:
                cluster.processes.append(subprocess.Popen(
                    [str(launcher), *arguments], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    cwd=directory, env=env, start_new_session=True))
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for process, log_path in zip(cluster.processes, cluster.logs, strict=True):
                if process.poll() is not None:
                    raise ServiceError(f"{log_path.stem} exited with {process.returncode} during start; "
                                       f"last lines of {log_path}:\n{tail(log_path)}")
            if cluster.alive_workers():
                return cluster
            time.sleep(0.25)
        raise ServiceError(f"no Spark worker registered with {cluster.master_url} within {timeout_s:.0f}s; last "
                           f"lines of {cluster.logs[1]}:\n{tail(cluster.logs[1])}")
    except BaseException:
        stop_spark_standalone(cluster)
        raise


def stop_spark_standalone(cluster: SparkStandalone, timeout_s: float = 20.0) -> None:
    """Worker first (its executors with it), then the master: SIGTERM to each process group, SIGKILL if needed."""
    for process in reversed(cluster.processes):
        if process.poll() is None:
            stop_group(process.pid, proc_start_time(process.pid), timeout_s)
        process.wait()


@contextmanager
def spark_standalone(directory: Path, port: int, cores: int = 2, memory: str = "4g") -> Iterator[SparkStandalone]:
    cluster = start_spark_standalone(directory, port, cores, memory)
    try:
        yield cluster
    finally:
        stop_spark_standalone(cluster)


# -- shared -------------------------------------------------------------------------------------------------------


def _executable(path: str) -> str | None:
    return path if os.path.isfile(path) and os.access(path, os.X_OK) else None


def _version_key(name: str) -> tuple[int, ...]:
    return tuple(int(part) for part in name.split(".") if part.isdigit()) or (0,)


def free_port() -> int:
    """A port free on 127.0.0.1 right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _require_free(port: int, what: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        if sock.connect_ex((HOST, port)) == 0:
            raise ServiceError(f"port {HOST}:{port} is taken: cannot start {what} there")

