"""ONNX importer: hand-built ai.onnx.ml graphs (every node mode, missing tracking, post-transform,
tie and refusal) checked bit for bit against ONNX Runtime, plus dispatch and the no-onnxruntime load.

Converter-made models (skl2onnx, onnxmltools) run in the zoo (tests/zoo/onnx_cases.py).
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper  # noqa: E402

import sparkscore as ss  # noqa: E402
from sparkscore.errors import UnsupportedModelError  # noqa: E402
from tests.zoo.adversarial import adversarial_matrix  # noqa: E402
from tests.zoo.onnx_cases import ort_outputs  # noqa: E402

F = 3


def graph(nodes, outputs, n_features: int = F, elem=TensorProto.FLOAT, ml_opset: int = 3) -> onnx.ModelProto:
    """A model over one ``[N, n_features]`` input ``X``; ``outputs``: (name, elem_type, shape)."""
    g = helper.make_graph(nodes, "handmade", [helper.make_tensor_value_info("X", elem, [None, n_features])],
                          [helper.make_tensor_value_info(n, t, s) for n, t, s in outputs])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17),
                                                helper.make_opsetid("ai.onnx.ml", ml_opset)])
    model.ir_version = 9
    return model


def stump_forest(modes, thresholds, features, tracks, leaves) -> dict:
    """Trees of one split each: tree t splits ``features[t]`` at ``thresholds[t]`` by ``modes[t]``;
    leaves (true, false) of tree t weigh ``leaves[t]``."""
    a = {k: [] for k in ("nodes_treeids", "nodes_nodeids", "nodes_featureids", "nodes_modes", "nodes_values",
                         "nodes_truenodeids", "nodes_falsenodeids", "nodes_missing_value_tracks_true")}
    for t, (m, thr, f, tr) in enumerate(zip(modes, thresholds, features, tracks)):
        for nid, mode, true, false in ((0, m, 1, 2), (1, "LEAF", 0, 0), (2, "LEAF", 0, 0)):
            a["nodes_treeids"].append(t)
            a["nodes_nodeids"].append(nid)
            a["nodes_featureids"].append(f if nid == 0 else 0)
            a["nodes_modes"].append(mode)
            a["nodes_values"].append(thr if nid == 0 else 0.0)
            a["nodes_truenodeids"].append(true)
            a["nodes_falsenodeids"].append(false)
            a["nodes_missing_value_tracks_true"].append(tr if nid == 0 else 0)
    a["_leaves"] = leaves
    return a


def regressor(forest: dict, *, base=None, post="NONE", n_targets=1, agg="SUM", name="trees", inp="X") -> onnx.NodeProto:
    leaves = forest.pop("_leaves")
    attrs = dict(forest, target_treeids=[], target_nodeids=[], target_ids=[], target_weights=[])
    for t, per_leaf in enumerate(leaves):
        for nid, weights in zip((1, 2), per_leaf):
            for target, w in enumerate(np.atleast_1d(weights)):
                attrs["target_treeids"].append(t)
                attrs["target_nodeids"].append(nid)
                attrs["target_ids"].append(target)
                attrs["target_weights"].append(float(w))
    if base is not None:
        attrs["base_values"] = list(base)
    return helper.make_node("TreeEnsembleRegressor", [inp], ["Y"], domain="ai.onnx.ml", name=name,
                            n_targets=n_targets, post_transform=post, aggregate_function=agg, **attrs)


def classifier(forest: dict, labels, *, class_of_tree=None, base=None, post="NONE", name="trees") -> onnx.NodeProto:
    """Leaves weigh one class each (tree t's class: ``class_of_tree[t]``, default 0) or, when a
    leaf's entry is a sequence, every class."""
    leaves = forest.pop("_leaves")
    attrs = dict(forest, class_treeids=[], class_nodeids=[], class_ids=[], class_weights=[])
    for t, per_leaf in enumerate(leaves):
        for nid, weights in zip((1, 2), per_leaf):
            ws = np.atleast_1d(weights)
            ids = range(len(ws)) if len(ws) > 1 else [class_of_tree[t] if class_of_tree else 0]
            for c, w in zip(ids, ws):
                attrs["class_treeids"].append(t)
                attrs["class_nodeids"].append(nid)
                attrs["class_ids"].append(c)
                attrs["class_weights"].append(float(w))
    key = "classlabels_strings" if isinstance(labels[0], str) else "classlabels_int64s"
    attrs[key] = list(labels)
    if base is not None:
        attrs["base_values"] = list(base)
    return helper.make_node("TreeEnsembleClassifier", ["X"], ["label", "probabilities"], domain="ai.onnx.ml",
                            name=name, post_transform=post, **attrs)


def clf_graph(node, labels, n_features: int = F):
    label_type = TensorProto.STRING if isinstance(labels[0], str) else TensorProto.INT64
    return graph([node], [("label", label_type, [None]), ("probabilities", TensorProto.FLOAT, [None, len(labels)])],
                 n_features)


def rows_around(thresholds, n_features: int = F) -> np.ndarray:
    """Every feature on, one float32 ulp beside, and between the thresholds; NaN, +-0, +-inf."""
    vals = [np.nan, 0.0, -0.0, np.inf, -np.inf, 1e300, -1e300]
    for t in thresholds:
        t32 = np.float32(t)
        vals += [float(t32), float(np.nextafter(t32, np.float32(-np.inf))),
                 float(np.nextafter(t32, np.float32(np.inf))), np.nextafter(float(t32), np.inf),
                 np.nextafter(float(t32), -np.inf)]
    vals = np.asarray(vals)
    grids = np.meshgrid(*([vals] * min(n_features, 2)), indexing="ij")
    X = np.column_stack([g.ravel() for g in grids])
    if n_features > 2:
        X = np.column_stack([X] + [np.resize(vals, len(X))] * (n_features - 2))
    return X


def assert_bit_equal(model: ss.Model, proto, X: np.ndarray, backends=("numpy",)) -> None:
    label, scores = ort_outputs(proto, X, model)
    for backend in backends:
        if model.is_classifier:
            np.testing.assert_array_equal(model.predict(X, backend=backend), label, err_msg=backend)
            np.testing.assert_array_equal(model.predict_proba(X, backend=backend), scores, err_msg=backend)
        else:
            ours = model.predict(X, backend=backend)
            np.testing.assert_array_equal(ours.reshape(scores.shape), scores, err_msg=backend)


# ---------------------------------------------------------------------------- routing
MODES = ("BRANCH_LEQ", "BRANCH_LT", "BRANCH_GTE", "BRANCH_GT")


@pytest.mark.parametrize("tracks", [0, 1])
@pytest.mark.parametrize("mode", MODES)
def test_node_modes_and_missing_tracking_route_as_onnxruntime(mode, tracks):
    thresholds = [0.3, -1.5, 2.0]
    proto = graph([regressor(stump_forest([mode] * 3, thresholds, [0, 1, 2], [tracks] * 3,
                                          [(1.0, 2.0), (10.0, 20.0), (100.0, 200.0)]))],
                  [("Y", TensorProto.FLOAT, [None, 1])])
    model = ss.convert(proto)
    assert model.estimator.cmp == "<=" and model.estimator.threshold_dtype == "float32"
    assert_bit_equal(model, proto, rows_around(thresholds), backends=("numpy", "numba"))


def test_mixed_modes_in_one_ensemble():
    thresholds = [0.25, 0.25, 0.25, 0.25, -3.0]
    proto = graph([regressor(stump_forest(list(MODES) + ["BRANCH_LEQ"], thresholds, [0, 1, 0, 1, 2], [0, 1, 1, 0, 1],
                                          [(0.5, 1.5), (2.5, 3.5), (4.5, 5.5), (6.5, 7.5), (8.5, 9.5)]),
                             base=[0.1])],
                  [("Y", TensorProto.FLOAT, [None, 1])])
    assert_bit_equal(ss.convert(proto), proto, rows_around(thresholds))


@pytest.mark.parametrize("scale", [2.5, -0.75])
def test_scaler_and_imputer_fold_into_thresholds_exactly(scale):
    """float32 (x - offset) * scale in front of the trees: every node re-expressed on the raw input."""
    thresholds = [0.1, -0.4, 1.0]
    nodes = [helper.make_node("Imputer", ["X"], ["imp"], domain="ai.onnx.ml", name="imp",
                              imputed_value_floats=[0.5, -2.0, 7.0], replaced_value_float=float("nan")),
             helper.make_node("Scaler", ["imp"], ["scaled"], domain="ai.onnx.ml", name="scale",
                              offset=[0.3, -1.1, 2.0], scale=[scale, 1.0 / 3.0, -scale]),
             regressor(stump_forest(["BRANCH_LEQ", "BRANCH_LT", "BRANCH_GT"], thresholds, [0, 1, 2], [0, 1, 0],
                                    [(1.0, 2.0), (10.0, 20.0), (100.0, 200.0)]), inp="scaled")]
    proto = graph(nodes, [("Y", TensorProto.FLOAT, [None, 1])])
    model = ss.convert(proto)
    assert model.features == ()  # folded, not a float64 feature map
    # rows on the folded thresholds (input space) and on the original ones
    X = np.concatenate([adversarial_matrix(model, rows_around(thresholds)), rows_around(thresholds)])
    assert_bit_equal(model, proto, X, backends=("numpy", "numba"))


# ---------------------------------------------------------------------------- classifiers, ties
@pytest.mark.parametrize("post", ["NONE", "SOFTMAX"])
def test_binary_one_score_all_positive_ties_at_half_go_negative(post):
    """skl2onnx's binary trees: weights for class id 0 only, all positive: label iff s > 0.5,
    probabilities [1 - s, s] (ONNX Runtime writes them raw for SOFTMAX too)."""
    forest = stump_forest(["BRANCH_LEQ"] * 2, [0.0, 1.0], [0, 1], [0, 0], [(0.25, 0.5), (0.25, 0.0)])
    proto = clf_graph(classifier(forest, [3, 7], post=post), [3, 7])
    model = ss.convert(proto)
    X = rows_around([0.0, 1.0])
    label, scores = ort_outputs(proto, X, model)
    assert (scores[:, 1] == 0.5).any(), "the rows must include the s == 0.5 tie"
    assert set(label[scores[:, 1] == 0.5]) == {3}
    assert_bit_equal(model, proto, X)


def test_binary_mixed_weights_logistic_label_on_raw_sign():
    forest = stump_forest(["BRANCH_LT"] * 2, [0.0, 1.0], [0, 1], [1, 0], [(0.625, -0.5), (-0.75, 0.625)])
    proto = clf_graph(classifier(forest, ["no", "yes"], post="LOGISTIC", base=[0.125]), ["no", "yes"])
    model = ss.convert(proto)
    X = rows_around([0.0, 1.0])
    label, scores = ort_outputs(proto, X, model)
    assert (scores[:, 1] == 0.5).any() and set(label[scores[:, 1] == 0.5]) == {"no"}  # s == 0: negative
    assert_bit_equal(model, proto, X, backends=("numpy", "numba"))


@pytest.mark.parametrize("base", [None, [0.25]])
@pytest.mark.parametrize("post", ["NONE", "LOGISTIC", "SOFTMAX", "SOFTMAX_ZERO"])
def test_binary_weights_for_class_one_only(post, base):
    """Class id 1 only: ONNX Runtime post-transforms [0, s] (ignoring a single base value) and labels s > 0."""
    forest = stump_forest(["BRANCH_LEQ"] * 2, [0.0, 1.0], [0, 1], [0, 1], [(0.625, -0.5), (-0.625, 0.5)])
    proto = clf_graph(classifier(forest, [0, 1], post=post, class_of_tree=[1, 1], base=base), [0, 1])
    model = ss.convert(proto)
    X = rows_around([0.0, 1.0])
    label, scores = ort_outputs(proto, X, model)
    assert len(set(label)) == 2
    assert_bit_equal(model, proto, X, backends=("numpy", "numba"))


@pytest.mark.parametrize("post", ["NONE", "LOGISTIC", "SOFTMAX", "SOFTMAX_ZERO"])
def test_multiclass_first_raw_argmax_and_post_transforms(post):
    """Three classes, one tree each: equal raw scores tie to the first class, as ONNX Runtime's
    get_max_weight does; zero scores exercise SOFTMAX_ZERO."""
    forest = stump_forest(["BRANCH_LEQ"] * 3, [0.0, 0.0, 1.0], [0, 1, 2], [0, 1, 0],
                          [(1.0, 0.0), (1.0, -2.0), (0.0, 1.0)])
    proto = clf_graph(classifier(forest, [0, 1, 2], post=post, class_of_tree=[0, 1, 2], base=[0.0, 0.0, 0.0]),
                      [0, 1, 2])
    model = ss.convert(proto)
    assert model.decision == "margin"
    X = rows_around([0.0, 1.0])
    assert_bit_equal(model, proto, X, backends=("numpy", "numba"))


@pytest.mark.parametrize("post", ["NONE", "LOGISTIC", "SOFTMAX"])
def test_multi_target_regressor_with_base_values(post):
    forest = stump_forest(["BRANCH_GTE"] * 2, [0.5, -0.5], [0, 2], [1, 0], [((1.0, -1.0), (0.5, 2.0)),
                                                                               ((3.0, 0.25), (-1.0, 0.0))])
    proto = graph([regressor(forest, n_targets=2, post=post, base=[0.1, -0.3])], [("Y", TensorProto.FLOAT, [None, 2])])
    model = ss.convert(proto)
    assert_bit_equal(model, proto, rows_around([0.5, -0.5]))


def test_single_target_regressor_ignores_logistic_like_onnxruntime():
    forest = stump_forest(["BRANCH_LEQ"], [0.0], [0], [0], [(2.0, -2.0)])
    proto = graph([regressor(forest, post="LOGISTIC")], [("Y", TensorProto.FLOAT, [None, 1])])
    model = ss.convert(proto)
    _, scores = ort_outputs(proto, np.array([[-1.0, 0, 0]]), model)
    assert scores.ravel().tolist() == [2.0]  # raw: ONNX Runtime applies only PROBIT to one target
    assert_bit_equal(model, proto, rows_around([0.0]))


# ---------------------------------------------------------------------------- refusals
def _stump(**kw):
    return stump_forest(["BRANCH_LEQ"], [0.0], [0], [0], [(1.0, 2.0)]) | kw


def _refusals():
    reg_out = [("Y", TensorProto.FLOAT, [None, 1])]
    eq = graph([regressor(stump_forest(["BRANCH_EQ"], [1.0], [0], [0], [(1.0, 2.0)]), name="eq_node")], reg_out)
    avg = graph([regressor(_stump(), agg="AVERAGE", name="avg_node")], reg_out)
    mn = graph([regressor(_stump(), agg="MIN", name="min_node")], reg_out)
    probit = graph([regressor(_stump(), post="PROBIT", name="probit_node")], reg_out)
    dbl = graph([regressor(_stump(), name="t")], reg_out, elem=TensorProto.DOUBLE)
    absn = graph([helper.make_node("Abs", ["X"], ["a"], name="abs_node"), regressor(_stump(), inp="a")], reg_out)
    norm = graph([helper.make_node("Normalizer", ["X"], ["n"], domain="ai.onnx.ml", norm="L2", name="norm_node"),
                  regressor(_stump(), inp="n")], reg_out)
    both = clf_graph(classifier(stump_forest(["BRANCH_LEQ"], [0.0], [0], [0], [((0.5, 0.5), (0.25, 0.75))]),
                                [0, 1], name="both_node"), [0, 1])
    one = clf_graph(classifier(stump_forest(["BRANCH_LEQ"], [0.0], [0], [0], [(0.5, 0.25)]), [0, 1],
                               class_of_tree=[1], post="LOGISTIC", name="id1_node"), [0, 1])
    pos_logistic = clf_graph(classifier(stump_forest(["BRANCH_LEQ"], [0.0], [0], [0], [(0.5, 0.25)]), [0, 1],
                                        post="LOGISTIC", name="poslog_node"), [0, 1])
    mixed_none = clf_graph(classifier(stump_forest(["BRANCH_LEQ"], [0.0], [0], [0], [(0.5, -0.25)]), [0, 1],
                                      name="mixed_node"), [0, 1])
    impute_zero = graph([helper.make_node("Imputer", ["X"], ["i"], domain="ai.onnx.ml", name="imp0_node",
                                          imputed_value_floats=[1.0], replaced_value_float=0.0),
                         regressor(_stump(), inp="i")], reg_out)
    return [
        pytest.param(impute_zero, "imp0_node.*replaces the value 0.0", id="imputer-non-nan"),
        pytest.param(eq, "eq_node.*BRANCH_EQ", id="branch-eq"),
        pytest.param(avg, "avg_node.*AVERAGE", id="average"),
        pytest.param(mn, "min_node.*MIN", id="min"),
        pytest.param(probit, "probit_node.*PROBIT", id="probit"),
        pytest.param(dbl, "input 'X' is not tensor\\(float\\)", id="double-input"),
        pytest.param(absn, "abs_node.*Abs", id="unknown-op"),
        pytest.param(norm, "norm_node.*Normalizer", id="normalizer-before-trees"),
        pytest.param(both, "both_node.*both classes", id="binary-both-classes"),
        pytest.param(one, "id1_node.*class id 1 with all-positive", id="binary-class-id-1-positive"),
        pytest.param(pos_logistic, "poslog_node.*all-positive weights and LOGISTIC", id="binary-positive-logistic"),
        pytest.param(mixed_none, "mixed_node.*mixed-sign weights", id="binary-mixed-none"),
    ]


@pytest.mark.parametrize("proto, match", _refusals())
def test_refuses_what_it_cannot_reproduce(proto, match):
    with pytest.raises(UnsupportedModelError, match=match):
        ss.convert(proto)


def test_refused_models_do_run_in_onnxruntime():
    """The refusals are about sparkscore, not invalid graphs: ONNX Runtime runs them."""
    for param in _refusals():
        proto = param.values[0]
        if param.id in ("unknown-op", "double-input"):
            continue
        sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
        sess.run(None, {"X": np.zeros((2, F), dtype=np.float32)})


# ---------------------------------------------------------------------------- dispatch
def test_convert_file_proto_and_register(tmp_path):
    forest = stump_forest(["BRANCH_LEQ"] * 2, [0.0, 1.0], [0, 1], [0, 0], [(0.25, 0.5), (0.25, 0.0)])
    proto = clf_graph(classifier(forest, [0, 1]), [0, 1])
    path = tmp_path / "model.onnx"
    onnx.save_model(proto, str(path))
    X = rows_around([0.0, 1.0])
    from_file = ss.convert(str(path))
    assert from_file.sha256 == ss.convert(proto).sha256 == ss.convert(path).sha256
    reg = ss.Registry(tmp_path / "reg")
    mv = reg.register("onnx_churn", str(path))
    loaded = reg.load(f"onnx_churn/{mv.version}")
    np.testing.assert_array_equal(loaded.predict_proba(X), from_file.predict_proba(X))
    assert loaded.metadata["source"] == "onnx"
    mv2 = reg.register("onnx_proto", proto)
    config = reg.lineage(f"onnx_proto/{mv2.version}")["configuration"]["native"]
    assert config["library"] == "onnx" and config["opsets"]["ai.onnx.ml"] == 3
    assert config["nodes"] == ["ai.onnx.ml.TreeEnsembleClassifier"]


def test_loading_never_imports_onnxruntime(tmp_path):
    proto = graph([regressor(_stump())], [("Y", TensorProto.FLOAT, [None, 1])])
    path = tmp_path / "m.onnx"
    onnx.save_model(proto, str(path))
    code = ("import sys; sys.modules['onnxruntime'] = None\n"
            "import sparkscore as ss, numpy as np\n"
            f"m = ss.convert({str(path)!r})\n"
            "print(m.predict(np.array([[-1.0, 0, 0], [1.0, 0, 0]])).tolist())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[1.0, 2.0]"


def test_cli_registers_an_onnx_file(tmp_path):
    from typer.testing import CliRunner

    from sparkscore.cli import app

    proto = graph([regressor(_stump())], [("Y", TensorProto.FLOAT, [None, 1])])
    path = tmp_path / "m.onnx"
    onnx.save_model(proto, str(path))
    result = CliRunner().invoke(app, ["--registry", str(tmp_path / "reg"), "register", "stump", str(path)])
    assert result.exit_code == 0, result.output
    loaded = ss.Registry(tmp_path / "reg").load("stump")
    assert loaded.predict(np.array([[-1.0, 0, 0], [1.0, 0, 0]])).tolist() == [1.0, 2.0]


def test_linear_glue_concat_scaler_softmax_argmax():
    """Two inputs joined by Concat, a Scaler, a LinearClassifier without post-transform, then the
    standard Softmax and an ArgMax label: values within float32 ulps (rtol 1e-6), labels equal."""
    inputs = [helper.make_tensor_value_info("age", TensorProto.FLOAT, [None, 1]),
              helper.make_tensor_value_info("pair", TensorProto.FLOAT, [None, 2])]
    nodes = [helper.make_node("Concat", ["age", "pair"], ["x"], axis=1, name="join"),
             helper.make_node("Scaler", ["x"], ["xs"], domain="ai.onnx.ml", offset=[1.0, -2.0, 0.5],
                              scale=[0.5, 2.0, 1.5]),
             helper.make_node("LinearClassifier", ["xs"], ["lab", "raw"], domain="ai.onnx.ml", name="glm",
                              coefficients=[0.5, -1.0, 0.25, -0.75, 0.5, 1.0, 0.1, 0.2, -0.3],
                              intercepts=[0.1, -0.2, 0.05], classlabels_ints=[0, 1, 2], post_transform="NONE"),
             helper.make_node("Softmax", ["raw"], ["proba"], axis=1, name="softmax"),
             helper.make_node("ArgMax", ["proba"], ["label"], axis=1, keepdims=0, name="argmax")]
    g = helper.make_graph(nodes, "glue", inputs, [helper.make_tensor_value_info("label", TensorProto.INT64, [None]),
                                                  helper.make_tensor_value_info("proba", TensorProto.FLOAT, [None, 3])])
    proto = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 3)])
    model = ss.convert(proto)
    assert model.signature.names == ("age", "pair_0", "pair_1") and model.decision == "proba"
    X = np.random.default_rng(1).normal(size=(500, 3)) * 3
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    label, proba = sess.run(None, {"age": X[:, :1].astype(np.float32), "pair": X[:, 1:].astype(np.float32)})
    np.testing.assert_allclose(model.predict_proba(X), proba, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(model.predict(X), label)
