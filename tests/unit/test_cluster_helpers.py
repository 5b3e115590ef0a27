"""Pure pieces of the cluster profile's plumbing: where the Spark driver binds, the benchmarks' --profiles."""

from __future__ import annotations

import pytest

from bench.common import profiles_argument
from infra.spark import on_loopback


@pytest.mark.parametrize(("master", "loopback"), [
    ("local[*]", True), ("local[2]", True),
    ("spark://127.0.0.1:7077", True), ("spark://localhost:7077", True),
    ("spark://spark-master:7077", False), ("spark://10.0.0.5:7077", False),
    ("k8s://https://127.0.0.1:6443", False), ("yarn", False),
])
def test_the_driver_binds_to_loopback_only_for_masters_on_this_host(master: str, loopback: bool) -> None:
    assert on_loopback(master) is loopback


def test_profiles_argument_keeps_the_order_and_names_what_it_takes() -> None:
    assert profiles_argument("embedded") == ["embedded"]
    assert profiles_argument("cluster, embedded") == ["cluster", "embedded"]
    for bad in ("", "cluster,redis", ","):
        with pytest.raises(ValueError, match="embedded, cluster"):
            profiles_argument(bad)
