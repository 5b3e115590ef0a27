"""Micro-batching of single-customer scores: the batcher's logic, and batched answers equal to unbatched ones.

The batcher is driven with a fake scoring function on both event loops the scorer may run on
(asyncio's and uvloop's); the equivalence checks run the real ``Scorer`` and ``ModelHolder``
fallback chain over fake ONNX sessions and a fake online store, so every fallback can be forced
on a single row.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from prometheus_client import REGISTRY

from activity_settings import Settings, load_settings
from features.transform import FEATURE_NAMES
from model_contract.labels import CLASSES
from serving.batching import MicroBatcher
from serving.online import OnlineRows, OnlineStoreUnavailable

LOOPS = ["asyncio", "uvloop"]
BATCH_SIZE = "activity_scorer_micro_batch_size"


def run(coroutine: Coroutine[Any, Any, Any], loop: str = "asyncio") -> Any:
    if loop == "uvloop":
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(coroutine)
    return asyncio.run(coroutine)


def batch_sizes() -> tuple[float, float]:
    """(batches, requests) observed so far by the micro-batch histogram."""
    return (REGISTRY.get_sample_value(f"{BATCH_SIZE}_count") or 0.0,
            REGISTRY.get_sample_value(f"{BATCH_SIZE}_sum") or 0.0)


class FakeScore:
    """``Scorer.score`` for the batcher: records each call, answers each row with its own inputs."""

    def __init__(self, fail_calls: Sequence[int] = ()) -> None:
        self.calls: list[list[str]] = []
        self.fail_calls = set(fail_calls)

    def __call__(self, customer_ids: list[str], as_of_s: list[int], request_ids: Sequence[str]) -> list[dict]:
        self.calls.append(list(customer_ids))
        if len(self.calls) - 1 in self.fail_calls:
            raise RuntimeError(f"scoring call {len(self.calls) - 1} failed")
        return [{"customer_id": c, "as_of_s": t, "request_id": r}
                for c, t, r in zip(customer_ids, as_of_s, request_ids, strict=True)]


def expected(i: int) -> dict[str, Any]:
    return {"customer_id": f"c{i}", "as_of_s": 1_000 + i, "request_id": f"r{i}"}


# ------------------------------------------------------------------------------------ the batcher


@pytest.mark.parametrize("loop", LOOPS)
def test_concurrent_requests_in_one_tick_are_one_scoring_call_each_with_its_own_answer(loop: str) -> None:
    fake = FakeScore()
    batcher = MicroBatcher(fake, max_size=64)
    before = batch_sizes()

    async def main() -> list[dict]:
        return await asyncio.gather(*(batcher.score(f"c{i}", 1_000 + i, f"r{i}") for i in range(20)))

    answers = run(main(), loop)
    assert answers == [expected(i) for i in range(20)]
    assert fake.calls == [[f"c{i}" for i in range(20)]]
    after = batch_sizes()
    assert (after[0] - before[0], after[1] - before[1]) == (1, 20)
    assert batcher.pending() == 0


@pytest.mark.parametrize("loop", LOOPS)
def test_a_batch_holds_at_most_max_size_and_the_rest_follows(loop: str) -> None:
    fake = FakeScore()
    batcher = MicroBatcher(fake, max_size=4)

    async def main() -> list[dict]:
        return await asyncio.gather(*(batcher.score(f"c{i}", 1_000 + i, f"r{i}") for i in range(10)))

    assert run(main(), loop) == [expected(i) for i in range(10)]
    assert [len(call) for call in fake.calls] == [4, 4, 2]
    assert [c for call in fake.calls for c in call] == [f"c{i}" for i in range(10)]  # first come, first scored


@pytest.mark.parametrize("loop", LOOPS)
def test_over_the_cap_a_batch_is_answered_before_the_next_one_is_scored(loop: str) -> None:
    events: list[str] = []

    def score(customer_ids: list[str], as_of_s: list[int], request_ids: Sequence[str]) -> list[dict]:
        events.append(f"score {','.join(customer_ids)}")
        return [{"customer_id": c} for c in customer_ids]

    batcher = MicroBatcher(score, max_size=2)

    async def one(i: int) -> None:
        await batcher.score(f"c{i}", 1_000 + i, f"r{i}")
        events.append(f"answered c{i}")

    async def main() -> None:
        await asyncio.gather(*(one(i) for i in range(4)))

    run(main(), loop)
    assert events == ["score c0,c1", "answered c0", "answered c1", "score c2,c3", "answered c2", "answered c3"]


@pytest.mark.parametrize("loop", LOOPS)
def test_sequential_requests_are_batches_of_one(loop: str) -> None:
    fake = FakeScore()
    batcher = MicroBatcher(fake)
    before = batch_sizes()

    async def main() -> list[dict]:
        return [await batcher.score(f"c{i}", 1_000 + i, f"r{i}") for i in range(5)]

    assert run(main(), loop) == [expected(i) for i in range(5)]
    assert fake.calls == [[f"c{i}"] for i in range(5)]
    after = batch_sizes()
    assert (after[0] - before[0], after[1] - before[1]) == (5, 5)


@pytest.mark.parametrize("loop", LOOPS)
def test_an_exception_reaches_every_waiter_of_its_batch_and_the_next_batch_works(loop: str) -> None:
    fake = FakeScore(fail_calls=[0])
    batcher = MicroBatcher(fake)

    async def main() -> tuple[list[Any], list[dict]]:
        failed = await asyncio.gather(*(batcher.score(f"c{i}", 1_000 + i, f"r{i}") for i in range(3)),
                                      return_exceptions=True)
        later = await asyncio.gather(*(batcher.score(f"c{i}", 1_000 + i, f"r{i}") for i in range(3, 6)))
        return failed, later

    failed, later = run(main(), loop)
    assert all(isinstance(e, RuntimeError) and str(e) == "scoring call 0 failed" for e in failed), failed
    assert later == [expected(i) for i in range(3, 6)]
    assert fake.calls == [["c0", "c1", "c2"], ["c3", "c4", "c5"]]
    assert batcher.pending() == 0


def test_a_wrong_number_of_answers_or_a_stop_iteration_fails_the_waiters_not_the_loop() -> None:
    def short(customer_ids: list[str], as_of_s: list[int], request_ids: Sequence[str]) -> list[dict]:
        return [{}]

    def stops(customer_ids: list[str], as_of_s: list[int], request_ids: Sequence[str]) -> list[dict]:
        raise StopIteration  # a future refuses it as such

    for score, message in ((short, "1 answers for 2 requests"), (stops, "StopIteration")):
        batcher = MicroBatcher(score)

        async def main(batcher: MicroBatcher = batcher) -> list[Any]:
            return await asyncio.gather(batcher.score("a", 1, "ra"), batcher.score("b", 2, "rb"),
                                        return_exceptions=True)

        failures = run(main())
        assert [type(f) for f in failures] == [RuntimeError, RuntimeError] and message in str(failures[0])


def test_a_cancelled_request_is_left_out_of_its_batch() -> None:
    fake = FakeScore()
    batcher = MicroBatcher(fake)

    async def main() -> list[Any]:
        tasks = [asyncio.ensure_future(batcher.score(f"c{i}", 1_000 + i, f"r{i}")) for i in range(3)]
        await asyncio.sleep(0)  # each task has queued its request; the drain is scheduled behind them
        tasks[1].cancel()
        return await asyncio.gather(*tasks, return_exceptions=True)

    first, cancelled, last = run(main())
    assert first == expected(0) and last == expected(2) and isinstance(cancelled, asyncio.CancelledError)
    assert fake.calls == [["c0", "c2"]]


def test_each_event_loop_batches_its_own_requests() -> None:
    fake = FakeScore()
    batcher = MicroBatcher(fake)
    answers: dict[int, list[dict]] = {}
    start = threading.Barrier(2)

    def client(k: int) -> None:
        async def main() -> list[dict]:
            start.wait()
            return await asyncio.gather(*(batcher.score(f"c{i}", 1_000 + i, f"r{i}") for i in range(k, 40, 2)))

        answers[k] = run(main())

    threads = [threading.Thread(target=client, args=(k,)) for k in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for k in (0, 1):
        assert answers[k] == [expected(i) for i in range(k, 40, 2)]
    assert sorted(fake.calls) == [[f"c{i}" for i in range(0, 40, 2)], [f"c{i}" for i in range(1, 40, 2)]]


def test_max_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        MicroBatcher(FakeScore(), max_size=0)


# ------------------------------------------------------------------- the real scorer over fakes

POISON = -1.0  # a row with this first feature makes the champion's scores non-finite
BREAKER = -2.0  # ... makes the challenger's session raise
AS_OF_S = 1_780_000_000


class FakeSession:
    """An ONNX session with the serving signature: per-row softmax of weighted features, failing on demand."""

    def __init__(self, weights: Sequence[float], nan_on: float | None = None, raise_on: float | None = None) -> None:
        self.weights = np.asarray(weights, dtype=np.float32)
        self.nan_on, self.raise_on = nan_on, raise_on
        self.calls: list[int] = []

    def run(self, outputs: list[str], inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        (x,) = inputs.values()
        self.calls.append(len(x))
        if self.raise_on is not None and np.any(x[:, 0] == self.raise_on):
            raise RuntimeError("onnxruntime: kernel failed")
        logits = x[:, :3] * self.weights
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        p = (p / p.sum(axis=1, keepdims=True)).astype(np.float32)
        if self.nan_on is not None:
            p[x[:, 0] == self.nan_on] = np.nan
        return [p, np.argmax(p, axis=1).astype(np.int64)]


class FakeScorerModel:
    def __init__(self, session: FakeSession) -> None:
        self.session = session


class FakeOnline:
    """``OnlineFeatures.features`` from a table of customers; never-seen ones get zeros; may be down."""

    def __init__(self, rows: dict[str, np.ndarray], down: bool = False) -> None:
        self.rows, self.down, self.calls = rows, down, 0

    def features(self, customer_ids: Sequence[str], as_of_s: Sequence[int], timeout_s: float | None = None
                 ) -> OnlineRows:
        self.calls += 1
        if self.down:
            raise OnlineStoreUnavailable("the online store (sqlite) did not answer within 50 ms")
        matrix = np.stack([self.rows.get(c, np.zeros(len(FEATURE_NAMES), np.float32)) for c in customer_ids])
        known = np.array([c in self.rows for c in customer_ids])
        times = [datetime.fromtimestamp(AS_OF_S - 3_600 * (1 + sum(c.encode()) % 48), UTC) if ok else None
                 for c, ok in zip(customer_ids, known, strict=True)]
        return OnlineRows(matrix.astype(np.float32), times, known)


class FakeLog:
    def __init__(self) -> None:
        self.records: list[tuple[str, dict]] = []

    def publish(self, key: str, record: dict[str, Any]) -> bool:
        self.records.append((key, record))
        return True


@pytest.fixture
def settings(clean_env: None, tmp_path: Path) -> Settings:
    return load_settings(data_dir=tmp_path / "data", serving={"challenger_percent": 50.0, "shadow": True})


def make_holder(settings: Settings, tmp_path: Path, champion: bool = True) -> Any:
    from serving.scoring import FallbackModel, LoadedModel, ModelHolder, Served

    def model(version: str, alias: str, session: FakeSession) -> LoadedModel:
        return LoadedModel(name="activity", version=version, alias=alias, run_id=f"run{version}",
                           directory=tmp_path, scorer=FakeScorerModel(session), loaded_at="now",
                           metrics={"share_decline": 0.2, "share_stable": 0.5, "share_growth": 0.3}, source="cache")

    holder = ModelHolder(settings, tmp_path / "models")
    holder._served = Served(  # what a load would swap in
        champion=model("3", "champion", FakeSession([1.0, 0.5, 2.0], nan_on=POISON)) if champion else None,
        challenger=model("4", "challenger", FakeSession([0.5, 1.5, 1.0], raise_on=BREAKER)),
        single=FallbackModel("activity/xgboost-only", "3", tmp_path, FakeScorerModel(FakeSession([1.0, 1.0, 1.0]))),
    )
    return holder


def customer_rows(n: int = 16, seed: int = 5) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {f"c{i:04d}": rng.gamma(2.0, 1.0, len(FEATURE_NAMES)).astype(np.float32) for i in range(n)}


def counters() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the scoring counters (their deltas must not depend on batching)."""
    names = {"activity_scorer_predictions_total", "activity_scorer_fallbacks_total",
             "activity_scorer_shadow_disagreements_total", "activity_scorer_feature_age_seconds_count",
             "activity_scorer_feature_age_seconds_sum"}
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in REGISTRY.collect() for s in family.samples if s.name in names}


def delta(before: dict, after: dict) -> dict:
    return {key: after[key] - before.get(key, 0.0) for key in after if after[key] - before.get(key, 0.0)}


def one_per_arm(scorer: Any, prefix: str) -> list[str]:
    """A customer id with ``prefix`` in each A/B arm."""
    found: dict[str, str] = {}
    for i in range(200):
        found.setdefault(scorer.arm(f"{prefix}{i}"), f"{prefix}{i}")
    assert set(found) == {"champion", "challenger"}
    return [found["champion"], found["challenger"]]


def alone_and_batched(make: Callable[[], tuple[Any, FakeLog]], customers: list[str]
                      ) -> tuple[tuple[list[dict], list, dict], tuple[list[dict], list, dict]]:
    """(answers, log records, counter deltas) scoring each customer as its own request, then all in one call."""
    times = [AS_OF_S - 60 * i for i in range(len(customers))]
    request_ids = [f"req-{i}" for i in range(len(customers))]
    outcomes = []
    for batched in (False, True):
        scorer, publisher = make()
        before = counters()
        if batched:
            answers = scorer.score(customers, times, request_ids)
        else:
            answers = [scorer.score([c], [t], r)[0] for c, t, r in zip(customers, times, request_ids, strict=True)]
        records = sorted(publisher.records, key=lambda kr: (kr[1]["request_id"], bool(kr[1].get("shadow"))))
        outcomes.append((answers, records, delta(before, counters())))
    return outcomes[0], outcomes[1]


@pytest.mark.parametrize("case", ["healthy", "online store down", "one row poisons the champion",
                                  "one row breaks the challenger", "no champion loaded"])
def test_a_micro_batch_answers_logs_and_counts_exactly_like_its_requests_alone(
    settings: Settings, tmp_path: Path, case: str
) -> None:
    from serving.scorer import Scorer

    rows = customer_rows()
    sessions: list[FakeSession] = []

    def make() -> tuple[Any, FakeLog]:
        holder = make_holder(settings, tmp_path, champion=case != "no champion loaded")
        sessions[:] = [m.scorer.session for m in (holder.served.champion, holder.served.challenger,
                                                  holder.served.single) if m is not None]
        publisher = FakeLog()
        return Scorer(settings, holder, FakeOnline(rows, down=case == "online store down"), publisher), publisher

    probe, _ = make()
    customers = [*rows, "never-seen-1"]
    if case == "one row poisons the champion":
        poisoned = one_per_arm(probe, "poison-")
        for c in poisoned:
            rows[c] = np.r_[POISON, rows["c0001"][1:]].astype(np.float32)
        customers += poisoned
    if case == "one row breaks the challenger":
        broken = one_per_arm(probe, "breaker-")
        for c in broken:
            rows[c] = np.r_[BREAKER, rows["c0002"][1:]].astype(np.float32)
        customers += broken
    assert {probe.arm(c) for c in customers} == {"champion", "challenger"}

    (alone, alone_log, alone_counts), (batched, batched_log, batched_counts) = alone_and_batched(make, customers)
    assert batched == alone
    assert [a["request_id"] for a in batched] == [f"req-{i}" for i in range(len(customers))]
    assert batched_log == alone_log
    assert batched_counts == alone_counts

    degraded = {a["customer_id"]: a["fallback"] for a in batched if a["degraded"]}
    arms = {a["customer_id"]: (a["model"]["arm"], a["model"]["version"]) for a in batched}
    if case == "healthy":
        assert not degraded and len([r for _, r in batched_log if r.get("shadow")]) == sum(
            probe.arm(c) == "champion" for c in customers)
    elif case == "online store down":
        assert set(degraded) == set(customers) and all(f.startswith("prior: online store") for f in degraded.values())
        fallbacks = {k: v for k, v in batched_counts.items() if k[0] == "activity_scorer_fallbacks_total"}
        assert list(fallbacks.values()) == [len(customers)]  # one per request, as unbatched
    elif case == "one row poisons the champion":
        # only the poisoned champion-arm row fell to the single model; its challenger-arm twin is unaffected
        assert degraded == {poisoned[0]: "single: model unavailable"}
    elif case == "one row breaks the challenger":
        assert not degraded and arms[broken[1]] == ("challenger", "3")  # answered by the champion, alone
        assert all(v == ("challenger", "4") for c, v in arms.items() if probe.arm(c) == "challenger" and c != broken[1])
        shadowed = {r["customer_id"] for _, r in batched_log if r.get("shadow")}
        assert broken[0] not in shadowed and len(shadowed) == sum(probe.arm(c) == "champion" for c in customers) - 1
    else:  # no champion: every row falls alike, so the batch is not re-scored row by row
        assert set(degraded) == {c for c in customers if probe.arm(c) == "champion"}
        assert set(degraded.values()) == {"single: model unavailable"}
        assert sessions and all(n > 1 for s in sessions for n in s.calls)  # batched calls only, no row re-runs


def test_a_batch_request_counts_one_fallback_per_request_as_before(settings: Settings, tmp_path: Path) -> None:
    from serving.scorer import Scorer

    holder = make_holder(settings, tmp_path)
    scorer = Scorer(settings, holder, FakeOnline(customer_rows(), down=True), None)
    before = counters()
    answers = scorer.score(["c0001", "c0002", "c0003"], [AS_OF_S] * 3, "one-request")
    fallbacks = {k: v for k, v in delta(before, counters()).items() if k[0] == "activity_scorer_fallbacks_total"}
    assert {a["request_id"] for a in answers} == {"one-request"}
    assert sum(fallbacks.values()) == len({scorer.arm(c) for c in ("c0001", "c0002", "c0003")})  # one per arm


def test_request_ids_must_match_the_customers(settings: Settings, tmp_path: Path) -> None:
    from serving.scorer import Scorer

    scorer = Scorer(settings, make_holder(settings, tmp_path), FakeOnline(customer_rows()), None)
    with pytest.raises(ValueError, match="2 customers but 1 request ids"):
        scorer.score(["c0001", "c0002"], [AS_OF_S] * 2, ["only-one"])


# ------------------------------------------------------------------------------------ the route


def test_concurrent_requests_to_the_route_are_micro_batched_with_their_own_ids(
    settings: Settings, tmp_path: Path
) -> None:
    from serving.app import create_app
    from serving.auth import issue_token

    rows = customer_rows()
    online = FakeOnline(rows)
    publisher = FakeLog()
    app = create_app(settings, make_holder(settings, tmp_path), online, publisher)
    token = issue_token(settings, "analyst", ["scores:read"])
    customers = list(rows)
    as_of = datetime.fromtimestamp(AS_OF_S, UTC).isoformat()

    async def get(client: httpx.AsyncClient, i: int) -> httpx.Response:
        return await client.get(f"/v1/customers/{customers[i]}/activity", params={"as_of": as_of},
                                headers={"Authorization": f"Bearer {token}", "X-Request-ID": f"request-{i:04d}"})

    async def main() -> tuple[list[httpx.Response], list[httpx.Response]]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://scorer") as client:
            together = await asyncio.gather(*(get(client, i) for i in range(len(customers))))
            alone = [await get(client, i) for i in range(len(customers))]
        return together, alone

    before = batch_sizes()
    together, alone = run(main(), "uvloop")
    after = batch_sizes()
    assert after[1] - before[1] == 2 * len(customers)
    assert after[0] - before[0] < 2 * len(customers)  # some requests were scored together
    for i, (a, b) in enumerate(zip(together, alone, strict=True)):
        assert a.status_code == b.status_code == 200, a.text
        assert a.headers["X-Request-ID"] == a.json()["request_id"] == f"request-{i:04d}"
        assert a.json() == b.json()
    assert {r["request_id"] for _, r in publisher.records} == {f"request-{i:04d}" for i in range(len(customers))}


def test_an_unexpected_failure_is_a_problem_for_each_waiting_request_and_later_ones_succeed(
    settings: Settings, tmp_path: Path
) -> None:
    from serving.app import create_app
    from serving.auth import issue_token

    class Broken(FakeOnline):
        def features(self, *args: Any, **kwargs: Any) -> OnlineRows:
            if self.calls == 0:
                self.calls += 1
                raise KeyError("a bug, not an outage")
            return super().features(*args, **kwargs)

    rows = customer_rows()
    app = create_app(settings, make_holder(settings, tmp_path), Broken(rows), None)
    headers = {"Authorization": f"Bearer {issue_token(settings, 'analyst', ['scores:read'])}"}

    async def main() -> tuple[list[httpx.Response], httpx.Response]:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://scorer") as client:
            first = await asyncio.gather(*(client.get(f"/v1/customers/{c}/activity", headers=headers)
                                           for c in list(rows)[:4]))
            later = await client.get("/v1/customers/c0005/activity", headers=headers)
        return first, later

    first, later = run(main(), "uvloop")
    assert {r.status_code for r in first} == {500}
    assert all(r.headers["content-type"].startswith("application/problem+json") for r in first)
    assert later.status_code == 200 and later.json()["class"] in CLASSES


# ------------------------------------------------------------------- the activity forecast beside the class


def with_forecasts(holder: Any, champion: Any, challenger: Any) -> Any:
    from dataclasses import replace

    served = holder._served
    holder._served = replace(served, champion=replace(served.champion, forecast=champion),
                             challenger=replace(served.challenger, forecast=challenger))
    return holder


def test_each_arm_answers_its_versions_forecast_and_a_never_seen_customer_gets_none(settings: Settings,
                                                                                      tmp_path: Path) -> None:
    from model_contract.forecast import ActivityForecast
    from serving.scorer import Scorer

    forecasts = {"champion": ActivityForecast("bg_nbd", {"r": 0.8, "alpha": 12.0, "a": 0.6, "b": 2.5}, 30),
                 "challenger": ActivityForecast("pareto_nbd", {"r": 0.55, "alpha": 10.6, "s": 0.61, "beta": 11.7}, 90)}
    rows = customer_rows()
    scorer = Scorer(settings, with_forecasts(make_holder(settings, tmp_path), *forecasts.values()),
                    FakeOnline(rows), None)
    customers = [*rows, "never-seen"]
    answers = scorer.score(customers, [AS_OF_S] * len(customers), "req")
    for customer, answer in zip(customers, answers, strict=True):
        if customer == "never-seen":
            assert answer["forecast"] is None
            continue
        forecast = forecasts[answer["model"]["arm"]]
        p_active, expected, _ = forecast.predict(rows[customer][None, :])
        assert answer["forecast"] == {"model": forecast.model, "horizon_days": forecast.horizon_days,
                                      "p_active": round(float(p_active[0]), 6),
                                      "expected_transactions": round(float(expected[0]), 4)}
        assert 0.0 < answer["forecast"]["p_active"] < 1.0
    assert {a["model"]["arm"] for a in answers} == {"champion", "challenger"}


def test_a_version_without_a_forecast_answers_the_class_alone(settings: Settings, tmp_path: Path) -> None:
    from serving.scorer import Scorer

    scorer = Scorer(settings, make_holder(settings, tmp_path), FakeOnline(customer_rows()), None)
    answers = scorer.score(list(customer_rows()), [AS_OF_S] * 16, "req")
    assert all(a["forecast"] is None and a["class"] in CLASSES for a in answers)


def test_a_broken_forecast_file_rejects_the_version_and_a_missing_one_is_none(tmp_path: Path) -> None:
    from model_contract.artifacts import FORECAST_FILE, artifact_path
    from model_contract.forecast import ForecastError
    from serving.scoring import forecast_of

    assert forecast_of(tmp_path) is None
    path = artifact_path(tmp_path, FORECAST_FILE)
    path.parent.mkdir(parents=True)
    path.write_text('{"model": "bg_nbd", "params": {"r": 1.0}, "horizon_days": 30}')
    with pytest.raises(ForecastError, match="needs parameters r, alpha, a, b"):
        forecast_of(tmp_path)


def test_a_reload_during_a_request_answers_class_and_forecast_from_one_version(settings: Settings,
                                                                             tmp_path: Path) -> None:
    from dataclasses import replace

    from model_contract.forecast import ActivityForecast
    from serving.scorer import Scorer

    old = {"3": ActivityForecast("bg_nbd", {"r": 0.8, "alpha": 12.0, "a": 0.6, "b": 2.5}, 30),
           "4": ActivityForecast("bg_nbd", {"r": 0.8, "alpha": 12.0, "a": 0.6, "b": 2.5}, 60)}
    holder = with_forecasts(make_holder(settings, tmp_path), old["3"], old["4"])
    swapped = holder._served
    new = replace(swapped, champion=replace(swapped.champion, version="5", forecast=replace(old["3"], horizon_days=90)),
                  challenger=None)
    scorer = Scorer(settings, holder, FakeOnline(customer_rows()), None)
    arm = scorer.arm

    def arm_then_reload(customer_id: str) -> str:  # a reload lands while the request is being scored
        chosen = arm(customer_id)
        holder._served = new
        return chosen

    scorer.arm = arm_then_reload  # type: ignore[method-assign]
    answers = scorer.score(list(customer_rows()), [AS_OF_S] * 16, "req")
    for answer in answers:
        assert answer["model"]["version"] in old
        assert answer["forecast"]["horizon_days"] == old[answer["model"]["version"]].horizon_days
