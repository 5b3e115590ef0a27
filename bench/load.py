"""Open-loop HTTP load from its own process: requests at a fixed rate, latency from each one's scheduled time.

Measuring from the scheduled send time (not the actual one) counts the wait a slow server
imposes on the requests queued behind it (no coordinated omission).

    python -m bench.load URL --rate 500 --seconds 5 [--header "Authorization: Bearer ..."] [--customers 5000]

Prints one JSON line: sent, ok, errors, p50_ms, p99_ms, achieved_rps.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import aiohttp
import numpy as np


async def run(url: str, rate: float, seconds: float, headers: dict[str, str], customers: int) -> dict[str, float]:
    total = int(rate * seconds)
    latencies = np.full(total, np.nan)
    statuses = np.zeros(total, dtype=np.int32)
    connector = aiohttp.TCPConnector(limit=256, ttl_dns_cache=300)
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout, headers=headers) as session:
        start = time.perf_counter() + 0.2

        async def one(i: int) -> None:
            scheduled = start + i / rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            target = url.replace("{customer}", f"c{i % customers:07d}")
            try:
                async with session.get(target) as response:
                    await response.read()
                    statuses[i] = response.status
            except (aiohttp.ClientError, TimeoutError):
                statuses[i] = -1
            latencies[i] = time.perf_counter() - scheduled

        await asyncio.gather(*(one(i) for i in range(total)))
        elapsed = time.perf_counter() - start
    ok = statuses == 200
    measured = latencies[ok] * 1000
    return {
        "sent": total, "ok": int(ok.sum()), "errors": int((~ok).sum()),
        "p50_ms": float(np.percentile(measured, 50)) if len(measured) else float("nan"),
        "p99_ms": float(np.percentile(measured, 99)) if len(measured) else float("nan"),
        "achieved_rps": float(ok.sum() / elapsed),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="May contain {customer}, replaced by a customer id per request.")
    parser.add_argument("--rate", type=float, required=True)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--header", action="append", default=[])
    parser.add_argument("--customers", type=int, default=5_000)
    args = parser.parse_args()
    headers = dict(h.split(": ", 1) for h in args.header)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    print(json.dumps(asyncio.run(run(args.url, args.rate, args.seconds, headers, args.customers))))


if __name__ == "__main__":
    main()
