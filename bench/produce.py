"""Simulator producer throughput against a bare confluent-kafka producer (the reference).

Both send the same events to fresh topics on the same broker with the same producer settings
(idempotent, acks=all). Ours includes generating, encoding and keying every event; the
reference only calls ``produce`` on values serialized beforehand.

    python -m bench.produce [--events 2000000] [--customers 100000] [--partitions 4]
"""

from __future__ import annotations

import argparse
import time
import uuid

import pyarrow as pa
import pyarrow.compute as pc
from confluent_kafka import Producer

from activity_settings import load_settings
from bench.common import bench_stack, create_topic, machine, print_result
from streaming.producer import PRODUCER_CONFIG
from streaming.publish import encode_simulated, publish_simulation
from streaming.simulator import make_population, simulate


def reference_rate(kafka, topic: str, values: list[bytes], keys: list[bytes]) -> float:
    """A bare producer: a tight produce() loop over pre-serialized values, then flush."""
    failed = 0

    def on_delivery(err, _msg) -> None:
        nonlocal failed
        if err is not None:
            failed += 1

    producer = Producer({**kafka.client_config(), **PRODUCER_CONFIG, "on_delivery": on_delivery})
    started = time.perf_counter()
    produce, poll = producer.produce, producer.poll
    for value, key in zip(values, keys, strict=True):
        try:
            produce(topic, value, key)
        except BufferError:
            poll(0.05)
            produce(topic, value, key)
    remaining = producer.flush(120)
    elapsed = time.perf_counter() - started
    if failed or remaining:
        raise RuntimeError(f"reference producer lost {failed + remaining} messages")
    return len(values) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2_000_000)
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--partitions", type=int, default=4)
    args = parser.parse_args()

    sim = load_settings().simulation
    days = max(1, round(args.events / (args.customers * sim.mean_daily_rate)))
    population = make_population(args.customers, sim.start, days, sim.seed, sim.mean_daily_rate)

    with bench_stack(args.partitions) as settings:
        kafka = settings.kafka
        # Warm-up: the broker's first idempotent producer waits for its coordinator.
        warm = f"bench-warmup-{uuid.uuid4().hex[:6]}"
        create_topic(kafka, warm, args.partitions)
        warmup = Producer({**kafka.client_config(), **PRODUCER_CONFIG})
        warmup.produce(warm, b"x")
        warmup.flush(60)

        ours_topic = f"bench-simulated-{uuid.uuid4().hex[:6]}"
        create_topic(kafka, ours_topic, args.partitions)
        ours_kafka = kafka.model_copy(update={"topics": kafka.topics.model_copy(update={"transactions": ours_topic})})
        report = publish_simulation(ours_kafka, population)
        if report.delivered != report.queued:
            raise RuntimeError(f"simulator lost {report.queued - report.delivered} events")
        ours = report.rate

        values: list[bytes] = []
        keys: list[bytes] = []
        for table in simulate(population):
            values += encode_simulated(table)
            keys += pc.cast(table["customer_id"], pa.binary()).to_pylist()
        reference_topic = f"bench-reference-{uuid.uuid4().hex[:6]}"
        create_topic(kafka, reference_topic, args.partitions)
        reference = reference_rate(kafka, reference_topic, values, keys)

    print(f"machine: {machine()}; broker: embedded Kafka {settings.kafka.broker_version}, "
          f"{args.partitions} partitions, acks=all, idempotent")
    print(f"{'producer':<28}{'events':>12}{'events/s':>14}")
    print(f"{'simulator (ours)':<28}{report.delivered:>12,}{ours:>14,.0f}")
    print(f"{'bare confluent-kafka (ref)':<28}{len(values):>12,}{reference:>14,.0f}")
    print(f"ratio ours/reference: {ours / reference:.2f}   target: >= 200,000 events/s")
    print_result({"events_per_s": round(ours), "reference_events_per_s": round(reference),
                  "ratio": round(ours / reference, 3)})


if __name__ == "__main__":
    main()
