"""The "scale" training backend: both members fitted by Spark, then converted to the local scikit-learn API.

Spark fits the forest (``pyspark.ml`` RandomForestClassifier) and the booster
(``xgboost.spark.SparkXGBClassifier``) with the same hyper-parameters and balanced class weights as
``training.model.fit_members``. The fitted Spark models are then turned into a genuine
``sklearn.ensemble.RandomForestClassifier`` and ``xgboost.XGBClassifier``, so everything downstream
(stacking on numpy, evaluation, ONNX export, joblib pickling into MLflow, serving) is the same for
both backends and never needs a JVM.

Exactness: the features go to Spark as float32 values widened to double, i.e. exactly the values
the local models see. Spark's split thresholds are doubles between two float32 values; each is
replaced by the largest float32 not above it, which sends every float32 input the same way
(``x <= t`` iff ``x <= floor32(t)``) and also survives ONNX's float32 thresholds unchanged. Leaf
values are Spark's normalized (weighted) class counts, so the converted forest's ``predict_proba``
is Spark's ``probability`` up to float rounding, and its ``feature_importances_`` (computed by
scikit-learn from the nodes' impurities and weights) are Spark's ``featureImportances``.

Tree structure comes from the saved model (Spark writes tree ensembles as parquet, read here with
pyarrow in one go) when the driver's disk is where Spark writes, i.e. a ``local`` master; elsewhere
it falls back to walking the JVM trees over py4j, which is correct but slow (a py4j call per node).

pyspark and ``xgboost.spark`` are imported inside the functions that use them: only this backend needs
a JVM, and importing this module (for its types and errors) must not start one.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
from sklearn.ensemble import RandomForestClassifier
from sklearn.tree import DecisionTreeClassifier
from sklearn.tree._tree import NODE_DTYPE, Tree
from sklearn.utils.class_weight import compute_sample_weight
from xgboost import XGBClassifier

from activity_settings import ActivityError, Settings
from features.transform import FEATURE_NAMES
from training.model import N_CLASSES, ModelParams

if TYPE_CHECKING:
    from pyspark import SparkContext
    from pyspark.ml.classification import RandomForestClassificationModel
    from pyspark.sql import DataFrame, SparkSession
    from xgboost.spark import SparkXGBClassifierModel

log = logging.getLogger(__name__)

FEATURES, LABEL, WEIGHT, ROW = "features", "label_index", "weight", "row"
SPARK_MAX_DEPTH = 30  # Spark ML's hard limit on tree depth
# Candidate thresholds per feature. Spark's default 32 is coarse next to sklearn's exact splits; at 50k rows
# 64 bins cost ~15% more fit time than 32 for a slightly better held-out log-loss.
FOREST_MAX_BINS = 64
FOREST_MAX_MEMORY_MB = 512  # node statistics per pass: more nodes split per pass over the data for deep trees
TREE_LEAF, TREE_UNDEFINED = -1, -2  # sklearn.tree._tree's markers for "no child" and "no feature"

Via = Literal["auto", "parquet", "jvm"]


class SparkBackendError(ActivityError, RuntimeError):
    """The Spark backend could not run; the message says what to fix."""


@dataclass
class SparkMembers:
    """The fitted Spark models and the (cached) training frame they were fitted on."""

    forest: RandomForestClassificationModel
    booster: SparkXGBClassifierModel
    frame: DataFrame  # columns ROW, FEATURES (vector of doubles), LABEL, WEIGHT

    def release(self) -> None:
        self.frame.unpersist()


def fit_members_spark(settings: Settings, train: pd.DataFrame,
                      params: ModelParams) -> tuple[RandomForestClassifier, XGBClassifier]:
    """Both members fitted on Spark and returned as local models, like ``training.model.fit_members``.

    Stops the Spark session afterwards only if it was started here, so a session the caller
    already runs (e.g. the stream in the same process) is left alone.
    """
    from pyspark.sql import SparkSession

    owned = SparkSession.getActiveSession() is None
    spark = start_spark(settings)
    try:
        members = fit_spark_models(spark, train, params)
        try:
            forest = forest_to_sklearn(members.forest, params, workdir=settings.home / "spark" / "tmp")
            booster = booster_to_sklearn(members.booster, params)
        finally:
            members.release()
    finally:
        if owned:
            spark.stop()
    return forest, booster


def start_spark(settings: Settings) -> SparkSession:
    """The training session, or an error saying what to check when Spark does not come up."""
    from infra.spark import spark_session

    started = time.perf_counter()
    log.info("starting Spark (master %s) for training", settings.spark.master)
    try:
        spark = spark_session(settings, "activity-training")
    except Exception as exc:
        raise SparkBackendError(
            f"Spark did not start for training.backend=spark (spark.master={settings.spark.master}, "
            f"spark.driver_memory={settings.spark.driver_memory}): {exc}\n"
            "Check that Java 17 is installed (java on PATH or JAVA_HOME), that the master is reachable and the "
            "driver memory fits in RAM -- or train with training.backend=local."
        ) from exc
    log.info("Spark ready in %.1f s", time.perf_counter() - started)
    return spark


def fit_spark_models(spark: SparkSession, train: pd.DataFrame, params: ModelParams) -> SparkMembers:
    """Fit both members on Spark and keep the Spark models (tests compare them with the converted ones)."""
    from pyspark.ml.classification import RandomForestClassifier as SparkForest
    from xgboost.spark import SparkXGBClassifier

    forest_params, workers = spark_forest_params(params), booster_workers(spark)
    forest_spec = SparkForest(featuresCol=FEATURES, labelCol=LABEL, weightCol=WEIGHT, **forest_params)
    booster_spec = SparkXGBClassifier(features_col=FEATURES, label_col=LABEL, weight_col=WEIGHT, num_workers=workers,
                                      verbose=False, **booster_params(params))
    frame = training_frame(spark, train).cache()
    try:
        forest = _fit_logged("forest", forest_spec, frame,
                             f"{params.forest_trees} trees, max depth {forest_params['maxDepth']}")
        booster = _fit_logged("XGBoost booster", booster_spec, frame,
                              f"{params.booster_rounds} rounds, depth {params.booster_max_depth}, {workers} workers")
    except BaseException:
        frame.unpersist()
        raise
    return SparkMembers(forest=forest, booster=booster, frame=frame)


def _fit_logged(name: str, estimator: Any, frame: DataFrame, detail: str) -> Any:  # Spark models
    started = time.perf_counter()
    log.info("fitting the Spark %s (%s) on %d rows", name, detail, frame.count())
    model = estimator.fit(frame)
    log.info("Spark %s fitted in %.1f s", name, time.perf_counter() - started)
    return model


def training_frame(spark: SparkSession, train: pd.DataFrame) -> DataFrame:
    """``train`` as a Spark frame: float32 features widened to double and assembled, labels, balanced weights.

    The weights are sklearn's ``compute_sample_weight("balanced")``, the local backend's. Every class
    must be present (xgboost.spark infers the class count from the distinct labels), and features
    must be finite (Spark's split finding has no notion of missing values).
    """
    from pyspark.ml.feature import VectorAssembler

    x = train[list(FEATURE_NAMES)].to_numpy(dtype=np.float32)
    y = train[LABEL].to_numpy()
    present = set(np.unique(y).tolist())
    if present != set(range(N_CLASSES)):
        raise ValueError(f"the Spark backend needs every class 0..{N_CLASSES - 1} in the training rows, "
                         f"got {sorted(present)}")
    if not np.isfinite(x).all():
        bad = [name for name, ok in zip(FEATURE_NAMES, np.isfinite(x).all(axis=0), strict=True) if not ok]
        raise ValueError(f"the Spark backend needs finite features; NaN/inf in {bad}")
    columns: dict[str, Any] = {ROW: np.arange(len(train), dtype=np.int64)}
    columns |= {name: x[:, i].astype(np.float64) for i, name in enumerate(FEATURE_NAMES)}
    columns |= {LABEL: y.astype(np.float64), WEIGHT: compute_sample_weight("balanced", y)}
    frame = spark.createDataFrame(pd.DataFrame(columns))
    assembler = VectorAssembler(inputCols=list(FEATURE_NAMES), outputCol=FEATURES)
    return assembler.transform(frame).select(ROW, FEATURES, LABEL, WEIGHT)


def spark_forest_params(params: ModelParams) -> dict[str, Any]:
    """``ModelParams`` in Spark ML's terms (``min_samples_leaf`` is ``minInstancesPerNode``, a child's minimum).

    ``featureSubsetStrategy`` is the fraction as a string with a decimal point: ``"1"`` would mean
    one feature, ``"1.0"`` means all of them. Spark rounds the feature count up where sklearn
    rounds down (0.5 of 28 is 14 for both).
    """
    depth = SPARK_MAX_DEPTH if params.forest_max_depth is None else min(params.forest_max_depth, SPARK_MAX_DEPTH)
    return {
        "numTrees": params.forest_trees, "maxDepth": depth, "minInstancesPerNode": params.forest_min_samples_leaf,
        "featureSubsetStrategy": repr(float(params.forest_max_features)), "seed": params.seed, "impurity": "gini",
        "maxBins": FOREST_MAX_BINS, "maxMemoryInMB": FOREST_MAX_MEMORY_MB, "cacheNodeIds": True,
    }


def booster_params(params: ModelParams) -> dict[str, Any]:
    """The local booster's hyper-parameters (xgboost.spark picks multi:softprob itself for 3 classes)."""
    return {"n_estimators": params.booster_rounds, "max_depth": params.booster_max_depth,
            "learning_rate": params.booster_learning_rate, "subsample": params.booster_subsample,
            "tree_method": "hist", "random_state": params.seed}


def booster_workers(spark: SparkSession) -> int:
    """One XGBoost worker per task slot: barrier mode needs them all at once, and each uses spark.task.cpus threads."""
    context = spark.sparkContext
    slots = context.defaultParallelism // max(int(context.getConf().get("spark.task.cpus", "1")), 1)
    if _runs_locally(context):  # local[8] on 2 cores would only oversubscribe them
        slots = min(slots, os.cpu_count() or 1)
    return max(1, slots)


def booster_to_sklearn(model: SparkXGBClassifierModel, params: ModelParams) -> XGBClassifier:
    """The Spark booster as an ``XGBClassifier`` with the local path's settings (for get_params, ONNX, threads)."""
    local = XGBClassifier(n_estimators=params.booster_rounds, max_depth=params.booster_max_depth,
                          learning_rate=params.booster_learning_rate, subsample=params.booster_subsample,
                          tree_method="hist", objective="multi:softprob", n_jobs=params.threads,
                          random_state=params.seed)
    local.load_model(bytearray(model.get_booster().save_raw("json")))
    if local.n_classes_ != N_CLASSES:
        raise SparkBackendError(f"the Spark booster has {local.n_classes_} classes, expected {N_CLASSES}")
    return local


@dataclass
class ForestNodes:
    """Every node of a forest, ordered by (tree, preorder id), as flat arrays."""

    tree: np.ndarray  # int64 tree index
    left: np.ndarray  # int64 child id within the tree, -1 for a leaf
    right: np.ndarray
    feature: np.ndarray  # int64, meaningless at a leaf
    threshold: np.ndarray  # float64 (Spark's), meaningless at a leaf
    impurity: np.ndarray  # float64
    stats: np.ndarray  # float64 (nodes, classes): weighted class counts
    count: np.ndarray  # int64 rows (bootstrap-sampled, unweighted) reaching the node


def forest_to_sklearn(model: RandomForestClassificationModel, params: ModelParams | None = None, *,
                      via: Via = "auto", workdir: Path | None = None) -> RandomForestClassifier:
    """A fitted ``sklearn`` RandomForestClassifier whose trees are the Spark model's, node for node."""
    params = params or ModelParams()
    if any(weight != 1.0 for weight in model.treeWeights):
        raise SparkBackendError("the Spark forest has tree weights other than 1: sklearn averages trees equally")
    if via == "auto":
        via = "parquet" if _driver_writes_locally() else "jvm"
    started = time.perf_counter()
    nodes = saved_nodes(model, workdir) if via == "parquet" else jvm_nodes(model)
    n_trees = len(model.treeWeights)
    forest = _sklearn_forest(nodes, n_trees, model.numFeatures, model.numClasses, params)
    log.info("converted the Spark forest (%d trees, %d nodes, via %s) in %.1f s", n_trees, len(nodes.tree), via,
             time.perf_counter() - started)
    return forest


def saved_nodes(model: RandomForestClassificationModel, workdir: Path | None = None) -> ForestNodes:
    """All nodes in one pass: Spark saves the model (parquet), pyarrow reads the node table back.

    Needs the driver's file system to be where Spark writes (a local master): on a cluster the
    executors would write the parquet parts to their own disks.
    """
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    if workdir is not None:
        workdir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="spark-forest-", dir=workdir) as tmp:
        path = Path(tmp) / "model"
        model.write().save(path.as_uri())
        table = pq.read_table(path / "data")
    data = table.column("nodeData").combine_chunks()
    order = np.lexsort((data.field("id").to_numpy(), table.column("treeID").to_numpy()))
    table, data = table.take(order), data.take(order)
    split = data.field("split")
    if (split.field("numCategories").to_numpy() != -1).any():
        raise SparkBackendError("the Spark forest has categorical splits: only continuous features convert")
    left = data.field("leftChild").to_numpy().astype(np.int64)
    bounds = split.field("leftCategoriesOrThreshold")
    lengths = pc.list_value_length(bounds).to_numpy(zero_copy_only=False)
    threshold = np.zeros(len(left))
    threshold[lengths == 1] = bounds.flatten().to_numpy()
    stats = data.field("impurityStats").flatten().to_numpy().reshape(len(left), -1)
    return ForestNodes(
        tree=table.column("treeID").to_numpy().astype(np.int64), left=left,
        right=data.field("rightChild").to_numpy().astype(np.int64),
        feature=split.field("featureIndex").to_numpy().astype(np.int64), threshold=threshold,
        impurity=data.field("impurity").to_numpy(), stats=stats, count=data.field("rawCount").to_numpy(),
    )


def jvm_nodes(model: RandomForestClassificationModel) -> ForestNodes:
    """All nodes by walking the JVM trees over py4j in preorder (Spark's own node ids): works on any master."""
    columns: dict[str, list[Any]] = {name: [] for name in ForestNodes.__dataclass_fields__}
    if model._java_obj is None:
        raise SparkBackendError("the Spark forest has no JVM model to walk")
    for tree_index, tree in enumerate(model._java_obj.trees()):
        first = len(columns["tree"])
        stack = [(tree.rootNode(), -1, True)]
        while stack:
            node, parent, is_left = stack.pop()
            index = len(columns["tree"]) - first
            if parent >= 0:
                columns["left" if is_left else "right"][first + parent] = index
            calculator = node.impurityStats()
            internal = node.getClass().getSimpleName() == "InternalNode"
            split = node.split() if internal else None
            if split is not None and split.getClass().getSimpleName() != "ContinuousSplit":
                raise SparkBackendError("the Spark forest has categorical splits: only continuous features convert")
            columns["tree"].append(tree_index)
            columns["left"].append(-1)
            columns["right"].append(-1)
            columns["feature"].append(split.featureIndex() if split is not None else -1)
            columns["threshold"].append(split.threshold() if split is not None else 0.0)
            columns["impurity"].append(node.impurity())
            columns["stats"].append(list(calculator.stats()))
            columns["count"].append(calculator.rawCount())
            if internal:  # right pushed first so the left subtree is numbered first: preorder
                stack.append((node.rightChild(), index, False))
                stack.append((node.leftChild(), index, True))
    arrays = {name: np.asarray(values) for name, values in columns.items()}
    arrays["stats"] = arrays["stats"].astype(np.float64).reshape(len(arrays["tree"]), -1)
    return ForestNodes(**arrays)


def floor_to_float32(threshold: np.ndarray) -> np.ndarray:
    """The largest float32 at or below each threshold (as float64): equivalent for float32 inputs, exact in ONNX."""
    rounded = threshold.astype(np.float32)
    above = rounded.astype(np.float64) > threshold
    rounded[above] = np.nextafter(rounded[above], np.float32(-np.inf))
    return rounded.astype(np.float64)


def _sklearn_forest(nodes: ForestNodes, n_trees: int, n_features: int, n_classes: int,
                    params: ModelParams) -> RandomForestClassifier:
    """Assemble the estimator as ``RandomForestClassifier.fit`` would have left it."""
    depth_limit = None if params.forest_max_depth is None else min(params.forest_max_depth, SPARK_MAX_DEPTH)
    settings = {"max_depth": depth_limit, "min_samples_leaf": params.forest_min_samples_leaf,
                "max_features": params.forest_max_features}
    forest = RandomForestClassifier(n_estimators=n_trees, n_jobs=params.threads, random_state=params.seed,
                                    **settings)
    forest.estimator_ = DecisionTreeClassifier(**settings)
    classes = np.arange(n_classes)
    bounds = np.searchsorted(nodes.tree, np.arange(n_trees + 1))
    depths = _node_depths(nodes, bounds)
    estimators = []
    for index in range(n_trees):
        part = slice(bounds[index], bounds[index + 1])
        tree = DecisionTreeClassifier(random_state=params.seed + index, **settings)
        tree.n_features_in_, tree.n_outputs_ = n_features, 1
        tree.classes_, tree.n_classes_ = classes.astype(np.float64), n_classes
        tree.max_features_ = max(1, int(np.ceil(params.forest_max_features * n_features)))
        tree.tree_ = _sklearn_tree(nodes, part, int(depths[part].max()), n_features, n_classes)
        estimators.append(tree)
    forest.estimators_ = estimators
    forest.n_features_in_, forest.n_outputs_ = n_features, 1
    forest.classes_, forest.n_classes_ = classes, n_classes
    return forest


def _node_depths(nodes: ForestNodes, bounds: np.ndarray) -> np.ndarray:
    """Each node's depth, one vectorised pass per level over the whole forest (children via global indices)."""
    offset = bounds[nodes.tree]
    depth = np.zeros(len(nodes.tree), dtype=np.int64)
    frontier, level = bounds[:-1][bounds[:-1] < bounds[1:]], 0
    while len(frontier):
        depth[frontier] = level
        internal = frontier[nodes.left[frontier] >= 0]
        frontier = np.concatenate([nodes.left[internal] + offset[internal], nodes.right[internal] + offset[internal]])
        level += 1
    return depth


def _sklearn_tree(nodes: ForestNodes, part: slice, depth: int, n_features: int, n_classes: int) -> Tree:
    """One sklearn ``Tree`` from its pickle state; leaf values are normalized class counts (sklearn >= 1.4)."""
    left, right = nodes.left[part], nodes.right[part]
    leaf = left < 0
    weighted = nodes.stats[part].sum(axis=1)
    values = np.divide(nodes.stats[part], weighted[:, None], out=np.zeros_like(nodes.stats[part]),
                       where=weighted[:, None] > 0)
    state = np.zeros(len(left), dtype=NODE_DTYPE)
    state["left_child"] = np.where(leaf, TREE_LEAF, left)
    state["right_child"] = np.where(leaf, TREE_LEAF, right)
    state["feature"] = np.where(leaf, TREE_UNDEFINED, nodes.feature[part])
    state["threshold"] = np.where(leaf, float(TREE_UNDEFINED), floor_to_float32(nodes.threshold[part]))
    state["impurity"] = _gini_where_missing(nodes.impurity[part], values)
    state["n_node_samples"] = nodes.count[part]
    state["weighted_n_node_samples"] = weighted
    state["missing_go_to_left"] = 0  # Spark sends NaN right (NaN <= t is false)
    tree = Tree(n_features, np.array([n_classes], dtype=np.intp), 1)
    tree.__setstate__({"max_depth": depth, "node_count": len(left), "nodes": state,
                       "values": np.ascontiguousarray(values[:, None, :])})
    return tree


def _gini_where_missing(impurity: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """Spark stores impurity -1 at leaves it never tried to split (depth or size limit); their Gini is in the counts.

    Spark's gains, and so its feature importances, were computed from the true Gini, so putting it
    back makes sklearn's ``feature_importances_`` (from the nodes' impurities) equal Spark's.
    """
    return np.where(impurity < 0, 1.0 - (probabilities**2).sum(axis=1), impurity)


def _driver_writes_locally() -> bool:
    """True when Spark's writes land on the driver's disk, so the saved model can be read back with pyarrow."""
    from pyspark.sql import SparkSession

    spark = SparkSession.getActiveSession()
    return spark is not None and _runs_locally(spark.sparkContext)


def _runs_locally(context: SparkContext) -> bool:
    """True on a ``local[...]`` master (a started context always has one: SparkContext refuses to start without)."""
    if context.master is None:
        raise SparkBackendError("the Spark context has no master")
    return context.master.startswith("local")
