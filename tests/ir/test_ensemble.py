"""Ensembles in the IR: combiners against the members' native outputs combined in numpy, fusion
(exact to rtol 1e-9, refused with a reason otherwise), the union signature, safe serialisation with
pinned member hashes, and registration through the registry (aliases resolved and pinned)."""

from __future__ import annotations

import dataclasses
import shutil

import numpy as np
import pandas as pd
import pytest

import sparkscore as ss
from sparkscore import compiler
from sparkscore.errors import IntegrityError, SignatureError
from sparkscore.ir import ensemble as E

FUSED = dict(rtol=1e-9, atol=1e-12)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(7)
    X = pd.DataFrame(rng.normal(size=(400, 4)), columns=list("abcd"))
    y = (X.a - 2 * X.b + X.c * X.d).to_numpy()
    return X, y, (y > 0).astype(int)


@pytest.fixture(scope="module")
def natives(data):
    import lightgbm as lgb
    import xgboost as xgb
    from sklearn.ensemble import GradientBoostingRegressor
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge
    from sklearn.pipeline import make_pipeline

    X, y, yc = data
    lgb_args = dict(n_estimators=6, num_leaves=5, min_child_samples=5, verbose=-1, n_jobs=1)
    return {
        "lin_abc": (LinearRegression().fit(X[list("abc")], y), "abc"),
        "ridge_bd": (Ridge().fit(X[list("bd")], y), "bd"),
        "imputed_cd": (make_pipeline(SimpleImputer(strategy="median"), LinearRegression()).fit(X[list("cd")], y), "cd"),
        "gbr_ab": (GradientBoostingRegressor(n_estimators=5, max_depth=2, random_state=0).fit(X[list("ab")], y), "ab"),
        "lgbr_bcd": (lgb.LGBMRegressor(**lgb_args).fit(X[list("bcd")], y), "bcd"),
        "lgbc_ab": (lgb.LGBMClassifier(**lgb_args).fit(X[list("ab")], yc), "ab"),
        "lgbc_cd": (lgb.LGBMClassifier(**lgb_args).fit(X[list("cd")], yc), "cd"),
        "xgbr_ad": (xgb.XGBRegressor(n_estimators=4, max_depth=2, n_jobs=1).fit(X[list("ad")], y), "ad"),
        "logit_abcd": (LogisticRegression().fit(X, yc), "abcd"),
        "logit_flipped": (LogisticRegression().fit(X, 1 - yc), "abcd"),
    }


def _members(natives, *keys):
    return [ss.convert(natives[k][0]) for k in keys]


def _native(natives, key, X, method="predict", **kw):
    native, cols = natives[key]
    return getattr(native, method)(X[list(cols)], **kw)


def _rows(X, nan: bool = True):
    """Training rows plus NaN (where every native takes it) / zero / huge values in every column."""
    extra = []
    for col in X.columns:
        for v in ((np.nan,) if nan else ()) + (0.0, -0.0, 1e9):
            row = X.iloc[0].copy()
            row[col] = v
            extra.append(row)
    return pd.concat([X, pd.DataFrame(extra)], ignore_index=True)


def _scores(model, X, backend="auto"):
    return compiler.compile(model, backend).scores(model.to_matrix(X))


# ---------------------------------------------------------------------------- fusion
@pytest.mark.parametrize("keys,weights,kind", [
    (("lin_abc", "ridge_bd"), None, "linear"),
    (("lin_abc", "ridge_bd", "lin_abc"), [0.5, 0.2, 0.3], "linear"),
    (("gbr_ab",), None, "trees"),
    (("lgbr_bcd", "lgbr_bcd"), [3.0, 1.0], "trees"),
], ids=["glm-mean", "glm-weighted-shared-member", "one-sklearn-gbr", "lgbm-weighted"])
def test_regressors_fuse_exactly(natives, data, keys, weights, kind):
    X = data[0] if kind == "linear" else _rows(data[0], nan="gbr_ab" not in keys)
    model = E.build(_members(natives, *keys), "weighted" if weights else "mean", weights)
    fused, why = E.fuse(model)
    assert fused is not None and fused.kind == kind, why
    w = np.full(len(keys), 1 / len(keys)) if weights is None else np.asarray(weights) / sum(weights)
    expected = sum(wi * _native(natives, k, X) for wi, k in zip(w, keys))
    np.testing.assert_allclose(fused.predict(X, backend="numpy"), expected, **FUSED)
    np.testing.assert_allclose(_scores(model, X)[:, 0], expected, **FUSED)  # the compiler runs the fused model
    np.testing.assert_allclose(model.predict(X, backend="numpy"), expected, **FUSED)  # the oracle: unfused


def test_glm_members_with_feature_maps_fuse_into_stacked_maps(natives, data):
    X = data[0].copy()
    X.loc[::5, "c"] = np.nan
    X.loc[::3, "b"] = np.nan
    members = _members(natives, "imputed_cd", "imputed_cd")
    members[1] = dataclasses.replace(members[1], signature=ss.ir.Signature.from_names(["b", "a"]))
    model = E.build(members, "weighted", [0.25, 0.75])
    fused, why = E.fuse(model)
    assert fused.kind == "linear" and len(fused.features) == 1, why
    native = natives["imputed_cd"][0]
    expected = 0.25 * native.predict(X[["c", "d"]]) + 0.75 * native.predict(X[["b", "a"]].set_axis(["c", "d"], axis=1))
    np.testing.assert_allclose(fused.predict(X, backend="numpy"), expected, **FUSED)


def test_margin_mean_of_lightgbm_classifiers_fuses_to_one_sigmoid_ensemble(natives, data):
    X = _rows(data[0])
    model = E.build(_members(natives, "lgbc_ab", "lgbc_cd"), "margin_mean", [1.0, 3.0])
    fused, why = E.fuse(model)
    assert fused.kind == "trees" and fused.estimator.post_transform == "sigmoid", why
    z = 0.25 * _native(natives, "lgbc_ab", X, raw_score=True) + 0.75 * _native(natives, "lgbc_cd", X, raw_score=True)
    p = 1 / (1 + np.exp(-z))
    for m in (model, fused):
        np.testing.assert_allclose(m.predict_proba(X)[:, 1], p, **FUSED)
        assert (m.predict(X) == (z > 0).astype(int)).all()
    np.testing.assert_allclose(model.margin_model.scores(X)[:, 0], z, **FUSED)


@pytest.mark.parametrize("keys,combiner,reason", [
    (("lin_abc", "gbr_ab"), "mean", "members are linear and trees"),
    (("xgbr_ad", "gbr_ab"), "mean", "sums its trees in float32"),
    (("gbr_ab", "lgbr_bcd"), "mean", "members differ in threshold_dtype"),
    (("lgbc_ab", "lgbc_cd"), "mean", "probabilities is not a sum of margins"),
    (("logit_abcd", "lgbc_cd"), "vote", "'vote' is not a weighted sum"),
])
def test_unfusable_ensembles_say_why_and_combine_member_outputs(natives, data, keys, combiner, reason):
    X = data[0] if "lin_abc" in keys or "logit_abcd" in keys else _rows(data[0], nan="gbr_ab" not in keys)
    model = E.build(_members(natives, *keys), combiner)
    fused, why = E.fuse(model)
    assert fused is None and reason in why
    if model.is_classifier and combiner == "mean":
        P = sum(0.5 * _native(natives, k, X, "predict_proba") for k in keys)
        np.testing.assert_allclose(model.predict_proba(X), P, rtol=1e-12, atol=1e-15)
        np.testing.assert_array_equal(model.predict(X), np.argmax(P, axis=1))
    elif not model.is_classifier:
        expected = sum(0.5 * _native(natives, k, X) for k in keys)
        np.testing.assert_allclose(_scores(model, X)[:, 0], expected, rtol=1e-12, atol=1e-15)


# ---------------------------------------------------------------------------- vote / stack
def test_vote_ties_go_to_the_first_class(natives, data):
    X = data[0]
    model = E.build(_members(natives, "logit_abcd", "logit_flipped"), "vote")
    assert (model.predict(X) == 0).all()  # the two always disagree: every row is a 1-1 tie
    three = E.build(_members(natives, "logit_abcd", "logit_flipped", "logit_abcd"), "vote")
    np.testing.assert_array_equal(three.predict(X), _native(natives, "logit_abcd", X))
    np.testing.assert_allclose(three.predict_proba(X).sum(axis=1), 1.0)


def test_weighted_vote_follows_the_weights(natives, data):
    X = data[0]
    model = E.build(_members(natives, "logit_abcd", "logit_flipped"), "vote", [1.0, 1.5])
    np.testing.assert_array_equal(model.predict(X), _native(natives, "logit_flipped", X))


def test_stack_is_a_glm_over_member_outputs(natives, data):
    from sklearn.linear_model import LogisticRegression

    X, _, yc = data
    F = np.column_stack([_native(natives, "lgbc_ab", X, "predict_proba")[:, 1], _native(natives, "lin_abc", X)])
    lr = LogisticRegression().fit(F, yc)
    model = E.build(_members(natives, "lgbc_ab", "lin_abc"), "stack", stack=ss.convert(lr))
    assert model.is_classifier and model.classes == (0, 1)
    np.testing.assert_allclose(model.predict_proba(X), lr.predict_proba(F), rtol=1e-12, atol=1e-15)
    np.testing.assert_array_equal(model.predict(X), lr.predict(F))
    assert "stack over classifiers' probabilities" in E.fuse(model)[1]


@pytest.mark.parametrize("keys,link", [(("lin_abc", "ridge_bd"), "identity"), (("lin_abc", "ridge_bd"), "exp"),
                                       (("gbr_ab", "gbr_ab"), "identity"), (("lgbr_bcd", "lgbr_bcd"), "logistic")])
def test_a_stack_over_identity_regressors_fuses(natives, data, keys, link):
    X = data[0]
    stack = ss.ir.LinearModel([[0.2], [-0.9]], [1.5], link)
    model = E.build(_members(natives, *keys), "stack", stack=stack, classes=[0, 1] if link == "logistic" else None)
    z = 0.2 * _native(natives, keys[0], X) - 0.9 * _native(natives, keys[1], X) + 1.5
    expected = {"identity": z, "exp": np.exp(z), "logistic": 1 / (1 + np.exp(-z))}[link]
    fused, why = E.fuse(model)
    assert fused is not None and fused.kind == model.estimator.members[0].kind, why
    got = fused.predict_proba(X)[:, 1] if link == "logistic" else fused.predict(X, backend="numpy")
    np.testing.assert_allclose(got, expected, **FUSED)
    want = model.predict_proba(X)[:, 1] if link == "logistic" else model.predict(X, backend="numpy")
    np.testing.assert_allclose(want, expected, **FUSED)


@pytest.mark.parametrize("keys,combiner,kwargs,message", [
    (("lin_abc", "ridge_bd"), "weighted", {}, "needs weights"),
    (("lin_abc", "ridge_bd"), "weighted", {"weights": [1.0, -1.0]}, "finite positive"),
    (("lin_abc", "ridge_bd"), "vote", {}, "needs classifiers"),
    (("lin_abc", "lgbc_ab"), "mean", {}, "all regressors or all classifiers"),
    (("lin_abc", "ridge_bd"), "stack", {"stack": ss.ir.LinearModel([[1.0]], [0.0])}, "takes 1 features but"),
    (("lin_abc",), "median", {}, "unknown combiner"),
])
def test_bad_ensembles_are_refused_in_one_line(natives, keys, combiner, kwargs, message):
    with pytest.raises(E.EnsembleError, match=message) as info:
        E.build(_members(natives, *keys), combiner, name="churn_ens", **kwargs)
    assert "churn_ens" in str(info.value) and "\n" not in str(info.value)


def test_members_with_different_classes_are_refused(natives, data):
    other = dataclasses.replace(_members(natives, "logit_flipped")[0], classes=("no", "yes"))
    with pytest.raises(E.EnsembleError, match="share classes"):
        E.build([_members(natives, "logit_abcd")[0], other], "mean")


def test_signature_is_the_union_by_name_and_conflicting_types_are_refused(natives):
    model = E.build(_members(natives, "lin_abc", "ridge_bd", "gbr_ab"), "mean")
    assert model.signature.names == ("a", "b", "c", "d")
    ridge = _members(natives, "ridge_bd")[0]
    cols = (dataclasses.replace(ridge.signature.inputs[0], categories=(0.0, 1.0)), ridge.signature.inputs[1])
    clash = dataclasses.replace(ridge, signature=ss.ir.Signature(cols))
    with pytest.raises(SignatureError, match="input 'b' with different types"):
        E.build([_members(natives, "lin_abc")[0], clash], "mean")


def test_raw_margins_exist_only_where_the_combiner_has_them(natives):
    with pytest.raises(E.EnsembleError, match="no raw margin"):
        E.build(_members(natives, "lgbc_ab", "lgbc_cd"), "mean").margin_model  # noqa: B018


# ---------------------------------------------------------------------------- format
def test_save_load_round_trip_pins_member_hashes(natives, data, tmp_path):
    model = E.build(_members(natives, "lin_abc", "gbr_ab", "xgbr_ad"), "weighted", [1, 2, 3])
    sha = model.save(tmp_path / "ens")
    loaded = ss.Model.load(tmp_path / "ens")
    assert loaded.sha256 == sha == model.sha256 and loaded.kind == "ensemble"
    np.testing.assert_array_equal(loaded.predict(data[0], backend="numpy"), model.predict(data[0], backend="numpy"))
    assert model.save(tmp_path / "again") == sha  # deterministic bytes
    # a member replaced by another valid model is caught by the pinned sha256
    shutil.rmtree(tmp_path / "ens" / "members" / "1")
    _members(natives, "lgbr_bcd")[0].save(tmp_path / "ens" / "members" / "1")
    with pytest.raises(IntegrityError, match="ensemble member .* pinned"):
        ss.Model.load(tmp_path / "ens")


def test_the_ensemble_sha256_covers_its_members(natives):
    a = E.build(_members(natives, "lin_abc", "ridge_bd"), "mean")
    b = E.build(_members(natives, "lin_abc", "imputed_cd"), "mean")
    c = E.build(_members(natives, "lin_abc", "ridge_bd"), "weighted", [1, 2])
    assert len({a.sha256, b.sha256, c.sha256}) == 3


def test_register_ensemble_resolves_aliases_and_pins_versions(natives, data, registry):
    X = data[0]
    registry.register("churn", natives["lin_abc"][0])
    registry.register("churn", natives["ridge_bd"][0])
    registry.set_alias("churn", "challenger", 2)
    mv = registry.register_ensemble("churn_ens", ["churn/1", "churn@challenger"], "weighted", [0.7, 0.3])
    registry.set_alias("churn", "challenger", 1)  # moving the alias later does not change the ensemble
    model = registry.load(mv.ref)
    assert [(r.name, r.version) for r in model.estimator.refs] == [("churn", 1), ("churn", 2)]
    assert [r.sha256 for r in model.estimator.refs] == [registry.get("churn/1").sha256, registry.get("churn/2").sha256]
    members = registry.lineage(mv.ref)["lineage"]["ensemble"]["members"]
    assert [m["ref"] for m in members] == ["churn/1", "churn@challenger"] and members[1]["version"] == 2
    expected = 0.7 * _native(natives, "lin_abc", X) + 0.3 * _native(natives, "ridge_bd", X)
    np.testing.assert_allclose(model.predict(X), expected, **FUSED)
    again = registry.register_ensemble("churn_ens", ["churn/1", "churn/2"], "weighted", [0.7, 0.3])
    assert again.existing and again.version == mv.version
