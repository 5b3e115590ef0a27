"""The local servers' process bookkeeping, shared by the embedded broker and the local Prometheus.

A server is known by its pid *and* its start time in ``/proc`` (so a recycled pid is never taken
for it); it runs in its own process group, which is stopped as a whole.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from pathlib import Path


def proc_start_time(pid: int) -> str | None:
    """The process's start time (clock ticks since boot) from ``/proc``, or None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def alive(pid: int, started_at: str | None) -> bool:
    """True while the process that started at ``started_at`` runs (a zombie child is reaped, not alive)."""
    if proc_start_time(pid) != started_at:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    if state == "Z":  # exited; reap it if it is our child
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        return False
    return True


def stop_group(pid: int, started_at: str | None, timeout_s: float) -> None:
    """SIGTERM the process group led by ``pid``; SIGKILL it if it is still alive after ``timeout_s``."""
    os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and alive(pid, started_at):
        time.sleep(0.1)
    if alive(pid, started_at):
        os.killpg(pid, signal.SIGKILL)
        while alive(pid, started_at):
            time.sleep(0.05)


def port_taken(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def tail(path: Path, lines: int = 20) -> str:
    """The last ``lines`` of a log, for an error message."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
