#!/usr/bin/env bash
# Entrypoint of the platform's image (infra/compose/Dockerfile), under tini.
#
#   activity ... (or any command)  run it
#   driver ... / executor ...      Spark on Kubernetes: the driver and executor pods the Spark Operator
#                                  (spark-submit) creates pass these, as to Spark's own image
#                                  (resource-managers/kubernetes/docker/src/main/dockerfiles/spark/entrypoint.sh)
set -euo pipefail

data_dir="${ACTIVITY_DATA_DIR:-/data}"

# Spark's Kafka connector was fetched from Maven Central at build time (python -m infra.install_jars);
# infra.spark looks for it under <data_dir>/jars, which is a volume here: link it in once.
if [ -n "${PLATFORM_JARS:-}" ] && [ -d "$PLATFORM_JARS" ]; then
  mkdir -p "$data_dir/jars" 2>/dev/null || true
  for jars in "$PLATFORM_JARS"/*/; do
    name="$(basename "$jars")"
    [ -e "$data_dir/jars/$name" ] || ln -s "${jars%/}" "$data_dir/jars/$name" 2>/dev/null || true
  done
fi

if [ -z "${JAVA_HOME:-}" ]; then
  JAVA_HOME="$(dirname "$(dirname "$(readlink -f "$(command -v java)")")")"
  export JAVA_HOME
fi

case "${1:-}" in
  driver)
    shift
    exec "$SPARK_HOME/bin/spark-submit" \
      --conf "spark.driver.bindAddress=${SPARK_DRIVER_BIND_ADDRESS:-0.0.0.0}" \
      --conf "spark.executorEnv.SPARK_DRIVER_POD_IP=${SPARK_DRIVER_BIND_ADDRESS:-0.0.0.0}" \
      --deploy-mode client \
      "$@"
    ;;
  executor)
    shift
    mapfile -t java_opts < <(env | grep '^SPARK_JAVA_OPT_' | sort -t_ -k4 -n | sed 's/^[^=]*=//')
    classpath="${SPARK_CONF_DIR:-$SPARK_HOME/conf}:${SPARK_CLASSPATH:+$SPARK_CLASSPATH:}$SPARK_HOME/jars/*:$PWD"
    exec "$JAVA_HOME/bin/java" "${java_opts[@]}" \
      -Xms"$SPARK_EXECUTOR_MEMORY" -Xmx"$SPARK_EXECUTOR_MEMORY" \
      -cp "$classpath" \
      org.apache.spark.scheduler.cluster.k8s.KubernetesExecutorBackend \
      --driver-url "$SPARK_DRIVER_URL" \
      --executor-id "$SPARK_EXECUTOR_ID" \
      --cores "$SPARK_EXECUTOR_CORES" \
      --app-id "$SPARK_APPLICATION_ID" \
      --hostname "$SPARK_EXECUTOR_POD_IP" \
      --resourceProfileId "${SPARK_RESOURCE_PROFILE_ID:-0}" \
      --podName "$SPARK_EXECUTOR_POD_NAME"
    ;;
  *)
    exec "$@"
    ;;
esac
