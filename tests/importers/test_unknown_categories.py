"""OneHotEncoder(handle_unknown='error'), sklearn's default, raises on a category it never saw; so
does sparkscore, on every backend, instead of scoring the all-zero one-hot row (a silent wrong answer).

handle_unknown='ignore' keeps the all-zero row; NULL is unknown too unless an imputer in front maps
it to a known category.  The engines (DuckDB, Spark) and serving are in tests/engines and
tests/serving (test_strict_categories.py).
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

sklearn = pytest.importorskip("sklearn")
from sklearn.compose import ColumnTransformer  # noqa: E402
from sklearn.impute import SimpleImputer  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder  # noqa: E402
from sklearn.tree import DecisionTreeClassifier  # noqa: E402

import sparkscore as ss  # noqa: E402
from sparkscore.errors import ScoringError, UnknownCategoryError, UnsupportedModelError  # noqa: E402
from sparkscore.ir import Column  # noqa: E402

BACKENDS = ("numpy", "numba", "torch")


def frame(n: int = 120, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """``region`` (strings), ``tier`` (numeric categories 1, 2, 3), ``x`` (a number)."""
    rng = np.random.default_rng(seed)
    X = pd.DataFrame({"region": rng.choice(["eu", "us", "asia"], n), "tier": rng.choice([1.0, 2.0, 3.0], n),
                      "x": rng.normal(size=n)})
    y = ((X.region == "eu") ^ (X.tier > 1.5) ^ (X.x > 0.3)).astype(int).to_numpy()
    return X, y


def pipeline(handle_unknown: str = "error", final=None, drop=None, tier_steps=()):
    ct = ColumnTransformer([("r", OneHotEncoder(handle_unknown=handle_unknown, drop=drop), ["region"]),
                            ("t", make_pipeline(*tier_steps, OneHotEncoder(handle_unknown=handle_unknown, drop=drop)),
                             ["tier"])],
                           remainder="passthrough")
    X, y = frame()
    return make_pipeline(ct, final if final is not None else LogisticRegression()).fit(X, y)


@pytest.fixture(scope="module")
def fitted():
    """(native, converted) per final estimator, strict encoders."""
    out = {}
    for name, final in (("glm", LogisticRegression()), ("tree", DecisionTreeClassifier(max_depth=4, random_state=0))):
        native = pipeline("error", final)
        out[name] = native, ss.convert(native)
    return out


def known_rows() -> pd.DataFrame:
    return frame(40, seed=5)[0]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("final", ["glm", "tree"])
@pytest.mark.parametrize("column, value, shown", [("region", "mars", "'mars'"), ("tier", 7.0, "7.0"),
                                                  ("tier", -1.0, "-1.0"), ("tier", np.nan, "NULL"),
                                                  ("region", None, "NULL")])
def test_an_unknown_category_fails_as_sklearn_does(fitted, final, backend, column, value, shown):
    native, model = fitted[final]
    rows = known_rows()
    if column == "region":
        rows[column] = rows[column].astype(object)
    rows.loc[17, column] = value
    with pytest.raises(ValueError, match="unknown categor"):
        native.predict(rows)
    with pytest.raises(UnknownCategoryError) as info:
        model.predict(rows, backend=backend)
    message = str(info.value)
    assert f"column {column!r} has value {shown}" in message and "handle_unknown='ignore'" in message
    assert "\n" not in message and isinstance(info.value, ScoringError) and isinstance(info.value, ValueError)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("drop", [None, "first"])
def test_known_categories_score_exactly_including_a_dropped_one(backend, drop):
    """The dropped category has no indicator but is known: it scores, as in sklearn."""
    native = pipeline("error", drop=drop)
    model = ss.convert(native)
    rows = known_rows()
    rows.loc[0, "tier"], rows.loc[1, "region"] = 1.0, "asia"  # the categories drop='first' drops
    np.testing.assert_allclose(model.predict_proba(rows, backend=backend), native.predict_proba(rows),
                               rtol=1e-6, atol=1e-6)
    assert (model.predict(rows, backend=backend) == native.predict(rows)).all()


@pytest.mark.parametrize("handle_unknown", ["ignore", "infrequent_if_exist"])
def test_lenient_encoders_keep_the_all_zero_row(handle_unknown):
    native = pipeline(handle_unknown)
    model = ss.convert(native)
    assert not any(c.is_strict for c in model.signature.inputs)
    rows = known_rows()
    rows.loc[3, "region"], rows.loc[4, "tier"] = "mars", 7.0
    for backend in BACKENDS:
        np.testing.assert_allclose(model.predict_proba(rows, backend=backend), native.predict_proba(rows),
                                   rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("strategy, null_ok", [("most_frequent", True), ("constant", False)])
def test_an_imputer_in_front_decides_whether_null_is_known(strategy, null_ok):
    """most_frequent imputes a known category; constant 9 imputes one the encoder never saw, so
    sklearn raises on NULL there (the imputer ran on data without NULLs)."""
    imputer = SimpleImputer(strategy=strategy, fill_value=9.0)
    native = pipeline("error", tier_steps=(imputer,))
    model = ss.convert(native)
    assert model.signature.inputs[1].accepts_null is null_ok
    rows = known_rows()
    rows.loc[5, "tier"] = np.nan
    if null_ok:
        np.testing.assert_allclose(model.predict_proba(rows), native.predict_proba(rows), rtol=1e-6, atol=1e-6)
    else:
        with pytest.raises(ValueError, match="unknown categor"):
            native.predict(rows)
        with pytest.raises(UnknownCategoryError, match="column 'tier' has value NULL"):
            model.predict(rows)
    rows.loc[5, "tier"], rows.loc[6, "tier"] = 1.0, 5.0  # 5 is unknown, imputer or not
    with pytest.raises(UnknownCategoryError, match="column 'tier' has value 5.0"):
        model.predict(rows)


def test_the_accepted_values_survive_save_and_load_and_old_files_stay_lenient(fitted, tmp_path):
    _, model = fitted["glm"]
    model.save(tmp_path / "m")
    loaded = ss.Model.load(tmp_path / "m")
    assert loaded.signature == model.signature and loaded.sha256 == model.sha256
    region, tier, x = loaded.signature.inputs
    assert region.accepts == ("asia", "eu", "us") and tier.accepts == (1.0, 2.0, 3.0) and x.accepts is None
    rows = known_rows()
    rows.loc[0, "region"] = "mars"
    with pytest.raises(UnknownCategoryError):
        loaded.predict(rows)
    # a model written before the field existed has no "accepts" key, and a lenient model writes none
    assert Column.from_json({"name": "region", "dtype": "varchar", "categories": ["eu"]}).accepts is None
    ss.convert(pipeline("ignore")).save(tmp_path / "lenient")
    assert "accepts" not in (tmp_path / "lenient" / "model.json").read_text()
    assert json.loads((tmp_path / "m" / "model.json").read_text())  # still plain JSON


def test_ordinal_encoder_is_refused_whatever_its_unknown_handling():
    """OrdinalEncoder is not imported at all (so neither handle_unknown='error' nor unknown_value can
    be scored wrongly): refused, named."""
    X, y = frame()
    for encoder in (OrdinalEncoder(), OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1)):
        ct = ColumnTransformer([("r", encoder, ["region"])], remainder="passthrough")
        native = make_pipeline(ct, DecisionTreeClassifier(max_depth=2)).fit(X, y)
        with pytest.raises(UnsupportedModelError, match="OrdinalEncoder"):
            ss.convert(native)
