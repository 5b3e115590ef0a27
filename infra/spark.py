"""A SparkSession factory with Spark's Kafka connector as local jars from Maven Central."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from urllib.parse import urlsplit

from activity_settings import Settings
from infra.jars import fetch_jars

LOG4J2 = Path(__file__).parent / "spark" / "log4j2.properties"


def kafka_connector_jars(settings: Settings) -> list[Path]:
    version = settings.spark.version
    return fetch_jars("spark-kafka", settings.home / "jars" / f"spark-kafka-{version}",
                      {"spark.version": version})


def on_loopback(master: str) -> bool:
    """True for ``local[...]`` and for a standalone master on this host (``spark://127.0.0.1:7077``): the driver
    then binds to loopback, which executors on the same host reach."""
    if master.startswith("local"):
        return True
    host = urlsplit(master).hostname or ""
    return master.startswith("spark://") and (host == "localhost" or host.startswith("127."))


def session_conf(settings: Settings) -> dict[str, str]:
    """The platform's Spark configuration for ``settings`` (all but the app name and the Kafka jars).

    ``spark_session`` builds with it; Feast's Spark offline store gets it as ``spark_conf`` in
    ``feature_store.yaml``, so a session Feast starts by itself is configured the same way.
    """
    spark_conf = settings.spark
    local_dir = settings.home / "spark" / "tmp"
    local_dir.mkdir(parents=True, exist_ok=True)
    conf = {
        "spark.master": spark_conf.master,
        "spark.driver.memory": spark_conf.driver_memory,
        "spark.sql.shuffle.partitions": str(spark_conf.shuffle_partitions),
        "spark.sql.session.timeZone": "UTC",
        "spark.local.dir": str(local_dir),
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.pyspark.python": sys.executable,  # workers run this environment's Python
        "spark.pyspark.driver.python": sys.executable,
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        # JSON with a repeated key keeps the last value, as the contract's Python validator does
        # (streaming.contract_sql parses to VARIANT, which otherwise rejects the record)
        "spark.sql.variant.allowDuplicateKeys": "true",
        "spark.sql.warehouse.dir": str(settings.home / "spark" / "warehouse"),
        "spark.driver.extraJavaOptions":
            f"-Dderby.system.home={settings.home / 'spark'} -Dlog4j2.configurationFile={LOG4J2}",
    }
    if not spark_conf.master.startswith("local"):
        conf["spark.executor.memory"] = spark_conf.executor_memory
    if spark_conf.cores_max is not None:  # applications sharing a cluster: one must not starve the next
        conf["spark.cores.max"] = str(spark_conf.cores_max)
    if on_loopback(spark_conf.master):
        # One machine: everything stays on loopback.
        conf |= {"spark.driver.host": "127.0.0.1", "spark.driver.bindAddress": "127.0.0.1"}
    return conf


def spark_session(settings: Settings, app_name: str, extra: dict[str, str] | None = None):
    """Build (or reuse) the SparkSession for ``settings.spark.master`` with the Kafka connector."""
    import pyspark
    from pyspark.sql import SparkSession

    spark_conf = settings.spark
    if not pyspark.__version__.startswith(spark_conf.version):
        raise RuntimeError(
            f"pyspark {pyspark.__version__} does not match setting spark.version="
            f"{spark_conf.version}: the Kafka connector must match Spark exactly"
        )
    jars = ",".join(str(jar) for jar in kafka_connector_jars(settings))
    # Spark's Python workers must run this environment's interpreter (pyarrow, the platform's code).
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    if on_loopback(spark_conf.master):
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    builder = SparkSession.builder.appName(app_name).config("spark.jars", jars)
    for key, value in (session_conf(settings) | (extra or {})).items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel(spark_conf.log_level)
    return session
