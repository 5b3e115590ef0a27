# The MLflow tracking server of the compose stack: MLflow's own image plus the PostgreSQL driver
# (the image ships none). Same MLflow version as the platform's client (pyproject.toml).
ARG MLFLOW_VERSION=3.17.2
FROM ghcr.io/mlflow/mlflow:v${MLFLOW_VERSION}
RUN pip install --no-cache-dir psycopg2-binary==2.9.13
