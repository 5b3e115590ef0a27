"""The scorer's request and response bodies (what the OpenAPI document shows)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

CUSTOMER_ID = r"^[A-Za-z0-9_.:\-]{1,64}$"


class ModelRef(BaseModel):
    name: str
    version: str | None = Field(description="Registered version; null for the heuristic fallback.")
    arm: str = Field(description="champion or challenger (the A/B arm that answered).")


class FeatureInfo(BaseModel):
    as_of: datetime | None = Field(description="Time of the customer's latest stored state; null if never seen.")
    freshness_s: float | None = Field(description="Request as_of minus that time.")
    known: bool = Field(description="False for a customer the platform has never seen (cold-start features).")


class Forecast(BaseModel):
    model: str = Field(description="bg_nbd or pareto_nbd: the buy-till-you-die model the trainer kept.")
    horizon_days: int = Field(description="The horizon both figures are over (training.horizon_days).")
    p_active: float = Field(description="Probability of at least one transaction in the next horizon_days.")
    expected_transactions: float = Field(description="Expected transactions in the next horizon_days.")


class ActivityScore(BaseModel):
    request_id: str
    customer_id: str
    as_of: datetime
    class_: str = Field(alias="class", description="decline, stable or growth.")
    probabilities: dict[str, float]
    activity_score: float = Field(description="P(growth) - P(decline), in [-1, 1].")
    confidence: float = Field(description="Probability of the answered class.")
    forecast: Forecast | None = Field(
        default=None, description="Will the customer transact at all over the horizon, and how often: null for a "
                                  "customer with no purchase on record, or a model version registered without one.")
    model: ModelRef
    features: FeatureInfo
    degraded: bool
    fallback: str | None = Field(description="null, or the fallback level that answered and why.")


class BatchItem(BaseModel):
    model_config = ConfigDict(extra="forbid")
    customer_id: Annotated[str, Field(pattern=CUSTOMER_ID)]
    as_of: datetime | None = None


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    customers: list[BatchItem] = Field(min_length=1)


class BatchResponse(BaseModel):
    request_id: str
    results: list[ActivityScore]
