"""A SparkSession factory with Spark's Kafka connector as local jars from Maven Central."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from activity_settings import Settings
from infra.jars import fetch_jars

LOG4J2 = Path(__file__).parent / "spark" / "log4j2.properties"


def kafka_connector_jars(settings: Settings) -> list[Path]:
    version = settings.spark.version
    return fetch_jars("spark-kafka", settings.home / "jars" / f"spark-kafka-{version}",
                      {"spark.version": version})


def spark_session(settings: Settings, app_name: str, extra: dict[str, str] | None = None):  # noqa: ANN201
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
    local_dir = settings.home / "spark" / "tmp"
    local_dir.mkdir(parents=True, exist_ok=True)
    builder = (
        SparkSession.builder.appName(app_name)
        .master(spark_conf.master)
        .config("spark.jars", jars)
        .config("spark.driver.memory", spark_conf.driver_memory)
        .config("spark.sql.shuffle.partitions", str(spark_conf.shuffle_partitions))
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.local.dir", str(local_dir))
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.pyspark.python", sys.executable)  # workers run this environment's Python
        .config("spark.pyspark.driver.python", sys.executable)
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.sql.warehouse.dir", str(settings.home / "spark" / "warehouse"))
        .config("spark.driver.extraJavaOptions",
                f"-Dderby.system.home={settings.home / 'spark'} -Dlog4j2.configurationFile={LOG4J2}")
    )
    if spark_conf.master.startswith("local"):
        # One machine: everything stays on loopback.
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        builder = builder.config("spark.driver.host", "127.0.0.1").config("spark.driver.bindAddress", "127.0.0.1")
    for key, value in (extra or {}).items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel(spark_conf.log_level)
    return session
