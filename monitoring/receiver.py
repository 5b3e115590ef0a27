"""A webhook receiver on loopback that keeps what it is posted: alerts for the demo, `activity up` and tests.

It takes Alertmanager's webhook payload (what ``monitoring.alerts.notify`` and Alertmanager post)
and keeps each body; ``on_alert`` is called for every alert in it.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class AlertReceiver:
    def __init__(self, on_alert: Callable[[dict[str, Any]], None] = lambda _: None, port: int = 0) -> None:
        self.bodies: list[dict[str, Any]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # http.server's name
                length = int(self.headers.get("Content-Length", 0))
                try:
                    body = json.loads(self.rfile.read(length))
                except json.JSONDecodeError:
                    self.send_response(400)
                    self.end_headers()
                    return
                receiver.bodies.append(body)
                for alert in body.get("alerts", []):
                    on_alert(alert)
                self.send_response(200)
                self.end_headers()

            def log_message(self, *_: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/alerts"
        self._thread = threading.Thread(target=self._server.serve_forever, name="alert-receiver", daemon=True)
        self._thread.start()

    def alert_names(self) -> list[str]:
        return [alert["labels"]["alertname"] for body in self.bodies for alert in body.get("alerts", [])]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> AlertReceiver:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
