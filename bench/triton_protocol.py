"""KServe v2 over HTTP against gRPC: the cost of one Triton call from the scorer, by batch size.

The scorer sends each micro-batch to Triton as one request (``serving.triton``: HTTP with the binary
tensor extension). This benchmark starts the embedded Triton with both endpoints, loads one model
version (an ensemble of the platform's default size, fitted on feature-shaped random rows, exported
and written to the repository as registration does), and times ``--requests`` sequential calls per
batch size through the scorer's own HTTP client and through Triton's gRPC client (``tritonclient``),
after a warm-up. Both read the same outputs; the answers are compared.

    python -m bench.triton_protocol [--requests 2000] [--batches 1,8,64] [--rows 6000]

Figures go to stdout, ending with one JSON line ``{"batch_rows", "http_p50_ms", "http_p99_ms",
"grpc_p50_ms", "grpc_p99_ms", "grpc_vs_http_p50"}`` (lists, one entry per batch size; the ratio is
gRPC's median over HTTP's: below 1, gRPC is faster).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np

from activity_settings import Settings, load_settings
from bench.common import log, machine, print_result
from features.transform import FEATURE_NAMES
from infra.services import free_port
from infra.triton import start_triton, stop_triton
from model_contract.triton_repository import model_config, model_name, write_version
from serving.triton import TritonClient, triton_url

VERSION = "1"


def fitted_onnx(rows: int, directory: Path) -> Path:
    """An ensemble of the default ``ModelParams`` on feature-shaped random rows, exported to ONNX."""
    from training.model import ModelParams, fit_ensemble
    from training.onnx_export import ensemble_to_onnx, save

    rng = np.random.default_rng(7)
    x = rng.lognormal(1.0, 1.0, size=(rows, len(FEATURE_NAMES))).astype(np.float32)
    signal = np.log1p(x[:, 0]) - np.log1p(x[:, 1]) + rng.normal(0, 0.5, rows)
    y = np.digitize(signal, np.quantile(signal, [0.3, 0.7]))
    split = rows * 2 // 3
    fitted = fit_ensemble(x[:split], y[:split], x[split:], y[split:], ModelParams())
    return save(ensemble_to_onnx(fitted.ensemble), directory / "model.onnx")


def timed(call: Callable[[], object], requests: int, warmup: int = 50) -> np.ndarray:
    """Milliseconds of each of ``requests`` sequential calls, after ``warmup`` untimed ones."""
    for _ in range(warmup):
        call()
    times = np.empty(requests)
    for i in range(requests):
        started = time.perf_counter()
        call()
        times[i] = (time.perf_counter() - started) * 1_000.0
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2_000, help="Timed calls per batch size and protocol.")
    parser.add_argument("--batches", default="1,8,64", help="Rows per call, comma-separated.")
    parser.add_argument("--rows", type=int, default=6_000, help="Random rows the benchmark's ensemble is fitted on.")
    args = parser.parse_args()
    batches = [int(b) for b in args.batches.split(",") if b.strip()]
    if not batches or min(batches) < 1 or args.requests < 1:
        parser.error("--batches: positive row counts; --requests: at least 1")
    try:
        import tritonclient.grpc as grpcclient
    except ImportError:
        parser.error("Triton's gRPC client is not installed: `./run install` installs tritonclient[grpc] "
                     "from requirements.lock")

    print(f"# Triton over HTTP and gRPC ({machine()})")
    with tempfile.TemporaryDirectory(prefix="activity-triton-protocol-") as root:
        base = load_settings(data_dir=Path(root))
        settings: Settings = base.model_copy(update={"serving": base.serving.model_copy(update={
            "model_server": "triton", "triton_port": free_port(), "triton_metrics_port": free_port()})})
        log(f"fitting an ensemble on {args.rows:,} random rows and exporting it")
        onnx_path = fitted_onnx(args.rows, Path(root))
        write_version(settings, VERSION, onnx_path)
        grpc_port = free_port()
        log("starting triton (HTTP and gRPC endpoints)")
        start_triton(settings, grpc_port=grpc_port)
        http = TritonClient(triton_url(settings), timeout_s=30.0, retry_s=0.0)
        grpc = grpcclient.InferenceServerClient(f"127.0.0.1:{grpc_port}")
        try:
            name = model_name(settings, VERSION)
            http.load(name, model_config(settings, VERSION))
            figures: dict[str, list[float]] = {key: [] for key in (
                "batch_rows", "http_p50_ms", "http_p99_ms", "grpc_p50_ms", "grpc_p99_ms", "grpc_vs_http_p50")}
            print("\n| rows per call | HTTP p50 / p99 (ms) | gRPC p50 / p99 (ms) | gRPC / HTTP (p50) |")
            print("| ---: | ---: | ---: | ---: |")
            rng = np.random.default_rng(0)
            for rows in batches:
                x = rng.lognormal(1.0, 1.0, size=(rows, len(FEATURE_NAMES))).astype(np.float32)

                def over_grpc(x: np.ndarray = x) -> np.ndarray:
                    tensor = grpcclient.InferInput("features", list(x.shape), "FP32")
                    tensor.set_data_from_numpy(x)
                    result = grpc.infer(name, [tensor], model_version=VERSION,
                                        outputs=[grpcclient.InferRequestedOutput("probabilities"),
                                                 grpcclient.InferRequestedOutput("label")])
                    return result.as_numpy("probabilities")

                np.testing.assert_allclose(over_grpc(), http.infer(name, VERSION, x)[0], rtol=0, atol=1e-7)
                log(f"{rows} rows per call: {args.requests} calls over HTTP, then over gRPC")
                over_http = timed(partial(http.infer, name, VERSION, x), args.requests)
                over_grpc_ms = timed(over_grpc, args.requests)
                h50, h99 = np.percentile(over_http, [50, 99])
                g50, g99 = np.percentile(over_grpc_ms, [50, 99])
                print(f"| {rows} | {h50:.2f} / {h99:.2f} | {g50:.2f} / {g99:.2f} | {g50 / h50:.2f} |")
                for key, value in zip(figures, (rows, h50, h99, g50, g99, g50 / h50), strict=True):
                    figures[key].append(value if key == "batch_rows" else round(float(value), 3))
        finally:
            grpc.close()
            http.close()
            stop_triton(settings.home)
    print()
    print_result(dict(figures))


if __name__ == "__main__":
    main()
