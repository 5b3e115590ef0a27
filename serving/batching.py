"""Opportunistic micro-batching of single-customer scores on the event loop.

A single-customer request does not score on its own: it queues ``(customer_id, as_of_s, request_id)``
and awaits a future. The first item of a batch schedules one drain with ``loop.call_soon`` (no
timer), so the drain runs right after the callbacks already ready in this loop iteration: the
requests whose bytes arrived in the same I/O poll have queued by then and are scored with it, in
ONE ``Scorer.score`` call (one online-store read, one transform, one ONNX run per arm); each future
gets its own row, answered with its own request id.

Under light load a batch is one request and nothing waits that did not wait before; under load
the requests that arrive while a batch is scoring (which blocks the loop, as the unbatched call
did) make up the next one, so the per-request cost falls as the rate rises. A batch holds at most
``max_size`` requests; the rest is drained at the next loop iteration, after the I/O in between.

An exception from the scoring call is set on every waiter of that batch (each request fails as
it would have alone) and the batcher goes on with the next batch. A waiter that was cancelled
(its client went away) is left out of the batch.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from serving import metrics

ScoreMany = Callable[[list[str], list[int], Sequence[str]], list[dict[str, Any]]]
DEFAULT_MAX_SIZE = 64


class _Waiter(NamedTuple):
    customer_id: str
    as_of_s: int
    request_id: str
    future: asyncio.Future[dict[str, Any]]


class MicroBatcher:
    """Coalesces concurrent single-customer scores of one event loop into one scoring call.

    ``score_many(customer_ids, as_of_s, request_ids)`` scores rows that are separate requests
    (``Scorer.score`` with one request id per row) and returns one answer per row, in order. It runs
    on the event loop, as the handler's direct call did. One batcher may serve several event
    loops (a test client per thread): each loop has its own queue, drained on that loop.
    """

    def __init__(self, score_many: ScoreMany, max_size: int = DEFAULT_MAX_SIZE) -> None:
        if max_size < 1:
            raise ValueError(f"max_size must be at least 1, got {max_size}")
        self.score_many = score_many
        self.max_size = max_size
        self._queues: dict[asyncio.AbstractEventLoop, deque[_Waiter]] = {}  # only loops with a drain scheduled

    async def score(self, customer_id: str, as_of_s: int, request_id: str) -> dict[str, Any]:
        """The answer for one customer, scored together with whatever else is queued on this loop."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[dict[str, Any]] = loop.create_future()
        queue = self._queues.get(loop)
        if queue is None:  # the first of a batch: drain once the callbacks ready now have run
            queue = self._queues[loop] = deque()
            loop.call_soon(self._drain, loop, queue)
        queue.append(_Waiter(customer_id, as_of_s, request_id, future))
        return await future

    def pending(self) -> int:
        """Requests queued and not yet scored (on any loop)."""
        return sum(len(queue) for queue in list(self._queues.values()))

    def _drain(self, loop: asyncio.AbstractEventLoop, queue: deque[_Waiter]) -> None:
        batch = [queue.popleft() for _ in range(min(len(queue), self.max_size))]
        more = bool(queue)
        if not more:  # settled before scoring: whatever happens below, the next request starts a new batch
            del self._queues[loop]
        try:
            self._score(batch)
        finally:
            if more:  # over the cap: the rest next, behind this batch's wake-ups (their responses go out first)
                loop.call_soon(self._drain, loop, queue)

    def _score(self, batch: list[_Waiter]) -> None:
        waiters = [waiter for waiter in batch if not waiter.future.done()]  # done = cancelled: client gone
        if not waiters:
            return
        metrics.MICRO_BATCH_SIZE.observe(len(waiters))
        try:
            answers = self.score_many([w.customer_id for w in waiters], [w.as_of_s for w in waiters],
                                      [w.request_id for w in waiters])
            if len(answers) != len(waiters):
                raise RuntimeError(f"scoring returned {len(answers)} answers for {len(waiters)} requests")
        except Exception as exc:  # every waiter fails as its request would have alone
            failure: Exception = exc
            if isinstance(exc, StopIteration):  # a future refuses it (TypeError), which would strand the waiters
                failure = RuntimeError(f"scoring raised {exc!r}")
                failure.__cause__ = exc
            for waiter in waiters:
                if not waiter.future.done():
                    waiter.future.set_exception(failure)
            return
        except BaseException:  # KeyboardInterrupt, SystemExit: stops the loop; nobody is left waiting
            for waiter in waiters:
                waiter.future.cancel()
            raise
        for waiter, answer in zip(waiters, answers, strict=True):
            if not waiter.future.done():
                waiter.future.set_result(answer)
