"""Synthetic IR models that exercise every routing and accumulation rule of sparkscore/ir/trees.py.

Thresholds come from a small grid (plus LightGBM's special values) so the adversarial rows built
from them land exactly on, and one ulp around, many splits at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sparkscore.ir import (MISSING_AS_ZERO, MISSING_NAN, MISSING_ZERO, Column, FeatureMap, LinearModel, Model,
                           Signature, TreeBuilder)

N_FEATURES = 5
CATEGORICAL = 4  # input column holding category codes
_GRID = np.array([-2.5, -1.0, -1.0000000180025095e-35, 0.0, 1.0000000180025095e-35, 0.1, 0.3333333333333333,
                  1.5, 7.0, 1e300])


@dataclass(frozen=True)
class SyntheticCase:
    id: str
    model: Model
    X: np.ndarray  # adversarial rows, encoded input order


def _random_tree(rng, depth: int, width: int, *, missing_rules, categorical: bool, float32: bool,
                 leaf_p: float = 0.2):
    feature, threshold, left, right, value, default_left, missing, cats = [], [], [], [], [], [], [], []

    def node(d: int) -> int:
        i = len(feature)
        for arr in (feature, threshold, left, right, default_left, missing, cats):
            arr.append(None)
        value.append(rng.normal(size=width) * 0.5)
        if d == depth or (d > 1 and rng.random() < leaf_p):
            feature[i], threshold[i], left[i], right[i] = -1, 0.0, -1, -1
            default_left[i], missing[i], cats[i] = False, MISSING_NAN, None
            return i
        f = int(rng.integers(0, N_FEATURES))
        if f == CATEGORICAL and categorical:
            cats[i] = sorted(set(rng.integers(0, 40, size=5).tolist()) | ({0} if rng.random() < 0.5 else set()))
            threshold[i] = 0.0
        else:
            f = f % (N_FEATURES - 1) if f == CATEGORICAL else f
            t = float(rng.choice(_GRID))
            threshold[i] = float(np.float32(t)) if float32 and abs(t) < 1e38 else t
        feature[i] = f
        default_left[i] = bool(rng.random() < 0.5)
        missing[i] = int(rng.choice(missing_rules))
        left[i] = node(d + 1)
        right[i] = node(d + 1)
        return i

    node(0)
    return dict(feature=feature, threshold=threshold, left=left, right=right, value=np.array(value),
                default_left=default_left, missing=missing, categories=cats)


def tree_model(seed: int, *, n_trees: int, depth: int, n_outputs: int = 1, vector_leaves: bool = False,
               missing_rules=(MISSING_NAN,), categorical: bool = False, features: bool = False,
               leaf_p: float = 0.2, **ensemble) -> Model:
    """``leaf_p``: chance a node below the second level is a leaf (about 0.45 with a large ``depth``
    grows deep lopsided trees, as LightGBM's leaf-wise growth does)."""
    rng = np.random.default_rng(seed)
    width = n_outputs if vector_leaves else 1
    builder = TreeBuilder(N_FEATURES, n_outputs=n_outputs, value_width=width)
    # XGBoost stores float32 thresholds; sklearn float32 models keep float64 midpoints (rounding matters)
    float32 = ensemble.get("threshold_dtype") == "float32" and ensemble.get("cmp") == "<"
    for t in range(n_trees):
        builder.add_tree(**_random_tree(rng, depth, width, missing_rules=missing_rules, categorical=categorical,
                                        float32=float32, leaf_p=leaf_p), output=0 if vector_leaves else t % n_outputs)
    ens = builder.build(base_score=rng.normal(size=n_outputs), **ensemble)
    classes = tuple(range(max(n_outputs, 2))) if ensemble.get("post_transform") in ("sigmoid", "softmax") else None
    fmaps = (_feature_map(N_FEATURES),) if features else ()
    return Model(ens, _signature(), fmaps, "classification" if classes else "regression", classes,
                 {"name": f"synthetic{seed}"})


def _signature() -> Signature:
    return Signature(tuple(Column(f"x{j}") for j in range(N_FEATURES)))


def _feature_map(n: int) -> FeatureMap:
    """Imputation + scaling on every column except the categorical one, which passes through."""
    fill = np.where(np.arange(n) % 2 == 0, 0.25, np.nan)
    fill[CATEGORICAL] = np.nan
    center = np.where(np.arange(n) == CATEGORICAL, 0.0, 0.5)
    scale = np.where(np.arange(n) == CATEGORICAL, 1.0, 3.0)
    return FeatureMap(n, np.zeros(n), np.arange(n), fill, center, scale, np.full(n, np.nan))


def linear_model(seed: int, link: str, n_outputs: int) -> Model:
    rng = np.random.default_rng(seed)
    fmap = FeatureMap(N_FEATURES, np.array([0, 0, 0, 0, 1, 1]), np.array([0, 1, 2, 3, 4, 4]),
                      np.array([0.5, np.nan, 1.0, np.nan, np.nan, np.nan]), np.array([0.1, 0, -2, 0, 0, 0]),
                      np.array([2.0, 1, 3, 1, 1, 1]), np.array([np.nan] * 4 + [1.0, 3.0]))
    est = LinearModel(rng.normal(size=(6, n_outputs)), rng.normal(size=n_outputs), link)
    classes = tuple(range(max(n_outputs, 2))) if link in ("logistic", "softmax", "ovr_logistic") else None
    return Model(est, _signature(), (fmap,), "classification" if classes else "regression", classes,
                 {"name": f"glm_{link}"})


def adversarial_rows(model: Model, seed: int = 0) -> np.ndarray:
    from tests.zoo.adversarial import adversarial_matrix

    rng = np.random.default_rng(seed)
    base = rng.choice(_GRID[:-1], size=(200, N_FEATURES)) + rng.normal(scale=0.01, size=(200, N_FEATURES))
    base[:, CATEGORICAL] = rng.integers(-2, 70, size=200)
    base[rng.random(base.shape) < 0.05] = np.nan
    return adversarial_matrix(model, base, rng=rng, categorical={CATEGORICAL})


def _cases() -> list[tuple[str, Model]]:
    lgbm = dict(cmp="<=", threshold_dtype="float64")
    xgb = dict(cmp="<", threshold_dtype="float32", accumulate_dtype="float32")
    sk = dict(cmp="<=", threshold_dtype="float32")
    all_missing = (MISSING_NAN, MISSING_AS_ZERO, MISSING_ZERO)
    return [
        ("lgbm_binary_all_rules", tree_model(1, n_trees=12, depth=5, missing_rules=all_missing, categorical=True,
                                             post_transform="sigmoid", **lgbm)),
        ("lgbm_multiclass_v1", tree_model(2, n_trees=15, depth=4, n_outputs=3, missing_rules=all_missing,
                                          categorical=True, post_transform="softmax", **lgbm)),
        ("lgbm_negative_before_trunc", tree_model(3, n_trees=6, depth=4, categorical=True,
                                                  cat_negative_before_trunc=True, **lgbm)),
        ("xgb_regression_f32", tree_model(4, n_trees=30, depth=5, missing_rules=(MISSING_NAN,), categorical=True, **xgb)),
        ("xgb_multiclass_f32", tree_model(5, n_trees=12, depth=4, n_outputs=3, post_transform="softmax", **xgb)),
        ("xgb_vector_leaf_f32_mean", tree_model(6, n_trees=8, depth=4, n_outputs=2, vector_leaves=True,
                                                aggregation="mean", **xgb)),
        ("sklearn_rf_mean_vector", tree_model(7, n_trees=10, depth=6, n_outputs=3, vector_leaves=True,
                                              aggregation="mean", **sk)),
        ("sklearn_gb_lt_f64", tree_model(8, n_trees=10, depth=3, cmp="<", threshold_dtype="float64",
                                         missing_rules=(MISSING_NAN, MISSING_AS_ZERO))),
        ("trees_with_featuremap", tree_model(9, n_trees=10, depth=4, features=True, missing_rules=all_missing,
                                             categorical=True, post_transform="sigmoid", **lgbm)),
        ("single_leaf_trees", tree_model(10, n_trees=3, depth=0, **lgbm)),
        # numerical fast path with an odd tree count: trees descend in pairs, the last one alone
        ("xgb_odd_unbalanced_f32", tree_model(16, n_trees=7, depth=6, missing_rules=(MISSING_NAN,), **xgb)),
        ("glm_identity", linear_model(11, "identity", 1)),
        ("glm_logistic", linear_model(12, "logistic", 1)),
        ("glm_softmax", linear_model(13, "softmax", 3)),
        ("glm_ovr", linear_model(14, "ovr_logistic", 3)),
        ("glm_exp", linear_model(15, "exp", 1)),
    ]


def cases() -> list[SyntheticCase]:
    return [SyntheticCase(name, model, adversarial_rows(model)) for name, model in _cases()]
