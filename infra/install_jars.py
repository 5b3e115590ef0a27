"""`python -m infra.install_jars`: fetch the broker's and Spark's Kafka connector jars once."""

from __future__ import annotations

import sys

from activity_settings import SettingsError, load_settings
from infra.jars import JarFetchError, fetch_jars
from infra.kafka_broker import BrokerPaths
from infra.spark import kafka_connector_jars


def main() -> int:
    try:
        settings = load_settings()
        kafka = settings.kafka
        broker = fetch_jars("kafka-broker", BrokerPaths.under(settings.home, kafka.broker_version).jars,
                            {"kafka.version": kafka.broker_version})
        connector = kafka_connector_jars(settings)
    except (SettingsError, JarFetchError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"kafka {kafka.broker_version}: {len(broker)} jars; "
          f"spark-sql-kafka {settings.spark.version}: {len(connector)} jars")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
