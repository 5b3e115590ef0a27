"""The scorer's side of Triton Inference Server: KServe v2 inference over HTTP, and the versions Triton serves.

With ``serving.model_server: triton`` every loaded version (champion, challenger) carries a
``RemoteVersion``: the scorer sends its feature rows to Triton as one KServe v2 request with the
binary tensor extension (the rows' float32 bytes, not JSON numbers, so the model sees exactly the
floats the in-process copy would) and reads back the probabilities and labels the same way.

Failing fast is the point of ``TritonClient``: a call that errors or exceeds ``serving.triton_timeout_ms``
raises ``TritonUnavailable`` (the holder then answers from the in-process copy, degraded), and for
``serving.triton_retry_s`` afterwards calls fail at once instead of each waiting out the budget; the
first call after that tries Triton again, so answers recover by themselves when Triton is back.

``TritonVersions`` keeps Triton's loaded versions equal to what the holder serves, through the
repository API (Triton runs in explicit model-control mode): each version is a Triton model of its
own (``model_contract.triton_repository``), loaded before the holder swaps to it and unloaded once no served
model names it; the holder keeps the previous champion loaded until the next change, so a request
never names a version Triton has not loaded, and loading one version never disturbs another. A
Triton that restarted empty is refilled at the holder's next poll.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from activity_settings import ActivityError, Settings
from features.transform import FEATURE_NAMES
from model_contract.triton_repository import INPUT, LABEL, PROBABILITIES, model_config, model_name, write_version

HEADER_LENGTH = "Inference-Header-Content-Length"
OUTPUTS = (PROBABILITIES, LABEL)
LOAD_TIMEOUT_S = 120.0  # a load starts a backend process per instance and opens the ONNX model


class TritonUnavailable(ActivityError, RuntimeError):
    """Triton did not answer within its budget, failed, or is being skipped after a failure."""


def triton_url(settings: Settings) -> str:
    """``serving.triton_url``, or the embedded server's on ``serving.triton_port``."""
    return (settings.serving.triton_url or f"http://127.0.0.1:{settings.serving.triton_port}").rstrip("/")


def infer_body(x: np.ndarray) -> tuple[bytes, int]:
    """A KServe v2 binary-extension request for the float32 rows ``x``: (body, length of its JSON header)."""
    header = json.dumps({
        "inputs": [{"name": INPUT, "shape": list(x.shape), "datatype": "FP32",
                    "parameters": {"binary_data_size": x.nbytes}}],
        "outputs": [{"name": name, "parameters": {"binary_data": True}} for name in OUTPUTS],
    }, separators=(",", ":")).encode()
    return header + x.tobytes(), len(header)


def parse_infer(body: bytes, header_length: int | None, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities float32 (rows, classes), labels int64 (rows,)) from a binary-extension response."""
    if header_length is None:  # an answer without binary parts is an error document
        raise TritonUnavailable(f"Triton answered without tensors: {body[:300]!r}")
    header = json.loads(body[:header_length])
    offset, tensors = header_length, {}
    for output in header["outputs"]:
        size = int(output["parameters"]["binary_data_size"])
        dtype = np.float32 if output["datatype"] == "FP32" else np.int64
        tensors[output["name"]] = np.frombuffer(body, dtype=dtype, count=size // np.dtype(dtype).itemsize,
                                                offset=offset)
        offset += size
    probabilities = tensors[PROBABILITIES].reshape(rows, -1)
    return probabilities, tensors[LABEL].reshape(rows)


class TritonClient:
    """KServe v2 over HTTP with a time budget per call and a pause after a failure (see the module docstring)."""

    def __init__(self, url: str, timeout_s: float, retry_s: float) -> None:
        self.url = url
        self.retry_s = retry_s
        self._http = httpx.Client(base_url=url, timeout=timeout_s,
                                  limits=httpx.Limits(max_keepalive_connections=8, max_connections=16))
        self._admin = httpx.Client(base_url=url, timeout=LOAD_TIMEOUT_S)
        self._skip_until = 0.0
        self.last_error: str | None = None

    def infer(self, model: str, version: str, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Scores ``x`` (float32, (n, features)) with ``model`` at ``version``; raises ``TritonUnavailable``."""
        if time.monotonic() < self._skip_until:
            raise TritonUnavailable(f"skipping Triton for {self.retry_s:g}s after: {self.last_error}")
        try:
            return self._infer(model, version, x)
        except TritonUnavailable as exc:
            self.last_error = str(exc)
            self._skip_until = time.monotonic() + self.retry_s
            raise

    def _infer(self, model: str, version: str, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = np.ascontiguousarray(x, dtype=np.float32)
        body, header_length = infer_body(x)
        try:
            response = self._http.post(f"/v2/models/{model}/versions/{version}/infer", content=body,
                                       headers={HEADER_LENGTH: str(header_length),
                                                "Content-Type": "application/octet-stream"})
            if response.status_code != 200:
                raise TritonUnavailable(f"HTTP {response.status_code}: {response.text[:300]}")
            length = response.headers.get(HEADER_LENGTH)
            return parse_infer(response.content, int(length) if length else None, len(x))
        except (httpx.HTTPError, TritonUnavailable, ValueError, KeyError) as exc:
            raise TritonUnavailable(f"{type(exc).__name__}: {str(exc)[:300]}") from exc

    def ready(self) -> bool:
        try:
            return self._admin.get("/v2/health/ready", timeout=2.0).status_code == 200
        except httpx.HTTPError:
            return False

    def ready_models(self) -> set[str]:
        """The models Triton reports READY (repository index)."""
        response = self._admin.post("/v2/repository/index", json={"ready": True})
        response.raise_for_status()
        return {str(entry["name"]) for entry in response.json() if entry.get("state") == "READY"}

    def load(self, model: str, config: dict[str, Any]) -> None:
        """Load ``model`` with ``config``; returns once Triton serves it (after its warm-up)."""
        response = self._admin.post(f"/v2/repository/models/{model}/load",
                                    json={"parameters": {"config": json.dumps(config)}})
        if response.status_code != 200:
            raise TritonUnavailable(f"loading {model} failed: HTTP {response.status_code}: {response.text[:500]}")

    def unload(self, model: str) -> None:
        """Unload ``model``; Triton lets the requests in flight finish first."""
        response = self._admin.post(f"/v2/repository/models/{model}/unload")
        if response.status_code != 200:
            raise TritonUnavailable(f"unloading {model} failed: HTTP {response.status_code}: {response.text[:500]}")

    def close(self) -> None:
        self._http.close()
        self._admin.close()


@dataclass(frozen=True)
class RemoteVersion:
    """One registered version as Triton serves it (what ``LoadedModel.remote`` holds)."""

    client: TritonClient
    model: str
    version: str

    def score(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if x.shape[1] != len(FEATURE_NAMES):
            raise ValueError(f"expected {len(FEATURE_NAMES)} features, got {x.shape[1]}")
        return self.client.infer(self.model, self.version, x)


class TritonVersions:
    """Keeps the versions Triton has loaded equal to the ones the holder serves (see the module docstring)."""

    def __init__(self, settings: Settings, client: TritonClient | None = None) -> None:
        self.settings = settings
        self.model = settings.mlflow.registered_model
        serving = settings.serving
        self.client = client or TritonClient(triton_url(settings), serving.triton_timeout_ms / 1000.0,
                                             serving.triton_retry_s)
        self._lock = threading.Lock()

    def remote(self, version: str) -> RemoteVersion:
        return RemoteVersion(self.client, model_name(self.settings, version), str(int(version)))

    def publish(self, version: str, onnx_path: Path) -> None:
        """Make sure ``version`` is in the model repository (written at registration; here if it is not)."""
        write_version(self.settings, version, onnx_path)

    def serve(self, versions: Iterable[str]) -> set[str]:
        """Make Triton's loaded versions exactly ``versions``: load the missing, then unload the others.

        Returns the versions loaded now. Raises ``TritonUnavailable`` (or ``httpx.HTTPError``) when
        Triton cannot be reached or refuses.
        """
        wanted = {str(int(version)) for version in versions}
        prefix = f"{self.model}-v"
        with self._lock:
            ready = {name.removeprefix(prefix) for name in self.client.ready_models() if name.startswith(prefix)}
            for version in sorted(wanted - ready, key=int):
                self.client.load(model_name(self.settings, version), model_config(self.settings, version))
            for version in ready - wanted:
                self.client.unload(model_name(self.settings, version))
            return wanted - ready

    def close(self) -> None:
        self.client.close()
