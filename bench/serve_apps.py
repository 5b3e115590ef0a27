"""The two apps ``bench.serve`` compares the scorer with, on the same server stack (uvicorn + FastAPI).

* ``ceiling``: a trivial endpoint returning a constant JSON document: the most a route can do here.
* ``naive``: what a user would otherwise write: Feast's ``get_online_features`` (with the on-demand
  transform) and the registered model's MLflow pyfunc ``predict`` inside the handler.
"""

from __future__ import annotations

import time

from fastapi import FastAPI
from fastapi.responses import ORJSONResponse


def ceiling() -> FastAPI:
    app = FastAPI(default_response_class=ORJSONResponse)

    @app.get("/v1/customers/{customer_id}/activity")
    def constant(customer_id: str) -> dict[str, object]:
        return {"customer_id": customer_id, "class": "stable",
                "probabilities": {"decline": 0.2, "stable": 0.6, "growth": 0.2}}

    return app


def naive() -> FastAPI:
    import mlflow

    from activity_settings import load_settings
    from features.store import online_features, open_feature_store
    from features.transform import FEATURE_NAMES
    from model_contract import registry

    settings = load_settings()
    registry.client(settings)
    store = open_feature_store(settings)
    model = mlflow.pyfunc.load_model(f"models:/{settings.mlflow.registered_model}@champion")
    app = FastAPI(default_response_class=ORJSONResponse)

    @app.get("/v1/customers/{customer_id}/activity")
    def score(customer_id: str) -> dict[str, object]:
        features = online_features(store, [customer_id], [int(time.time())])
        probabilities = model.predict(features[list(FEATURE_NAMES)])
        row = probabilities.iloc[0]
        return {"customer_id": customer_id, "class": str(row.idxmax()),
                "probabilities": {name: float(value) for name, value in row.items()}}

    return app
