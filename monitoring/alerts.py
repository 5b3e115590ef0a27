"""Alerts the monitoring jobs raise themselves, posted as an Alertmanager webhook payload.

The payload is what Alertmanager sends to a webhook receiver (version 4), so the same receiver
(a chat bridge, an incident tool) takes alerts from Prometheus rules and from these jobs. A post
that fails is counted and logged; it never fails the job that raised the alert.
"""

from __future__ import annotations

import hashlib
import json
import logging
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from activity_settings import Settings
from monitoring.metrics import ALERT_FAILURES, ALERTS_SENT

log = logging.getLogger(__name__)
RECEIVER = "activity-monitor"


@dataclass(frozen=True)
class Alert:
    name: str
    summary: str
    description: str
    severity: str = "warning"
    labels: dict[str, str] = field(default_factory=dict)
    starts_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def all_labels(self) -> dict[str, str]:
        return {"alertname": self.name, "severity": self.severity, "service": "activity-monitor", **self.labels}

    def fingerprint(self) -> str:
        key = json.dumps(self.all_labels(), sort_keys=True)
        return hashlib.sha256(key.encode()).hexdigest()[:16]


def payload(alerts: list[Alert], external_url: str = "") -> dict[str, Any]:
    """Alertmanager's webhook body (version 4) for firing ``alerts`` grouped by alert name."""
    labels = [a.all_labels() for a in alerts]
    common = {k: v for k, v in labels[0].items() if all(other.get(k) == v for other in labels)} if labels else {}
    group = {"alertname": common["alertname"]} if "alertname" in common else {}
    return {
        "version": "4",
        "groupKey": "{}:" + json.dumps(group, sort_keys=True),
        "truncatedAlerts": 0,
        "status": "firing",
        "receiver": RECEIVER,
        "groupLabels": group,
        "commonLabels": common,
        "commonAnnotations": ({"summary": alerts[0].summary} if len({a.summary for a in alerts}) == 1 else {}),
        "externalURL": external_url,
        "alerts": [{
            "status": "firing",
            "labels": a.all_labels(),
            "annotations": {"summary": a.summary, "description": a.description},
            "startsAt": a.starts_at.isoformat().replace("+00:00", "Z"),
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": external_url,
            "fingerprint": a.fingerprint(),
        } for a in alerts],
    }


def notify(settings: Settings, alerts: list[Alert]) -> bool:
    """Post ``alerts`` to ``monitoring.webhook_url``; True when delivered (or nothing to send).

    Without a webhook the alerts are only logged.
    """
    if not alerts:
        return True
    for alert in alerts:
        log.warning("alert %s: %s", alert.name, alert.summary)
    url = settings.monitoring.webhook_url
    if not url:
        return True
    body = json.dumps(payload(alerts)).encode()
    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": "application/json", "User-Agent": RECEIVER})
    try:
        with urllib.request.urlopen(request, timeout=settings.monitoring.webhook_timeout_s) as response:
            ok = 200 <= response.status < 300
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        log.error("alert webhook %s failed: %s", url, exc)
        ok = False
    if ok:
        for alert in alerts:
            ALERTS_SENT.labels(alert.name).inc()
    else:
        ALERT_FAILURES.inc(len(alerts))
    return ok
