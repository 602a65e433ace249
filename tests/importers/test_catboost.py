"""CatBoost importer: the JSON / .cbm paths equal the fitted path, CatBoost's routing rules checked
against catboost itself on hand-made models, and every refusal names the model, the cause and the fix."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

import sparkscore as ss
from sparkscore.errors import IntegrityError, SignatureError, UnsupportedModelError
from sparkscore.importers import catboost as cb_importer
from tests.zoo import ALL_CASES
from tests.zoo.adversarial import threshold_values

cb = pytest.importorskip("catboost")

_CB = dict(iterations=3, depth=2, thread_count=1, verbose=0, random_seed=0, allow_writing_files=False)
ZOO = {c.id: c for c in ALL_CASES if c.library == "catboost"}


def _xy(n: int = 200, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3))
    X[rng.random(n) < 0.2, 1] = np.nan
    return X, X[:, 0] + np.nan_to_num(X[:, 1], nan=1.5)


def _payload(model):
    doc, arrays = model.to_payload()
    return doc["estimator"], doc["signature"], doc["classes"], doc.get("decision"), arrays


# ------------------------------------------------------------------ JSON / .cbm == fitted
@pytest.mark.parametrize("case_id", ["catboost-binary", "catboost-multiclass", "catboost-lossguide-mae"])
@pytest.mark.parametrize("fmt", ["json", "cbm"])
def test_file_paths_equal_fitted_path(case_id, fmt, tmp_path):
    fitted = ZOO[case_id].fitted()
    path = tmp_path / f"model.{fmt}"
    fitted.native.save_model(str(path), format="json" if fmt == "json" else "cbm")
    from_file = ss.convert(path)  # dispatches on the file, no native object involved
    est_a, sig_a, cls_a, dec_a, arr_a = _payload(fitted.model)
    est_b, sig_b, cls_b, dec_b, arr_b = _payload(from_file)
    assert (est_a, sig_a, cls_a, dec_a) == (est_b, sig_b, cls_b, dec_b)
    assert arr_a.keys() == arr_b.keys()
    for key in arr_a:
        np.testing.assert_array_equal(arr_a[key], arr_b[key], err_msg=key)
    np.testing.assert_array_equal(from_file.predict(fitted.X, backend="numpy"),
                                  fitted.model.predict(fitted.X, backend="numpy"))


def test_oblivious_trees_become_complete_trees():
    """Depth-D symmetric trees are complete heap-ordered trees: ptt runs them without padding."""
    fitted = ZOO["catboost-depth10"].fitted()
    est = fitted.model.estimator
    assert set(est.tree_depths()) == {10}
    assert est.n_nodes == est.n_trees * (2 ** 11 - 1)
    assert fitted.model.metadata["source"] == "catboost"


def test_saved_model_round_trips(tmp_path):
    fitted = ZOO["catboost-binary"].fitted()
    fitted.model.save(tmp_path / "m")
    loaded = ss.Model.load(tmp_path / "m")
    np.testing.assert_array_equal(loaded.predict_proba(fitted.X, backend="numpy"),
                                  fitted.model.predict_proba(fitted.X, backend="numpy"))


# ------------------------------------------------------------------ routing rules vs catboost
@pytest.fixture(scope="module")
def probe_doc(tmp_path_factory):
    """A 1-tree depth-2 model whose leaf values (0, 1, 2, 4) spell out the leaf index bits."""
    X, y = _xy()
    native = cb.CatBoostRegressor(**dict(_CB, iterations=1)).fit(X, y)
    path = tmp_path_factory.mktemp("cb") / "probe.json"
    native.save_model(str(path), format="json")
    doc = json.loads(path.read_text())
    doc["oblivious_trees"][0]["leaf_values"] = [0.0, 1.0, 2.0, 4.0]
    return doc


def _native_and_ours(doc: dict, tmp_path, cls=None):
    path = tmp_path / "m.json"
    path.write_text(json.dumps(doc))
    native = (cls or cb.CatBoost)()
    native.load_model(str(path), format="json")
    return native, ss.convert(path)


def _probe_rows(doc: dict) -> np.ndarray:
    """Every split's border, its double / float32 neighbours and rounding midpoints; NaN, +-inf, +-0, 1e300."""
    n = len(doc["features_info"]["float_features"])
    rows = []
    for split in doc["oblivious_trees"][0]["splits"]:
        f = split["float_feature_index"]
        for v in threshold_values(split["border"]) + [np.nan, np.inf, -np.inf, 0.0, -0.0, 1e300, -1e300,
                                                      float(np.finfo(np.float32).max)]:
            for other in (-10.0, 10.0, np.nan):
                row = np.full(n, other)
                row[f] = v
                rows.append(row)
    return np.asarray(rows)


@pytest.mark.parametrize("has_nans,treatment", [(False, "AsIs"), (True, "AsFalse"), (True, "AsTrue"),
                                                (False, "AsTrue"), (True, "AsIs")])
def test_routing_matches_catboost(probe_doc, has_nans, treatment, tmp_path):
    """x > float32 border goes to the '1' side; NaN too only where has_nans and AsTrue (nan_mode Max)."""
    doc = json.loads(json.dumps(probe_doc))
    for feature in doc["features_info"]["float_features"]:
        feature["has_nans"], feature["nan_value_treatment"] = has_nans, treatment
    native, model = _native_and_ours(doc, tmp_path)
    X = _probe_rows(doc)
    expected = native.predict(X, prediction_type="RawFormulaVal")
    assert len(np.unique(expected)) == 4, "the probe rows must reach every leaf"
    for backend in ("numpy", "auto"):
        np.testing.assert_array_equal(model.predict(X, backend=backend), expected, err_msg=backend)


def test_scale_bias_and_single_leaf_tree(probe_doc, tmp_path):
    doc = json.loads(json.dumps(probe_doc))
    doc["oblivious_trees"].append({"leaf_values": [0.25], "leaf_weights": [1], "splits": []})
    doc["scale_and_bias"] = [1.5, [-0.75]]
    native, model = _native_and_ours(doc, tmp_path)
    X = _probe_rows(doc)
    np.testing.assert_allclose(model.predict(X), native.predict(X, prediction_type="RawFormulaVal"), rtol=1e-12)


@pytest.mark.parametrize("leaves", [[0.0, -0.0, 1e-300, -1e-300], [0.0, 2.0, -2.0, 0.0]])
def test_binary_labels_follow_the_raw_sign(leaves, tmp_path):
    """Class 1 iff raw > 0: 1e-300 predicts class 1 although its probability rounds to 0.5."""
    X, y = _xy(seed=1)
    native = cb.CatBoostClassifier(**dict(_CB, iterations=1)).fit(X, np.where(y > 0, "yes", "no"))
    path = tmp_path / "b.json"
    native.save_model(str(path), format="json")
    doc = json.loads(path.read_text())
    doc["oblivious_trees"][0]["leaf_values"] = leaves
    loaded, model = _native_and_ours(doc, tmp_path, cb.CatBoostClassifier)
    rows = _probe_rows(doc)
    assert len(np.unique(loaded.predict(rows, prediction_type="RawFormulaVal"))) > 1
    np.testing.assert_array_equal(model.predict(rows), loaded.predict(rows))
    np.testing.assert_allclose(model.predict_proba(rows), loaded.predict_proba(rows), rtol=1e-12)


def test_multiclass_ties_pick_the_first_class(tmp_path):
    X, y = _xy(seed=2)
    native = cb.CatBoostClassifier(**dict(_CB, iterations=1)).fit(X, np.digitize(y, [-0.5, 0.5]) * 3)
    path = tmp_path / "m.json"
    native.save_model(str(path), format="json")
    doc = json.loads(path.read_text())
    doc["oblivious_trees"][0]["leaf_values"] = [0.0, 0, 0, 1, 1, 0, 0, 1, 1, 2, 2, 2]
    loaded, model = _native_and_ours(doc, tmp_path, cb.CatBoostClassifier)
    rows = _probe_rows(doc)
    np.testing.assert_array_equal(model.predict(rows), np.asarray(loaded.predict(rows))[:, 0])


@pytest.mark.parametrize("loss", ["MAE", "Quantile:alpha=0.2", "MAPE", "Huber:delta=0.5", "Lq:q=1.5",
                                  "Expectile:alpha=0.3", "LogCosh", "LogLinQuantile"])
def test_identity_losses_predict_the_raw_sum(loss):
    X, y = _xy(seed=3)
    native = cb.CatBoostRegressor(loss_function=loss, **_CB).fit(X, np.abs(y) + 1)
    np.testing.assert_allclose(ss.convert(native).predict(X), native.predict(X), rtol=1e-12, atol=1e-12)


def test_multi_target_regression_predicts_one_sum_per_target(tmp_path):
    X, y = _xy(seed=9)
    Y = np.column_stack([y, -2 * y, np.nan_to_num(X[:, 1])])
    native = cb.CatBoostRegressor(loss_function="MultiRMSE", nan_mode="Max", **dict(_CB, depth=3)).fit(X, Y)
    model = ss.convert(native)
    assert model.signature.outputs[0].dtype == "double[]"
    rows = np.concatenate([X, _probe_rows(json.loads(_json_of(native, tmp_path)))])
    for backend in ("numpy", "auto"):
        np.testing.assert_allclose(model.predict(rows, backend=backend), native.predict(rows), rtol=1e-12, atol=1e-12)


def _json_of(native, tmp_path) -> str:
    path = tmp_path / "export.json"
    native.save_model(str(path), format="json")
    return path.read_text()


def test_feature_names(tmp_path):
    X, y = _xy(seed=4)
    unnamed = cb.CatBoostRegressor(**_CB).fit(X, y)
    assert ss.convert(unnamed).signature.names == ("f0", "f1", "f2")
    assert ss.convert(unnamed, feature_names=["a", "b", "c"]).signature.names == ("a", "b", "c")
    named = cb.CatBoostRegressor(**_CB).fit(pd.DataFrame(X, columns=["age", "income", "tenure"]), y)
    assert ss.convert(named).signature.names == ("age", "income", "tenure")
    with pytest.raises(SignatureError, match="differ from the names"):
        ss.convert(named, feature_names=["a", "b", "c"])


# ------------------------------------------------------------------ refusals
def _cat_frame(seed: int = 5):
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"amount": rng.normal(size=200), "segment": rng.choice(["x", "y", "z"], 200)})
    return frame, frame.amount + (frame.segment == "y") * 2


@pytest.mark.parametrize("one_hot_max_size", [1, 10], ids=["ctr", "one-hot"])
def test_categorical_features_are_refused(one_hot_max_size):
    frame, y = _cat_frame()
    native = cb.CatBoostRegressor(one_hot_max_size=one_hot_max_size, **_CB).fit(frame, y, cat_features=["segment"])
    with pytest.raises(UnsupportedModelError, match=r"CatBoostRegressor: categorical feature 'segment' .*one-hot "
                                                    r"encode it upstream"):
        ss.convert(native)


@pytest.mark.parametrize("key,what", [("text_features", "text feature"), ("embedding_features", "embedding feature")])
def test_text_and_embedding_features_are_refused(probe_doc, key, what, tmp_path):
    doc = json.loads(json.dumps(probe_doc))
    doc["features_info"][key] = [{"feature_id": "review", "feature_index": 0, "flat_feature_index": 3}]
    path = tmp_path / "m.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(UnsupportedModelError, match=f"{what} 'review' is not supported"):
        ss.convert(path)


def test_fitted_text_features_are_refused():
    """CatBoost cannot even export these as JSON: refused from the object, naming the column."""
    rng = np.random.default_rng(10)
    words = np.array(["good", "bad", "ok", "great", "awful"])
    reviews = [" ".join(rng.choice(words, 3)) for _ in range(120)]
    frame = pd.DataFrame({"amount": rng.normal(size=120), "review": reviews})
    y = frame.review.str.contains("good").astype(int)
    native = cb.CatBoostClassifier(**_CB).fit(frame, y, text_features=["review"])
    with pytest.raises(UnsupportedModelError, match=r"CatBoostClassifier: text feature 'review' is not supported"):
        ss.convert(native)


@pytest.mark.parametrize("estimator,loss", [
    ("CatBoostRegressor", "Poisson"), ("CatBoostRegressor", "Tweedie:variance_power=1.5"),
    ("CatBoostRegressor", "RMSEWithUncertainty"), ("CatBoostRegressor", "MultiQuantile:alpha=0.2,0.8"),
    ("CatBoostClassifier", "MultiClassOneVsAll"), ("CatBoostClassifier", "CrossEntropy")])
def test_other_losses_are_refused(estimator, loss):
    X, y = _xy(seed=6)
    if estimator == "CatBoostClassifier":
        target = np.digitize(y, [-0.5, 0.5]) if loss == "MultiClassOneVsAll" else (y > 0).astype(float)
    else:
        target = np.abs(y) + 1
    native = getattr(cb, estimator)(loss_function=loss, **_CB).fit(X, target)
    with pytest.raises(UnsupportedModelError, match=rf"catboost {estimator}: loss_function '{loss.split(':')[0]}' "
                                                    r"is not supported; supported are RMSE"):
        ss.convert(native)


def test_probability_threshold_is_refused():
    X, y = _xy(seed=7)
    native = cb.CatBoostClassifier(**_CB).fit(X, (y > 0).astype(int))
    native.set_probability_threshold(0.7)
    with pytest.raises(UnsupportedModelError, match=r"probability threshold 0.7 .*set_probability_threshold\(0.5\)"):
        ss.convert(native)
    native.set_probability_threshold(0.5)
    assert ss.convert(native).is_classifier


def test_unfitted_and_malformed_models(tmp_path):
    with pytest.raises(UnsupportedModelError, match="is not fitted; call fit"):
        ss.convert(cb.CatBoostRegressor())
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"features_info": {"float_features": []}, "oblivious_trees": []}))
    with pytest.raises(IntegrityError, match="malformed CatBoost model JSON"):
        ss.convert(bad)
    doc = json.loads(_json_of(ZOO["catboost-binary"].fitted().native, tmp_path))
    del doc["oblivious_trees"][3]["leaf_values"]
    bad.write_text(json.dumps(doc))
    with pytest.raises(IntegrityError, match="malformed CatBoost tree"):
        ss.convert(bad)
    broken = tmp_path / "broken.cbm"
    broken.write_bytes(b"not a model")
    with pytest.raises(IntegrityError, match="not a CatBoost model file"):
        cb_importer.load_file(broken)


@pytest.mark.parametrize("fmt", ["json", "cbm"])
def test_cli_registers_catboost_files(runner, tmp_path, fmt):
    """`sparkscore register` detects both CatBoost formats (the JSON one needs no catboost to load)."""
    from sparkscore.cli import app

    fitted = ZOO["catboost-multiclass"].fitted()
    path = tmp_path / f"model.{fmt}"
    fitted.native.save_model(str(path), format="json" if fmt == "json" else "cbm")
    result = runner.invoke(app, ["--registry", str(tmp_path / "reg"), "register", "cb", str(path)])
    assert result.exit_code == 0, result.output
    loaded = ss.Registry(tmp_path / "reg").load("cb")
    np.testing.assert_array_equal(loaded.predict(fitted.X), fitted.expected_predict)


@pytest.mark.parametrize("params", [dict(class_names=["a", "b", "c", "d"]), dict(classes_count=4)])
def test_declared_classes_absent_from_training_are_refused(params):
    """CatBoost gives such a class no output dimension but a placeholder probability column."""
    X, y = _xy(seed=8)
    codes = np.digitize(y, [-0.5, 0.5])
    target = np.array(["a", "b", "d"])[codes] if "class_names" in params else codes
    native = cb.CatBoostClassifier(**_CB, **params).fit(X, target)
    with pytest.raises(UnsupportedModelError, match=r"classes \[.*\] never occur in the training data"):
        ss.convert(native)


def test_registry_records_catboost_parameters_and_version(tmp_path):
    fitted = ZOO["catboost-multirmse-nan-max"].fitted()
    reg = ss.Registry(tmp_path / "reg")
    reg.register("cb", fitted.native)
    lineage = reg.lineage("cb/1")
    native = lineage["configuration"]["native"]
    assert native["library"] == "catboost"
    assert native["params"]["nan_mode"] == "Max" and native["params"]["loss_function"] == "MultiRMSE"
    assert lineage["environment"]["packages"]["catboost"] == cb.__version__


def test_json_file_converts_without_catboost(tmp_path):
    """The JSON path is plain parsing: it works where catboost cannot be imported."""
    import subprocess
    import sys

    fitted = ZOO["catboost-binary"].fitted()
    path = tmp_path / "model.json"
    fitted.native.save_model(str(path), format="json")
    code = ("import sys; sys.modules['catboost'] = None; import sparkscore as ss; "
            f"m = ss.convert({str(path)!r}); print(m.classes, m.estimator.n_trees)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"{fitted.model.classes} {fitted.model.estimator.n_trees}"
