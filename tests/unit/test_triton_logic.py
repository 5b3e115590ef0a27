"""Triton's pure parts: the KServe v2 binary messages, the model config, and the fallback to the in-process copy."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from activity_settings import load_settings
from features.transform import FEATURE_NAMES
from model_contract.triton_repository import TritonRepositoryError, config_pbtxt, model_config, write_version
from serving.scoring import LoadedModel, ModelHolder, Served
from serving.triton import TritonClient, TritonUnavailable, infer_body, parse_infer


def test_a_request_carries_the_rows_as_their_float32_bytes() -> None:
    x = np.random.default_rng(1).normal(size=(3, len(FEATURE_NAMES))).astype(np.float32)
    body, length = infer_body(x)
    header = json.loads(body[:length])
    assert header["inputs"][0]["shape"] == [3, len(FEATURE_NAMES)]
    assert header["inputs"][0]["parameters"]["binary_data_size"] == x.nbytes
    assert np.array_equal(np.frombuffer(body[length:], dtype=np.float32).reshape(x.shape), x)


def test_an_answer_is_read_back_exactly() -> None:
    probabilities = np.array([[0.1, 0.7, 0.2], [0.3, 0.3, 0.4]], dtype=np.float32)
    labels = np.array([[1], [2]], dtype=np.int64)
    header = json.dumps({"outputs": [
        {"name": "probabilities", "datatype": "FP32", "shape": [2, 3],
         "parameters": {"binary_data_size": probabilities.nbytes}},
        {"name": "label", "datatype": "INT64", "shape": [2, 1], "parameters": {"binary_data_size": labels.nbytes}},
    ]}).encode()
    got_p, got_l = parse_infer(header + probabilities.tobytes() + labels.tobytes(), len(header), 2)
    assert np.array_equal(got_p, probabilities) and got_l.tolist() == [1, 2]
    with pytest.raises(TritonUnavailable, match="without tensors"):
        parse_infer(b'{"error": "no such model"}', None, 2)


def test_each_version_is_a_model_of_its_own(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path, serving={"triton_instances": 2})
    config = model_config(settings, "12")
    assert config["name"] == "customer-activity-v12"
    assert config["version_policy"] == {"specific": {"versions": [12]}}
    assert config["instance_group"] == [{"kind": "KIND_CPU", "count": 2}] and config["backend"] == "python"
    text = config_pbtxt(config)
    assert 'name: "customer-activity-v12"' in text and "versions: [ 12 ]" in text and "kind: KIND_CPU" in text


def test_a_version_is_written_whole_and_only_as_a_number(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path)
    onnx_path = tmp_path / "model.onnx"
    onnx_path.write_bytes(b"onnx")
    target = write_version(settings, "7", onnx_path)
    assert target == tmp_path / "triton" / "models" / "customer-activity-v7" / "7"
    assert sorted(p.name for p in target.iterdir()) == ["model.onnx", "model.py"]
    assert (target.parent / "config.pbtxt").is_file()
    assert not list(target.parent.glob(".*partial"))
    with pytest.raises(TritonRepositoryError, match="not a number"):
        write_version(settings, "seven", onnx_path)


class _Session:
    """An ONNX Runtime session's ``run``: fixed probabilities (the in-process copy)."""

    def run(self, outputs: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        n = len(feeds["features"])
        return [np.tile(np.array([0.2, 0.5, 0.3], dtype=np.float32), (n, 1)), np.ones(n, dtype=np.int64)]


class _Scorer:
    session = _Session()


class _Remote:
    def __init__(self, fail: bool) -> None:
        self.fail = fail

    def score(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.fail:
            raise TritonUnavailable("ReadTimeout: timed out")
        return np.tile(np.array([0.6, 0.3, 0.1], dtype=np.float32), (len(x), 1)), np.zeros(len(x), dtype=np.int64)


def _holder(tmp_path: Path, remote: _Remote) -> ModelHolder:
    holder = ModelHolder(load_settings(data_dir=tmp_path), tmp_path / "models")
    champion = LoadedModel("customer-activity", "4", "champion", "run", tmp_path, _Scorer(), "now", {}, "registry",
                           remote=remote)
    holder._served = Served(champion=champion)
    return holder


def test_triton_answers_when_it_can(tmp_path: Path) -> None:
    result = _holder(tmp_path, _Remote(fail=False)).score_with_fallback(np.zeros((2, len(FEATURE_NAMES))))
    assert result.level == "champion" and not result.degraded
    assert result.probabilities[0].tolist() == pytest.approx([0.6, 0.3, 0.1])


def test_a_failing_triton_is_answered_by_the_in_process_copy_degraded(tmp_path: Path) -> None:
    result = _holder(tmp_path, _Remote(fail=True)).score_with_fallback(np.zeros((2, len(FEATURE_NAMES))))
    assert result.level == "inprocess" and result.degraded and result.model_version == "4"
    assert result.probabilities[0].tolist() == pytest.approx([0.2, 0.5, 0.3])


def test_after_a_failure_triton_is_skipped_for_a_while_then_tried_again() -> None:
    from infra.services import free_port

    client = TritonClient(f"http://127.0.0.1:{free_port()}", timeout_s=0.5, retry_s=0.3)  # nothing listens
    x = np.zeros((1, len(FEATURE_NAMES)), dtype=np.float32)
    with pytest.raises(TritonUnavailable, match="Connect"):
        client.infer("m", "1", x)
    with pytest.raises(TritonUnavailable, match="skipping Triton"):
        client.infer("m", "1", x)
    time.sleep(0.35)
    with pytest.raises(TritonUnavailable, match="Connect"):
        client.infer("m", "1", x)
    client.close()
